"""world2: eval-like token ratios, small faint evidence among salient
distractors, readable answers, determinism, and the world task's schemas."""
import json
import os

import numpy as np
import pytest

from vselect_jax.data import world, world2
from vselect_jax.eval import records, tasks


def _scenes(n=6):
  for seed in range(n):
    rng = np.random.default_rng(seed)
    for kind in world2.KINDS:
      size = world2.SIZES[seed % len(world2.SIZES)]
      yield kind, size, world2.draw_scene(rng, kind, size)


def test_token_ratio_evidence_area_and_contrast():
  for kind, (w, h), s in _scenes():
    tokens = (w // 28) * (h // 28)
    assert tokens >= 256
    ev = set().union(*(world2.cells(b) for b, _ in s.evidence))
    assert 1 <= len(ev) <= 4, (kind, len(ev))
    assert len(ev) / tokens <= 0.02
    assert world2.cells(s.box) >= ev
    faint = max(world2.contrast(c, s.background) for _, c in s.evidence)
    loud = min(world2.contrast(c, s.background) for _, c in s.distractors)
    assert faint < loud, (kind, faint, loud)
    # Distractors are more varied in hue than the evidence is.
    assert len({c for _, c in s.distractors}) >= 2
    if kind in ("code", "next_to"):  # one glyph / object per cell
      assert len(ev) == len(s.evidence)


@pytest.mark.parametrize("seed", range(4))
def test_answers_from_pixels(seed):
  rng = np.random.default_rng(seed)
  s = world2.draw_scene(rng, "color", (448, 448))
  (x0, y0, x1, y1), col = s.evidence[0]
  arr = np.asarray(s.image)
  np.testing.assert_array_equal(arr[(y0 + y1) // 2, (x0 + x1) // 2], col)
  # The faint colour is still nearest its own hue among the answers.
  pull = {n: np.linalg.norm((np.asarray(col, float) - s.background)
                            / np.linalg.norm(np.asarray(col, float) -
                                             s.background)
                            - (np.asarray(c, float) - s.background)
                            / np.linalg.norm(np.asarray(c, float) -
                                             s.background))
          for n, c in world2.COLORS.items()}
  assert min(pull, key=pull.get) == s.answer
  s = world2.draw_scene(rng, "code", (448, 448))
  # Read the glyphs back: each evidence box holds the bitmap of its digit.
  arr = np.asarray(s.image).astype(float).mean(-1)
  read = ""
  for (x0, y0, x1, y1), _ in sorted(s.evidence):
    ink = arr[y0:y1 + 1, x0:x1 + 1] < s.background - 30
    cols = np.nonzero(ink.any(0))[0]
    bits = ink[:, cols[0]:cols[-1] + 1]
    grid = tuple("".join("#" if bits[r * 4 + 1, c * 4 + 1] else "."
                         for c in range(3)) for r in range(5))
    read += {v: k for k, v in world2.GLYPHS.items()}[grid]
  assert read == s.answer
  s = world2.draw_scene(rng, "next_to", (504, 448))
  (cross, _), (dot, _) = s.evidence
  assert world2.cells(dot) == {(max(world2.cells(cross))[0] + 1,
                                max(world2.cells(cross))[1])}


def _files(d):
  return {n: open(os.path.join(d, n), "rb").read()
          for n in sorted(os.listdir(d)) if n.endswith(".jsonl")}


def test_deterministic_schema_and_eval_task(tmp_path):
  a = world2.write_world2(str(tmp_path / "a"), 4, 8, seed=1)
  world2.write_world2(str(tmp_path / "b"), 4, 8, seed=1)
  c = world2.write_world2(str(tmp_path / "c"), 4, 8, seed=2)
  assert _files(tmp_path / "a") == _files(tmp_path / "b")
  assert _files(tmp_path / "a") != _files(tmp_path / "c")
  imgs = lambda d: [open(os.path.join(d, "images", n), "rb").read()
                    for n in sorted(os.listdir(os.path.join(d, "images")))]
  assert imgs(tmp_path / "a") == imgs(tmp_path / "b")
  # Not world1's cache: the generator is part of the manifest.
  w1 = world.write_world(str(tmp_path / "a"), 4, 8, seed=1)
  assert _files(tmp_path / "a") != _files(tmp_path / "b")
  assert w1["test"] == a["test"]
  a = world2.write_world2(str(tmp_path / "a"), 4, 8, seed=1)
  for line in open(a["train"]["annotation"]):
    human, gpt = json.loads(line)["conversations"]
    assert human["value"].startswith("<image>") and gpt["value"]
    assert len(human["value"]) < 100      # short questions
  recs = records.load_records(a["test"])
  assert {r.category for r in recs} == set(world2.KINDS)
  res = tasks.score_task("world", recs, [r.answers[0] for r in recs])
  assert res.metrics["accuracy"] == 1.0
  assert set(res.details["accuracy_by_category"]) == set(world2.KINDS)
  wrong = tasks.score_task("world", recs, ["nothing"] * len(recs))
  assert wrong.metrics["accuracy"] == 0.0
  assert c["test"] != a["test"]


def test_bad_input_is_named():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError, match="unknown world2 kind"):
    world2.draw_scene(rng, "shape", (448, 448))
  with pytest.raises(ValueError, match="multiple of 28"):
    world2.draw_scene(rng, "color", (450, 448))


def test_demo_tables_per_kind(tmp_path):
  from vselect_jax import world2_demo
  cell = tmp_path / "selector_0.2"
  cell.mkdir()
  (cell / "summary.json").write_text(json.dumps({
      "metrics": {"accuracy": 0.5},
      "details": {"accuracy_by_category": {"busy": 0.25, "color": 0.75}}}))
  got = world2_demo.per_kind(str(cell))
  assert got == {"all": 0.5, "busy": 0.25, "color": 0.75}
  md = world2_demo._markdown(
      {"sweep": {"selector": {"0.2": got}},
       "anneal": {"scale, budget 0.2, linear": [
           {"step": 50, "soft": 1.0, "hard": 0.5}]}}, 400)
  assert "### busy" in md and "| selector | 0.250 |" in md
  assert "50: 1.000/0.500" in md
  cell = {"hit": {"all": 0.5, "color": 1.0}, "kept": {"all": 0.25,
                                                      "color": 0.5},
          "questions": 2, "missed": ["q1"], "missed_accuracy": 1.0}
  md = world2_demo._markdown({"evidence": {"fastv": {"0.05": cell}}}, 400)
  assert "| method | 0.05 all | 0.05 color | 0.05 none kept |" in md
  assert "| fastv | 0.50 / 0.25 | 1.00 / 0.50 | 1 (1.00) |" in md


def test_demo_sweep_runs_budget_one_once(tmp_path, monkeypatch):
  # Selecting methods at 1.0 keep every token: one run ("selector") stands
  # for them; PruMerge+ merges at 1.0 too, so it runs its own.
  from vselect_jax import world2_demo
  from vselect_jax.eval import runner, sweep
  calls, rank = [], {"selector": 1, "fastv": 2, "prumerge": 3}

  def fake(model, tok, task, test, methods, budgets, out, settings,
           progress):
    calls.append((tuple(methods), tuple(budgets), out))
    for m in methods:
      for b in budgets:
        cell = os.path.join(out, task, f"{m}_{runner.budget_name(b)}")
        os.makedirs(cell)
        with open(os.path.join(cell, "summary.json"), "w") as f:
          json.dump({"metrics": {"accuracy": rank[m] + b},
                     "details": {}}, f)
  monkeypatch.setattr(sweep, "run_sweep", fake)
  got = world2_demo.sweep_by_kind(None, None, "t.jsonl", str(tmp_path), None,
                                  ("selector", "fastv", "prumerge"),
                                  (1.0, 0.3, 0.05))
  assert calls == [(("selector", "fastv", "prumerge"), (0.3, 0.05),
                    str(tmp_path)),
                   (("selector", "prumerge"), (1.0,),
                    os.path.join(str(tmp_path), "full"))]
  assert got["fastv"]["1.0"] == got["selector"]["1.0"] == {"all": 2.0}
  assert got["prumerge"]["1.0"] == {"all": 4.0}
  assert got["fastv"]["0.3"] == {"all": 2.3}


def test_demo_anneal_plot(tmp_path):
  from vselect_jax import world2_demo
  curve = [{"step": 25, "soft": 0.9, "hard": 0.5},
           {"step": 50, "soft": 0.95, "hard": 0.9}]
  curves = {f"{m}, budget {b}, {s}": curve for m in ("scale", "attn_bias")
            for b in ("0.2", "0.05") for s in ("linear", "w0")}
  from PIL import Image
  # (mask, budget) panels, 2 per row, 4.5 x 3.6 in at 100 dpi.
  path = world2_demo.plot_anneal(curves, str(tmp_path / "a.png"))
  assert Image.open(path).size == (900, 720)
  one = {k: v for k, v in curves.items() if k.startswith("scale, budget 0.2")}
  path = world2_demo.plot_anneal(one, str(tmp_path / "b.png"))
  assert Image.open(path).size == (450, 360)


def test_token_labels_mark_the_evidence():
  for kind, (w, h), s in _scenes(4):
    labels = s.token_labels()
    assert labels.shape == (h // 28, w // 28)
    names = {world2.LABELS[i] for i in np.unique(labels)}
    assert "background" in names and "distractor" in names
    # The answer's own token: the faint circle's hue / each glyph / the cross.
    want = ({s.answer} if kind in ("color", "busy")
            else {"glyph:" + g for g in s.answer} if kind == "code"
            else {s.answer, "cross"})
    assert want <= names, (kind, want, names)
    if kind == "busy":
      assert "grey" in names
    # Labels sit where the evidence is drawn: no answer-hue label in a cell
    # the scene has no faint object in.
    ev = set().union(*(world2.cells(b) for b, _ in s.evidence))
    for cy, cx in zip(*np.nonzero(labels == world2.LABELS.index(
        next(iter(want - {"cross"}))))):
      if kind in ("color", "busy"):
        assert (cx, cy) in ev


def test_difficulty_changes_the_evidence_and_the_cache_key(tmp_path):
  easy = world2.Difficulty(evidence_mix=(1.0, 1.0), circle=(28, 43))
  for seed in range(4):
    s = world2.draw_scene(np.random.default_rng(seed), "color", (168, 168),
                          easy)
    (x0, y0, x1, y1), col = s.evidence[0]
    assert col == world2.COLORS[s.answer]            # the full hue
    assert 27 <= x1 - x0 <= 42
  a = world2.write_world2(str(tmp_path / "w"), 2, 2, sizes=((168, 168),),
                          kinds=("color",))
  before = open(os.path.join(tmp_path, "w", "images", "train_000000.png"),
                "rb").read()
  world2.write_world2(str(tmp_path / "w"), 2, 2, sizes=((168, 168),),
                      kinds=("color",), difficulty=easy)
  after = open(os.path.join(tmp_path, "w", "images", "train_000000.png"),
               "rb").read()
  assert before != after, "a new difficulty must not reuse the cached world"
  with open(os.path.join(tmp_path, "w", "world.json")) as f:
    assert json.load(f)["difficulty"]["circle"] == [28, 43]
  # Cached: the same call again writes nothing.
  stamp = os.path.getmtime(os.path.join(tmp_path, "w", "train.jsonl"))
  world2.write_world2(str(tmp_path / "w"), 2, 2, sizes=((168, 168),),
                      kinds=("color",), difficulty=easy)
  assert os.path.getmtime(os.path.join(tmp_path, "w", "train.jsonl")) == stamp
  assert a["test"].endswith("test.jsonl")


def test_stage1_curriculum_phases():
  from configs import world2 as cfg
  phases = list(cfg.PHASES.values())
  # Easiest first: contrast and circle size only come down, the images
  # only grow, and the last phase is the evaluation's world.
  mixes = [p[0].evidence_mix[0] for p in phases]
  assert mixes == sorted(mixes, reverse=True)
  assert phases[-1][0] == world2.EVAL and phases[-1][1] == world2.SIZES
  assert max(w * h for w, h in phases[0][1]) < 256 * 28 * 28
  roots = set()
  for stage in cfg.STAGES[:3]:
    c = cfg.make_config(stage, "/nonexistent")
    roots.add(c.data.registry["world2"]["root"])
    assert c.train_parts.tune_mm_llm and not c.train_parts.tune_compressor
  assert len(roots) == 3                      # one world per phase
  with pytest.raises(ValueError, match="stage must be one of"):
    cfg.make_config("backbone_hard")
  with pytest.raises(ValueError, match="phase must be one of"):
    cfg.asset_paths(phase="hard")


def test_demo_seed_is_a_replicate(tmp_path):
  # Seed 0 is the model and data order of every earlier run; another seed
  # draws its own init model (own directory) and shifts the step's and the
  # data order's seeds, over the same images.
  from configs import world2 as cfg
  from vselect_jax import world2_demo
  base = world2_demo.stage_config("backbone_easy", str(tmp_path))
  want = cfg.make_config("backbone_easy", str(tmp_path))
  assert (base.model_path, base.seed, base.data.seed) == (
      want.model_path, want.seed, want.data.seed)
  other = world2_demo.stage_config("backbone_easy", str(tmp_path), seed=3)
  assert other.model_path != base.model_path
  assert other.model_path.endswith("seed3")
  assert (other.seed, other.data.seed) == (base.seed + 3, base.data.seed + 3)
  assert other.data.registry == base.data.registry
  assert world2_demo.model_spec(3)["seed"] == 3
  assert "seed" not in world2_demo.model_spec(0)

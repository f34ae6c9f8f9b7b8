"""``eval.py run`` / ``sweep`` under bad input and load: options, the grid
and the data file are checked before the model loads; ``--skip-bad``
accounting; examples streamed a bounded number ahead, with results equal to
preparing them all first."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import eval as eval_cli
import vselect_jax
from vselect_jax.data import testing
from vselect_jax.eval import records, runner, tasks

SMALL = ["--min-pixels", "3136", "--max-pixels", "3136"]
SETTINGS = runner.EvalSettings(min_pixels=3136, max_pixels=3136,
                               max_new_tokens=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """A tokenizer dir and a data file: 8 good records (q0..q7) of one image
  size, then a line that is not JSON, a missing image, a file that is no
  image, and a PNG cut short after its header (found only when decoded)."""
  root = tmp_path_factory.mktemp("faults")
  testing.testing_tokenizer(str(root / "tok"))
  (root / "img").mkdir()
  rng = np.random.default_rng(0)
  lines = []
  for i in range(8):
    Image.fromarray(rng.integers(0, 255, (56, 56, 3), np.uint8)).save(
        root / "img" / f"{i}.png")
    lines.append(json.dumps({"id": f"q{i}", "image": f"img/{i}.png",
                             "question": "How many bars?", "answers": ["3"]}))
  (root / "img" / "text.png").write_text("not an image")
  full = (root / "img" / "0.png").read_bytes()
  (root / "img" / "cut.png").write_bytes(full[:len(full) // 3])
  lines.append('{"id": "broken", ')
  for rid, name in (("gone", "nope.png"), ("text", "text.png"),
                    ("cut", "cut.png")):
    lines.append(json.dumps({"id": rid, "image": f"img/{name}",
                             "question": "q", "answers": ["a"]}))
  good = root / "good.jsonl"
  good.write_text("\n".join(lines[:8]) + "\n")
  bad = root / "bad.jsonl"
  bad.write_text("\n".join(lines) + "\n")
  return root, str(good), str(bad)


@pytest.fixture
def no_model(monkeypatch):
  def refuse(*a, **k):
    raise AssertionError("the model was loaded before the input was checked")
  monkeypatch.setattr(vselect_jax, "from_pretrained", refuse)


def _cli(command, data_path, out, *extra):
  return eval_cli.main([command, "--model", "unused", "--task", "chartqa",
                        "--data", data_path, "--out", str(out),
                        "--no-progress", *extra])


@pytest.mark.parametrize("extra,named", [
    (["--limit", "-1"], "--limit"), (["--limit", "0"], "--limit"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--min-pixels", "50176", "--max-pixels", "3136"], "above max_pixels"),
    (["--prefetch", "0"], "--prefetch"),
    (["--jpeg-quality", "-5"], "--jpeg-quality")])
def test_bad_options_are_refused_before_the_model_loads(
    data, no_model, tmp_path, capsys, extra, named):
  _, good, _ = data
  assert _cli("run", good, tmp_path / "o", "--budgets", "0.5", *extra) == 2
  assert named in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_sweep_grid_is_checked_before_any_cell(data, no_model, tmp_path,
                                               capsys):
  _, good, _ = data
  assert _cli("sweep", good, tmp_path / "o", "--methods",
              "selector,bogus,random,nope", "--budgets", "0.5") == 2
  err = capsys.readouterr().err
  assert "'bogus', 'nope'" in err and "known: dart, divprune," in err
  # Per-method options: dart pools over the prompt, no per-image budgets.
  assert _cli("sweep", good, tmp_path / "o", "--methods", "selector,dart",
              "--per-image") == 2
  assert "per_image" in capsys.readouterr().err
  assert _cli("run", good, tmp_path / "o", "--method", "dart",
              "--per-image") == 2
  assert not (tmp_path / "o").exists()


def test_bad_data_is_found_before_the_model_loads(data, no_model, tmp_path,
                                                  capsys):
  root, _, bad = data
  assert _cli("run", bad, tmp_path / "o", *SMALL) == 2
  assert f"{bad}:9: not valid JSON" in capsys.readouterr().err
  # Each kind, first of the file: a missing image, a file that is no image.
  lines = open(bad).read().splitlines()
  for keep, where, what in ((lines[:8] + lines[9:10], ":9 (id 'gone')",
                             "nope.png: no such file"),
                            (lines[:8] + lines[10:11], ":9 (id 'text')",
                             "is not a readable image")):
    path = root / "one.jsonl"  # beside the images it names
    path.write_text("\n".join(keep) + "\n")
    assert _cli("run", str(path), tmp_path / "o", *SMALL) == 2
    err = capsys.readouterr().err
    assert f"{path}{where}" in err and what in err
  assert not (tmp_path / "o").exists()


class _FakeModel:
  """Generates one token without a device, and records how many examples
  had been prepared at each call (the stream's look-ahead)."""

  def __init__(self, tokenizer, prepared):
    from vselect_jax.config import VLMConfig
    self.config = VLMConfig()
    self.dtype = np.float32
    self.seq_multiple = 64
    self.num_compiles = 0
    self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    self.prepared = prepared
    self.ahead = []

  def generate(self, input_ids, **kwargs):
    self.ahead.append(len(self.prepared))
    kwargs["timings"].update(prefill_ms=1.0, latency_ms=2.0)
    return np.array([[int(input_ids[0, -1]) % 50, self.eos]], np.int32)


@pytest.fixture
def fake(data, monkeypatch):
  from transformers import AutoTokenizer
  root, _, _ = data
  tok = AutoTokenizer.from_pretrained(str(root / "tok"))
  prepared = []
  real = runner.prepare_example

  def counting(*args, **kwargs):
    ex = real(*args, **kwargs)
    prepared.append(ex.record.id)
    return ex
  monkeypatch.setattr(runner, "prepare_example", counting)
  return _FakeModel(tok, prepared), tok


def test_examples_are_prepared_a_bounded_number_ahead(data, fake, tmp_path):
  _, good, _ = data
  model, tok = fake
  settings = runner.EvalSettings(min_pixels=3136, max_pixels=3136,
                                 prefetch=1)
  summary = runner.run_one(model, tok, "chartqa", good, 0.5, "selector",
                           str(tmp_path / "o"), settings, progress=False)
  assert summary["num_samples"] == 8
  # Queue of 1 + one being prepared + the one generating.
  assert model.ahead[0] <= 3 and max(
      a - i for i, a in enumerate(model.ahead)) <= 3, model.ahead


def test_skip_bad_counts_each_kind(data, fake, tmp_path, monkeypatch,
                                   capsys):
  root, _, bad = data
  model, tok = fake
  # Without --skip-bad the record cut short stops the run, named.
  lines = open(bad).read().splitlines()
  cut = root / "cut.jsonl"
  cut.write_text("\n".join(lines[:3] + lines[11:]) + "\n")
  with pytest.raises(records.EvalDataError,
                     match=rf"cut.jsonl:4 \(id 'cut'\): cannot read image"):
    runner.run_one(model, tok, "chartqa", str(cut), 0.5, "selector",
                   str(tmp_path / "c"), SETTINGS, progress=False)
  # The CLI with --skip-bad: every bad record skipped and counted.
  monkeypatch.setattr(eval_cli, "_load", lambda args: (model, tok))
  out = tmp_path / "o"
  assert _cli("run", bad, out, "--budgets", "0.5", "--skip-bad",
              *SMALL) == 0
  assert "skipping 3 bad records" in capsys.readouterr().err
  cell = out / "chartqa" / "selector_0.5"
  summary = json.load(open(cell / "summary.json"))
  assert summary["skipped"] == {"malformed": 1, "missing_file": 1,
                                "corrupt_image": 2, "corrupt_video": 0}
  assert [(s["kind"], s["line"], s["id"]) for s in
          summary["skipped_records"]] == [
      ("malformed", 9, None), ("missing_file", 10, "gone"),
      ("corrupt_image", 11, "text"), ("corrupt_image", 12, "cut")]
  preds = [json.loads(l) for l in open(cell / "predictions.jsonl")]
  assert [p["id"] for p in preds] == [f"q{i}" for i in range(8)]
  assert summary["num_samples"] == 8 and summary["num_missing"] == 0


def test_streaming_gives_the_results_of_preparing_all_first(data, tmp_path):
  """A real tiny model: the streamed run writes what the run over examples
  prepared up front (today's path) writes, prediction for prediction."""
  root, good, _ = data
  from transformers import AutoTokenizer
  model_dir = testing.tiny_hf_model(str(root / "model"))
  model = vselect_jax.from_pretrained(model_dir)
  tok = AutoTokenizer.from_pretrained(model_dir)
  settings = runner.EvalSettings(min_pixels=3136, max_pixels=3136,
                                 max_new_tokens=3, limit=4)
  spec = tasks.get_task("chartqa")
  runs = {}
  for name, examples in (
      ("upfront", runner.prepare_examples(tok, spec, good, settings)),
      ("streamed", None)):
    summary = runner.run_one(model, tok, "chartqa", good, 0.5, "selector",
                             str(tmp_path / name), settings, progress=False,
                             examples=examples)
    preds = [json.loads(l) for l in open(tmp_path / name /
                                         "predictions.jsonl")]
    runs[name] = ([{k: v for k, v in p.items() if not k.endswith("_ms")}
                   for p in preds], summary["metrics"])
  assert runs["streamed"] == runs["upfront"]
  assert len(runs["streamed"][0]) == 4


def test_an_error_mid_run_stops_the_prefetch_thread(data, fake, tmp_path):
  import threading
  _, good, _ = data
  model, tok = fake
  calls = []

  def failing(input_ids, **kwargs):
    calls.append(1)
    if len(calls) == 3:
      raise RuntimeError("device lost")
    return _FakeModel.generate(model, input_ids, **kwargs)
  model.generate = failing
  with pytest.raises(RuntimeError, match="device lost"):
    runner.run_one(model, tok, "chartqa", good, 0.5, "selector",
                   str(tmp_path / "o"), SETTINGS, progress=False)
  assert not [t for t in threading.enumerate() if t.name == "eval-prefetch"]
  assert len(model.prepared) <= 3 + SETTINGS.prefetch + 1

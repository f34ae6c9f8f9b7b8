"""The synthetic world: deterministic, well-formed, answers readable from
the pixels, evidence in a small region; and its eval task."""
import json
import os

import numpy as np
import pytest

from vselect_jax.data import world
from vselect_jax.eval import records, tasks


def _files(d):
  out = {}
  for root, _, names in os.walk(d):
    for n in names:
      if n != "world.json":
        p = os.path.join(root, n)
        out[os.path.relpath(p, d)] = open(p, "rb").read()
  return out


def test_deterministic_and_splits_differ(tmp_path):
  a = world.write_world(str(tmp_path / "a"), 12, 8, seed=3)
  world.write_world(str(tmp_path / "b"), 12, 8, seed=3)
  world.write_world(str(tmp_path / "c"), 12, 8, seed=4)
  fa, fb, fc = (_files(tmp_path / x) for x in "abc")
  assert fa == fb
  assert fa["train.jsonl"] != fc["train.jsonl"] or any(
      fa[k] != fc[k] for k in fa if k.endswith(".png"))
  train_imgs = {v for k, v in fa.items() if "train_" in k}
  test_imgs = {v for k, v in fa.items() if "test_" in k}
  assert not train_imgs & test_imgs
  # A second call with the same settings reuses the files.
  mtime = os.path.getmtime(a["test"])
  world.write_world(str(tmp_path / "a"), 12, 8, seed=3)
  assert os.path.getmtime(a["test"]) == mtime


def test_schema(tmp_path):
  from PIL import Image
  out = world.write_world(str(tmp_path), 8, 8, seed=0)
  for line in open(out["train"]["annotation"]):
    rec = json.loads(line)
    human, gpt = rec["conversations"]
    assert human["value"].count("<image>") == 1 and gpt["value"]
    with Image.open(os.path.join(out["train"]["root"], rec["image"])) as im:
      w, h = im.size
    assert w % 28 == 0 and h % 28 == 0 and 224 <= min(w, h) <= max(w, h) <= 448
  recs = records.load_records(out["test"])
  assert len(recs) == 8 and {r.category for r in recs} == set(world.KINDS)
  for r in recs:
    tasks.build_prompt("world", r)


@pytest.mark.parametrize("seed", range(6))
def test_answers_from_pixels(seed):
  rng = np.random.default_rng(seed)
  img, _, answer, box = world.make_world_sample(rng, "color", (280, 224))
  px = np.asarray(img)[(box[1] + box[3]) // 2, (box[0] + box[2]) // 2]
  np.testing.assert_array_equal(px, world.COLORS[answer])
  img, _, answer, box = world.make_world_sample(rng, "higher", (336, 336))
  arr = np.asarray(img).astype(int)
  ys = {}
  for name in ("red", "blue"):
    mask = (np.abs(arr - world.COLORS[name]).sum(-1) < 30)
    ys[name] = np.nonzero(mask)[0].mean()
  assert answer == min(ys, key=ys.get)
  img, _, answer, box = world.make_world_sample(rng, "count", (336, 336))
  mask = np.abs(np.asarray(img).astype(int) - world.COLORS["red"]).sum(-1) < 30
  # Count connected red blobs with a flood fill over the mask.
  seen = np.zeros_like(mask)
  blobs = 0
  for y, x in zip(*np.nonzero(mask)):
    if seen[y, x]:
      continue
    blobs += 1
    stack = [(y, x)]
    while stack:
      cy, cx = stack.pop()
      if (0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and
          mask[cy, cx] and not seen[cy, cx]):
        seen[cy, cx] = True
        stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
  assert world.NUMBERS[blobs - 1] == answer


def test_small_targets_and_balanced_answers():
  rng = np.random.default_rng(0)
  counts = {}
  for _ in range(300):
    img, _, a, box = world.make_world_sample(rng, "color", (224, 224))
    counts[a] = counts.get(a, 0) + 1
    area = (box[2] - box[0]) * (box[3] - box[1])
    assert area <= 0.1 * 224 * 224
  assert set(counts) == set(world.COLORS) and min(counts.values()) >= 30


def test_world_task_exact_match(tmp_path):
  n = len(world.KINDS)
  out = world.write_world(str(tmp_path), 0, n, seed=0)
  recs = records.load_records(out["test"])
  preds = [r.answers[0].upper() + "." for r in recs[:-1]] + ["nope"]
  res = tasks.score_task("world", recs, preds)
  assert res.metrics["accuracy"] == pytest.approx((n - 1) / n)
  assert set(res.details["accuracy_by_category"]) == set(world.KINDS)


@pytest.mark.parametrize("seed", range(4))
def test_busy_kind_has_salient_distractors_but_one_answer_colour(seed):
  rng = np.random.default_rng(seed)
  img, q, answer, box = world.make_world_sample(rng, "busy", (224, 224))
  arr = np.asarray(img).astype(int)
  cy, cx = (box[1] + box[3]) // 2, (box[0] + box[2]) // 2
  np.testing.assert_array_equal(arr[cy, cx], world.COLORS[answer])
  present = {name for name, c in world.COLORS.items()
             if (np.abs(arr - c).sum(-1) == 0).sum() > 20}
  assert present == {answer}
  hues = sum((np.abs(arr - c).sum(-1) == 0).sum() > 20
             for c in world.DISTRACTOR_COLORS)
  assert hues >= 1 and q == "What color is the circle?"

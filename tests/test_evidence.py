"""Evidence recall (``eval.evidence``): which merged tokens a box covers,
and whether a method's kept set contains them."""
import json

import numpy as np
import pytest
from PIL import Image

import vselect_jax
from vselect_jax.data import testing
from vselect_jax.eval import evidence, runner
from vselect_jax.selector.budget import budget_to_k


def test_box_tokens_on_the_merged_grid():
  # 112x84 image as is (4x3 cells of 28 px): a box inside cell (1, 2).
  got = evidence.box_tokens((60, 30, 80, 50), (112, 84), (3, 4))
  want = np.zeros((3, 4), bool)
  want[1, 2] = True
  np.testing.assert_array_equal(got, want.reshape(-1))
  # Crossing a cell border takes both cells; the right/bottom edges are
  # exclusive (a box ending on a border stays in its cell).
  got = evidence.box_tokens((50, 28, 84, 56), (112, 84), (3, 4)).reshape(3, 4)
  assert got.sum() == 2 and got[1, 1] and got[1, 2]
  # The processor resized 100x50 to 4x2 cells (112x56): boxes scale per axis.
  got = evidence.box_tokens((0, 0, 25, 25), (100, 50), (2, 4)).reshape(2, 4)
  assert got[0, 0] and got.sum() == 1
  got = evidence.box_tokens((90, 40, 100, 50), (100, 50), (2, 4)).reshape(2, 4)
  assert got[1, 3] and got.sum() == 1


@pytest.mark.parametrize("box, match", [
    ((10, 10, 5, 20), "empty or outside"),
    ((0, 0, 200, 20), "empty or outside"),
    ((0, 0, 10), "4 numbers"),
    ("abcd", "4 numbers"),
])
def test_bad_boxes_are_named(box, match):
  with pytest.raises(ValueError, match=match):
    evidence.box_tokens(box, (112, 84), (3, 4))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("evidence")
  model_dir = testing.tiny_hf_model(str(root / "model"))
  rng = np.random.default_rng(0)
  (root / "images").mkdir()
  lines = []
  for i, (w, h, box, kind) in enumerate([
      (168, 112, [30, 30, 50, 50], "color"),
      (140, 140, [100, 0, 140, 20], "busy"),
      (168, 112, [0, 0, 168, 112], "color")]):      # the whole image
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
        root / "images" / f"{i}.png")
    lines.append({"id": f"w{i}", "image": f"images/{i}.png",
                  "question": "What color is the circle?",
                  "answers": ["red"], "category": kind, "target_box": box})
  data = root / "test.jsonl"
  data.write_text("".join(json.dumps(l) + "\n" for l in lines))
  from transformers import AutoTokenizer
  settings = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                                 jpeg_quality=None)
  return (vselect_jax.from_pretrained(model_dir),
          AutoTokenizer.from_pretrained(model_dir), str(data), settings, root)


def test_recall_counts_the_kept_evidence(world):
  model, tok, data, settings, _ = world
  got = evidence.recall(model, tok, "world", data, ("uniform",), (1.0, 0.1),
                        settings)
  full = got["uniform"]["1"]
  assert full["questions"] == 3
  # Everything kept: every question keeps all its evidence.
  assert full["hit"] == {"all": 1.0, "busy": 1.0, "color": 1.0}
  assert full["kept"]["all"] == 1.0 and full["missed"] == []
  low = got["uniform"]["0.1"]
  assert 0.0 <= low["hit"]["all"] <= 1.0
  assert low["kept"]["color"] <= low["hit"]["color"]
  # The whole-image box: every kept token is evidence, so the kept fraction
  # is exactly k / N.
  whole = [json.loads(l) for l in open(data)][2:]
  path = world[4] / "whole.jsonl"
  path.write_text(json.dumps(whole[0]) + "\n")
  got = evidence.recall(model, tok, "world", str(path), ("divprune",),
                        (0.1, 0.3), settings)
  n = (168 // 28) * (112 // 28)
  for b in (0.1, 0.3):
    cell = got["divprune"][f"{b:g}"]
    assert cell["kept"]["all"] == pytest.approx(budget_to_k(n, b) / n)
    assert cell["hit"]["color"] == 1.0
    assert cell["missed"] == []


def test_records_without_a_box_are_named(world, tmp_path):
  model, tok, data, settings, root = world
  lines = [json.loads(l) for l in open(data)]
  del lines[1]["target_box"]
  bad = root / "no_box.jsonl"
  bad.write_text("".join(json.dumps(l) + "\n" for l in lines))
  with pytest.raises(ValueError, match="'w1' has no target_box"):
    evidence.recall(model, tok, "world", str(bad), ("random",), (0.5,),
                    settings)
  lines = [json.loads(l) for l in open(data)]
  lines[0]["target_box"] = [0, 0, 500, 10]
  bad.write_text("".join(json.dumps(l) + "\n" for l in lines))
  with pytest.raises(ValueError, match="'w0'.*outside"):
    evidence.recall(model, tok, "world", str(bad), ("random",), (0.5,),
                    settings)


def test_accuracy_on_a_subset_of_questions(world, tmp_path):
  _, _, data, _, _ = world
  preds = tmp_path / "predictions.jsonl"
  preds.write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n"
                           for i, p in (("w0", "Red."), ("w1", "blue"),
                                        ("w2", "red"))))
  assert evidence.accuracy_on(str(preds), data, ["w0", "w1"]) == (0.5, 2)
  assert evidence.accuracy_on(str(preds), data, ["w2"]) == (1.0, 1)
  assert evidence.accuracy_on(str(preds), data, []) == (None, 0)

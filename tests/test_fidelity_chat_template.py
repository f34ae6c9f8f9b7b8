"""One chat template for training and evaluation (issue 13, section 4).

A training sample's prompt (everything before its first supervised token)
is the evaluation prompt of the same question, token for token, because
both are rendered by ``data.chat``; changing the template there changes
both.
"""
import json

import numpy as np
import pytest
from PIL import Image

from vselect_jax.data import chat, world
from vselect_jax.data import testing_tokenizer as make_tokenizer
from vselect_jax.data.records import RawRecord
from vselect_jax.data.sample import SampleBuilder
from vselect_jax.eval import runner, tasks
from vselect_jax.eval.records import EvalRecord

BOUNDS = (784, 50176)
QUESTION = "What color is the square?"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("template")
  tok = make_tokenizer(str(root / "tok"))
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(
      root / "img.png")
  return tok, root


def _train(tok, root):
  rec = world.training_record("s0", "img.png", QUESTION, "red")
  return SampleBuilder(tok, min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])(
      RawRecord("world", 0, json.dumps(rec), root=str(root)))


def _eval(tok, root):
  rec = EvalRecord("s0", (str(root / "img.png"),), QUESTION, ("red",))
  settings = runner.EvalSettings(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1],
                                 jpeg_quality=None)
  return runner.prepare_example(tok, tasks.get_task("world"), rec, settings)


def _render(tok, ids):
  toks = tok.convert_ids_to_tokens([int(i) for i in ids])
  return "".join(toks).replace("Ġ", " ").replace("Ċ", "\n")


def test_training_prompt_is_the_eval_prompt(setup):
  tok, root = setup
  sample, ex = _train(tok, root), _eval(tok, root)
  first = np.flatnonzero(sample["labels"] != -100)[0]
  np.testing.assert_array_equal(sample["input_ids"][:first], ex.input_ids[0])
  np.testing.assert_array_equal(sample["image_grid_thw"], ex.image_grid_thw)
  n = int(np.prod(ex.image_grid_thw[0])) // 4
  assert _render(tok, ex.input_ids[0]) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n +
      "<|vision_end|>" + QUESTION + tasks.SHORT_ANSWER +
      "<|im_end|>\n<|im_start|>assistant\n")


def test_one_template_changes_both(setup, monkeypatch):
  tok, root = setup
  monkeypatch.setattr(chat, "SYSTEM", "Be brief.")
  sample, ex = _train(tok, root), _eval(tok, root)
  for ids in (sample["input_ids"], ex.input_ids[0]):
    assert _render(tok, ids).startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
  first = np.flatnonzero(sample["labels"] != -100)[0]
  np.testing.assert_array_equal(sample["input_ids"][:first], ex.input_ids[0])


def test_eval_prompt_puts_every_image_first(setup):
  tok, _ = setup
  ids = chat.prompt_ids(tok, "a <video> b", [2, 1])
  # Literal tags in the text stay text; only the media get slots.
  assert _render(tok, ids) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|>"
      "<|vision_end|><|vision_start|><|image_pad|><|vision_end|>a <video> b"
      "<|im_end|>\n<|im_start|>assistant\n")

"""LLaVA-OV-1.5's training format: ``<image>`` takes its surrounding
newlines, labels on the assistant content + ``<|im_end|>\\n``; its processor
rows are 588 values."""
import numpy as np

from vselect_jax.data import chat, testing
from vselect_jax.data.sample import processor_params


def test_image_tag_takes_its_newlines(tmp_path):
  tok = testing.testing_tokenizer(str(tmp_path / "tok"))
  turns = chat.normalize_turns([
      {"from": "human", "value": "left\n<image>\nWhat color is the square?"},
      {"from": "gpt", "value": "red"}])
  ids, labels = chat.tokenize_conversation(tok, turns, [3], eat_newlines=True)
  pads = "<|vision_start|>" + "<|image_pad|>" * 3 + "<|vision_end|>"
  want = (chat.render_turn("system", chat.SYSTEM) +
          chat.render_turn("user", "left" + pads + "What color is the square?")
          + chat.render_turn("assistant", "red"))
  assert tok.decode(ids) == want
  qwen, _ = chat.tokenize_conversation(tok, turns, [3])
  assert "\n<|vision_start|>" in tok.decode(qwen)
  supervised = tok.decode(ids[labels != chat.IGNORE])
  assert supervised == "red<|im_end|>\n"
  assert processor_params("llava_ov15").patch_dim == 588
  assert processor_params("qwen2_5_vl").patch_dim == 1176

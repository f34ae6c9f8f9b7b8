"""Tiny random HF Qwen2.5-VL models and inputs for parity tests."""
from __future__ import annotations

import numpy as np
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

IMAGE, VIDEO, START, END = 990, 991, 992, 993

CONFIGS = {
    # Tied embeddings, 2x2-merged-token windows, last block full attention.
    "tied_w56": dict(
        text=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2,
                  mrope_section=[2, 3, 3]),
        vision=dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=2,
                    fullatt_block_indexes=[1], window_size=56),
        tie=True),
    # Untied head, Qwen2.5-VL's 4x4 windows, full attention first and last,
    # multi-query attention.
    "untied_w112": dict(
        text=dict(hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=3, num_key_value_heads=1,
                  mrope_section=[4, 6, 6]),
        vision=dict(depth=4, hidden_size=48, intermediate_size=64, num_heads=3,
                    fullatt_block_indexes=[0, 3], window_size=112),
        tie=False),
}


def make_config(name: str) -> Qwen2_5_VLConfig:
  spec = CONFIGS[name]
  t = dict(spec["text"])
  section = t.pop("mrope_section")
  return Qwen2_5_VLConfig(
      text_config=dict(vocab_size=1000, rope_parameters={
          "rope_type": "default", "mrope_section": section,
          "rope_theta": 10000.0}, bos_token_id=None, eos_token_id=None, **t),
      vision_config=dict(out_hidden_size=t["hidden_size"], patch_size=14,
                         tokens_per_second=2, **spec["vision"]),
      image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
      vision_end_token_id=END, tie_word_embeddings=spec["tie"])


def make_model(name: str, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
  torch.manual_seed(seed)
  model = Qwen2_5_VLForConditionalGeneration(make_config(name))
  # HF's init leaves norms at 1 and biases at 0; randomise them so that a
  # swapped or dropped parameter shows up in the logits.
  with torch.no_grad():
    for n, p in model.named_parameters():
      if n.endswith("bias") or "norm" in n or "ln_q" in n:
        p.copy_(torch.randn_like(p) * 0.1 + (1.0 if p.ndim == 1 and
                                             not n.endswith("bias") else 0.0))
  return model.eval()


def block(kind_token: int, grid) -> list[int]:
  t, h, w = grid
  return [START] + [kind_token] * (t * h * w // 4) + [END]


def pixels(rng, grid) -> np.ndarray:
  t, h, w = grid
  return rng.standard_normal((t * h * w, 3 * 2 * 14 * 14)).astype(np.float32)


def hf_logits(model, **inputs) -> np.ndarray:
  """HF forward; numpy in, numpy out; adds mm_token_type_ids as 5.x wants."""
  ids = np.asarray(inputs["input_ids"])
  tt = np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0))
  kw = {k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()
        if v is not None}
  kw["mm_token_type_ids"] = torch.as_tensor(tt)
  with torch.no_grad():
    return model(**kw).logits.float().numpy()


def left_padded(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
  """(input_ids, attention_mask) int64[B, max len], padded on the left as
  for generation."""
  n = max(len(r) for r in rows)
  ids = np.zeros((len(rows), n), np.int64)
  mask = np.zeros((len(rows), n), np.int64)
  for i, r in enumerate(rows):
    ids[i, n - len(r):] = r
    mask[i, n - len(r):] = 1
  return ids, mask


def two_image_rows():
  """Two prompts of different lengths with images of different sizes."""
  g1, g2 = [1, 6, 10], [1, 8, 8]
  r1 = [1, 2] + block(IMAGE, g1) + [3]
  r2 = block(IMAGE, g2) + [4, 5, 6, 7]
  return (r1, r2), (g1, g2)

"""FLOPs of a scorer-training step and the device's peak, for MFU.

Counted as matmul FLOPs (2 x MACs) of the linear layers and the attention
products. A scorer step runs the vision tower forward once (frozen, no
backward), and the LLM three times over: forward, the rematerialised
forward, and the backward for activations only (no weight gradients for a
frozen LLM).
"""
from __future__ import annotations

from vselect_jax.config import VLMConfig

# Dense bf16 peak FLOP/s per chip, matched against ``device_kind``.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12,
              "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v5": 459e12, "TPU v4": 275e12, "TPU v6": 918e12}


def peak_flops(device_kind: str) -> float | None:
  """The bf16 peak of a device kind, or None if unknown (e.g. CPU)."""
  for name, peak in PEAK_FLOPS.items():
    if name in device_kind:
      return peak
  return None


def llm_forward_flops(cfg: VLMConfig, tokens: int,
                      attended: float | None = None) -> float:
  """Forward FLOPs of the LLM on ``tokens`` positions, including the head;
  ``attended``: mean keys per query (default ``tokens / 2``, causal)."""
  t = cfg.text
  d, f, hd = t.hidden_size, t.intermediate_size, t.head_dim
  q, kv = t.num_attention_heads * hd, t.num_key_value_heads * hd
  layer = 2 * d * (q + 2 * kv) + 2 * q * d + 3 * 2 * d * f
  keys = tokens / 2 if attended is None else attended
  attn = 2 * 2 * keys * q
  return tokens * (t.num_hidden_layers * (layer + attn) +
                   2 * d * t.vocab_size)


def vision_forward_flops(cfg: VLMConfig, patches: int,
                         full_pairs: float | None = None) -> float:
  """Forward FLOPs of the vision tower and merger on ``patches`` patches;
  ``full_pairs``: query-key pairs of a full-attention block, the sum of
  squared patch counts of the images (default: one image)."""
  v = cfg.vision
  d, f = v.hidden_size, v.intermediate_size
  # LLaVA-OV-1.5's RICE tower: every block full attention, a 2-matrix MLP.
  rice = not hasattr(v, "fullatt_block_indexes")
  layer = 2 * d * 3 * d + 2 * d * d + (2 if rice else 3) * 2 * d * f
  n_full = v.depth if rice else len(v.fullatt_block_indexes)
  pairs = patches ** 2 if full_pairs is None else full_pairs
  windowed = 0 if rice else (
      (v.depth - n_full) * 2 * 2 * patches * v.window_patches * d)
  attn = windowed + n_full * 2 * 2 * pairs * d
  merger = 2 * (d * v.merge_unit) ** 2 / v.merge_unit + (
      2 * d * v.merge_unit * v.out_hidden_size / v.merge_unit)
  return patches * (v.depth * layer + 2 * v.patch_dim * d + merger) + attn


def batch_flops(cfg: VLMConfig, batch: dict) -> float:
  """FLOPs of one scorer-training micro-batch (host arrays of a packed
  batch): vision forward on its images + 3 LLM passes on its tokens."""
  import numpy as np
  seg = np.asarray(batch["segment_ids"])
  lengths = np.concatenate([np.bincount(r[r > 0]) for r in seg])
  tokens = float(lengths.sum())
  attended = float((lengths.astype(np.float64) ** 2).sum() / 2 /
                   max(tokens, 1))
  grids = np.asarray(batch["image_grid_thw"]).reshape(-1, 3)
  per_image = grids.prod(-1).astype(np.float64)
  return (vision_forward_flops(cfg, float(per_image.sum()),
                               float((per_image ** 2).sum())) +
          3 * llm_forward_flops(cfg, tokens, attended))

"""Host-side preparation of packed training batches for the device.

The data pipeline yields rows of a fixed token length, each packing several
samples (``segment_ids`` 1..n, 0 for padding) with their images' patches
concatenated per row. Here each row gets its own vision layout
(``vision_layout.build_vision_layout`` at a fixed patch capacity), so every
array has a leading row axis and shards over the data axes of the mesh; the
vision tower runs per row under ``vmap``.

Input (numpy, R rows of L tokens, at most I images / P patches per row):
  input_ids, labels, segment_ids int32[R, L]; position_ids int32[3, R, L];
  pixel_values float32[R, P, C]; image_grid_thw int32[R, I, 3];
  num_images int32[R].
Output adds per row: the layout arrays [R, P] / [R, P, 2] / [R, P / 4] and
``visual_index`` int32[R, L] (row of the row's merged tokens, -1 for text).
"""
from __future__ import annotations

import numpy as np

from vselect_jax.config import VLMConfig
from vselect_jax.modeling.vision_layout import build_vision_layout

REQUIRED = ("input_ids", "labels", "segment_ids", "position_ids",
            "pixel_values", "image_grid_thw", "num_images")


def patch_capacity(patches_per_row: int, cfg: VLMConfig) -> int:
  """Layout capacity: the row's patch capacity rounded up to whole windows."""
  block = cfg.vision.window_patches
  return -(-patches_per_row // block) * block


def prepare_train_batch(cfg: VLMConfig, batch: dict) -> dict[str, np.ndarray]:
  """Adds per-row vision layouts and visual-token placement; validates."""
  missing = [k for k in REQUIRED if k not in batch]
  if missing:
    raise KeyError(f"training batch lacks {missing}")
  ids = np.asarray(batch["input_ids"])
  rows, length = ids.shape
  pix = np.asarray(batch["pixel_values"], np.float32)
  grids = np.asarray(batch["image_grid_thw"])
  counts = np.asarray(batch["num_images"])
  cap = patch_capacity(pix.shape[1], cfg)
  layouts = []
  visual_index = np.full((rows, length), -1, np.int32)
  for r in range(rows):
    g = grids[r, :counts[r]]
    layout = build_vision_layout(g, cfg.vision, capacity=cap)
    layouts.append(layout.arrays())
    pads = np.flatnonzero(ids[r] == cfg.image_token_id)
    if pads.size != layout.num_merged:
      raise ValueError(
          f"row {r}: {pads.size} image pad tokens but its grids "
          f"{g.tolist()} give {layout.num_merged} merged tokens")
    visual_index[r, pads] = np.arange(pads.size)
  out = {k: np.asarray(batch[k]) for k in ("input_ids", "labels",
                                           "segment_ids", "position_ids")}
  out["pixel_values"] = np.pad(pix, ((0, 0), (0, cap - pix.shape[1]),
                                     (0, 0)))
  for key in layouts[0]:
    out[key] = np.stack([lay[key] for lay in layouts])
  out["visual_index"] = visual_index
  return out

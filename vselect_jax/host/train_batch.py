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
Output: the per-row format of ``host.rows`` (the same as inference batches),
with ``labels``.
"""
from __future__ import annotations

import numpy as np

from vselect_jax.config import VLMConfig
from vselect_jax.host.buckets import bucket
from vselect_jax.host.rice_layout import CLASS_MULTIPLE
from vselect_jax.host.rows import patch_capacity, place_visual, vision_rows

REQUIRED = ("input_ids", "labels", "segment_ids", "position_ids",
            "pixel_values", "image_grid_thw", "num_images")


def prepare_train_batch(cfg: VLMConfig, batch: dict) -> dict[str, np.ndarray]:
  """Packed rows -> the per-row format of ``rows`` (plus ``labels``)."""
  missing = [k for k in REQUIRED if k not in batch]
  if missing:
    raise KeyError(f"training batch lacks {missing}")
  ids = np.asarray(batch["input_ids"])
  pix = np.asarray(batch["pixel_values"], np.float32)
  grids = np.asarray(batch["image_grid_thw"])
  counts = np.asarray(batch["num_images"])
  vcfg = cfg.vision
  row_grids = [grids[r, :counts[r]] for r in range(ids.shape[0])]
  row_patches = [int(np.prod(g, axis=1).sum()) for g in row_grids]
  out = {k: np.asarray(batch[k]) for k in ("input_ids", "labels",
                                           "segment_ids", "position_ids")}
  # RICE's class slots (one per image) are fixed by the image slots, so
  # every batch has one shape.
  out.update(vision_rows(vcfg, row_grids,
                         [pix[r, :n] for r, n in enumerate(row_patches)],
                         patch_capacity(0, vcfg, fixed=pix.shape[1]),
                         class_capacity=bucket(grids.shape[1],
                                               CLASS_MULTIPLE)))
  placed = []
  for r, g in enumerate(row_grids):
    try:
      placed.append(place_visual([ids[r] == cfg.image_token_id],
                                 [np.prod(g, axis=1) // vcfg.merge_unit]))
    except ValueError as e:
      raise ValueError(f"row {r} (grids {g.tolist()}): {e}") from None
  out["visual_index"] = np.stack([p[0] for p in placed])
  out["visual_item"] = np.stack([p[1] for p in placed])
  return out

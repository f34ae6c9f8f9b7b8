"""The one batch format the device sees, for inference and training alike.

Every array has a leading row axis, so batches shard over the mesh's data
axes and the vision tower runs per row under ``vmap``. B rows, T token
slots, P patch slots per row, M = P / merge_unit merged-token slots:

  input_ids     int32[B, T]
  segment_ids   int32[B, T]     sample number within the row (1, 2, ...;
                                packed training rows hold several), 0 = pad
  position_ids  int32[3, B, T]  M-RoPE ids (three equal rows for 1-D RoPE)
  visual_index  int32[B, T]     at a visual pad token: which of the row's
                                merged tokens fills it; -1 elsewhere
  visual_item   int32[B, T]     at a visual pad token: which of the row's
                                images / videos it belongs to; -1 elsewhere
  labels        int32[B, T]     training only (-100 = not supervised)
and, when any row has pixels:
  pixel_values  float32[B, P, C]  the row's patch rows in processor order
  patch_index, window_seg, frame_seg int32[B, P]; rot_pos int32[B, P, 2];
  merged_index int32[B, M]; merged_valid bool[B, M]  (``vision_layout``)
  for the Qwen2.5-VL tower; for LLaVA-OV-1.5's RICE tower the layout keys
  are ``rice_layout.RiceLayout``'s (patch_index, frame_seg, rot_pos
  [B, P, ...], class_seg int32[B, S], merged_index, merged_valid):
  ``layout_fields(vision config)`` says which

A row's merged tokens are its images' then its videos' (processor order),
which is the order HF scatters them into that row's pad tokens.
"""
from __future__ import annotations

import numpy as np

from vselect_jax.config import RiceVisionConfig, VisionConfig
from vselect_jax.host import rice_layout
from vselect_jax.host.buckets import bucket
from vselect_jax.host.vision_layout import VisionLayout, build_vision_layout

TOKEN_KEYS = ("input_ids", "segment_ids", "position_ids", "visual_index",
              "visual_item")
VISION_KEYS = ("pixel_values",) + tuple(VisionLayout.ARRAY_FIELDS)
RICE_FIELDS = ("patch_index", "frame_seg", "rot_pos", "class_seg",
               "merged_index", "merged_valid")


def layout_fields(cfg) -> tuple[str, ...]:
  """The vision layout keys of a family's batch (by its vision config)."""
  return (RICE_FIELDS if isinstance(cfg, RiceVisionConfig)
          else VisionLayout.ARRAY_FIELDS)


def patch_capacity(num_patches: int, cfg: VisionConfig,
                   fixed: int | None = None) -> int:
  """Patch slots per row: ``fixed`` rounded up to whole windows (training
  rows have a configured capacity), else the bucket of ``num_patches``.
  The RICE tower has no windows: its block is ``rice_layout``'s."""
  block = (rice_layout.PATCH_MULTIPLE if isinstance(cfg, RiceVisionConfig)
           else cfg.window_patches)
  if fixed is not None:
    return -(-fixed // block) * block
  return bucket(num_patches, block * 4)


def vision_rows(cfg: VisionConfig, grids: list[np.ndarray],
                pixels: list[np.ndarray], capacity: int,
                class_capacity: int | None = None) -> dict:
  """Per-row vision inputs, stacked.

  Args:
    cfg: the vision config (Qwen2.5-VL's or RICE's: the layout follows).
    grids: per row, int[n_items, 3] patch grids (may be empty).
    pixels: per row, float[n_patches, C] patch rows matching ``grids``.
    capacity: patch slots P (a multiple of the window size in patches).
    class_capacity: RICE only, class-token slots S per row (one per image /
      frame); default the bucket of the most frames in a row.

  Returns:
    ``pixel_values`` float32[B, P, C] and the layout arrays [B, ...].
  """
  rows = len(grids)
  out = {"pixel_values": np.zeros((rows, capacity, cfg.patch_dim),
                                  np.float32)}
  rice = isinstance(cfg, RiceVisionConfig)
  if rice and class_capacity is None:
    frames = max([int(np.asarray(g).reshape(-1, 3)[:, 0].sum())
                  for g in grids] + [0])
    class_capacity = bucket(frames, rice_layout.CLASS_MULTIPLE)
  layouts = []
  for r, (g, p) in enumerate(zip(grids, pixels)):
    g = np.asarray(g).reshape(-1, 3)
    layout = (rice_layout.build_rice_layout(g, cfg, capacity, class_capacity)
              if rice else build_vision_layout(g, cfg, capacity=capacity))
    if p.shape[0] != layout.num_patches:
      raise ValueError(f"row {r}: {p.shape[0]} patch rows but its grids "
                       f"{np.asarray(g).tolist()} give {layout.num_patches}")
    out["pixel_values"][r, :p.shape[0]] = p
    layouts.append(layout.arrays())
  for key in layout_fields(cfg):
    out[key] = np.stack([lay[key] for lay in layouts])
  return out


def place_visual(pad_masks: list[np.ndarray], tokens_per_item: list[
    list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
  """``visual_index`` and ``visual_item`` of one row.

  Args:
    pad_masks: per visual kind (images, then videos), bool[T] where that
      kind's pad tokens are.
    tokens_per_item: per kind, the merged-token count of each of the row's
      items of that kind.

  Returns:
    int32[T] visual_index and int32[T] visual_item (-1 off visual pads).
  """
  t = pad_masks[0].shape[0]
  index = np.full(t, -1, np.int32)
  item = np.full(t, -1, np.int32)
  offset = item_offset = 0
  for mask, counts in zip(pad_masks, tokens_per_item):
    counts = np.asarray(counts, np.int64)
    n = int(counts.sum())
    where = np.flatnonzero(mask)
    if where.size != n:
      raise ValueError(f"{where.size} visual pad tokens but the items give "
                       f"{n} merged tokens")
    index[where] = offset + np.arange(n)
    item[where] = item_offset + np.repeat(np.arange(len(counts)), counts)
    offset += n
    item_offset += len(counts)
  return index, item

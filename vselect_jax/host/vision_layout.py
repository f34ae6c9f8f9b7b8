"""Host-side (numpy) layout of the vision encoder's input for static shapes.

The Qwen2.5-VL vision tower reorders patches into *window order* (windows of
``window_merged x window_merged`` merged tokens, each merged token being
``merge x merge`` patches), runs window attention in most blocks and
per-frame attention in ``fullatt_block_indexes``, merges groups of 4 patches
and un-permutes the merged tokens back to raster order. Everything that
depends on the image grids is computed here once, in numpy, and padded to a
bucket so the device program compiles once per bucket:

* ``patch_index``  int32[P]: window-order slot -> row of ``pixel_values``.
* ``window_seg``   int32[P]: window id + 1 per slot (0 = padding slot).
* ``frame_seg``    int32[P]: frame id + 1 per slot (0 = padding slot).
* ``rot_pos``      int32[P, 2]: (row, col) patch coordinates for the 2D RoPE.
* ``merged_index`` int32[M]: raster merged token -> window-order merged token.
* ``merged_valid`` bool[M].

``P`` is a multiple of the window size in patches, so the window-attention
kernel can work on fixed blocks (see ``vision.py``); ``M = P / merge**2``.

The merged tokens of several items (images then videos, in the order the
processor emits them) are concatenated, so ``merged`` raster index ``r`` is
the ``r``-th visual pad token of the batch, counting image pads before video
pads.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vselect_jax.config import VisionConfig
from vselect_jax.host.buckets import bucket


@dataclasses.dataclass(frozen=True)
class VisionLayout:
  patch_index: np.ndarray
  window_seg: np.ndarray
  frame_seg: np.ndarray
  rot_pos: np.ndarray
  merged_index: np.ndarray
  merged_valid: np.ndarray
  num_patches: int
  num_merged: int

  ARRAY_FIELDS = ("patch_index", "window_seg", "frame_seg", "rot_pos",
                  "merged_index", "merged_valid")

  def arrays(self) -> dict[str, np.ndarray]:
    return {f: getattr(self, f) for f in self.ARRAY_FIELDS}


def as_grid(grid_thw, cfg) -> np.ndarray:
  """``grid_thw`` as int64[n, 3] (an empty list is no items), checked."""
  grid = np.asarray(grid_thw, dtype=np.int64)
  if grid.size == 0:
    grid = grid.reshape(0, 3)
  check_grid(grid, cfg)
  return grid


def check_grid(grid: np.ndarray, cfg) -> None:
  """Grids must be [n, 3] with t >= 1 and h, w multiples of the merge size
  (any vision config with ``spatial_merge_size``)."""
  if grid.ndim != 2 or grid.shape[1] != 3:
    raise ValueError(f"grid_thw must be [num_items, 3], got shape {grid.shape}")
  m = cfg.spatial_merge_size
  for t, h, w in grid.tolist():
    if t < 1 or h < m or w < m or h % m or w % m:
      raise ValueError(
          f"invalid grid (t={t}, h={h}, w={w}): t must be >= 1 and h, w "
          f"positive multiples of spatial_merge_size={m}")


def build_vision_layout(grid_thw, cfg: VisionConfig,
                        capacity: int | None = None) -> VisionLayout:
  """Computes the padded window-order layout for a list of image/video grids.

  Args:
    grid_thw: int[num_items, 3] patch grids (t, h, w) in processor order.
    cfg: the vision config.
    capacity: number of patch slots P; defaults to the bucket of the patch
      count. Must be a multiple of the window size in patches.

  Returns:
    The layout (see module docstring).
  """
  grid = as_grid(grid_thw, cfg)
  m = cfg.spatial_merge_size
  unit = cfg.merge_unit
  wm = cfg.window_merged
  num_patches = int(np.prod(grid, axis=1).sum()) if len(grid) else 0
  block = cfg.window_patches
  if capacity is None:
    capacity = bucket(num_patches, block)
  if capacity % block:
    raise ValueError(
        f"patch capacity {capacity} must be a multiple of the window size "
        f"in patches ({block})")
  if num_patches > capacity:
    raise ValueError(
        f"{num_patches} patches do not fit the patch capacity {capacity}")

  merged_order = []  # window-order merged token -> global raster merged index
  window_ids = []
  frame_ids = []
  rot_rows = []
  rot_cols = []
  merged_offset = 0
  window_id = 0
  frame_id = 0
  for t, h, w in grid.tolist():
    gh, gw = h // m, w // m
    nwh, nww = -(-gh // wm), -(-gw // wm)
    raster = np.arange(t * gh * gw).reshape(t, gh, gw)
    padded = np.full((t, nwh * wm, nww * wm), -1, dtype=np.int64)
    padded[:, :gh, :gw] = raster
    # (t, window row, window col, row in window, col in window)
    windows = padded.reshape(t, nwh, wm, nww, wm).transpose(0, 1, 3, 2, 4)
    windows = windows.reshape(t, nwh * nww, wm * wm)
    item_order = []
    for ti in range(t):
      for wi in range(nwh * nww):
        ids = windows[ti, wi]
        ids = ids[ids >= 0]
        if ids.size == 0:  # HF's empty padding windows; they hold nothing
          continue
        item_order.append(ids)
        window_ids.append(np.full(ids.size, window_id + 1))
        frame_ids.append(np.full(ids.size, frame_id + 1 + ti))
        window_id += 1
    local = np.concatenate(item_order)
    merged_order.append(local + merged_offset)
    # Merged token (r, c) covers patch rows r*m..r*m+m-1 and cols
    # c*m..c*m+m-1; the processor emits its patches row-major.
    rr = (local % (gh * gw)) // gw
    cc = local % gw
    sub_r, sub_c = np.divmod(np.arange(unit), m)
    rot_rows.append((rr[:, None] * m + sub_r[None, :]).reshape(-1))
    rot_cols.append((cc[:, None] * m + sub_c[None, :]).reshape(-1))
    merged_offset += t * gh * gw
    frame_id += t

  num_merged = merged_offset
  p = capacity
  mcap = p // unit
  patch_index = np.zeros(p, np.int32)
  window_seg = np.zeros(p, np.int32)
  frame_seg = np.zeros(p, np.int32)
  rot_pos = np.zeros((p, 2), np.int32)
  merged_index = np.zeros(mcap, np.int32)
  merged_valid = np.zeros(mcap, bool)
  if num_merged:
    order = np.concatenate(merged_order)  # window-order -> raster merged id
    # Processor rows are raster merged tokens, each a contiguous run of
    # `unit` patches, so the slot of patch j of window-order token i is
    # order[i] * unit + j.
    patch_index[:num_patches] = (order[:, None] * unit +
                                 np.arange(unit)[None, :]).reshape(-1)
    window_seg[:num_patches] = np.repeat(np.concatenate(window_ids), unit)
    frame_seg[:num_patches] = np.repeat(np.concatenate(frame_ids), unit)
    rot_pos[:num_patches, 0] = np.concatenate(rot_rows)
    rot_pos[:num_patches, 1] = np.concatenate(rot_cols)
    merged_index[:num_merged] = np.argsort(order)
    merged_valid[:num_merged] = True
  return VisionLayout(patch_index, window_seg, frame_seg, rot_pos,
                      merged_index, merged_valid, num_patches, num_merged)

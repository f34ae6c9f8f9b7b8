"""Host-side (numpy) layout of the RICE vision tower's input (LLaVA-OV-1.5).

The counterpart of ``vision_layout.build_vision_layout`` for the RICE tower:
no windows and no permutation, but one learned class token per image /
frame. The device sequence is P patch slots (processor order: for each item
(t, h/2, w/2, 2, 2), i.e. merge-block order) followed by S class slots, both
padded, so the program compiles once per (P, S) bucket:

* ``patch_index``  int32[P]: slot -> row of ``pixel_values`` (0 for padding).
* ``frame_seg``    int32[P]: frame id + 1 of each patch slot (0 = padding).
* ``rot_pos``      int32[P, 2]: (row, col) patch coordinates for the 2-D RoPE.
* ``class_seg``    int32[S]: frame id + 1 of each class slot (class slot f
  belongs to frame f; 0 = padding).
* ``merged_index`` int32[M]: raster merged token -> merger output row; the
  identity here (patch slots are already in raster merge-group order), kept
  so consumers written for ``VisionLayout`` work unchanged.
* ``merged_valid`` bool[M].

``M = P / merge**2``. Frames are numbered over all items in order (images
then videos, as the processor emits them); each frame of a video is its own
segment with its own class token, as in the reference.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vselect_jax.config import RiceVisionConfig
from vselect_jax.host.buckets import bucket
from vselect_jax.host.vision_layout import as_grid

# Patch capacity granularity (a multiple of the 2x2 merge unit) and class
# slot granularity.
PATCH_MULTIPLE = 64
CLASS_MULTIPLE = 8


@dataclasses.dataclass(frozen=True)
class RiceLayout:
  patch_index: np.ndarray
  frame_seg: np.ndarray
  rot_pos: np.ndarray
  class_seg: np.ndarray
  merged_index: np.ndarray
  merged_valid: np.ndarray
  num_patches: int
  num_merged: int
  num_frames: int

  def arrays(self) -> dict[str, np.ndarray]:
    return {f: getattr(self, f) for f in (
        "patch_index", "frame_seg", "rot_pos", "class_seg", "merged_index",
        "merged_valid")}


def build_rice_layout(grid_thw, cfg: RiceVisionConfig,
                      capacity: int | None = None,
                      class_capacity: int | None = None) -> RiceLayout:
  """Computes the padded layout for a list of image/video grids.

  Args:
    grid_thw: int[num_items, 3] patch grids (t, h, w) in processor order.
    cfg: the RICE vision config.
    capacity: patch slots P (a multiple of the merge unit); defaults to the
      bucket of the patch count.
    class_capacity: class slots S; defaults to the bucket of the frame count.

  Returns:
    The layout (see module docstring).
  """
  grid = as_grid(grid_thw, cfg)
  m, unit = cfg.spatial_merge_size, cfg.merge_unit
  num_patches = int(np.prod(grid, axis=1).sum()) if len(grid) else 0
  num_frames = int(grid[:, 0].sum()) if len(grid) else 0
  p = bucket(num_patches, PATCH_MULTIPLE) if capacity is None else capacity
  s = (bucket(num_frames, CLASS_MULTIPLE) if class_capacity is None
       else class_capacity)
  if p % unit:
    raise ValueError(f"patch capacity {p} must be a multiple of the merge "
                     f"unit {unit}")
  if num_patches > p:
    raise ValueError(f"{num_patches} patches do not fit the patch capacity {p}")
  if num_frames > s:
    raise ValueError(f"{num_frames} images/frames do not fit the class-token "
                     f"capacity {s}")

  segs, rows, cols = [], [], []
  frame = 0
  for t, h, w in grid.tolist():
    # Processor row order within a frame: (h/m, w/m, m, m).
    hh = np.broadcast_to(np.arange(h)[:, None], (h, w))
    ww = np.broadcast_to(np.arange(w)[None, :], (h, w))
    order = lambda a: a.reshape(h // m, m, w // m, m).transpose(
        0, 2, 1, 3).reshape(-1)
    rows.append(np.tile(order(hh), t))
    cols.append(np.tile(order(ww), t))
    segs.append(np.repeat(np.arange(frame, frame + t) + 1, h * w))
    frame += t

  patch_index = np.zeros(p, np.int32)
  frame_seg = np.zeros(p, np.int32)
  rot_pos = np.zeros((p, 2), np.int32)
  class_seg = np.zeros(s, np.int32)
  mcap = p // unit
  num_merged = num_patches // unit
  merged_valid = np.zeros(mcap, bool)
  if num_patches:
    patch_index[:num_patches] = np.arange(num_patches)
    frame_seg[:num_patches] = np.concatenate(segs)
    rot_pos[:num_patches, 0] = np.concatenate(rows)
    rot_pos[:num_patches, 1] = np.concatenate(cols)
    class_seg[:num_frames] = np.arange(num_frames) + 1
    merged_valid[:num_merged] = True
  return RiceLayout(patch_index, frame_seg, rot_pos, class_seg,
                    np.arange(mcap, dtype=np.int32), merged_valid,
                    num_patches, num_merged, num_frames)

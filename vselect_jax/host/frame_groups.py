"""Per-frame selection groups for videos (``per_image`` budgets).

With ``per_image`` each image gets its own budget; a video is split the
same way, one group per temporal slot (a pair of frames), so every frame
slot keeps its share instead of the selection pooling them. Images (t = 1)
keep one group.
"""
from __future__ import annotations

import numpy as np


def frame_items(visual_item: np.ndarray, is_video: np.ndarray,
                image_grids, video_grids, merge_unit: int) -> np.ndarray:
  """``visual_item`` renumbered so that each temporal slot of each item is
  its own group.

  Args:
    visual_item: int32[B, T], the row's item of each visual pad (-1 off).
    is_video: bool[B, T], video pad tokens.
    image_grids, video_grids: int[N, 3] (t, h, w) of every image / video
      in processor order (row after row), or None.
    merge_unit: patches per merged token.

  Returns:
    int32[B, T] group ids (-1 off visual pads), consecutive per row.
  """
  kinds = [np.zeros((0, 3), np.int64) if g is None
           else np.asarray(g).reshape(-1, 3) for g in (image_grids,
                                                       video_grids)]
  used = [0, 0]
  out = np.full_like(visual_item, -1)
  for b in range(visual_item.shape[0]):
    row = visual_item[b]
    group = 0
    for item in np.unique(row[row >= 0]):
      where = np.flatnonzero(row == item)
      kind = int(bool(is_video[b, where[0]]))
      if used[kind] >= len(kinds[kind]):
        raise ValueError("more visual items in the rows than grids given")
      t, h, w = (int(x) for x in kinds[kind][used[kind]])
      used[kind] += 1
      out[b, where] = group + np.arange(where.size) // (h * w // merge_unit)
      group += t
  return out

"""Packing samples into fixed-shape rows for static-shape training.

Each row has ``row_length`` token slots, ``patch_capacity`` visual-patch
slots and ``max_images`` image slots; samples are placed first-fit into the
open rows (at most ``open_rows`` at once, so packing streams), each with its
own segment id so samples never attend to each other. A sample that cannot
fit an empty row (too many tokens, patches or images) is dropped and counted
under ``too_long``: truncating would cut an image block or the answer.

Row format (see ``vselect_jax.training.batch``): input_ids, labels,
segment_ids int32[L]; position_ids int32[3, L] (each sample from 0);
pixel_values float32[P, C]; image_grid_thw int32[I, 3]; num_images int32;
image_segment int32[I].
"""
from __future__ import annotations

import collections
from typing import Iterable, Iterator

import numpy as np


class _Row:

  def __init__(self, length, patches, images, patch_dim):
    self.ids = np.zeros(length, np.int32)
    self.labels = np.full(length, -100, np.int32)
    self.seg = np.zeros(length, np.int32)
    self.pos = np.ones((3, length), np.int32)
    self.pix = np.zeros((patches, patch_dim), np.float32)
    self.grids = np.zeros((images, 3), np.int32)
    self.image_segment = np.zeros(images, np.int32)
    self.t = self.p = self.i = self.n = 0

  def fits(self, s) -> bool:
    return (self.t + len(s["input_ids"]) <= len(self.ids) and
            self.p + len(s["pixel_values"]) <= len(self.pix) and
            self.i + len(s["image_grid_thw"]) <= len(self.grids))

  def add(self, s) -> None:
    n, p, k = len(s["input_ids"]), len(s["pixel_values"]), len(
        s["image_grid_thw"])
    self.n += 1
    sl = slice(self.t, self.t + n)
    self.ids[sl], self.labels[sl], self.seg[sl] = (s["input_ids"],
                                                   s["labels"], self.n)
    self.pos[:, sl] = s["position_ids"]
    self.pix[self.p:self.p + p] = s["pixel_values"]
    self.grids[self.i:self.i + k] = s["image_grid_thw"]
    self.image_segment[self.i:self.i + k] = self.n
    self.t, self.p, self.i = self.t + n, self.p + p, self.i + k

  def emit(self) -> dict:
    return dict(input_ids=self.ids, labels=self.labels, segment_ids=self.seg,
                position_ids=self.pos, pixel_values=self.pix,
                image_grid_thw=self.grids, num_images=np.int32(self.i),
                image_segment=self.image_segment)


def pack(samples: Iterable[dict], row_length: int, patch_capacity: int,
         max_images: int, *, open_rows: int = 8, patch_dim: int = 1176,
         stats: collections.Counter | None = None) -> Iterator[dict]:
  """Streams packed rows (first-fit over ``open_rows`` open rows).

  Args:
    samples: dicts with input_ids, labels int32[n], position_ids int32[3, n],
      pixel_values float32[p, C], image_grid_thw int[k, 3].
    row_length, patch_capacity, max_images: the row's static capacity.
    open_rows: rows kept open for first-fit; the fullest is emitted when a
      sample fits none and a new row is needed.
    stats: a Counter that receives ``rows``, ``samples``, ``too_long``,
      ``token_slots`` and ``tokens`` (for the padding-waste figure).
  """
  stats = collections.Counter() if stats is None else stats
  rows: list[_Row] = []

  def emit(row):
    stats["rows"] += 1
    stats["token_slots"] += row_length
    stats["tokens"] += row.t
    return row.emit()

  for s in samples:
    if not (len(s["input_ids"]) <= row_length and
            len(s["pixel_values"]) <= patch_capacity and
            len(s["image_grid_thw"]) <= max_images):
      stats["too_long"] += 1
      continue
    stats["samples"] += 1
    target = next((r for r in rows if r.fits(s)), None)
    if target is None:
      if len(rows) >= open_rows:
        fullest = max(rows, key=lambda r: r.t)
        rows.remove(fullest)
        yield emit(fullest)
      target = _Row(row_length, patch_capacity, max_images, patch_dim)
      rows.append(target)
    target.add(s)
  for r in rows:
    yield emit(r)

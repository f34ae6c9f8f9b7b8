"""Packing samples into fixed-shape rows for static-shape training.

A batch is ``rows`` rows; each row has ``row_length`` token slots,
``patch_capacity`` visual-patch slots, ``max_images`` image slots and at most
``max_samples`` samples (0: no limit). Samples go first-fit into the rows of
the batch being built, each with its own segment id (1, 2, ... in the row;
0 is padding) so that samples never attend to each other, and with their own
M-RoPE ids restarting at 0. The reference instead concatenates a
micro-batch into one variable-length row; the fixed shapes are what TPUs
need.

When a sample fits no row it is carried over to the next batch; the batch
closes after ``lookahead`` such misses (or when the stream ends), and the
carried samples go first into the next one. A sample that cannot fit even
an empty row (too many tokens, patches or images) is dropped and counted as
``too_long``: truncating would cut an image block or the supervised answer,
and such samples are rare at training resolution.

Batch format (R rows, L tokens, P patches, I images):
  input_ids, labels, segment_ids int32[R, L]; position_ids int32[3, R, L];
  pixel_values float32[R, P, 1176]; image_grid_thw int32[R, I, 3];
  num_images int32[R]; image_segment int32[R, I] (segment of each image).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterable, Iterator

import numpy as np

from vselect_jax.data.chat import IGNORE
from vselect_jax.data.image_processor import PATCH_DIM


@dataclasses.dataclass(frozen=True)
class RowSpec:
  """Static capacity of the rows of a batch."""
  rows: int
  row_length: int
  patch_capacity: int
  max_images: int
  max_samples: int = 0            # samples per row; 0 = as many as fit
  pad_id: int = 0                 # input_ids of padding slots
  patch_dim: int = PATCH_DIM

  def fits_empty_row(self, sample: dict) -> bool:
    return (len(sample["input_ids"]) <= self.row_length and
            len(sample["pixel_values"]) <= self.patch_capacity and
            len(sample["image_grid_thw"]) <= self.max_images)


class BatchBuilder:
  """A batch being filled, first-fit over its rows."""

  def __init__(self, spec: RowSpec):
    s = spec
    r = s.rows
    self.spec = s
    self.input_ids = np.full((r, s.row_length), s.pad_id, np.int32)
    self.labels = np.full((r, s.row_length), IGNORE, np.int32)
    self.segment_ids = np.zeros((r, s.row_length), np.int32)
    # Padding positions are 1, as HF pads them; they are masked anyway.
    self.position_ids = np.ones((3, r, s.row_length), np.int32)
    self.pixel_values = np.zeros((r, s.patch_capacity, s.patch_dim),
                                 np.float32)
    self.image_grid_thw = np.zeros((r, s.max_images, 3), np.int32)
    self.image_segment = np.zeros((r, s.max_images), np.int32)
    self.tokens = np.zeros(r, np.int64)
    self.patches = np.zeros(r, np.int64)
    self.images = np.zeros(r, np.int64)
    self.samples = np.zeros(r, np.int64)

  def _fits(self, row: int, n: int, p: int, k: int) -> bool:
    s = self.spec
    return (self.tokens[row] + n <= s.row_length and
            self.patches[row] + p <= s.patch_capacity and
            self.images[row] + k <= s.max_images and
            (not s.max_samples or self.samples[row] < s.max_samples))

  def add(self, sample: dict) -> bool:
    """Places ``sample`` in the first row it fits; False if none."""
    n, p, k = (len(sample["input_ids"]), len(sample["pixel_values"]),
               len(sample["image_grid_thw"]))
    row = next((r for r in range(self.spec.rows)
                if self._fits(r, n, p, k)), None)
    if row is None:
      return False
    t0, p0, i0 = self.tokens[row], self.patches[row], self.images[row]
    seg = self.samples[row] + 1
    self.input_ids[row, t0:t0 + n] = sample["input_ids"]
    self.labels[row, t0:t0 + n] = sample["labels"]
    self.segment_ids[row, t0:t0 + n] = seg
    self.position_ids[:, row, t0:t0 + n] = sample["position_ids"]
    self.pixel_values[row, p0:p0 + p] = sample["pixel_values"]
    self.image_grid_thw[row, i0:i0 + k] = sample["image_grid_thw"]
    self.image_segment[row, i0:i0 + k] = seg
    self.tokens[row] += n
    self.patches[row] += p
    self.images[row] += k
    self.samples[row] = seg
    return True

  @property
  def num_samples(self) -> int:
    return int(self.samples.sum())

  def arrays(self) -> dict[str, np.ndarray]:
    return dict(input_ids=self.input_ids, labels=self.labels,
                segment_ids=self.segment_ids, position_ids=self.position_ids,
                pixel_values=self.pixel_values,
                image_grid_thw=self.image_grid_thw,
                num_images=self.images.astype(np.int32),
                image_segment=self.image_segment)


def fill_batch(builder: BatchBuilder, carried: list,
               read_next: Callable[[], object | None], lookahead: int,
               sample_of: Callable[[object], dict] = lambda x: x
               ) -> tuple[list, bool]:
  """Fills ``builder``: the carried items first, then new ones.

  Args:
    builder: an empty batch.
    carried: items that missed the previous batch, oldest first.
    read_next: the next item (already filtered to samples that fit an empty
      row), or None when the stream has ended.
    lookahead: misses after which the batch closes (>= 1).
    sample_of: the sample dict of an item.

  Returns:
    (items carried to the next batch, whether the stream ended).
  """
  still = [c for c in carried if not builder.add(sample_of(c))]
  new = []
  # The oldest carried item always lands in an empty row, so every batch
  # makes progress even when ``still`` already fills the lookahead.
  while len(still) + len(new) < lookahead:
    item = read_next()
    if item is None:
      return still + new, True
    if not builder.add(sample_of(item)):
      new.append(item)
  return still + new, False


def pack(samples: Iterable[dict], spec: RowSpec, *, lookahead: int = 8,
         stats: collections.Counter | None = None) -> Iterator[dict]:
  """Packed batches from a stream of samples (the pipeline's algorithm
  without grain, for tools and tests).

  Args:
    samples: sample dicts (see ``vselect_jax.data.sample``).
    spec: the batch shape.
    lookahead: misses after which a batch closes.
    stats: a Counter receiving ``batches``, ``samples``, ``too_long``,
      ``token_slots``, ``tokens``, ``patch_slots``, ``patches``.
  """
  stats = collections.Counter() if stats is None else stats
  it = iter(samples)

  def read_next():
    for s in it:
      if spec.fits_empty_row(s):
        return s
      stats["too_long"] += 1
    return None

  carried, ended = [], False
  while not ended or carried:
    builder = BatchBuilder(spec)
    carried, ended = fill_batch(builder, carried, read_next, lookahead)
    if builder.num_samples == 0:
      break
    account(stats, builder)
    yield builder.arrays()


def account(stats: collections.Counter, builder: BatchBuilder) -> None:
  """Adds a finished batch's occupancy to ``stats`` (padding-waste
  figures: 1 - tokens / token_slots, 1 - patches / patch_slots)."""
  s = builder.spec
  stats["batches"] += 1
  stats["samples"] += builder.num_samples
  stats["token_slots"] += s.rows * s.row_length
  stats["tokens"] += int(builder.tokens.sum())
  stats["patch_slots"] += s.rows * s.patch_capacity
  stats["patches"] += int(builder.patches.sum())

"""The grain pipeline: mixture -> samples -> packed fixed-shape batches.

    MapDataset.source(mixture)[pi::pc]   each host reads only its share
      .seed(seed).shuffle().repeat()     a new order every epoch
      .map(BuildSample)                  decode, preprocess, tokenise, M-RoPE
      .to_iter_dataset(ReadOptions)      threads
      .mp_prefetch(workers)              (optional) worker processes
    PackedBatches                        first-fit packing, in the main process

Everything up to ``mp_prefetch`` is a pure function of the element index,
so the sample stream is the same for any number of workers and threads.
Packing is stateful and runs after ``mp_prefetch`` (as grain advises): its
state is the parent's state before the oldest sample it still holds plus
those samples' offsets, so ``get_state``/``set_state`` resume exactly,
mid-epoch, by re-reading at most a batch's worth of samples.

A record that fails (see ``errors.SKIP_KINDS``) becomes a skip marker in the
worker, never an exception; the packer counts markers by kind in each
batch's ``skipped`` dict, logs the first few of each kind, and raises once
skips exceed ``max_skip_fraction`` of the records read.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import traceback

import grain
import numpy as np

from vselect_jax.data import packing
from vselect_jax.data.errors import (SKIP_KINDS, RecordError, SkipLog,
                                     SkipMonitor)
from vselect_jax.data.records import build_mixture
from vselect_jax.data.sample import SampleBuilder, special_token_id

log = logging.getLogger(__name__)

__all__ = ["DataConfig", "SkipMonitor", "make_dataset", "make_sample_dataset",
           "make_train_iterator"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Training-data settings (plain values, so ``ml_collections`` can hold
  them; ``from_config`` converts a ConfigDict).

  Attributes:
    mixture: datasets to mix, e.g. ``"chartqa,coco%10,ocr_vqa"``.
    registry: name -> {"annotation", "root"} or {"array_record"}
      (``records``).
    seed: mixture sampling and per-epoch shuffling.
    row_length: tokens per packed row (L).
    patches_per_row: visual-patch capacity per row (P).
    max_images_per_row: image slots per row (I).
    rows_per_batch: rows per host batch (R).
    samples_per_row: most samples in one row; 0 packs as many as fit. (The
      reference pools a whole micro-batch in one row; a cap reproduces a
      fixed micro-batch size at the cost of padding.)
    min_pixels, max_pixels: image area bounds (training: 784 / 50176, so at
      most 64 merged tokens per image).
    tokens_per_second: M-RoPE temporal scale (the reference hard-codes 2).
    max_skip_fraction: skipped / read above which the run stops.
    skip_check_min_records: records read before that fraction is judged.
    pack_lookahead: samples that may miss a batch before it closes.
    num_workers: grain worker processes (0: threads in this process).
    read_threads: threads per process running the per-sample work.
    prefetch: samples buffered per thread pool / worker.
    family: the model family the samples are for ("qwen2_5_vl";
      "llava_ov15": its processor, 1-D positions and tag format).
  """
  mixture: str
  registry: dict
  seed: int = 42
  row_length: int = 2048
  patches_per_row: int = 2048
  max_images_per_row: int = 32
  rows_per_batch: int = 8
  samples_per_row: int = 0
  min_pixels: int = 784
  max_pixels: int = 50176
  tokens_per_second: float = 2
  max_skip_fraction: float = 0.01
  skip_check_min_records: int = 200
  pack_lookahead: int = 8
  num_workers: int = 0
  read_threads: int = 2
  prefetch: int = 16
  family: str = "qwen2_5_vl"

  def __post_init__(self):
    # ConfigDicts (or any mapping) -> plain dicts, which pickle into workers.
    object.__setattr__(self, "registry", {
        str(k): dict(v) for k, v in dict(self.registry).items()})
    if self.pack_lookahead < 1:
      raise ValueError("pack_lookahead must be >= 1")

  @classmethod
  def from_config(cls, data) -> "DataConfig":
    """From a mapping / ConfigDict; keys that are not fields (e.g.
    ``tokenizer_path``) are ignored."""
    d = dict(data)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})

  def row_spec(self, pad_id: int = 0) -> packing.RowSpec:
    from vselect_jax.data.sample import processor_params
    return packing.RowSpec(self.rows_per_batch, self.row_length,
                           self.patches_per_row, self.max_images_per_row,
                           self.samples_per_row, pad_id,
                           processor_params(self.family).patch_dim)


class BuildSample(grain.transforms.Map):
  """Record -> sample (plus ``where``, its ``dataset[index]``), or a skip
  marker ``{"skip": kind, "message": ...}``.

  Never raises for a bad record: a worker exception would end the run
  without saying which record or why.
  """

  def __init__(self, builder: SampleBuilder):
    self.builder = builder

  def map(self, record) -> dict:
    try:
      sample = self.builder(record)
      sample["where"] = record.where  # dataset[index], for tools and tests
      return sample
    except RecordError as e:
      return {"skip": e.kind, "message": f"{record.where}: {e}"}
    except Exception as e:  # a bug or an unforeseen input: count and say
      tb = traceback.format_exception_only(type(e), e)[-1].strip()
      return {"skip": "error", "message": f"{record.where}: {tb}"}


def make_sample_dataset(cfg: DataConfig, tokenizer, *, process_index: int = 0,
                        process_count: int = 1, repeat: bool = True,
                        mixture=None) -> grain.MapDataset:
  """The host's share of the mixture as samples / skip markers, in order
  (``mixture``: an already built ``build_mixture`` of ``cfg``)."""
  if mixture is None:
    mixture = build_mixture(cfg.mixture, cfg.registry, cfg.seed)
  log.info("mixture %r: %d records %s", cfg.mixture, len(mixture),
           mixture.counts())
  if not 0 <= process_index < process_count:
    raise ValueError(f"process {process_index} of {process_count}")
  ds = grain.MapDataset.source(mixture)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"process {process_index} of {process_count} gets no "
                     f"records ({len(mixture)} in the mixture)")
  ds = ds.seed(cfg.seed).shuffle()
  if repeat:
    ds = ds.repeat()
  builder = SampleBuilder(tokenizer, min_pixels=cfg.min_pixels,
                          max_pixels=cfg.max_pixels,
                          tokens_per_second=cfg.tokens_per_second,
                          family=cfg.family)
  return ds.map(BuildSample(builder))


class _PackedBatchIterator(grain.DatasetIterator):
  """Packs the sample stream into batches; exact state (module docstring).

  State: {"parent": parent state before the oldest carried sample (or now,
  if none), "carry": offsets of the carried samples from there, "seen":
  records read, "skipped": {kind: n}}. Between the anchor and the last
  carried offset every other element was already consumed.
  """

  def __init__(self, parent, spec: packing.RowSpec, lookahead: int,
               max_skip_fraction: float, min_records: int):
    super().__init__(parent)
    self._spec = spec
    self._lookahead = lookahead
    self._monitor = SkipMonitor(max_skip_fraction, min_records)
    self._log = SkipLog()
    self._carry: list[tuple[int, object, dict]] = []  # (pos, state, sample)
    self._pos = 0               # elements read since the anchor
    self._anchor = self._parent.get_state()
    self._ended = False

  def _read(self, skipped: collections.Counter):
    """Next sample that fits an empty row, as (pos, state_before, sample)."""
    while True:
      before = copy.deepcopy(self._parent.get_state())
      try:
        el = next(self._parent)
      except StopIteration:
        return None
      pos = self._pos
      self._pos += 1
      self._monitor.seen += 1
      if "skip" in el:
        kind, msg = el["skip"], el["message"]
      elif not self._spec.fits_empty_row(el):
        kind = "too_long"
        msg = (f"{el['input_ids'].shape[0]} tokens, "
               f"{el['pixel_values'].shape[0]} patches, "
               f"{el['image_grid_thw'].shape[0]} images > row "
               f"({self._spec.row_length}, {self._spec.patch_capacity}, "
               f"{self._spec.max_images})")
      else:
        return pos, before, el
      skipped[kind] += 1
      self._monitor.counts[kind] += 1
      self._log(kind, f"#{pos}", msg)
      # Checked per record: a stream of nothing but bad records must stop
      # the run, not spin looking for a sample.
      self._monitor.check()

  def __next__(self) -> dict:
    if self._ended and not self._carry:
      raise StopIteration
    builder = packing.BatchBuilder(self._spec)
    skipped = collections.Counter()

    def read_next():
      return self._read(skipped)

    self._carry, self._ended = packing.fill_batch(
        builder, self._carry, read_next, self._lookahead,
        sample_of=lambda item: item[2])
    placed = builder.num_samples
    if placed == 0:  # the stream ended (any skips are in the monitor)
      raise StopIteration
    # Re-anchor at the oldest sample still held, so the state stays small.
    if self._carry:
      base = self._carry[0][0]
      self._anchor = self._carry[0][1]
      self._carry = [(p - base, s, x) for p, s, x in self._carry]
      self._pos -= base
    else:
      self._anchor = copy.deepcopy(self._parent.get_state())
      self._pos = 0
    seen = placed + sum(skipped.values())
    out = builder.arrays()
    out["skipped"] = {k: np.int32(skipped[k]) for k in SKIP_KINDS}
    out["samples_seen"] = np.int32(seen)
    return out

  def get_state(self) -> dict:
    return {"parent": copy.deepcopy(self._anchor),
            "carry": [p for p, _, _ in self._carry],
            "seen": self._monitor.seen,
            "skipped": {k: self._monitor.counts[k] for k in SKIP_KINDS}}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._anchor = copy.deepcopy(state["parent"])
    self._pos = 0
    self._ended = False
    self._monitor.seen = int(state["seen"])
    self._monitor.counts = collections.Counter(
        {k: int(v) for k, v in state["skipped"].items() if int(v)})
    wanted = set(int(p) for p in state["carry"])
    self._carry = []
    # Replay up to the last carried sample; the others were consumed.
    while wanted and self._pos <= max(wanted):
      before = copy.deepcopy(self._parent.get_state())
      el = next(self._parent)
      if self._pos in wanted:
        self._carry.append((self._pos, before, el))
      self._pos += 1


class PackedBatches(grain.IterDataset):
  """Batches of packed rows from a sample stream (``_PackedBatchIterator``)."""

  def __init__(self, parent: grain.IterDataset, spec: packing.RowSpec, *,
               lookahead: int = 8, max_skip_fraction: float = 1.0,
               min_records: int = 200):
    super().__init__(parent)
    self._spec = spec
    self._lookahead = lookahead
    self._max_skip_fraction = max_skip_fraction
    self._min_records = min_records

  def __iter__(self) -> _PackedBatchIterator:
    return _PackedBatchIterator(self._parent.__iter__(), self._spec,
                                self._lookahead, self._max_skip_fraction,
                                self._min_records)

  def __str__(self) -> str:
    return f"PackedBatches({self._spec})"


def _pad_id(tokenizer) -> int:
  if isinstance(tokenizer, str):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer)
  special_token_id(tokenizer, "<|image_pad|>")  # fail early, in the parent
  pad = tokenizer.pad_token_id
  return int(pad) if pad is not None else 0


def make_dataset(cfg: DataConfig, tokenizer, *, process_index: int = 0,
                 process_count: int = 1, repeat: bool = True,
                 mixture=None) -> grain.IterDataset:
  """The host's training stream as a grain ``IterDataset`` of batches."""
  samples = make_sample_dataset(cfg, tokenizer, process_index=process_index,
                                process_count=process_count, repeat=repeat,
                                mixture=mixture)
  it = samples.to_iter_dataset(grain.ReadOptions(
      num_threads=cfg.read_threads, prefetch_buffer_size=cfg.prefetch))
  if cfg.num_workers > 0:
    # grain's workers read absl flags; outside an absl app (pytest, a
    # notebook) nobody parsed them, so take their defaults.
    from absl import flags
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch))
  return PackedBatches(it, cfg.row_spec(_pad_id(tokenizer)),
                       lookahead=cfg.pack_lookahead,
                       max_skip_fraction=cfg.max_skip_fraction,
                       min_records=cfg.skip_check_min_records)


def make_train_iterator(cfg: DataConfig, tokenizer, *,
                        process_index: int | None = None,
                        process_count: int | None = None,
                        repeat: bool = True):
  """The iterator ``train.py`` consumes: endless batches of R packed rows.

  Args:
    cfg: the data settings.
    tokenizer: checkpoint / tokenizer directory, or a tokenizer object.
    process_index, process_count: this host's share; default
      ``jax.process_index()`` / ``jax.process_count()``.
    repeat: False for one pass (tools, tests).

  Returns:
    A grain iterator with ``get_state()`` / ``set_state()`` (JSON-safe
    state) yielding dicts: input_ids, labels, segment_ids int32[R, L];
    position_ids int32[3, R, L]; pixel_values float32[R, P, 1176];
    image_grid_thw int32[R, I, 3]; num_images int32[R]; image_segment
    int32[R, I]; plus ``skipped`` {kind: int32} and ``samples_seen`` int32
    for this batch. Its ``num_records`` is the whole mixture's size (one
    epoch, all hosts).
  """
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
  mixture = build_mixture(cfg.mixture, cfg.registry, cfg.seed)
  it = iter(make_dataset(cfg, tokenizer, process_index=process_index,
                         process_count=process_count, repeat=repeat,
                         mixture=mixture))
  it.num_records = len(mixture)
  return it

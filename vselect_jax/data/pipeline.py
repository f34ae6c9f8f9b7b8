"""The grain pipeline: records -> samples -> packed fixed-shape batches.

    MapDataset.source(records)[pi::pc]      each host reads only its share
      .seed(seed).shuffle().repeat()        a new order every epoch
      .batch(samples_per_batch)             the micro-batch (random access)
      .map(PackBatch)                       decode, tokenise, pack into rows
      .to_iter_dataset(ReadOptions)         (+ multiprocess prefetch)

Packing happens per micro-batch, as the reference packs each micro-batch
into one row: every element is a pure function of its index, so the
iterator state is exact to save and restore, and hosts never coordinate.
Samples that fail (missing or corrupt image, malformed JSON, no assistant
turn, image count mismatch, path outside the dataset root, too long for a
row) are skipped and counted by kind in each batch's ``skipped`` dict;
``SkipMonitor`` stops the run when they exceed the configured fraction.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import threading

import grain
import numpy as np
from PIL import Image
# Imported here, not lazily in the worker threads: concurrent first imports
# of transformers' lazy modules race ("cannot import name AutoTokenizer").
from transformers import AutoTokenizer

from vselect_jax.data import chat, packing, records as records_lib
from vselect_jax.data.image_processor import preprocess_image
from vselect_jax.modeling.rope_index import get_rope_index

SKIP_KINDS = ("malformed", "no_assistant", "image_count", "missing_file",
              "corrupt_image", "bad_path", "too_long", "overflow")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  mixture: str
  registry: dict
  seed: int = 42
  row_length: int = 8192
  patches_per_row: int = 16384
  max_images_per_row: int = 64
  rows_per_batch: int = 8
  samples_per_row: int = 8
  min_pixels: int = 784
  max_pixels: int = 50176
  tokens_per_second: float = 2
  max_skip_fraction: float = 0.01
  num_workers: int = 0


class SkipMonitor:
  """Accumulates skip counts; raises when they exceed the allowed fraction."""

  def __init__(self, max_fraction: float, min_seen: int = 50):
    self.max_fraction = max_fraction
    self.min_seen = min_seen
    self.counts = collections.Counter()
    self.seen = 0

  def update(self, batch: dict) -> None:
    self.seen += int(batch["samples_seen"])
    for kind in SKIP_KINDS:
      self.counts[kind] += int(batch["skipped"][kind])
    skipped = sum(self.counts.values())
    if self.seen >= self.min_seen and skipped > self.max_fraction * self.seen:
      raise RuntimeError(
          f"{skipped} of {self.seen} samples skipped "
          f"({100 * skipped / self.seen:.1f}% > "
          f"{100 * self.max_fraction:.1f}% allowed): {dict(self.counts)}")


class PackBatch(grain.transforms.Map):
  """A micro-batch of records -> ``rows_per_batch`` packed rows."""

  def __init__(self, cfg: DataConfig, tokenizer_path: str):
    self.cfg = cfg
    self.tokenizer_path = tokenizer_path
    self._tok = None
    self._lock = threading.Lock()

  def __getstate__(self):  # pickled into worker processes: no lock, no tok
    return {"cfg": self.cfg, "tokenizer_path": self.tokenizer_path}

  def __setstate__(self, state):
    self.__init__(state["cfg"], state["tokenizer_path"])

  @property
  def tokenizer(self):
    with self._lock:  # loaded lazily, once per process
      if self._tok is None:
        self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path)
    return self._tok

  def sample(self, record: records_lib.Record) -> dict:
    """One record -> a sample dict; ``chat.RecordError`` names failures."""
    cfg = self.cfg
    try:
      obj = records_lib.parse_record(record)
    except ValueError as e:
      raise chat.RecordError("malformed", str(e)) from e
    turns = chat.normalize_turns(obj.get("conversations"))
    paths = obj.get("image", [])
    paths = [paths] if isinstance(paths, str) else paths
    if not isinstance(paths, list):
      raise chat.RecordError("malformed", "image must be a path or a list")
    pixels, grids = [], []
    for rel in paths:
      try:
        full = records_lib.confined_path(record.root, rel)
      except (PermissionError, ValueError) as e:
        raise chat.RecordError("bad_path", str(e)) from e
      try:
        with open(full, "rb") as f:
          data = f.read()
      except OSError as e:
        raise chat.RecordError("missing_file", f"{rel}: {e}") from e
      try:
        img = Image.open(io.BytesIO(data))
        img.load()
      except Exception as e:  # PIL raises many types for broken files
        raise chat.RecordError("corrupt_image", f"{rel}: {e}") from e
      p, g = preprocess_image(img, cfg.min_pixels, cfg.max_pixels)
      pixels.append(p)
      grids.append(g)
    merged = [int(np.prod(g)) // 4 for g in grids]
    ids, labels = chat.tokenize_conversation(self.tokenizer, turns, merged)
    tok = self.tokenizer
    grid_arr = np.array(grids, np.int64).reshape(-1, 3)
    pos, _ = get_rope_index(
        ids[None], image_grid_thw=grid_arr if grids else None,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        tokens_per_second=cfg.tokens_per_second)
    return dict(input_ids=ids, labels=labels, position_ids=pos[:, 0],
                pixel_values=(np.concatenate(pixels) if pixels else
                              np.zeros((0, 1176), np.float32)),
                image_grid_thw=grid_arr.astype(np.int32))

  def map(self, batch_records) -> dict:
    cfg = self.cfg
    skipped = collections.Counter()
    samples = []
    for record in batch_records:
      try:
        samples.append(self.sample(record))
      except chat.RecordError as e:
        skipped[e.kind] += 1
    stats = collections.Counter()
    rows = list(packing.pack(samples, cfg.row_length, cfg.patches_per_row,
                             cfg.max_images_per_row,
                             open_rows=cfg.rows_per_batch, stats=stats))
    skipped["too_long"] += stats["too_long"]
    if len(rows) > cfg.rows_per_batch:  # overflow: rare with sane capacity
      for r in rows[cfg.rows_per_batch:]:
        skipped["overflow"] += int(r["segment_ids"].max())
      rows = rows[:cfg.rows_per_batch]
    while len(rows) < cfg.rows_per_batch:
      rows.append(_empty_row(cfg))
    out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    out["position_ids"] = out["position_ids"].transpose(1, 0, 2)
    out["skipped"] = {k: np.int32(skipped[k]) for k in SKIP_KINDS}
    out["samples_seen"] = np.int32(len(batch_records))
    return out


def _empty_row(cfg: DataConfig) -> dict:
  return dict(input_ids=np.zeros(cfg.row_length, np.int32),
              labels=np.full(cfg.row_length, -100, np.int32),
              segment_ids=np.zeros(cfg.row_length, np.int32),
              position_ids=np.ones((3, cfg.row_length), np.int32),
              pixel_values=np.zeros((cfg.patches_per_row, 1176), np.float32),
              image_grid_thw=np.zeros((cfg.max_images_per_row, 3), np.int32),
              num_images=np.int32(0),
              image_segment=np.zeros(cfg.max_images_per_row, np.int32))


def make_dataset(cfg: DataConfig, tokenizer_path: str, *,
                 process_index: int = 0, process_count: int = 1,
                 repeat: bool = True) -> grain.IterDataset:
  """The host's share of the training stream as a grain ``IterDataset``."""
  recs = records_lib.load_records(cfg.mixture, cfg.registry, cfg.seed)
  ds = grain.MapDataset.source(recs)[process_index::process_count]
  ds = ds.seed(cfg.seed).shuffle()
  if repeat:
    ds = ds.repeat()
  ds = ds.batch(cfg.rows_per_batch * cfg.samples_per_row, drop_remainder=True,
                batch_fn=list)
  ds = ds.map(PackBatch(cfg, tokenizer_path))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                            prefetch_buffer_size=2))
  if cfg.num_workers > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers))
  return it

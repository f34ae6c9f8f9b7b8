"""LLaVA / Cambrian records, the dataset registry and mixtures.

A record is one JSON object in the LLaVA schema::

  {"id": ..., "image": "rel/path.jpg" | ["a.jpg", "b.jpg"],
   "video": "clip.mp4" | "frames_dir" (optional),
   "conversations": [{"from": "human", "value": "<image>\\n..."},
                     {"from": "gpt", "value": "..."}]}

(``role``/``content`` turns are accepted too). The registry maps a dataset
name to where its records live, either

  {"annotation": "x.jsonl", "root": "image/dir"}  JSONL + an image folder, or
  {"array_record": "tfds/data/dir"}               shards written by
                                                  ``array_record_writer``
                                                  (local or a bucket).

A mixture is the reference's syntax, ``"chartqa,coco%10,ocr_vqa"``: ``%NN``
keeps NN percent of a dataset, sampled without replacement by a seeded
``random.Random`` (rates >= 100 keep everything, no up-sampling). The mixed
index is shuffled once with the same seed, as the reference does.
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
from typing import Sequence

import numpy as np

from vselect_jax import paths
from vselect_jax.data.errors import RecordError

# The TFDS builder name the shards are written under (``tfds_builder``).
TFDS_NAME = "cambrian_records"


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One record as read, before parsing.

  Attributes:
    dataset: registry name.
    index: position in its dataset (JSONL: the 0-based non-empty line).
    text: the record's JSON text (parsed, and validated, by the builder).
    root: the media folder for JSONL datasets; None when media is embedded.
    media: embedded media, relative path -> bytes (ArrayRecord shards).
    media_status: embedded media whose bytes could not be stored at write
      time, relative path -> skip kind ("missing_file", "bad_path").
  """
  dataset: str
  index: int
  text: str
  root: str | None = None
  media: dict | None = None
  media_status: dict | None = None

  @property
  def where(self) -> str:
    return f"{self.dataset}[{self.index}]"

  def read_media(self, rel: str) -> bytes:
    """The bytes of a media file named in the record.

    Raises:
      RecordError: ``bad_path`` when ``rel`` leaves the dataset root,
        ``missing_file`` when the file (or embedded entry) does not exist.
    """
    if self.media is not None:
      status = (self.media_status or {}).get(rel)
      if status is not None:
        raise RecordError(status, f"{rel!r}: {status} when the shard was "
                          "written")
      if rel not in self.media:
        raise RecordError("missing_file", f"{rel!r} is not in the shard")
      return self.media[rel]
    try:
      full = confined_path(self.root, rel)
    except (PermissionError, ValueError) as e:
      raise RecordError("bad_path", str(e)) from e
    try:
      with paths.open(full, "rb") as f:
        return f.read()
    except OSError as e:
      raise RecordError("missing_file", f"{rel!r}: {e.strerror or e}") from e


def confined_path(root: str, rel: str) -> str:
  """``root/rel``, refusing any path that resolves outside ``root``.

  Absolute paths are allowed only when they point inside ``root``; ``..``
  and symlinks are resolved before the check. ``root`` may be a URL.

  Raises:
    PermissionError: the path escapes ``root``.
    ValueError: ``rel`` is not a non-empty string.
  """
  if not isinstance(rel, str) or not rel:
    raise ValueError(f"media path must be a non-empty string, got {rel!r}")
  base = paths.resolve(root)
  full = paths.resolve(paths.join(base, rel))
  if full != base and not full.startswith(base + paths.sep(base)):
    raise PermissionError(f"media path {rel!r} escapes its dataset root "
                          f"{root}")
  return full


def parse_record(text: str | bytes) -> dict:
  """The JSON object of a record; ``RecordError("malformed")`` otherwise."""
  try:
    obj = json.loads(text)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RecordError("malformed", f"bad JSON ({e})") from e
  if not isinstance(obj, dict):
    raise RecordError("malformed", f"not a JSON object but "
                      f"{type(obj).__name__}")
  return obj


def media_paths(obj: dict, key: str) -> list[str]:
  """``obj[key]`` ("image" / "video") as a list of paths (empty if absent)."""
  value = obj.get(key)
  if value is None:
    return []
  if isinstance(value, str):
    return [value]
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return list(value)
  raise RecordError("malformed", f"{key!r} must be a path or a list of "
                    f"paths, got {type(value).__name__}")


class JsonlSource:
  """A JSONL annotation file; records keep their text until used."""

  def __init__(self, name: str, annotation: str, root: str):
    if not paths.exists(annotation):
      raise FileNotFoundError(f"dataset {name!r}: annotation file "
                              f"{annotation} does not exist")
    self.name, self.root = name, root
    with paths.open(annotation, encoding="utf-8", errors="replace") as f:
      self._lines = [line for line in f if line.strip()]

  def __len__(self) -> int:
    return len(self._lines)

  def __getitem__(self, i: int) -> RawRecord:
    return RawRecord(self.name, int(i), self._lines[i], root=self.root)


class ArrayRecordSource:
  """Shards written by ``array_record_writer`` (read through TFDS)."""

  def __init__(self, name: str, data_dir: str):
    import tensorflow_datasets as tfds
    self.name, self.data_dir = name, data_dir
    self._source = tfds.data_source(TFDS_NAME, data_dir=data_dir,
                                    split="train")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> RawRecord:
    ex = self._source[int(i)]
    names = [_str(n) for n in ex["media_names"]]
    status = {n: _str(s) for n, s in zip(names, ex["media_status"])
              if _str(s)}
    media = {n: bytes(b) for n, b in zip(names, ex["media_bytes"])
             if n not in status}
    return RawRecord(self.name, int(ex["index"]), _str(ex["record"]),
                     media=media, media_status=status)


def _str(x) -> str:
  return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def open_source(name: str, entry) -> JsonlSource | ArrayRecordSource:
  """The record source of one registry entry."""
  entry = dict(entry)
  if "array_record" in entry:
    return ArrayRecordSource(name, entry["array_record"])
  if "annotation" in entry:
    return JsonlSource(name, entry["annotation"], entry.get("root", ""))
  raise ValueError(f"registry entry {name!r} needs 'annotation' (+ 'root') "
                   f"or 'array_record', got {sorted(entry)}")


def parse_mixture(mixture: str) -> list[tuple[str, float]]:
  """``"a,b%10"`` -> [("a", 1.0), ("b", 0.1)]."""
  out = []
  for part in (p.strip() for p in mixture.split(",")):
    if not part:
      continue
    m = re.search(r"%(\d+)$", part)
    rate = int(m.group(1)) / 100 if m else 1.0
    name = part[:m.start()] if m else part
    out.append((name, rate))
  if not out:
    raise ValueError(f"empty dataset mixture {mixture!r}")
  return out


class Mixture:
  """Random access over the records of a mixture.

  Attributes:
    sources: one record source per dataset of the mixture.
    index: int64[N, 2], (source, record) of every record, in mixed order.
  """

  def __init__(self, sources: Sequence, index: np.ndarray):
    self.sources = list(sources)
    self.index = index

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, i: int) -> RawRecord:
    s, r = self.index[i]
    return self.sources[s][int(r)]

  def counts(self) -> dict[str, int]:
    """Records per dataset."""
    n = np.bincount(self.index[:, 0], minlength=len(self.sources))
    return {src.name: int(c) for src, c in zip(self.sources, n)}


def build_mixture(mixture: str, registry, seed: int) -> Mixture:
  """Opens every dataset of ``mixture`` and samples / shuffles the index.

  Args:
    mixture: e.g. ``"chartqa,coco%10,ocr_vqa"``.
    registry: name -> registry entry (see the module docstring).
    seed: seed of the ``%NN`` sampling and of the one-time shuffle.
  """
  rng = random.Random(seed)
  sources, parts = [], []
  for name, rate in parse_mixture(mixture):
    if name not in registry:
      raise KeyError(f"dataset {name!r} is not in the registry "
                     f"({sorted(registry)})")
    src = open_source(name, registry[name])
    keep = list(range(len(src)))
    if rate < 1.0:
      keep = sorted(rng.sample(keep, int(len(keep) * rate)))
    parts.append(np.stack([np.full(len(keep), len(sources), np.int64),
                           np.asarray(keep, np.int64)], 1).reshape(-1, 2))
    sources.append(src)
  index = np.concatenate(parts)
  order = list(range(len(index)))
  rng.shuffle(order)
  return Mixture(sources, index[order])

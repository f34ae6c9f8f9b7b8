"""LLaVA / Cambrian JSONL records, the dataset registry and mixtures.

A mixture is the reference's syntax, ``"chartqa,coco%10,ocr_vqa"``: names
from the registry, ``%NN`` keeping NN percent of a dataset, sampled without
replacement with a seeded ``random.Random`` (rates >= 100 keep everything,
no up-sampling). The mixed list is shuffled once with the same seed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re


@dataclasses.dataclass(frozen=True)
class Record:
  dataset: str
  root: str
  line: int
  raw: str          # the JSON line; parsed (and validated) by the builder


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


def load_records(mixture: str, registry: dict, seed: int) -> list[Record]:
  """Reads every dataset of the mixture (one ``Record`` per JSONL line).

  Args:
    mixture: e.g. ``"chartqa,coco%10,ocr_vqa"``.
    registry: name -> {"annotation": JSONL path, "root": image dir}.
    seed: sampling and shuffling seed.
  """
  rng = random.Random(seed)
  records = []
  for name, rate in parse_mixture(mixture):
    if name not in registry:
      raise KeyError(f"dataset {name!r} is not in the registry "
                     f"({sorted(registry)})")
    entry = registry[name]
    path, root = entry["annotation"], entry["root"]
    if not os.path.exists(path):
      raise FileNotFoundError(f"dataset {name!r}: annotation file {path} "
                              "does not exist")
    with open(path) as f:
      lines = [Record(name, root, i + 1, line) for i, line in enumerate(f)
               if line.strip()]
    if rate < 1.0:
      lines = rng.sample(lines, int(len(lines) * rate))
    records.extend(lines)
  rng.shuffle(records)
  return records


def confined_path(root: str, rel: str) -> str:
  """``root/rel``, refusing paths that leave ``root`` (``..``, absolute
  paths elsewhere, symlinks out)."""
  if not isinstance(rel, str) or not rel:
    raise ValueError(f"image path must be a non-empty string, got {rel!r}")
  base = os.path.realpath(root)
  full = os.path.realpath(os.path.join(base, rel))
  if full != base and not full.startswith(base + os.sep):
    raise PermissionError(f"image path {rel!r} escapes its dataset root "
                          f"{root}")
  return full


def parse_record(record: Record) -> dict:
  """The JSON object of a record (``ValueError`` if malformed)."""
  try:
    obj = json.loads(record.raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"{record.dataset}:{record.line}: bad JSON ({e})") from e
  if not isinstance(obj, dict):
    raise ValueError(f"{record.dataset}:{record.line}: not a JSON object")
  return obj

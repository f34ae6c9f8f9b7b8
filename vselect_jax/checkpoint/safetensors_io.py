"""Minimal streaming safetensors reader/writer on numpy (bf16 via ml_dtypes).

The ``safetensors`` package's numpy backend cannot return bfloat16, and its
flax backend materialises device arrays; reading the format directly with
``np.memmap`` streams one tensor at a time with no framework involved.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Iterator

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


class SafetensorsError(ValueError):
  pass


def read_header(path: str) -> tuple[dict, int]:
  """Returns (tensor entries, byte offset of the data section)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise SafetensorsError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", raw)
    if n <= 0 or 8 + n > size:
      raise SafetensorsError(f"{path}: corrupt safetensors header length {n}")
    try:
      header = json.loads(f.read(n))
    except json.JSONDecodeError as e:
      raise SafetensorsError(f"{path}: corrupt safetensors header: {e}") from e
  header.pop("__metadata__", None)
  for name, entry in header.items():
    start, end = entry["data_offsets"]
    if entry["dtype"] not in _DTYPES:
      raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype "
                             f"{entry['dtype']}")
    nbytes = int(np.prod(entry["shape"], dtype=np.int64)) * \
        _DTYPES[entry["dtype"]].itemsize
    if end - start != nbytes or 8 + n + end > size:
      raise SafetensorsError(
          f"{path}: tensor {name!r} is truncated or its offsets are corrupt")
  return header, 8 + n


def iter_tensors(path: str) -> Iterator[tuple[str, tuple[int, ...], callable]]:
  """Yields (name, shape, load) per tensor; ``load()`` reads it (memmapped)."""
  header, base = read_header(path)
  mm = np.memmap(path, dtype=np.uint8, mode="r")
  for name in sorted(header):
    entry = header[name]
    start, end = entry["data_offsets"]
    dtype = _DTYPES[entry["dtype"]]
    shape = tuple(entry["shape"])

    def load(start=start, end=end, dtype=dtype, shape=shape):
      return np.asarray(mm[base + start:base + end]).view(dtype).reshape(shape)

    yield name, shape, load


def save_file(tensors: dict[str, np.ndarray], path: str,
              metadata: dict[str, str] | None = None) -> None:
  """Writes tensors (sorted by name, so the bytes are deterministic)."""
  header = {}
  offset = 0
  names = sorted(tensors)
  for name in names:
    arr = np.ascontiguousarray(tensors[name])
    if arr.dtype not in _NAMES:
      raise SafetensorsError(f"cannot store dtype {arr.dtype} ({name!r})")
    header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
  if metadata:
    header["__metadata__"] = dict(metadata)
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # data section 8-byte aligned
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for name in names:
      f.write(np.ascontiguousarray(tensors[name]).tobytes())


def checkpoint_files(src: str) -> list[str]:
  """The safetensors files of an HF checkpoint dir (single or sharded)."""
  index = os.path.join(src, "model.safetensors.index.json")
  if os.path.exists(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map", {})
    files = sorted(set(weight_map.values()))
    missing = [p for p in files if not os.path.exists(os.path.join(src, p))]
    if missing:
      raise FileNotFoundError(
          f"{src}: shards listed in model.safetensors.index.json are missing: "
          f"{missing}")
    return [os.path.join(src, p) for p in files]
  single = os.path.join(src, "model.safetensors")
  if os.path.exists(single):
    return [single]
  raise FileNotFoundError(
      f"{src}: no model.safetensors or model.safetensors.index.json")

"""Reading and writing converted vselect-jax checkpoints.

A converted directory holds:
  config.json            the HF config (the architecture is read from it)
  vselect_jax.json       format marker: version, dtype, whether a scorer exists
  params/                Orbax checkpoint of the nested parameter tree
  tokenizer / processor / chat-template files copied from the HF dir.
"""
from __future__ import annotations

import json
import os

import numpy as np

from vselect_jax import paths

MARKER = "vselect_jax.json"
FORMAT_VERSION = 1


def is_converted(path: str) -> bool:
  return paths.isfile(paths.join(path, MARKER))


def nest(flat: dict[tuple, np.ndarray]) -> dict:
  """{('a', 0, 'b'): x} -> {'a': {'0': {'b': x}}} (Orbax wants str keys)."""
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(str(p), {})
    node[str(path[-1])] = value
  return tree


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  out = {}
  for k, v in tree.items():
    key = int(k) if isinstance(k, str) and k.isdigit() else k
    if isinstance(v, dict):
      out.update(flatten(v, prefix + (key,)))
    else:
      out[prefix + (key,)] = v
  return out


def save_params(path: str, flat: dict[tuple, np.ndarray]) -> None:
  import orbax.checkpoint as ocp
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(paths.absolute(path), nest(flat))
  ckpt.wait_until_finished()


def load_params(path: str) -> dict[tuple, np.ndarray]:
  import orbax.checkpoint as ocp
  params_dir = paths.join(paths.absolute(path), "params")
  if not paths.isdir(params_dir):
    raise FileNotFoundError(f"{path}: converted checkpoint has no params/")
  return flatten(ocp.StandardCheckpointer().restore(params_dir))


def read_marker(path: str) -> dict:
  with paths.open(paths.join(path, MARKER)) as f:
    marker = json.load(f)
  if marker.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: unsupported vselect-jax checkpoint format "
                     f"{marker.get('format_version')!r}")
  return marker


def write_marker(path: str, **fields) -> None:
  with paths.open(paths.join(path, MARKER), "w") as f:
    json.dump({"format_version": FORMAT_VERSION, **fields}, f, indent=2)

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
import re
import sys

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


# Files every Orbax checkpoint that ``save_params`` writes has (OCDBT).
_ORBAX_FILES = ("_METADATA", "manifest.ocdbt")


def load_params(path: str, targets: dict | None = None) -> dict[tuple, object]:
  """The flat parameter dict of the converted checkpoint ``path``.

  Args:
    path: the converted directory (local or gs://).
    targets: None (numpy arrays, as stored), or parameter path ->
      ``jax.ShapeDtypeStruct`` with the dtype to cast to and the
      ``sharding`` to place on: each device's block is then read by itself
      (tensorstore), never the whole tensor onto one device, and only the
      given parameters are read.

  Raises:
    FileNotFoundError: one line naming the checkpoint and what is missing
      or unreadable (no params/, an Orbax file gone, a data file gone).
  """
  import orbax.checkpoint as ocp
  params_dir = paths.join(paths.absolute(path), "params")
  if not paths.isdir(params_dir):
    raise FileNotFoundError(f"{path}: converted checkpoint has no params/")
  for name in _ORBAX_FILES:
    if not paths.isfile(paths.join(params_dir, name)):
      raise FileNotFoundError(
          f"{path}: converted checkpoint is incomplete: params/{name} is "
          "missing (convert it again)")
  try:
    tree = ocp.StandardCheckpointer().restore(
        params_dir, None if targets is None else nest(targets))
  except Exception as e:  # tensorstore / orbax: a file inside params/
    _quiet_closed_loop_callbacks()
    raise FileNotFoundError(
        f"{path}: converted checkpoint is damaged: {_what_failed(e)} "
        "(convert it again)") from None
  return flatten(tree)


def _what_failed(e: Exception) -> str:
  """The file tensorstore could not read, from its long message."""
  text = str(e)
  files = re.findall(r'local file "([^"]+)"', text)
  missing = [f for f in files if not os.path.exists(f)]
  if missing:
    return f"{missing[-1]} is missing"
  if files:
    return f"cannot read {files[-1]}: {text.splitlines()[0][:200]}"
  return f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _quiet_closed_loop_callbacks() -> None:
  """After a failed restore, tensorstore completes the reads still in flight
  onto orbax's event loop, which is closed by then: each prints a
  ``RuntimeError: Event loop is closed`` traceback (~70 lines in all)
  through ``sys.unraisablehook``. Drops exactly those; anything else still
  reaches the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "_vselect_quiet", False):
    return

  def hook(unraisable):
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
      return
    previous(unraisable)
  hook._vselect_quiet = True
  sys.unraisablehook = hook


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

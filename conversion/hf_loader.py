"""Streams an HF Qwen2.5-VL checkpoint into vselect-jax parameter arrays.

Every tensor is read, renamed, transformed and cast one at a time, so peak
memory is one copy of the model (in the target dtype) plus one tensor.
"""
from __future__ import annotations

import numpy as np

from conversion import key_map
from conversion.safetensors_io import checkpoint_files, iter_tensors


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not match the model the config describes."""


def _short(items, limit=20):
  items = sorted(items)
  more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


def read_hf_params(src: str, expected: dict[tuple, tuple[int, ...]], dtype,
                   *, optional_prefixes: tuple[tuple, ...] = (),
                   tied_embeddings: bool = False, progress: bool = False
                   ) -> dict[tuple, np.ndarray]:
  """Reads and converts all tensors of ``src``.

  Args:
    src: HF checkpoint dir (``model.safetensors`` or a sharded index).
    expected: parameter path -> shape of the target model.
    dtype: numpy dtype to cast floating tensors to.
    optional_prefixes: path prefixes that may be missing (e.g. the selector's
      scorer, which base Qwen checkpoints lack).
    tied_embeddings: the model ties ``lm_head`` to the embedding; an
      ``lm_head.weight`` in the file is then ignored.
    progress: show a progress bar.

  Returns:
    path -> converted numpy array, for every tensor found.

  Raises:
    CheckpointMismatchError: listing missing, unexpected and misshapen tensors.
  """
  files = checkpoint_files(src)
  entries = [(f, *t) for f in files for t in iter_tensors(f)]
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(total=len(entries), desc="converting", unit="tensor")
  params, unexpected, misshapen = {}, [], []
  for _, name, shape, load in entries:
    key = key_map.normalize_hf_key(name)
    if bar is not None:
      bar.update(1)
    if tied_embeddings and key == "lm_head.weight":
      continue
    module, leaf = key_map.hf_key_to_path(key)
    if leaf == "weight" and module + ("kernel",) in expected:
      path = module + ("kernel",)
    else:
      path = module + (leaf,)
    if path not in expected:
      unexpected.append(name)
      continue
    value = key_map.to_jax(load(), leaf, path[-1], expected[path])
    if tuple(value.shape) != tuple(expected[path]):
      misshapen.append(f"{name} {tuple(shape)} (expected "
                       f"{tuple(expected[path])} after conversion, got "
                       f"{tuple(value.shape)})")
      continue
    if np.issubdtype(value.dtype, np.floating) or value.dtype.kind == "V":
      value = value.astype(dtype)
    params[path] = np.ascontiguousarray(value)
  if bar is not None:
    bar.close()
  missing = [p for p in expected if p not in params and not any(
      p[:len(o)] == o for o in optional_prefixes)]
  if missing or unexpected or misshapen:
    lines = [f"checkpoint {src} does not match the model in its config.json:"]
    if missing:
      lines.append(f"  missing ({len(missing)}): " + _short(
          key_map.path_to_hf_key(p) for p in missing))
    if unexpected:
      lines.append(f"  unexpected ({len(unexpected)}): " + _short(unexpected))
    if misshapen:
      lines.append(f"  wrong shape ({len(misshapen)}): " + _short(misshapen))
    raise CheckpointMismatchError("\n".join(lines))
  return params

"""Reads an HF Qwen2.5-VL checkpoint into vselect-jax parameters.

Headers first (``plan_hf_params``: every expected tensor present with the
right shape, or an error listing what is not), then tensors read lazily from
memory-mapped files: whole (``read_hf_params``, for conversion) or one
device's block at a time (``TensorSource.read(index)``, for loading straight
onto a mesh).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from vselect_jax.checkpoint import key_map
from vselect_jax.checkpoint.safetensors_io import checkpoint_files, iter_tensors


class CheckpointMismatchError(ValueError):
  """The checkpoint's tensors do not match the model the config describes."""


def _short(items, limit=20):
  items = sorted(items)
  more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
  return ", ".join(items[:limit]) + more


@dataclasses.dataclass(frozen=True)
class TensorSource:
  """One HF tensor feeding one parameter, read lazily (memory-mapped)."""
  name: str
  hf_shape: tuple[int, ...]
  shape: tuple[int, ...]        # after conversion
  transposed: bool              # an HF Linear / Conv weight -> our kernel
  load: Callable[[], np.ndarray]

  def read(self, index: tuple = (), dtype=None) -> np.ndarray:
    """The converted tensor, or its block ``index`` (a tuple of slices in
    the converted layout); only the bytes of that block are touched."""
    value = self.load()
    if self.transposed:
      value = value.reshape(value.shape[0], -1)
      index = tuple(index) + (slice(None),) * (2 - len(index))
      value = value[index[1], index[0]].T
    else:
      value = value[tuple(index)]
    if dtype is not None and (np.issubdtype(value.dtype, np.floating)
                              or value.dtype.kind == "V"):
      value = value.astype(dtype)
    return np.ascontiguousarray(value)


def plan_hf_params(src: str, expected: dict[tuple, tuple[int, ...]], *,
                   optional_prefixes: tuple[tuple, ...] = (),
                   tied_embeddings: bool = False
                   ) -> dict[tuple, TensorSource]:
  """Matches the tensors of ``src`` to the model's parameters, reading only
  the headers.

  Args:
    src: HF checkpoint dir (``model.safetensors`` or a sharded index).
    expected: parameter path -> shape of the target model.
    optional_prefixes: path prefixes that may be missing (e.g. the selector's
      scorer, which base Qwen checkpoints lack).
    tied_embeddings: the model ties ``lm_head`` to the embedding; an
      ``lm_head.weight`` in the file is then ignored.

  Returns:
    parameter path -> its source, for every tensor found.

  Raises:
    CheckpointMismatchError: listing missing, unexpected and misshapen tensors.
  """
  files = checkpoint_files(src)
  plan, unexpected, misshapen = {}, [], []
  for f in files:
    for name, shape, load in iter_tensors(f):
      key = key_map.normalize_hf_key(name)
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
      transposed = leaf == "weight" and path[-1] == "kernel"
      got = ((int(np.prod(shape[1:])), shape[0]) if transposed and shape
             else tuple(shape))
      if tuple(got) != tuple(expected[path]):
        misshapen.append(f"{name} {tuple(shape)} (expected "
                         f"{tuple(expected[path])} after conversion, got "
                         f"{tuple(got)})")
        continue
      plan[path] = TensorSource(name, tuple(shape), tuple(got), transposed,
                                load)
  missing = [p for p in expected if p not in plan and not any(
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
  return plan


def read_hf_params(src: str, expected: dict[tuple, tuple[int, ...]], dtype,
                   *, optional_prefixes: tuple[tuple, ...] = (),
                   tied_embeddings: bool = False, progress: bool = False
                   ) -> dict[tuple, np.ndarray]:
  """Reads and converts all tensors of ``src`` (``plan_hf_params``), one at a
  time, cast to ``dtype``: peak memory is the result plus one tensor."""
  plan = plan_hf_params(src, expected, optional_prefixes=optional_prefixes,
                        tied_embeddings=tied_embeddings)
  items = plan.items()
  if progress:
    from tqdm import tqdm
    items = tqdm(items, total=len(plan), desc="converting", unit="tensor")
  return {path: source.read((), dtype) for path, source in items}

"""HF Qwen2.5-VL tensor names <-> vselect-jax parameter paths.

Module paths mirror HF, so the mapping is a few rename rules:

| HF (either layout)                         | vselect-jax path                    |
|--------------------------------------------|-------------------------------------|
| ``model.visual.X`` / ``visual.X``          | ``visual/X``                        |
| ``model.language_model.X`` / ``model.X``   | ``model/X``                         |
| ``lm_head.weight``                         | ``lm_head/kernel``                  |
| ``...merger.mlp.{0,2}``                    | ``.../merger/mlp_{0,2}``            |
| ``...{down,output}_mlp.<i>`` (predictor)   | ``.../{down,output}_mlp_<i>``       |
| ``X.weight`` of a Linear ([out, in])       | ``X/kernel`` ([in, out], transposed)|
| ``visual.patch_embed.proj.weight`` (Conv3d)| ``.../proj/kernel`` = W.reshape(out, -1).T |
| ``X.weight`` of a norm / embedding         | ``X/weight`` (unchanged)            |

Whether ``weight`` becomes ``kernel`` is decided by the target module (it has
a ``kernel`` or a ``weight``), so the table needs no per-layer entries.
"""
from __future__ import annotations

import re

import numpy as np

Path = tuple

SCORER_PREFIX = "visual.importance_scorer."


def normalize_hf_key(key: str) -> str:
  """Maps transformers >= 4.52 in-memory names to the hub (4.50) names."""
  if key.startswith("model.visual."):
    return key[len("model."):]
  if key.startswith("model.language_model."):
    return "model." + key[len("model.language_model."):]
  return key


def hf_key_to_path(key: str) -> tuple[Path, str]:
  """Returns (module path, HF leaf name) for a hub-layout key."""
  key = re.sub(r"merger\.mlp\.(\d+)\.", r"merger.mlp_\1.", key)
  key = re.sub(r"(down_mlp|output_mlp)\.(\d+)\.", r"\1_\2.", key)
  parts = key.split(".")
  module = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
  return module, parts[-1]


def path_to_hf_key(path: Path) -> str:
  """Inverse of the mapping for a vselect-jax parameter path (hub layout)."""
  *module, leaf = path
  name = ".".join(str(p) for p in module)
  name = re.sub(r"merger\.mlp_(\d+)", r"merger.mlp.\1", name)
  name = re.sub(r"(down_mlp|output_mlp)_(\d+)", r"\1.\2", name)
  return f"{name}.{'weight' if leaf == 'kernel' else leaf}"


def to_jax(value: np.ndarray, leaf: str, target_leaf: str,
           target_shape: tuple[int, ...]) -> np.ndarray:
  """Transforms one HF tensor for a target leaf (``kernel`` / ``weight`` /
  ``bias``)."""
  if leaf == "weight" and target_leaf == "kernel":
    if value.ndim > 2:  # Conv3d patch embedding, kernel == stride
      value = value.reshape(value.shape[0], -1)
    value = value.T
  return value


def to_hf(value: np.ndarray, path: Path, hf_shape: tuple[int, ...] | None
          ) -> np.ndarray:
  """Inverse of ``to_jax``; ``hf_shape`` restores the Conv3d kernel shape."""
  if path[-1] == "kernel":
    value = value.T
    if hf_shape is not None and len(hf_shape) > 2:
      value = value.reshape(hf_shape)
  return value

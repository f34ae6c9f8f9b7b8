"""Write a whole model back as an HF Qwen2.5-VL checkpoint.

Used after training backbone parts (``train_parts``): the result is an
ordinary HF directory (``config.json``, ``model.safetensors``, tokenizer
files), loadable by ``transformers`` and convertible like any other.
Non-weight files come from the source directory (HF or converted: both keep
the HF ``config.json`` and the tokenizer files). Either side may be a
``gs://`` URL; a remote ``dst`` is staged locally and uploaded with
``config.json`` last.
"""
from __future__ import annotations

import os

import ml_dtypes
import numpy as np

from vselect_jax import paths
from vselect_jax.checkpoint import key_map
from vselect_jax.checkpoint.safetensors_io import save_file
from vselect_jax.config import VLMConfig

_WEIGHT_FILES = (".safetensors", ".bin", ".pt", "model.safetensors.index.json",
                 "vselect_jax.json")
_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float32": np.dtype(np.float32)}


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = np.asarray(v)
  return out


# The trained selection modules (post-tower scorer, in-tower scorer,
# Dynamic-Qwen's predictor): a backbone export leaves them out.
_SCORERS = frozenset({"importance_scorer", "block_scorer",
                      "image_score_predictor"})


def hf_tensors(params: dict, cfg: VLMConfig, dtype: str = "bfloat16",
               include_scorer: bool = True) -> dict[str, np.ndarray]:
  """HF-named torch-layout tensors of a full parameter tree."""
  v = cfg.vision
  conv = (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size,
          v.patch_size)
  out = {}
  for path, value in flatten(params).items():
    path = tuple(int(p) if isinstance(p, str) and p.isdigit() else p
                 for p in path)
    if not include_scorer and _SCORERS.intersection(path):
      continue
    key = key_map.path_to_hf_key(path)
    shape = conv if key == "visual.patch_embed.proj.weight" else None
    out[key] = np.ascontiguousarray(
        key_map.to_hf(value.astype(np.float32), path, shape)).astype(
            _DTYPES[dtype])
  if cfg.text.tie_word_embeddings:
    out.pop("lm_head.weight", None)
  return out


def export_hf(params: dict, cfg: VLMConfig, src: str, dst: str,
              dtype: str = "bfloat16", include_scorer: bool = True) -> str:
  """Writes ``dst`` (replaced if present) and returns it.

  Args:
    params: the model's pure parameter tree (``nnx.State.to_pure_dict``).
    cfg: its config.
    src: directory holding the HF ``config.json`` and tokenizer files.
    include_scorer: also write the selection modules (``visual.importance_scorer.*``,
      ``visual.block_scorer.*``, ``model.image_score_predictor.*``).
  """
  with paths.staged_dir(dst, last=("config.json",),
                        prefix=".export-") as tmp:
    for name in paths.listdir(src):
      full = paths.join(src, name)
      if paths.isfile(full) and not name.endswith(_WEIGHT_FILES):
        paths.copy(full, os.path.join(tmp, name))
    if not os.path.exists(os.path.join(tmp, "config.json")):
      raise FileNotFoundError(f"{src} has no config.json to copy")
    save_file(hf_tensors(params, cfg, dtype, include_scorer),
              os.path.join(tmp, "model.safetensors"),
              metadata={"format": "pt"})
  return dst

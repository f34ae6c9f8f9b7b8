"""HF Qwen2.5-VL or LLaVA-OneVision-1.5 (or VisionSelector) checkpoint ->
converted vselect-jax directory (behind ``conversion.convert_hf``; the
family comes from config.json).

``convert`` checks every expected tensor (``hf_reader.plan_hf_params``),
streams them tensor by tensor, writes the Orbax parameters, ``config.json``,
the tokenizer / processor files and the format marker, staged beside the
destination (or locally, for a ``gs://`` one, uploaded marker last), so a
destination is never half-written.
"""
from __future__ import annotations

import os
import shutil

import numpy as np

from vselect_jax import paths

# Tokenizer, processor and template files travel with the weights.
AUX_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
    "special_tokens_map.json", "added_tokens.json", "chat_template.json",
    "chat_template.jinja", "preprocessor_config.json",
    "video_preprocessor_config.json", "processor_config.json",
    "generation_config.json")


def convert(src: str, dst: str, dtype: str = "bfloat16", *,
            progress: bool = True, overwrite: bool = False) -> dict:
  """Converts ``src`` into ``dst``; returns a summary dict."""
  from vselect_jax.loading import resolve_dtype, resolve_path

  jdtype = resolve_dtype(dtype)
  if paths.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")
  if paths.is_remote(src):  # the safetensors reader memmaps local files
    with paths.local_copy(src) as local:
      return _convert(local, dst, jdtype, progress, source=src)
  src = resolve_path(src)
  return _convert(src, dst, jdtype, progress, source=os.path.abspath(src))


def _convert(src: str, dst: str, jdtype, progress: bool, source: str) -> dict:
  """``convert`` from a local HF directory ``src``."""
  from vselect_jax.checkpoint import converted as model_io
  from vselect_jax.checkpoint.hf_reader import read_hf_params
  from vselect_jax.config import read_model_config
  from vselect_jax.loading import (BLOCK_SCORER_PATH, PREDICTOR_PATH,
                                   SCORER_PATH, abstract_model,
                                   expected_shapes)

  cfg = read_model_config(src)
  _, abs_state = abstract_model(cfg, jdtype)
  expected = expected_shapes(abs_state)
  params = read_hf_params(
      src, expected, np.dtype(jdtype),
      optional_prefixes=(SCORER_PATH, BLOCK_SCORER_PATH, PREDICTOR_PATH),
      tied_embeddings=cfg.text.tie_word_embeddings, progress=progress)
  has_scorer = any(p[:len(SCORER_PATH)] == SCORER_PATH for p in params)
  has_block_scorer = any(p[:len(BLOCK_SCORER_PATH)] == BLOCK_SCORER_PATH
                         for p in params)
  has_predictor = any(p[:len(PREDICTOR_PATH)] == PREDICTOR_PATH
                      for p in params)

  with paths.staged_dir(dst, last=(model_io.MARKER,),
                        prefix=".convert-") as stage:
    model_io.save_params(os.path.join(stage, "params"), params)
    shutil.copy(os.path.join(src, "config.json"), stage)
    copied = []
    for name in AUX_FILES:
      if os.path.exists(os.path.join(src, name)):
        shutil.copy(os.path.join(src, name), stage)
        copied.append(name)
    model_io.write_marker(stage, dtype=str(np.dtype(jdtype)),
                          has_scorer=has_scorer,
                          has_block_scorer=has_block_scorer,
                          has_predictor=has_predictor, source=source)
  n = sum(int(np.prod(v.shape)) for v in params.values())
  return {"dst": dst, "tensors": len(params), "parameters": n,
          "has_scorer": has_scorer, "copied": copied}

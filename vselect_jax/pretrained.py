"""``from_pretrained`` and the user-facing model object.

    model = vselect_jax.from_pretrained(path, dtype="float32")
    out = model.forward(input_ids, attention_mask=None, pixel_values=None,
                        image_grid_thw=None, ...)
    out.logits  # float32[batch, seq, vocab]

``path`` may be a converted vselect-jax directory, an HF Qwen2.5-VL
directory (converted in memory, streamed tensor by tensor), or a hub id
(downloaded with huggingface_hub; needs the network).
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vselect_jax.config import VLMConfig
from vselect_jax.inputs import prepare_batch
from vselect_jax.modeling.vlm import Qwen25VL
from vselect_jax import model_io

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16}


def resolve_dtype(dtype) -> jnp.dtype:
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return jnp.dtype(_DTYPES[dtype])
  return jnp.dtype(dtype)


def resolve_path(path: str) -> str:
  """A local dir as is; anything else is treated as an HF hub id."""
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    raise ValueError(f"{path!r} is a file; expected a checkpoint directory")
  try:
    from huggingface_hub import snapshot_download
    return snapshot_download(
        path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                              "*.jinja", "*.py"])
  except Exception as e:  # offline, unknown repo, no permission...
    raise FileNotFoundError(
        f"{path!r} is not a local directory and could not be fetched from the "
        f"Hugging Face Hub ({type(e).__name__}: {e}). Offline, pass the path "
        "of a downloaded or converted checkpoint.") from e


def abstract_model(cfg: VLMConfig, dtype) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and shape-only state; nothing is allocated."""
  model = nnx.eval_shape(lambda: Qwen25VL(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  return nnx.split(model)


def expected_shapes(abs_state: nnx.State) -> dict[tuple, tuple[int, ...]]:
  return {tuple(p): tuple(v.get_value().shape)
          for p, v in abs_state.flat_state()}


SCORER_PATH = ("visual", "importance_scorer")


def build_model(cfg: VLMConfig, params: dict[tuple, np.ndarray], dtype, *,
                seed: int = 0, source: str = "") -> Qwen25VL:
  """Instantiates the model from a flat parameter dict.

  All backbone parameters must be present. Missing scorer parameters (a base
  Qwen checkpoint) are freshly initialised, and that is said loudly once.
  """
  graphdef, abs_state = abstract_model(cfg, dtype)
  flat = [(tuple(p), v) for p, v in abs_state.flat_state()]
  if any(p[:2] == SCORER_PATH and p not in params for p, _ in flat):
    from vselect_jax.selector.scorer import ImportanceScorer
    fresh = ImportanceScorer(cfg.text.hidden_size, dtype=dtype,
                             rngs=nnx.Rngs(seed))
    params = dict(params)
    for p, v in nnx.state(fresh).flat_state():
      params.setdefault(SCORER_PATH + tuple(p), np.asarray(v.get_value()))
    logging.warning(
        "vselect_jax: %s has no VisionSelector scorer weights "
        "(visual.importance_scorer.*); the scorer is FRESHLY INITIALISED "
        "(seed %d). Budgeted selection is meaningless until it is trained.",
        source or "the checkpoint", seed)
  leaves = []
  for path, var in flat:
    if path not in params:
      raise KeyError(f"parameter {'/'.join(map(str, path))} is missing")
    leaves.append((path, var.replace(jnp.asarray(params[path], dtype=dtype))))
  return nnx.merge(graphdef, nnx.State.from_flat_path(leaves))


@dataclasses.dataclass
class ForwardOutput:
  logits: np.ndarray          # float32[B, T, V]
  rope_deltas: np.ndarray     # int32[B, 1]


class VisionLanguageModel:
  """A loaded Qwen2.5-VL (+ VisionSelector) model with a numpy-in/numpy-out
  ``forward`` that pads to buckets and compiles once per bucket."""

  def __init__(self, config: VLMConfig, model: Qwen25VL, *,
               seq_multiple: int = 64):
    self.config = config
    self.module = model
    self.seq_multiple = seq_multiple
    self.graphdef, self.state = nnx.split(model)
    self.num_compiles = 0
    self._forward_jit = jax.jit(self._forward_impl,
                                static_argnames=("has_vision",))

  @property
  def dtype(self):
    return self.module.model.embed_tokens.weight.get_value().dtype

  def _forward_impl(self, state, batch, has_vision: bool):
    self.num_compiles += 1  # runs at trace time only: counts compilations
    model = nnx.merge(self.graphdef, state)
    merged = None
    if has_vision:
      merged = model.visual(batch["pixel_values"], batch)
    x = model.embed(batch["input_ids"], batch["visual_index"], merged)
    hidden = model.model(x, batch["position_ids"], batch["segment_ids"])
    return model.head(hidden)

  def forward(self, input_ids, attention_mask=None, pixel_values=None,
              image_grid_thw=None, pixel_values_videos=None,
              video_grid_thw=None, second_per_grid_ts=None,
              **unused) -> ForwardOutput:
    """Full forward pass on HF-processor inputs (numpy, torch or lists).

    Extra processor keys (``mm_token_type_ids``...) are accepted and ignored.

    Returns:
      ``ForwardOutput`` with ``logits`` float32[B, L, V] (padding positions
      hold unspecified values) and the M-RoPE ``rope_deltas``.
    """
    prep = prepare_batch(
        self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
        pixel_values_videos, video_grid_thw, second_per_grid_ts,
        seq_multiple=self.seq_multiple)
    logits = self._forward_jit(self.state, prep.arrays,
                               has_vision=prep.has_vision)
    return ForwardOutput(np.asarray(logits)[:, :prep.seq_len],
                         prep.rope_deltas)


def from_pretrained(path: str, dtype="float32", *, progress: bool = False
                    ) -> VisionLanguageModel:
  """Loads a converted vselect-jax dir, an HF dir, or an HF hub id."""
  jdtype = resolve_dtype(dtype)
  path = resolve_path(path)
  cfg = VLMConfig.from_pretrained(path)
  if model_io.is_converted(path):
    model_io.read_marker(path)
    params = model_io.load_params(path)
  else:
    from conversion.hf_loader import read_hf_params
    _, abs_state = abstract_model(cfg, jdtype)
    params = read_hf_params(path, expected_shapes(abs_state),
                            np.dtype(jdtype), optional_prefixes=(SCORER_PATH,),
                            tied_embeddings=cfg.text.tie_word_embeddings,
                            progress=progress)
  return VisionLanguageModel(cfg, build_model(cfg, params, jdtype,
                                              source=path))

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
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vselect_jax.config import VLMConfig
from vselect_jax.inputs import prepare_batch
from vselect_jax.modeling.buckets import bucket
from vselect_jax.selector import select
from vselect_jax.selector.budget import budget_to_k
from vselect_jax.modeling.vlm import Qwen25VL
from vselect_jax import generation, model_io

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
  """Result of ``forward``.

  Without a budget ``logits`` is float32[B, L, V] over the input positions.
  With a budget the visual tokens not selected are dropped before the LLM:
  ``logits`` is float32[B, Lc, V] over the kept positions (rows packed to
  the left, padded to the longest row), ``keep_index`` int32[B, Lc] gives
  each output position's index in the input (-1 for padding), and
  ``scores`` / ``soft_mask`` float32[B, L] are the scorer's view at the input
  positions (0 where not visual). ``rope_deltas`` int32[B, 1] is always the
  uncompressed prompt's: decoding continues at max position + 1 + step.
  """
  logits: np.ndarray
  rope_deltas: np.ndarray
  keep_index: np.ndarray | None = None
  scores: np.ndarray | None = None
  soft_mask: np.ndarray | None = None


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
    self._select_jit = jax.jit(
        self._select_impl,
        static_argnames=("size", "per_image", "method", "seed"))
    # Prefill and decode are two programs so that prefill can be timed on
    # its own (the reference's protocol); the cache stays on the device.
    self._prefill_jit = jax.jit(
        self._prefill_impl,
        static_argnames=("max_new_tokens", "has_vision", "size", "per_image",
                         "method", "seed"))
    self._decode_jit = jax.jit(self._decode_impl,
                               static_argnames=("max_new_tokens",))

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

  def _select_impl(self, state, batch, k_token, k_row, size: int,
                   per_image: bool, method: str, seed: int):
    self.num_compiles += 1  # trace time only
    model = nnx.merge(self.graphdef, state)
    return select.compressed_forward(model, batch, k_token, k_row, size,
                                     per_image, method, seed)

  def forward(self, input_ids, attention_mask=None, pixel_values=None,
              image_grid_thw=None, pixel_values_videos=None,
              video_grid_thw=None, second_per_grid_ts=None, *,
              budget: float | None = None, per_image: bool = False,
              method: str = "selector", seed: int = 0,
              **unused) -> ForwardOutput:
    """Forward pass on HF-processor inputs (numpy, torch or lists).

    Extra processor keys (``mm_token_type_ids``...) are accepted and ignored.

    Args:
      budget: fraction of visual tokens to keep, in (0, 1] (one number, or
        one per row); None runs the base model. Each row keeps k = max(1, floor(N * budget)) of its N
        visual tokens (0 if it has none), pooled over all its images and
        frames like the reference, or per image with ``per_image``.
      method: "selector" (default), or a baseline: "random" (``seed``),
        "uniform", "divprune".

    Returns:
      ``ForwardOutput`` (see its docstring).
    """
    prep = prepare_batch(
        self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
        pixel_values_videos, video_grid_thw, second_per_grid_ts,
        seq_multiple=self.seq_multiple)
    if budget is None:
      logits = self._forward_jit(self.state, prep.arrays,
                                 has_vision=prep.has_vision)
      return ForwardOutput(np.asarray(logits)[:, :prep.seq_len],
                           prep.rope_deltas)
    _check_method(method, per_image)
    k_token, k_row = selection_budgets(prep, budget, per_image)
    if not prep.has_vision:  # text only: nothing to select
      out = self.forward(input_ids, attention_mask)
      seg = prep.arrays["segment_ids"][:, :prep.seq_len]
      keep = np.where(seg > 0, np.arange(prep.seq_len)[None], -1)
      keep = np.stack([np.concatenate([r[r >= 0], r[r < 0]]) for r in keep])
      logits = np.take_along_axis(out.logits, np.maximum(keep, 0)[..., None],
                                  axis=1)
      zeros = np.zeros(seg.shape, np.float32)
      return ForwardOutput(logits, prep.rope_deltas, keep.astype(np.int32),
                           zeros, zeros)
    seg = prep.arrays["segment_ids"]
    lengths = seg.sum(1) - prep.num_visual + k_row
    size = bucket(int(lengths.max()), self.seq_multiple)
    logits, keep, scores, soft = self._select_jit(
        self.state, prep.arrays, k_token, k_row, size=size,
        per_image=per_image, method=method, seed=int(seed))
    n = int(lengths.max())
    visual = prep.arrays["visual_index"][:, :prep.seq_len] >= 0
    return ForwardOutput(
        np.asarray(logits)[:, :n], prep.rope_deltas, np.asarray(keep)[:, :n],
        np.where(visual, np.asarray(scores)[:, :prep.seq_len], 0.0),
        np.where(visual, np.asarray(soft)[:, :prep.seq_len], 0.0))


  def _prefill_impl(self, state, batch, k_token, k_row, *, max_new_tokens,
                    has_vision, size, per_image, method, seed):
    self.num_compiles += 1  # trace time only
    model = nnx.merge(self.graphdef, state)
    selection = None if size is None else (k_token, k_row, size, per_image,
                                           method, seed)
    return generation.prefill(model, batch, max_new_tokens=max_new_tokens,
                              has_vision=has_vision, selection=selection)

  def _decode_impl(self, state, first, cache, next_position, eos, pad, *,
                   max_new_tokens):
    self.num_compiles += 1  # trace time only
    model = nnx.merge(self.graphdef, state)
    return generation.decode(model, first, cache, next_position, eos, pad,
                             max_new_tokens=max_new_tokens)

  def generate(self, input_ids, attention_mask=None, pixel_values=None,
               image_grid_thw=None, pixel_values_videos=None,
               video_grid_thw=None, second_per_grid_ts=None, *,
               budget=None, per_image: bool = False,
               method: str = "selector", seed: int = 0,
               max_new_tokens: int = 16, eos_token_id: int | None = None,
               pad_token_id: int = 0, timings: dict | None = None,
               **unused) -> np.ndarray:
    """Greedy decoding with a KV cache (see ``generation.py``).

    Prompts in a batch may be left- or right-padded. With ``budget`` the
    unselected visual tokens are dropped before the LLM; decode positions
    still continue from the uncompressed prompt.

    Args:
      timings: if a dict, receives ``prefill_ms`` (host preparation, vision
        tower, selection, LLM prefill and lm_head, to the first token on
        the host) and ``latency_ms`` (the whole call), device-synchronised.

    Returns:
      int32[B, n] new tokens, n <= max_new_tokens (the step at which every
      row has produced ``eos_token_id``); rows that finished earlier are
      padded with ``pad_token_id``.
    """
    t_start = time.perf_counter()
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be a positive int, got "
                       f"{max_new_tokens!r}")
    prep = prepare_batch(
        self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
        pixel_values_videos, video_grid_thw, second_per_grid_ts,
        seq_multiple=self.seq_multiple)
    n_valid = prep.arrays["segment_ids"].sum(1)
    next_position = (prep.rope_deltas[:, 0] + n_valid).astype(np.int32)
    size = None
    k_token = k_row = None
    if budget is not None:
      k_token, k_row = selection_budgets(prep, budget, per_image)
      if prep.has_vision:
        lengths = n_valid - prep.num_visual + k_row
        size = bucket(int(lengths.max()), self.seq_multiple)
    _check_method(method, per_image)
    eos = -1 if eos_token_id is None else int(eos_token_id)
    first, cache = self._prefill_jit(
        self.state, prep.arrays, k_token, k_row,
        max_new_tokens=max_new_tokens, has_vision=prep.has_vision,
        size=size, per_image=per_image, method=method, seed=int(seed))
    if timings is not None:
      first.block_until_ready()
      timings["prefill_ms"] = 1e3 * (time.perf_counter() - t_start)
    tokens, steps = self._decode_jit(
        self.state, first, cache, next_position, np.int32(eos),
        np.int32(pad_token_id), max_new_tokens=max_new_tokens)
    out = np.asarray(tokens)[:, :int(steps)]
    if timings is not None:
      timings["latency_ms"] = 1e3 * (time.perf_counter() - t_start)
    return out


def _check_method(method: str, per_image: bool = False) -> None:
  from vselect_jax.selector.baselines import METHODS
  if method not in METHODS:
    raise ValueError(f"unknown selection method {method!r}; one of {METHODS}")
  if method == "dart" and per_image:
    raise ValueError("method 'dart' pools its pivots over the whole prompt; "
                     "per_image budgets are not supported")


def selection_budgets(prep, budget, per_image: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Host-side k per visual token (of its group) and per row.

  Args:
    budget: one fraction for the batch, or one per row.

  Returns:
    k_token int32[B, T] and k_row int32[B].
  """
  item = prep.arrays["visual_item"]
  rows = item.shape[0]
  budgets = np.atleast_1d(np.asarray(budget, dtype=object))
  if budgets.shape[0] == 1:
    budgets = np.repeat(budgets, rows)
  if budgets.ndim != 1 or budgets.shape[0] != rows:
    raise ValueError(f"budget must be a number or one per row ({rows}), got "
                     f"{budget!r}")
  visual = item >= 0
  k_token = np.zeros(item.shape, np.int32)
  k_row = np.zeros(rows, np.int32)
  for b in range(rows):
    budget_to_k(0, budgets[b])  # validates even rows without images
    if per_image:
      for it in np.unique(item[b][visual[b]]):
        sel = item[b] == it
        k_token[b, sel] = budget_to_k(int(sel.sum()), budgets[b])
        k_row[b] += k_token[b, sel][0]
    else:
      k_row[b] = budget_to_k(int(visual[b].sum()), budgets[b])
      k_token[b, visual[b]] = k_row[b]
  return k_token, k_row


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

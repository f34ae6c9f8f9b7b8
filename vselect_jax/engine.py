"""The user-facing model: numpy in, numpy out, bucketed and jitted.

    model = vselect_jax.from_pretrained(path, dtype="bfloat16", mesh=mesh)
    out = model.forward(**processor_outputs, budget=0.2)
    tokens = model.generate(**processor_outputs, budget=0.2, max_new_tokens=32)

Host preparation (``host.inputs``) pads every data-dependent size to a
bucket, so each program compiles once per (sequence bucket, patch bucket,
kept-length bucket, method); budgets are traced k values. Three programs:
``forward`` (logits at every kept position), and ``prefill`` + ``decode``
for generation (two programs so prefill can be timed on its own, as the
reference does; the cache stays on the device). All run the one forward of
``vselect_jax.forward``. On a mesh, parameters are sharded by the logical
axis rules and batch rows over the data axes.
"""
from __future__ import annotations

import dataclasses
import difflib
import time

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vselect_jax import generation, methods
from vselect_jax import sharding as shard_lib
from vselect_jax.config import VLMConfig
from vselect_jax.forward import Selection, forward
from vselect_jax.host.budgets import selection_budgets
from vselect_jax.host.buckets import bucket
from vselect_jax.host.inputs import PreparedBatch, prepare_batch

# Inputs ``forward`` / ``generate`` take by name: the HF Qwen2.5-VL
# processor's outputs. Its other keys are accepted and ignored; anything
# else is an error (a misspelt ``budjet=`` must not run the full model).
PROCESSOR_INPUTS = ("input_ids", "attention_mask", "pixel_values",
                    "image_grid_thw", "pixel_values_videos", "video_grid_thw",
                    "second_per_grid_ts")
PROCESSOR_EXTRAS = frozenset({"mm_token_type_ids", "token_type_ids"})


@dataclasses.dataclass
class ForwardOutput:
  """Result of ``forward``.

  Without a budget ``logits`` is float32[B, L, V] over the input positions.
  With a budget the unselected visual tokens are dropped (before the LLM,
  or inside it for in-LLM methods): ``logits`` is float32[B, Lc, V] over the
  kept positions (rows packed to the left, padded to the longest row),
  ``keep_index`` int32[B, Lc] gives each output position's index in the
  input (-1 for padding), ``scores`` float32[B, L] is the method's signal
  at the input positions (0 where not a candidate) and, with
  ``soft_mask=True``, ``soft_mask`` float32[B, L] is its picture map (the
  scorer's soft top-k for the selector). ``rope_deltas`` int32[B, 1] is
  always the uncompressed prompt's: decoding continues at max position + 1
  + step.
  """
  logits: np.ndarray
  rope_deltas: np.ndarray
  keep_index: np.ndarray | None = None
  scores: np.ndarray | None = None
  soft_mask: np.ndarray | None = None


def _check_extras(extras: dict, where: str) -> None:
  unknown = sorted(set(extras) - PROCESSOR_EXTRAS)
  if unknown:
    valid = list(PROCESSOR_INPUTS) + [
        "budget", "per_image", "method", "options", "seed", "soft_mask",
        "select_at",
        "max_new_tokens", "eos_token_id", "pad_token_id", "timings"]
    hints = []
    for name in unknown:
      close = difflib.get_close_matches(name, valid, n=1)
      hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)"
                                  if close else ""))
    raise TypeError(f"{where}() got unexpected keyword argument(s) "
                    f"{', '.join(hints)}")


@dataclasses.dataclass(frozen=True)
class _Plan:
  """The host's decisions for one call: k arrays and static program keys."""
  k_token: np.ndarray | None
  k_row: np.ndarray | None
  size: int | None
  method: str
  per_image: bool
  options: tuple
  vision_size: int | None = None


class VisionLanguageModel:
  """A loaded VLM (+ its selection methods) with numpy ``forward`` and
  ``generate`` that pad to buckets and compile once per bucket."""

  def __init__(self, config: VLMConfig, module, *, mesh: Mesh | None = None,
               seq_multiple: int = 64):
    self.config = config
    self.module = module
    self.mesh = mesh
    self.seq_multiple = seq_multiple
    self.graphdef, self.state = nnx.split(module)
    if mesh is not None:  # no-op for parameters loaded onto this mesh
      self.state = jax.device_put(self.state,
                                  shard_lib.state_shardings(self.state, mesh))
    self.num_compiles = 0
    self._forward_jit = jax.jit(
        self._forward_impl,
        static_argnames=("size", "method", "per_image", "options",
                         "with_view", "vision_size"))
    self._prefill_jit = jax.jit(
        self._prefill_impl,
        static_argnames=("max_new_tokens", "size", "method", "per_image",
                         "options", "vision_size"))
    self._decode_jit = jax.jit(self._decode_impl,
                               static_argnames=("max_new_tokens",))

  @property
  def dtype(self):
    return self.module.model.embed_tokens.weight.get_value().dtype

  # -- device programs (their bodies run at trace time only) ---------------

  def _selection(self, k_token, k_row, size, method, per_image, options,
                 vision_size=None):
    if size is None:
      return None
    return Selection(method, k_token, k_row, size, per_image, options,
                     vision_size)

  def _forward_impl(self, state, batch, k_token, k_row, *, size, method,
                    per_image, options, with_view, vision_size=None):
    self.num_compiles += 1  # counts compilations
    model = nnx.merge(self.graphdef, state)
    out = forward(model, batch, self._selection(
        k_token, k_row, size, method, per_image, options, vision_size),
                  with_view=with_view)
    return model.head(out.hidden), out.keep_index, out.scores, out.view

  def _prefill_impl(self, state, batch, k_token, k_row, *, max_new_tokens,
                    size, method, per_image, options, vision_size=None):
    self.num_compiles += 1
    model = nnx.merge(self.graphdef, state)
    first, cache, _ = generation.prefill(
        model, batch, self._selection(k_token, k_row, size, method,
                                      per_image, options, vision_size),
        max_new_tokens=max_new_tokens)
    return first, cache

  def _decode_impl(self, state, first, cache, next_position, eos, pad, *,
                   max_new_tokens):
    self.num_compiles += 1
    model = nnx.merge(self.graphdef, state)
    return generation.decode(model, first, cache, next_position, eos, pad,
                             max_new_tokens=max_new_tokens)

  # -- host side ------------------------------------------------------------

  def prepare(self, *args, **kwargs) -> PreparedBatch:
    """HF-processor inputs -> the bucketed per-row batch (numpy)."""
    return prepare_batch(self.config, *args, seq_multiple=self.seq_multiple,
                         **kwargs)

  def _per_frame(self, prep: PreparedBatch, image_grid_thw, video_grid_thw):
    """Per-image budgets on videos: one group per temporal slot."""
    from vselect_jax.host.frame_groups import frame_items
    arrays = prep.arrays
    arrays["visual_item"] = frame_items(
        arrays["visual_item"],
        arrays["input_ids"] == self.config.video_token_id, image_grid_thw,
        video_grid_thw, self.config.vision.merge_unit)

  def _plan(self, prep: PreparedBatch, budget, method, per_image, options,
            seed, select_at=None) -> _Plan:
    method, options = self._select_at(method, options, select_at)
    if seed is not None and "seed" in methods.get(method).options:
      options = {**(options or {}), "seed": int(seed)}
    m, opts = methods.validate(method, budget, per_image, options)
    if budget is None:  # the base model: one program whatever the method
      return _Plan(None, None, None, None, False, ())
    count = m.count(dict(opts))
    if per_image and count != "visual":
      raise ValueError(f"method {method!r} with options {dict(opts)} counts "
                       "its budget over the whole prompt; per_image budgets "
                       "are not supported")
    k_token, k_row = selection_budgets(prep.arrays, budget, per_image, count)
    seg = prep.arrays["segment_ids"]
    visual = prep.arrays["visual_index"] >= 0
    if count == "span":
      pos = np.arange(seg.shape[1])[None]
      first = np.where(visual, pos, seg.shape[1]).min(1, keepdims=True)
      last = np.where(visual, pos, -1).max(1, keepdims=True)
      candidates = ((pos >= first) & (pos <= last) & (seg > 0)).sum(1)
    else:
      candidates = visual.sum(1)
    kept = (seg > 0).sum(1) - candidates + k_row
    vision_size = None
    if m.stage == methods.IN_VISION and "window_seg" in prep.arrays:
      # Kept merge units per row, bucketed in whole windows, at most the
      # row's unit slots (the in-tower program's static kept bucket).
      vc = self.config.vision
      units = prep.arrays["window_seg"].shape[1] // vc.merge_unit
      per_window = vc.window_patches // vc.merge_unit
      vision_size = min(units, bucket(int(k_row.max()), per_window))
    return _Plan(k_token, k_row, bucket(int(kept.max()), self.seq_multiple),
                 method, per_image, opts, vision_size)

  def _select_at(self, method, options, select_at):
    """``select_at=j``: the selector after vision block j (the in-tower
    scorer, method "tower_selector" with block j); j = the tower's depth
    (or None) is the post-tower selector unchanged."""
    if select_at is None:
      return method, options
    depth = self.config.vision.depth
    if (isinstance(select_at, bool) or not isinstance(select_at, int)
        or not 0 <= select_at <= depth):
      raise ValueError(f"select_at must be an int in [0, {depth}] (vision "
                       f"blocks before selection), got {select_at!r}")
    if method not in ("selector", "tower_selector"):
      raise ValueError(f"select_at applies to the learned selector, not "
                       f"method {method!r}")
    if select_at == depth:
      return "selector", options
    return "tower_selector", {**(options or {}), "block": select_at}

  def _device(self, arrays: dict) -> dict:
    """Host arrays onto the mesh: rows over the data axes where they
    divide, replicated otherwise (a batch of 1 on a data-parallel mesh)."""
    if self.mesh is None:
      return arrays
    rows = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    out = {}
    for key, value in arrays.items():
      axis = 1 if key == "position_ids" else 0
      if value.ndim > axis and value.shape[axis] % rows == 0:
        sharding = shard_lib.batch_sharding(self.mesh, value.ndim, axis)
      else:
        sharding = NamedSharding(self.mesh, P())
      out[key] = jax.device_put(value, sharding)
    return out

  def _host(self, inputs: tuple, budget, method, per_image, options, seed,
            select_at) -> tuple[PreparedBatch, "_Plan"]:
    """The host side of a call: the bucketed batch and the selection plan
    (per-frame groups for videos with ``per_image``)."""
    prep = self.prepare(*inputs)
    image_grid_thw, video_grid_thw = inputs[3], inputs[5]
    if per_image and video_grid_thw is not None:  # a group per frame slot
      self._per_frame(prep, image_grid_thw, video_grid_thw)
    return prep, self._plan(prep, budget, method, per_image, options, seed,
                            select_at)

  def prefill_program(self, prep: PreparedBatch, budget=None, *,
                      method: str = "selector", per_image: bool = False,
                      options: dict | None = None, max_new_tokens: int = 1,
                      select_at: int | None = None):
    """A zero-argument callable that runs the jitted prefill program on
    device-resident inputs and returns its first tokens: the prefill alone,
    without host preparation or transfers (the reference's in-forward
    timer; ``bench/``)."""
    plan = self._plan(prep, budget, method, per_image, options, None,
                      select_at)
    batch = self._device(prep.arrays)
    k_token, k_row = jax.device_put((plan.k_token, plan.k_row))
    return lambda: self._prefill_jit(
        self.state, batch, k_token, k_row, max_new_tokens=max_new_tokens,
        size=plan.size, method=plan.method, per_image=plan.per_image,
        options=plan.options, vision_size=plan.vision_size)[0]

  def forward(self, input_ids, attention_mask=None, pixel_values=None,
              image_grid_thw=None, pixel_values_videos=None,
              video_grid_thw=None, second_per_grid_ts=None, *,
              budget=None, per_image: bool = False,
              method: str = "selector", options: dict | None = None,
              seed: int | None = None, soft_mask: bool = False,
              select_at: int | None = None,
              **processor_extras) -> ForwardOutput:
    """Forward pass on HF-processor inputs (numpy, torch or lists).

    Args:
      budget: fraction of visual tokens to keep, in (0, 1] (one number, or
        one per row); None runs the base model. Each row keeps
        k = max(1, floor(N * budget)) of its N visual tokens (0 if it has
        none), pooled over all its images and frames like the reference,
        or per image with ``per_image``.
      method: a name of ``vselect_jax.methods.names()``; ``options`` its
        options. ``seed`` is shorthand for ``options={"seed": ...}`` for
        methods that take a seed (``random``), ignored by the others.
      soft_mask: also return the method's picture map.
      select_at: with the learned selector, select after this many vision
        blocks (the in-tower scorer ``visual.block_scorer``; later blocks
        and the merger run on the kept units only); the tower's depth or
        None selects after the tower (the released VisionSelector).
      processor_extras: other keys of the HF processor's output
        (``mm_token_type_ids``), ignored; anything else is an error.

    Returns:
      ``ForwardOutput``.
    """
    _check_extras(processor_extras, "forward")
    prep, plan = self._host(
        (input_ids, attention_mask, pixel_values, image_grid_thw,
         pixel_values_videos, video_grid_thw, second_per_grid_ts),
        budget, method, per_image, options, seed, select_at)
    logits, keep, scores, view = self._forward_jit(
        self.state, self._device(prep.arrays), plan.k_token, plan.k_row,
        size=plan.size, method=plan.method, per_image=plan.per_image,
        options=plan.options, with_view=soft_mask and plan.size is not None,
        vision_size=plan.vision_size)
    if plan.size is None:
      return ForwardOutput(np.asarray(logits)[:, :prep.seq_len],
                           prep.rope_deltas)
    keep = np.asarray(keep)
    n = int((keep >= 0).sum(1).max())
    l = prep.seq_len
    return ForwardOutput(
        np.asarray(logits)[:, :n], prep.rope_deltas, keep[:, :n],
        np.asarray(scores)[:, :l],
        None if view is None else np.asarray(view)[:, :l])

  def generate(self, input_ids, attention_mask=None, pixel_values=None,
               image_grid_thw=None, pixel_values_videos=None,
               video_grid_thw=None, second_per_grid_ts=None, *,
               budget=None, per_image: bool = False,
               method: str = "selector", options: dict | None = None,
               seed: int | None = None, max_new_tokens: int = 16,
               eos_token_id: int | None = None, pad_token_id: int = 0,
               timings: dict | None = None, select_at: int | None = None,
               **processor_extras) -> np.ndarray:
    """Greedy decoding with a KV cache (see ``generation.py``).

    Prompts in a batch may be left- or right-padded. With ``budget`` the
    unselected visual tokens are dropped; decode positions still continue
    from the uncompressed prompt. Arguments as ``forward``, and:

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
    _check_extras(processor_extras, "generate")
    if (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1):
      raise ValueError(f"max_new_tokens must be a positive int, got "
                       f"{max_new_tokens!r}")
    prep, plan = self._host(
        (input_ids, attention_mask, pixel_values, image_grid_thw,
         pixel_values_videos, video_grid_thw, second_per_grid_ts),
        budget, method, per_image, options, seed, select_at)
    n_valid = prep.arrays["segment_ids"].sum(1)
    next_position = (prep.rope_deltas[:, 0] + n_valid).astype(np.int32)
    eos = -1 if eos_token_id is None else int(eos_token_id)
    first, cache = self._prefill_jit(
        self.state, self._device(prep.arrays), plan.k_token, plan.k_row,
        max_new_tokens=max_new_tokens, size=plan.size, method=plan.method,
        per_image=plan.per_image, options=plan.options,
        vision_size=plan.vision_size)
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


def from_pretrained(path: str, dtype="float32", *, mesh: Mesh | None = None,
                    progress: bool = False) -> VisionLanguageModel:
  """Loads a converted vselect-jax dir, an HF dir, or an HF hub id, onto
  ``mesh`` (default: one device); see ``loading.load_model``."""
  from vselect_jax.loading import load_model
  cfg, module = load_model(path, dtype, mesh=mesh, progress=progress)
  return VisionLanguageModel(cfg, module, mesh=mesh)

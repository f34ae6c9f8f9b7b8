"""The one model forward: vision tower -> embeddings -> LLM, with selection.

    out = forward(model, batch)                         # every token
    out = forward(model, batch, Selection("selector", k_token, k_row, size))
    out = forward(model, batch, Selection("selector", k_token, k_row),
                  relaxed=True)                         # training path
    logits = model.head(out.hidden)

A method (``vselect_jax.methods``) is a hook at one point of this forward:
before the LLM (pre-LLM methods: the learned scorer, random, uniform,
DivPrune, VisionZip) or at the input of LLM layer K (FastV, DART), where
layers [0, K) have seen every token. Inference drops the unselected tokens
there (hard top-k): the rest of the LLM runs on the kept positions, packed
to the left in a static length, with their original M-RoPE ids. Training
(``relaxed=True``) keeps every token and scales the visual ones by the
method's soft mask. Both are the same code below; so are prefill and plain
forward (``generation.prefill`` adds the head and the cache around it).

Shapes: B rows, T positions, Tc kept positions, D LLM width, E = D visual
token width, M merged tokens per row.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vselect_jax import methods
from vselect_jax.host.rows import layout_fields
from vselect_jax.methods.base import (IN_LLM, IN_VISION, LAYER_QK,
                                      VISION_LAST_BLOCK, Context, Relaxed)

SOFT_MASKS = ("scale", "attn_bias")


@dataclasses.dataclass(frozen=True)
class Selection:
  """What to keep. ``method``, ``size``, ``per_image`` and ``options`` are
  static (part of the compiled program); ``k_token`` int32[B, T] (the k of
  each visual token's group) and ``k_row`` int32[B] are traced, so one
  program serves every budget of a bucket.

  ``size`` is the static kept length Tc (inference); None for the training
  path, which drops nothing. ``vision_size`` (static, IN_VISION methods at
  inference): the merge units kept per row inside the vision tower, padded
  (a multiple of a window's units, at most the row's unit slots).
  ``relax_args``: traced inputs of a method's relaxation (training only;
  Dynamic-Qwen: a PRNG key, the Gumbel temperature and the keep target),
  given to the method as ``Context.extras["relax_args"]``.
  """
  method: str
  k_token: jax.Array
  k_row: jax.Array
  size: int | None = None
  per_image: bool = False
  options: tuple = ()
  vision_size: int | None = None
  relax_args: dict | None = None


@dataclasses.dataclass
class Output:
  """What the forward returns.

  Attributes:
    hidden: float[B, T or Tc, D] after the final norm.
    stages: the LLM's keys/values, one ``({"k", "v": [layers, B, len, K,
      H]}, segment_ids int32[B, len])`` per consecutive range of layers
      (two for in-LLM methods: layers below K keep the full prompt).
    keep_index: int32[B, Tc] input position of each kept position (-1 pad),
      with a hard selection.
    scores: float32[B, T] the method's importance signal.
    view: float32[B, T] the picture's importance map (``with_view``).
    relaxed: the training path's soft mask, hard mask and regulariser.
  """
  hidden: jax.Array
  stages: list
  keep_index: jax.Array | None = None
  scores: jax.Array | None = None
  view: jax.Array | None = None
  relaxed: Relaxed | None = None


# log(m) is floored here: exp(-69) ~ 1e-30 of a key's weight is dropping to
# float32 precision, and the softmax of a row whose keys all sit at the
# floor (a fully dropped window) stays finite.
_LOG_FLOOR = 1e-30


def soft_log(m: jax.Array) -> jax.Array:
  """log(max(m, 1e-30)) in float32: the "attn_bias" key bias of mask m."""
  return jnp.log(jnp.maximum(m.astype(jnp.float32), _LOG_FLOOR))


def encode(model, batch: dict, *, last_block: bool = False):
  """The vision tower on every row: merged tokens float[B, M, E] (and, with
  ``last_block``, the last block's input and rotary tables per row)."""
  layout = {k: batch[k] for k in layout_fields(model.visual.config)}
  return jax.vmap(lambda pv, lay: model.visual(
      pv, lay, return_last_input=last_block))(batch["pixel_values"], layout)


def place(merged: jax.Array, visual_index: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Merged tokens at their sequence positions: float[B, T, E] (zeros off
  visual positions) and bool[B, T] visual."""
  visual = visual_index >= 0
  idx = jnp.maximum(visual_index, 0)[..., None]
  tokens = jnp.take_along_axis(merged, idx, axis=1)
  return jnp.where(visual[..., None], tokens, 0), visual


def embed_inputs(model, batch: dict, *, last_block: bool = False,
                 vision_grad: bool = False):
  """Token embeddings with the visual tokens at their pad tokens.

  Returns:
    x float[B, T, D], tokens float[B, T, E] (the visual tokens alone, zeros
    elsewhere), visual bool[B, T], and the last vision block's input per
    row (with ``last_block``; else None).
  """
  x = model.model.embed_tokens(batch["input_ids"])
  visual = batch["visual_index"] >= 0
  if "pixel_values" not in batch:  # text only
    return x, jnp.zeros(x.shape, x.dtype), visual, None
  merged, last = encode(model, batch, last_block=last_block), None
  if last_block:
    merged, last = merged
  if not vision_grad:
    merged = jax.lax.stop_gradient(merged)
  tokens, visual = place(merged, batch["visual_index"])
  return jnp.where(visual[..., None], tokens.astype(x.dtype), x), tokens, \
      visual, last


def select_keep(selected: jax.Array, candidates: jax.Array,
                valid: jax.Array, size: int) -> jax.Array:
  """Positions kept: every valid non-candidate and the selected
  candidates, in ascending order, packed left into int32[B, size] (-1 pad).
  """
  keep = valid & (~candidates | selected)
  return jax.vmap(lambda m: jnp.nonzero(m, size=size, fill_value=-1)[0]
                  )(keep).astype(jnp.int32)


def gather(x: jax.Array, keep_index: jax.Array, axis: int = 1) -> jax.Array:
  """x[b, keep_index[b]] along ``axis`` (1 for [B, T, ...], 2 for the
  [3, B, T] position ids); padding (-1) reads position 0."""
  idx = jnp.maximum(keep_index, 0)
  if axis == 1:
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)
  return jnp.take_along_axis(
      x, jnp.broadcast_to(idx[None], x.shape[:1] + idx.shape), axis=2)


def forward(model, batch: dict, selection: Selection | None = None, *,
            relaxed: bool = False, remat: bool = False,
            vision_grad: bool = False, with_view: bool = False,
            soft_mask: str = "scale") -> Output:
  """Runs the model on a device batch (the per-row format of
  ``host.rows``), with an optional selection.

  Args:
    model: the VLM module (``visual``, ``model``, ``head``).
    batch: device arrays; ``pixel_values`` absent for text-only batches.
    selection: None (every token), or what to keep.
    relaxed: the training path: nothing dropped, visual tokens scaled by
      the method's soft mask (the method must have ``relax``). For an
      in-LLM method, layers [0, K) run on every token, the method's
      relaxation reads layer K's input, and layers [K, L) run under its
      keep policy (the policy-masked softmax; see ``soft_mask``).
    remat: rematerialise LLM layers in the backward pass (and, in-tower,
      the vision blocks after selection).
    vision_grad: let gradients into the vision tower and merger (and the
      learned scorer's input); off, the tower is frozen.
    with_view: also compute the method's picture map (``Output.view``);
      the selector's is a soft top-k, so it is off unless asked.
    soft_mask: how ``relaxed`` applies the soft mask m: "scale" multiplies
      the visual tokens by m (the reference); "attn_bias" adds log(m) to
      the attention logits of every key of the token in every LLM layer
      (m -> 0 is dropping, m = 1 keeping; see ``forward_in_vision`` for
      the vision tower). For in-LLM methods "scale" is the reference's
      policy-masked softmax (``modeling/policy_attention``) and
      "attn_bias" the log(m) key bias in layers [K, L) (the same forward
      up to the self-attention of dropped tokens and eps, but no gradient
      reaches a dropped token's decision).

  Returns:
    ``Output``.
  """
  text = model.model
  pos, seg = batch["position_ids"], batch["segment_ids"]
  method = options = None
  if selection is not None:
    method, options = methods.validate(selection.method, None,
                                       selection.per_image,
                                       dict(selection.options))
  if soft_mask not in SOFT_MASKS:
    raise ValueError(f"soft_mask must be one of {SOFT_MASKS}, got "
                     f"{soft_mask!r}")
  has_vision = "pixel_values" in batch
  if method is not None and method.stage == IN_VISION and has_vision:
    from vselect_jax.forward_in_vision import forward_in_vision
    return forward_in_vision(model, batch, selection, method, options,
                             relaxed=relaxed, remat=remat,
                             vision_grad=vision_grad, with_view=with_view,
                             soft_mask=soft_mask)
  last_block = method is not None and VISION_LAST_BLOCK in method.needs
  x, tokens, visual, last = embed_inputs(model, batch, last_block=last_block,
                                         vision_grad=vision_grad)
  extras = {VISION_LAST_BLOCK: last} if last is not None else {}
  if selection is not None and selection.relax_args is not None:
    extras["relax_args"] = dict(selection.relax_args)

  if method is None:
    hidden, kv = text.run(x, pos, seg, remat=remat)
    return Output(hidden, [(kv, seg)])

  group = (batch["visual_item"] if selection.per_image
           else jnp.where(visual, 0, -1))
  ctx = Context(model, batch, x, tokens, visual, seg > 0, group,
                selection.k_token, selection.k_row, dict(options), extras,
                detach_scorer=not vision_grad)
  if relaxed:
    if method.relax is None:
      raise ValueError(f"method {method.name!r} has no relaxation to train")
    if method.stage == IN_LLM and has_vision:
      return _relaxed_in_llm(text, method, ctx, pos, seg, remat, soft_mask)
    r = method.relax(ctx)
    if soft_mask == "scale":
      scaled = (tokens.astype(jnp.float32) * r.soft[..., None]
                ).astype(x.dtype)
      hidden, kv = text.run(jnp.where(visual[..., None], scaled, x), pos,
                            seg, remat=remat)
    else:
      hidden, kv = text.run(x, pos, seg, remat=remat, key_bias=jnp.where(
          visual, soft_log(r.soft), 0.0))
    return Output(hidden, [(kv, seg)], relaxed=r)

  if selection.size is None:
    raise ValueError("a hard selection needs a static kept length (size)")
  stages, layer = [], 0
  if has_vision and method.stage == IN_LLM:
    layer = method.layer(model)
    probe = layer - 1 if LAYER_QK in method.needs else None
    x, kv = text.run(x, pos, seg, layers=(0, layer), final_norm=False,
                     probe=probe)
    if probe is not None:
      extras[LAYER_QK] = kv.pop("probe")
    stages.append((kv, seg))
    ctx = dataclasses.replace(ctx, x=x)
  if has_vision:
    choice = method.select(ctx)
    x = x if choice.x is None else choice.x
    candidates = visual if choice.candidates is None else choice.candidates
    selected, scores = choice.selected, choice.scores
  else:  # text only: nothing to select, every valid token is kept
    candidates = selected = visual
    scores = jnp.zeros(visual.shape, jnp.float32)
  keep = select_keep(selected, candidates, seg > 0, selection.size)
  seg_c = jnp.where(keep >= 0, gather(seg, keep), 0)
  hidden, kv = text.run(gather(x, keep), gather(pos, keep, axis=2), seg_c,
                        layers=(layer, len(text.layers)))
  stages.append((kv, seg_c))
  view = None
  if with_view:
    view = (method.view(ctx, choice) if has_vision and method.view
            else scores)
  return Output(hidden, stages, keep, scores, view)


def _relaxed_in_llm(text, method, ctx: Context, pos, seg, remat: bool,
                    soft_mask: str) -> Output:
  """The training path of an in-LLM method: layers [0, K) on every token,
  the relaxation at layer K's input, layers [K, L) under its keep policy
  (1 on every non-visual token)."""
  layer = method.layer(ctx.model)
  x, kv0 = text.run(ctx.x, pos, seg, layers=(0, layer), final_norm=False,
                    remat=remat)
  r = method.relax(dataclasses.replace(ctx, x=x))
  policy = jnp.where(ctx.visual, r.soft, 1.0)
  rest = {"key_policy": policy} if soft_mask == "scale" else {
      "key_bias": jnp.where(ctx.visual, soft_log(r.soft), 0.0)}
  hidden, kv1 = text.run(x, pos, seg, layers=(layer, len(text.layers)),
                         remat=remat, **rest)
  return Output(hidden, [(kv0, seg), (kv1, seg)], relaxed=r)

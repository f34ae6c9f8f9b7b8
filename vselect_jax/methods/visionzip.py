"""VisionZip (Yang et al., 2025): dominant tokens by the attention they
receive in the last vision block, plus contextual tokens that absorb the rest
by key similarity.

As the reference's ``visionzip_official`` port:

* dominance of a merged token = attention received in the last block (mean
  over heads, summed over queries), averaged over its 2x2 merge unit;
* keys for merging = that block's keys after RoPE, averaged over the merge
  unit and the heads;
* ``ctx = max(1, floor(0.05 N))`` contextual tokens are *targets* spaced
  evenly (``step = max(1, n_rest // ctx)``) over the remaining tokens in
  raster order; every other remaining token joins its most cosine-similar
  target; a target's embedding becomes itself + the mean of its members
  (post-merger embeddings), as upstream VisionZip.

Deviations (the paper's intent, not the port's accidents): the last block's
attention is restricted to each image (the port mixes all images of a
prompt in one softmax); dominant = k - ctx so that exactly
k = max(1, floor(N r)) tokens are kept (the port's int((r - 0.05) N) + ctx
can be one off); ctx is capped at k; groups (per image or pooled) work for
batches and several images.

On LLaVA-OV-1.5 (RICE has a class token per image / frame) the dominance is
the class token's attention row instead (``class_attention_signals``), with
the same contextual merging (fraction 0.05), as the reference's OV port.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import (PRE_LLM, VISION_LAST_BLOCK, Choice,
                                      Context, Method)
from vselect_jax.methods.ranking import group_sizes, rank_in_group
from vselect_jax.modeling.attention import attention_received

CONTEXT_FRACTION_PERCENT = 5


def last_block_signals(visual, last_input: jax.Array, cos: jax.Array,
                       sin: jax.Array, layout: dict, *,
                       flat_keys: bool = False, raster: bool = True
                       ) -> tuple[jax.Array, jax.Array]:
  """Dominance float32[M] and keys float32[M, H] per merged token of one
  row, raster order (as the vision tower's output).

  Args:
    visual: the vision tower.
    last_input: float[P, D] input of the last vision block (slot order).
    cos, sin: the tower's rotary tables, float32[P, H].
    layout: the row's ``VisionLayout`` arrays.
    flat_keys: keys with every head concatenated, float32[M, N * H]
      (PruMerge+), instead of their mean over heads (VisionZip).
    raster: False leaves both in the tower's window order (HoloV's
      reference never un-permutes its scores).
  """
  cfg = visual.config
  blk = visual.blocks[len(visual.blocks) - 1]
  q, k = blk.queries_keys(last_input, cos, sin)        # [1, P, N, H]
  full = (cfg.depth - 1) in set(cfg.fullatt_block_indexes)
  seg = layout["frame_seg"] if full else layout["window_seg"]
  received = attention_received(q.astype(jnp.float32), k.astype(jnp.float32),
                                seg[None], chunk=cfg.merge_unit * 16,
                                causal=False)[0]
  unit = cfg.merge_unit
  dominance = received.reshape(-1, unit).mean(-1)          # slot order
  keys = k[0].astype(jnp.float32)
  keys = (keys.reshape(keys.shape[0], -1) if flat_keys
          else keys.mean(axis=1))
  keys = keys.reshape(-1, unit, keys.shape[-1]).mean(1)
  if not raster:
    return dominance, keys
  idx = layout["merged_index"]
  return dominance[idx], keys[idx]


def class_attention_signals(visual, last_input: jax.Array, cos: jax.Array,
                            sin: jax.Array, layout: dict
                            ) -> tuple[jax.Array, jax.Array]:
  """LLaVA-OV-1.5 (RICE tower, a class token per image / frame): dominance
  float32[M] = the attention each patch receives from its frame's class
  token in the last block (softmax over that frame's patches and class
  token, mean over heads), averaged over the 2x2 merge unit, as the
  reference's OV VisionZip reads the CLS row; keys float32[M, H] as
  ``last_block_signals``. Raster order (the RICE slots already are).

  Args:
    last_input: float[P + S, D] the last block's input, patch slots then
      class slots; cos, sin float32[P + S, H].
    layout: the row's ``RiceLayout`` arrays (frame_seg [P], class_seg [S]).
  """
  cfg = visual.config
  blk = visual.blocks[len(visual.blocks) - 1]
  q, k = blk.queries_keys(last_input, cos, sin)        # [1, P + S, N, H]
  q, k = q[0].astype(jnp.float32), k[0].astype(jnp.float32)
  frame, cls_seg = layout["frame_seg"], layout["class_seg"]
  p = frame.shape[0]
  seg = jnp.concatenate([frame, cls_seg])
  logits = jnp.einsum("snh,lnh->nsl", q[p:], k) / jnp.sqrt(q.shape[-1])
  same = (cls_seg[:, None] == seg[None, :]) & (cls_seg[:, None] > 0)
  att = jax.nn.softmax(jnp.where(same[None], logits, -jnp.inf), axis=-1)
  att = jnp.where(same[None], att, 0.0).mean(0)         # [S, P + S]
  # Class slot f - 1 belongs to frame f (``build_rice_layout``).
  row = jnp.maximum(frame - 1, 0)
  received = jnp.where(frame > 0, att[row, jnp.arange(p)], 0.0)
  unit = cfg.merge_unit
  dominance = received.reshape(-1, unit).mean(-1)
  keys = k[:p].mean(axis=1)
  keys = keys.reshape(-1, unit, keys.shape[-1]).mean(1)
  return dominance, keys


def visionzip_select(dominance: jax.Array, keys: jax.Array, tokens: jax.Array,
                     group: jax.Array, k_token: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
  """Dominant + contextual selection and the merged embeddings.

  Args:
    dominance: float32[B, T] at visual positions.
    keys: float[B, T, H] at visual positions.
    tokens: float[B, T, E] visual embeddings at their positions.
    group: int32[B, T] (-1 for text); k_token: int32[B, T].

  Returns:
    (bool[B, T] selected, float[B, T, E] embeddings: contextual targets
    replaced by their merge, everything else unchanged).
  """
  vis = group >= 0
  n = group_sizes(group)
  ctx = jnp.minimum(k_token, jnp.maximum(1, n * CONTEXT_FRACTION_PERCENT //
                                         100))
  n_dom = k_token - ctx
  dominant = vis & (rank_in_group(-dominance, group) < n_dom)
  rest = vis & ~dominant
  r = rank_in_group(jnp.zeros(group.shape, jnp.int32), group, rest)
  step = jnp.maximum(1, (n - n_dom) // jnp.maximum(ctx, 1))
  target = rest & (r % step == 0) & (r // step < ctx)
  members = rest & ~target
  x = keys.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

  def row(xr, emb, g, tgt, mem):
    sim = xr @ xr.T                                         # [T, T]
    ok = tgt[None, :] & (g[None, :] == g[:, None])
    assign = jnp.argmax(jnp.where(ok, sim, -jnp.inf), axis=1)
    w = mem.astype(jnp.float32)
    sums = jnp.zeros(emb.shape, jnp.float32).at[assign].add(
        emb.astype(jnp.float32) * w[:, None])
    count = jnp.zeros(w.shape, jnp.float32).at[assign].add(w)
    merged = emb.astype(jnp.float32) + sums / jnp.maximum(count, 1.0)[:, None]
    return jnp.where((tgt & (count > 0))[:, None], merged, emb
                     ).astype(emb.dtype)

  out = jax.vmap(row)(x, tokens, group, target, members)
  return (dominant | target) & (k_token > 0), out


def last_block_at_positions(ctx: Context, **kw
                            ) -> tuple[jax.Array, jax.Array]:
  """``last_block_signals`` of every row at the prompt's visual positions:
  dominance float32[B, T] (0 elsewhere) and keys float32[B, T, H]."""
  last_input, cos, sin = ctx.extras[VISION_LAST_BLOCK]
  if "class_seg" in ctx.batch:  # LLaVA-OV-1.5: the class token's attention
    if kw:
      raise ValueError("this method reads the Qwen2.5-VL vision tower's "
                       "window order; it is not defined for LLaVA-OV-1.5 "
                       "(the reference runs FastV, VisionZip, DivPrune and "
                       "DART there)")
    signals = class_attention_signals
    layout = {k: ctx.batch[k] for k in ("frame_seg", "class_seg")}
  else:
    signals = lambda *a: last_block_signals(*a, **kw)
    layout = {k: ctx.batch[k] for k in ("frame_seg", "window_seg",
                                        "merged_index")}
  dominance, keys = jax.vmap(lambda *a: signals(ctx.model.visual, *a))(
      last_input, cos, sin, layout)
  idx = jnp.maximum(ctx.batch["visual_index"], 0)
  dom = jnp.where(ctx.visual, jnp.take_along_axis(dominance, idx, 1), 0.0)
  return dom, jnp.take_along_axis(keys, idx[..., None], 1)


def select(ctx: Context) -> Choice:
  dom, keys = last_block_at_positions(ctx)
  selected, tokens = visionzip_select(dom, keys, ctx.tokens, ctx.group,
                                      ctx.k_token)
  x = jnp.where(ctx.visual[..., None], tokens.astype(ctx.x.dtype), ctx.x)
  return Choice(selected, dom, x=x)


METHOD = Method("visionzip", PRE_LLM, select, needs=frozenset(
    {VISION_LAST_BLOCK}), summary="last-ViT-block attention (dominant) + "
                "contextual merges by key similarity")

"""VisionZip (Yang et al., 2025) for Qwen2.5-VL, under the static-shape
selection API: dominant tokens by the attention they receive in the last
vision block, plus contextual tokens that absorb the rest by key similarity.

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
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.modeling import rope
from vselect_jax.selector.in_llm import attention_received

CONTEXT_FRACTION_PERCENT = 5


def last_block_signals(model, last_input: jax.Array, cos: jax.Array,
                       sin: jax.Array, layout: dict
                       ) -> tuple[jax.Array, jax.Array]:
  """Dominance float32[M] and keys float32[M, H] per merged token, raster
  order (as the vision tower's output).

  Args:
    last_input: float[P, D] input of the last vision block (slot order).
    cos, sin: the tower's rotary tables, float32[P, H].
    layout: the ``VisionLayout`` arrays.
  """
  vis = model.visual
  cfg = vis.config
  blk = vis.blocks[len(vis.blocks) - 1]
  p, d = last_input.shape
  heads = blk.attn.num_heads
  qkv = blk.attn.qkv(blk.norm1(last_input)).astype(jnp.float32)
  qkv = qkv.reshape(p, 3, heads, d // heads)
  q = rope.apply_vision_rope(qkv[None, :, 0], cos, sin)
  k = rope.apply_vision_rope(qkv[None, :, 1], cos, sin)
  full = (cfg.depth - 1) in set(cfg.fullatt_block_indexes)
  seg = layout["frame_seg"] if full else layout["window_seg"]
  received = attention_received(q, k, seg[None], chunk=cfg.merge_unit * 16,
                                causal=False)[0]
  unit = cfg.merge_unit
  dominance = received.reshape(-1, unit).mean(-1)          # slot order
  keys = k[0].mean(axis=1).reshape(-1, unit, k.shape[-1]).mean(1)
  idx = layout["merged_index"]
  return dominance[idx], keys[idx]


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
  t = group.shape[1]
  x = keys.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

  def rank_in(mask, g, score=None):
    """Rank of each masked token inside its group: by descending score, or
    by position when score is None."""
    key = jnp.zeros(t) if score is None else -score
    by = jnp.argsort(jnp.where(mask, key, jnp.inf), stable=True)
    order = by[jnp.argsort(jnp.where(mask[by], g[by], jnp.iinfo(jnp.int32).max),
                           stable=True)]
    sorted_g = jnp.where(mask[order], g[order], jnp.iinfo(jnp.int32).max)
    first = jnp.searchsorted(sorted_g, sorted_g, side="left")
    return jnp.zeros(t, jnp.int32).at[order].set(
        (jnp.arange(t) - first).astype(jnp.int32))

  def row(dom, xr, emb, g, k):
    vis = g >= 0
    n = jnp.zeros(t, jnp.int32).at[jnp.maximum(g, 0)].add(vis)[
        jnp.maximum(g, 0)]                                   # group size
    ctx = jnp.minimum(k, jnp.maximum(1, n * CONTEXT_FRACTION_PERCENT // 100))
    n_dom = k - ctx
    dominant = vis & (rank_in(vis, g, dom) < n_dom)
    rest = vis & ~dominant
    r = rank_in(rest, g)
    step = jnp.maximum(1, (n - n_dom) // jnp.maximum(ctx, 1))
    target = rest & (r % step == 0) & (r // step < ctx)
    members = rest & ~target
    sim = xr @ xr.T                                         # [T, T]
    ok = target[None, :] & (g[None, :] == g[:, None])
    assign = jnp.argmax(jnp.where(ok, sim, -jnp.inf), axis=1)
    w = members.astype(jnp.float32)
    sums = jnp.zeros(emb.shape, jnp.float32).at[assign].add(
        emb.astype(jnp.float32) * w[:, None])
    count = jnp.zeros(t, jnp.float32).at[assign].add(w)
    merged = emb.astype(jnp.float32) + sums / jnp.maximum(count, 1.0)[:, None]
    out = jnp.where((target & (count > 0))[:, None], merged, emb)
    return (dominant | target) & (k > 0), out.astype(emb.dtype)

  return jax.vmap(row)(dominance, x, tokens, group, k_token)

"""DART (Wen et al., 2025): prune inside the LLM at layer K by pivots and
duplication.

Pivots are the visual tokens with the largest L1 norm of their layer-(K-1)
keys (after RoPE) and the text tokens after the last visual token with the
largest key norm (up to 4 of each). For each pivot in turn, the
still-unselected visual tokens *least* cosine-similar to it (on the
final-RMSNorm of the layer-K input) are added. Deviations from the
reference, which keeps 4 + 8 * int(N r / 8) tokens and walks the pivots in
Python ``set`` order: we keep exactly k = max(1, floor(N r)) tokens
(min(4, k) image pivots, the rest spread over the valid pivots as evenly as
possible) and walk the pivots in ascending position order, so the result is
deterministic. Pivots are pooled over the row (no per-image budgets).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import IN_LLM, LAYER_QK, Choice, Context, Method
from vselect_jax.methods.fastv import prune_layer

NUM_PIVOTS = 4


def dart_mask(key_norm: jax.Array, normed: jax.Array, visual: jax.Array,
              token_valid: jax.Array, k_row: jax.Array) -> jax.Array:
  """DART's selection of exactly ``k_row`` visual tokens per row.

  Args:
    key_norm: float32[B, T] L1 norm of each token's layer-(K-1) keys.
    normed: float[B, T, D] final-RMSNorm of the layer-K input.
    visual: bool[B, T]; token_valid: bool[B, T] (not padding).
    k_row: int32[B] visual tokens to keep.

  Returns:
    bool[B, T] selected visual tokens.
  """
  t = visual.shape[1]
  x = normed.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  pos = jnp.arange(t)
  npiv = NUM_PIVOTS

  def row(kn, xr, vis, valid, k):
    n_img = jnp.minimum(npiv, k)
    img_val, img_idx = jax.lax.top_k(jnp.where(vis, kn, -jnp.inf), npiv)
    img_ok = (jnp.arange(npiv) < n_img) & jnp.isfinite(img_val)
    last_vis = jnp.max(jnp.where(vis, pos, -1))
    after = valid & ~vis & (pos > last_vis)
    txt_val, txt_idx = jax.lax.top_k(jnp.where(after, kn, -jnp.inf), npiv)
    txt_ok = jnp.isfinite(txt_val) & (k > 0)
    piv_idx = jnp.concatenate([img_idx, txt_idx])
    piv_ok = jnp.concatenate([img_ok, txt_ok])
    # Walk the valid pivots in ascending position order.
    order = jnp.argsort(jnp.where(piv_ok, piv_idx, t + jnp.arange(2 * npiv)))
    piv_idx, piv_ok = piv_idx[order], piv_ok[order]
    n_ok = jnp.maximum(piv_ok.sum(), 1)
    rest = k - n_img
    slot = jnp.cumsum(piv_ok) - 1          # rank among valid pivots
    quota = jnp.where(piv_ok, rest // n_ok + (slot < rest % n_ok), 0)
    is_pivot = jnp.zeros(t, bool).at[img_idx].set(img_ok, mode="drop")
    selected = is_pivot
    for i in range(2 * npiv):
      sim = xr @ xr[piv_idx[i]]
      cand = vis & ~selected
      key = jnp.where(cand, sim, jnp.inf)
      rank = jnp.zeros(t, jnp.int32).at[jnp.argsort(key, stable=True)].set(
          jnp.arange(t, dtype=jnp.int32))
      selected = selected | (cand & (rank < quota[i]))
    return selected

  return jax.vmap(row)(key_norm, x, visual, token_valid, k_row)


def select(ctx: Context) -> Choice:
  _, k = ctx.extras[LAYER_QK]
  key_norm = jnp.abs(k.astype(jnp.float32)).sum(axis=(2, 3))
  selected = dart_mask(key_norm, ctx.model.model.norm(ctx.x), ctx.visual,
                       ctx.valid, ctx.k_row)
  return Choice(selected, jnp.where(ctx.visual, key_norm, 0.0))


METHOD = Method("dart", IN_LLM, select, layer=prune_layer,
                needs=frozenset({LAYER_QK}), per_image=False,
                summary="key-norm pivots, least-similar tokens per pivot "
                "(inside the LLM)")

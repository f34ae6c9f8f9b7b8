"""FastV and DART: baselines that prune visual tokens *inside* the LLM.

Both run LLM layers [0, K) on the whole prompt (K = ``PRUNE_LAYER`` = 2, as
the reference), read a signal at that point, keep exactly k visual tokens
per group and run layers [K, L) on the shortened sequence. Kept tokens keep
their original M-RoPE ids; layers below K keep their full-length KV cache
for decoding, as in the reference.

* FastV (Chen et al., 2024): the attention each visual token *receives* in
  layer K-1, averaged over heads and summed over all query rows (causal,
  within the sample); top-k. This is the paper's "average attention received
  from all other tokens" and the reference's default (``origin=False``);
  because of the causal mask it favours early tokens, as in the reference.
* DART (Wen et al., 2025): pivots and duplication. Pivots are the visual
  tokens with the largest L1 norm of their layer-(K-1) keys (after RoPE) and
  the text tokens after the last visual token with the largest key norm (up
  to 4 of each). For each pivot in turn, the still-unselected visual tokens
  *least* cosine-similar to it (on the final-RMSNorm of the layer-K input)
  are added. Deviations from the reference, which keeps 4 + 8 * int(N r / 8)
  tokens and walks the pivots in Python ``set`` order: we keep exactly
  k = max(1, floor(N r)) tokens (min(4, k) image pivots, the rest spread over
  the valid pivots as evenly as possible) and walk the pivots in ascending
  position order, so the result is deterministic.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.modeling import rope

METHODS = ("fastv", "dart")
PRUNE_LAYER = 2
NUM_PIVOTS = 4


def layer_qk(model, layer_index: int, hidden: jax.Array,
             position_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Queries float32[B, T, N, H] and keys float32[B, T, K, H] (after M-RoPE)
  that LLM layer ``layer_index`` computes from its input ``hidden``."""
  cfg = model.model.config
  layer = model.model.layers[layer_index]
  attn = layer.self_attn
  b, t, _ = hidden.shape
  xn = layer.input_layernorm(hidden)
  q = attn.q_proj(xn).reshape(b, t, attn.num_heads, attn.head_dim)
  k = attn.k_proj(xn).reshape(b, t, attn.num_kv_heads, attn.head_dim)
  cos, sin = rope.mrope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta,
                                cfg.mrope_section, jnp.float32)
  return (rope.apply_rope(q.astype(jnp.float32), cos, sin),
          rope.apply_rope(k.astype(jnp.float32), cos, sin))


def attention_received(q: jax.Array, k: jax.Array, segment_ids: jax.Array,
                       chunk: int = 64, causal: bool = True) -> jax.Array:
  """Softmax attention received per key, mean over heads, summed over
  queries of the same segment (causal or not).

  Computed per chunk of queries so that [heads, T, T] is never held.

  Args:
    q: float32[B, T, N, H]; k: float32[B, T, K, H] (N a multiple of K).
    segment_ids: int32[B, T] (0 = padding).

  Returns:
    float32[B, T].
  """
  b, t, n, h = q.shape
  kv = k.shape[2]
  chunk = min(chunk, t)
  if t % chunk:
    raise ValueError(f"length {t} is not a multiple of the chunk {chunk}")
  qg = q.reshape(b, t, kv, n // kv, h) * (h ** -0.5)
  pos = jnp.arange(t)

  def body(c, total):
    i0 = c * chunk
    qc = jax.lax.dynamic_slice_in_dim(qg, i0, chunk, axis=1)
    sq = jax.lax.dynamic_slice_in_dim(segment_ids, i0, chunk, axis=1)
    logits = jnp.einsum("bckgh,bskh->bkgcs", qc, k)
    mask = (sq[:, :, None] == segment_ids[:, None, :]) & (sq > 0)[..., None]
    if causal:
      mask = mask & (pos[None, None, :] <=
                     (i0 + jnp.arange(chunk))[None, :, None])
    logits = jnp.where(mask[:, None, None], logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    return total + p.mean(axis=(1, 2)).sum(axis=1)

  return jax.lax.fori_loop(0, t // chunk, body, jnp.zeros((b, t), jnp.float32))


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

"""Policy-masked attention: Dynamic-LLaVA's ``softmax_with_policy``.

Training a keep policy p in [0, 1]^S (1 on text, the hard Gumbel decision on
visual tokens) without dropping anything: each key's softmax weight is
multiplied by its policy, except a token always attends to itself:

  w_ij = exp(a_ij - max_j a_ij) * P_ij,   P_ij = p_j + (1 - p_j) [i == j]
  out_i = sum_j (w_ij + eps / S) v_j / (sum_j w_ij + eps)

(a_ij: the causal, segment-masked logits; eps = 1e-6, the reference's "for
stable training"). With p in {0, 1} and eps = 0, a kept query's output is
exactly the output of attention over the kept keys alone, i.e. the tokens
with p = 0 dropped; dropped queries see the kept keys and themselves, and
nothing kept ever sees them. With eps > 0 the kept query's output is
``(Z out_drop + eps/S sum_j v_j) / (Z + eps)`` with Z = sum_j w_ij (>= 1
when the row's largest logit is on a kept key), i.e. within ~eps of
dropping. The multiplicative form (not an additive log p bias) is what
carries the straight-through gradient to a dropped token's decision:
d out_i / d p_j = exp(a_ij - max) (v_j - out_i) / Z, nonzero at p_j = 0.

Deviation: the reference adds eps / S to every one of the row's S keys,
future and padding keys included (a 1e-6 leak through the causal mask);
here it is added to the keys the query may attend (same segment, causal).

Dense in float32 like the reference's ``scaled_dot_product_attention_
with_policy`` (it materialises [B, heads, T, T]); training only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.modeling.attention import segment_mask

EPS = 1e-6
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def policy_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     segment_ids: jax.Array, policy: jax.Array,
                     eps: float = EPS) -> jax.Array:
  """Causal self-attention under a keep policy.

  Args:
    q: float[B, T, N, H] (after RoPE); k, v: float[B, T, K, H].
    segment_ids: int32[B, T] (0: padding).
    policy: float[B, T] per-key keep weight (1 keeps, 0 drops).
    eps: the reference's stabiliser (0 gives exact dropping).

  Returns:
    float[B, T, N, H] in q's dtype.
  """
  b, t, n, h = q.shape
  kh = k.shape[2]
  g = n // kh
  qg = q.reshape(b, t, kh, g, h)
  logits = jnp.einsum("BTKGH,BSKH->BKGTS", qg, k,
                      preferred_element_type=jnp.float32) * h ** -0.5
  mask = segment_mask(segment_ids, segment_ids, True)[:, None, None]
  logits = jnp.where(mask, logits, _MASK_VALUE)
  logits = logits - logits.max(-1, keepdims=True)
  p = policy.astype(jnp.float32)[:, None, None, None, :]
  eye = jnp.eye(t, dtype=jnp.float32)
  weights = jnp.where(mask, jnp.exp(logits) * (p + (1.0 - p) * eye), 0.0)
  probs = (weights + jnp.where(mask, eps / t, 0.0)) / (
      weights.sum(-1, keepdims=True) + eps)
  out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v.astype(jnp.float32))
  return out.reshape(b, t, n, h).astype(q.dtype)

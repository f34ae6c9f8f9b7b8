"""Differentiable top-k (VisionSelector's soft mask) and the BCE term.

soft_topk(s, k) = sigmoid(s + t) with the threshold t chosen so that the mask
sums to k over the valid entries, found by 64 bisection steps exactly as the
reference (lo = -max(s) - 10, hi = -min(s) + 10). Its gradient is the
implicit one (t depends on s through the constraint):

    v = sigmoid'(s + t),  ds = g * v - v * sum(g * v) / sum(v).

Shapes are static: rows are padded to a fixed length with a ``valid`` mask
and ``k`` is a traced integer per row, so one compiled function serves every
budget and image size in a bucket. Padding never receives mass or gradient.
Everything runs in float32, also for bf16 inputs (the reference ran the
bisection in bf16, where the sum resolves only ~1 token at k ~ 200).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_STEPS = 64


def _threshold(s: jax.Array, k: jax.Array, valid: jax.Array) -> jax.Array:
  """Bisection for t with sum(sigmoid(s + t)) = k per row. s: [..., N]."""
  big = jnp.finfo(jnp.float32).max
  lo = -jnp.max(jnp.where(valid, s, -big), axis=-1) - 10.0
  hi = -jnp.min(jnp.where(valid, s, big), axis=-1) + 10.0
  any_valid = valid.any(-1)
  lo = jnp.where(any_valid, lo, 0.0)
  hi = jnp.where(any_valid, hi, 0.0)
  kf = k.astype(jnp.float32)

  def body(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    total = jnp.sum(jnp.where(valid, jax.nn.sigmoid(s + mid[..., None]), 0.0),
                    axis=-1)
    below = total < kf
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, _STEPS, body, (lo, hi))
  return (lo + hi) / 2


@jax.custom_vjp
def _soft_topk(s, k, valid):
  return _forward(s, k, valid)[0]


def _forward(s, k, valid):
  n_valid = valid.sum(-1)
  t = _threshold(s, k, valid)
  z = s + t[..., None]
  mask = jnp.where(valid, jax.nn.sigmoid(z), 0.0)
  # k >= n_valid: every valid token is kept (the reference asserts k < N);
  # k <= 0: nothing is. Both are exact, with zero gradient.
  full = (k >= n_valid)[..., None]
  empty = (k <= 0)[..., None]
  mask = jnp.where(full, valid.astype(jnp.float32),
                   jnp.where(empty, 0.0, mask))
  return mask, (z, valid & ~full & ~empty)


def _fwd(s, k, valid):
  mask, res = _forward(s, k, valid)
  return mask, res


def _bwd(res, g):
  z, active = res
  v = jnp.where(active, jax.nn.sigmoid(z) * jax.nn.sigmoid(-z), 0.0)
  gv = g * v
  denom = jnp.sum(v, axis=-1, keepdims=True)
  ds = gv - v * jnp.sum(gv, axis=-1, keepdims=True) / jnp.where(
      denom > 0, denom, 1.0)
  return ds, None, None


_soft_topk.defvjp(_fwd, _bwd)


def soft_topk(scores: jax.Array, k: jax.Array, valid: jax.Array) -> jax.Array:
  """The differentiable top-k mask.

  Args:
    scores: float[..., N] (any float dtype; computed in float32).
    k: int[...] tokens to keep per row (traced).
    valid: bool[..., N].

  Returns:
    float32[..., N] in [0, 1], summing to k over the valid entries (to the
    bisection's precision), exactly 0 on padding.
  """
  s = jnp.where(valid, scores.astype(jnp.float32), 0.0)
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), s.shape[:-1])
  return _soft_topk(s, k, valid)


def selection_bce(soft: jax.Array, hard: jax.Array, valid: jax.Array
                  ) -> jax.Array:
  """``F.binary_cross_entropy(soft, hard)`` over valid entries.

  Mean over all valid tokens of the batch (the reference averages over all
  visual tokens of the micro-batch), each log clamped at -100 as PyTorch
  does; 0 when there are none.
  """
  p = soft.astype(jnp.float32)
  y = hard.astype(jnp.float32)

  def clamped_log(x):
    # log(0) would give -inf and a 0 * inf = NaN gradient even where the
    # clamp or the mask discards it; the inner where keeps both finite.
    safe = jnp.where(x > 0, x, 1.0)
    return jnp.maximum(jnp.where(x > 0, jnp.log(safe), -100.0), -100.0)

  log_p = clamped_log(p)
  log_q = clamped_log(1.0 - p)
  loss = -(y * log_p + (1.0 - y) * log_q)
  n = valid.sum()
  return jnp.where(n > 0, jnp.sum(jnp.where(valid, loss, 0.0)) /
                   jnp.maximum(n, 1), 0.0)

"""Differentiable top-k (VisionSelector's soft mask) and the BCE term.

soft_topk(s, k) = sigmoid(s + t) with the threshold t chosen so that the mask
sums to k over the valid entries, found by 64 bisection steps exactly as the
reference (lo = -max(s) - 10, hi = -min(s) + 10). Its gradient is the
implicit one (t depends on s through the constraint):

    v = sigmoid'(s + t),  ds = g * v - v * sum(g * v) / sum(v).

Shapes are static: rows are padded to a fixed length with a ``valid`` mask
(or a group id per entry: ``soft_topk_in_group`` pools each group, e.g.
each sample of a packed row, on its own) and ``k`` is a traced integer per
row (per group), so one compiled function serves every
budget and image size in a bucket. Padding never receives mass or gradient.
Everything runs in float32, also for bf16 inputs (the reference ran the
bisection in bf16, where the sum resolves only ~1 token at k ~ 200).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_STEPS = 64


def _per_group(x: jax.Array, group: jax.Array, op=jax.ops.segment_sum
               ) -> jax.Array:
  """``op`` of x [R, N] over each row's groups, indexed by group id:
  [R, N] (ids are < N; entries with group -1 are left out)."""
  n = x.shape[-1]
  return jax.vmap(lambda a, g: op(a, jnp.where(g >= 0, g, n),
                                  num_segments=n + 1)[:n])(x, group)


def _at(per_group: jax.Array, group: jax.Array) -> jax.Array:
  """Each entry's value of its group, [R, N]."""
  return jnp.take_along_axis(per_group, jnp.maximum(group, 0), axis=-1)


def _threshold(s: jax.Array, k: jax.Array, group: jax.Array) -> jax.Array:
  """Bisection for t_g with sum over group g of sigmoid(s + t_g) = k_g;
  s, k, group: [R, N] (k per entry: its group's); returns t per entry."""
  big = jnp.finfo(jnp.float32).max
  valid = group >= 0
  lo = -_at(_per_group(jnp.where(valid, s, -big), group,
                       jax.ops.segment_max), group) - 10.0
  hi = -_at(_per_group(jnp.where(valid, s, big), group,
                       jax.ops.segment_min), group) + 10.0
  lo = jnp.where(valid, lo, 0.0)
  hi = jnp.where(valid, hi, 0.0)
  kf = k.astype(jnp.float32)

  def body(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) / 2
    total = _at(_per_group(jnp.where(valid, jax.nn.sigmoid(s + mid), 0.0),
                           group), group)
    below = total < kf
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, _STEPS, body, (lo, hi))
  return (lo + hi) / 2


@jax.custom_vjp
def _soft_topk(s, k, group):
  return _forward(s, k, group)[0]


def _forward(s, k, group):
  valid = group >= 0
  n_valid = _at(_per_group(valid.astype(jnp.int32), group), group)
  z = s + _threshold(s, k, group)
  mask = jnp.where(valid, jax.nn.sigmoid(z), 0.0)
  # k >= n_valid: every valid token is kept (the reference asserts k < N);
  # k <= 0: nothing is. Both are exact, with zero gradient.
  full = k >= n_valid
  empty = k <= 0
  mask = jnp.where(full, valid.astype(jnp.float32),
                   jnp.where(empty, 0.0, mask))
  return mask, (z, group, valid & ~full & ~empty)


def _fwd(s, k, group):
  mask, res = _forward(s, k, group)
  return mask, res


def _bwd(res, g):
  z, group, active = res
  v = jnp.where(active, jax.nn.sigmoid(z) * jax.nn.sigmoid(-z), 0.0)
  gv = g * v
  denom = _at(_per_group(v, group), group)
  ds = gv - v * _at(_per_group(gv, group), group) / jnp.where(
      denom > 0, denom, 1.0)
  return ds, None, None


_soft_topk.defvjp(_fwd, _bwd)


def soft_topk_in_group(scores: jax.Array, k_token: jax.Array,
                       group: jax.Array) -> jax.Array:
  """The differentiable top-k mask within groups of each row: one
  threshold per group (per-sample pooling inside packed rows groups by
  sample).

  Args:
    scores: float[..., N] (any float dtype; computed in float32).
    k_token: int[..., N] the k of each entry's group (traced).
    group: int[..., N] group id in [0, N) per entry, -1 = not a candidate.

  Returns:
    float32[..., N] in [0, 1], summing to k over each group (to the
    bisection's precision), exactly 0 outside the groups.
  """
  shape = scores.shape
  n = shape[-1]
  group = jnp.broadcast_to(jnp.asarray(group, jnp.int32), shape)
  s = jnp.where(group >= 0, scores.astype(jnp.float32), 0.0)
  k = jnp.broadcast_to(jnp.asarray(k_token, jnp.int32), shape)
  out = _soft_topk(s.reshape(-1, n), k.reshape(-1, n), group.reshape(-1, n))
  return out.reshape(shape)


def soft_topk(scores: jax.Array, k: jax.Array, valid: jax.Array) -> jax.Array:
  """The differentiable top-k mask, pooled over each row.

  Args:
    scores: float[..., N] (any float dtype; computed in float32).
    k: int[...] tokens to keep per row (traced).
    valid: bool[..., N].

  Returns:
    float32[..., N] in [0, 1], summing to k over the valid entries (to the
    bisection's precision), exactly 0 on padding.
  """
  k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1])
  return soft_topk_in_group(scores, jnp.broadcast_to(k[..., None],
                                                     scores.shape),
                            jnp.where(valid, 0, -1))


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

"""Ranking inside groups with static shapes: the one helper every method
uses to keep "the best k of each group" (O(T log T), two stable sorts)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

_LAST = jnp.iinfo(jnp.int32).max


def rank_in_group(key: jax.Array, group: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
  """Each token's rank within its group by ascending ``key``, ties to the
  lower position.

  Args:
    key: float[B, T] (or int); smaller ranks first (pass -score for "best
      first", zeros for position order).
    group: int32[B, T] group ids, -1 for tokens in no group.
    mask: bool[B, T] tokens taking part (default: group >= 0).

  Returns:
    int32[B, T]: 0, 1, ... within each group; tokens outside ``mask`` get
    ranks after every member (never < any group's size).
  """
  t = key.shape[1]
  member = group >= 0 if mask is None else mask & (group >= 0)

  def row(k, g, m):
    by_key = jnp.argsort(jnp.where(m, k, jnp.inf) if jnp.issubdtype(
        k.dtype, jnp.floating) else jnp.where(m, k, jnp.iinfo(k.dtype).max),
                         stable=True)
    gid = jnp.where(m, g, _LAST)
    order = by_key[jnp.argsort(gid[by_key], stable=True)]
    sorted_g = gid[order]
    first = jnp.searchsorted(sorted_g, sorted_g, side="left")
    rank = (jnp.arange(t) - first).astype(jnp.int32)
    rank = jnp.where(sorted_g == _LAST, t, rank)
    return jnp.zeros(t, jnp.int32).at[order].set(rank)

  return jax.vmap(row)(key, group, member)


def group_sizes(group: jax.Array) -> jax.Array:
  """int32[B, T]: the size of each token's group (0 outside groups)."""
  t = group.shape[1]

  def row(g):
    ok = g >= 0
    counts = jnp.zeros(t, jnp.int32).at[jnp.maximum(g, 0)].add(ok)
    return jnp.where(ok, counts[jnp.maximum(g, 0)], 0)

  return jax.vmap(row)(group)


def top_k_in_group(scores: jax.Array, group: jax.Array, k_token: jax.Array
                   ) -> jax.Array:
  """bool[B, T]: the ``k_token`` best-scoring tokens of each group (ties to
  the lower position). One group per row is the reference's pooled top-k
  over all images of a sample; one group per image is per-image budgets."""
  return (group >= 0) & (rank_in_group(-scores, group) < k_token)

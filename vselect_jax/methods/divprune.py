"""DivPrune (Alvar et al., 2025): greedy max-min diversity (farthest-point
sampling) on the cosine distance between post-merger embeddings.

The first pick of each group is the token whose nearest other token is
farthest, as the reference implementation does; then each step adds the
token farthest from the group's picks. k = max(1, floor(N * budget)) like
every method here (the reference rounds instead).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import PRE_LLM, Choice, Context, Method


def divprune_mask(tokens: jax.Array, group: jax.Array, k_token: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """Greedy max-min cosine diversity per group.

  Args:
    tokens: float[B, T, E] visual embeddings at their positions.
    group: int32[B, T] (-1 for text); k_token: int32[B, T].

  Returns:
    (bool[B, T] selection, float32[B, T] importance = T - pick order).
  """
  x = tokens.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  t = x.shape[1]

  def row(xr, g, k):
    dist = 1.0 - xr @ xr.T                                # [T, T]
    same = (g[:, None] == g[None, :]) & (g[:, None] >= 0)
    big = jnp.float32(1e9)
    # First pick per group: the token whose nearest other token is farthest.
    off = jnp.where(same & ~jnp.eye(t, dtype=bool), dist, big)
    nearest = off.min(axis=1)

    def body(step, state):
      selected, order, min_d, count = state
      # count[i]: picks so far in i's group. A candidate's value is its min
      # distance to its group's picks, or, before the group's first pick,
      # its nearest-neighbour distance.
      value = jnp.where(count > 0, min_d, nearest)
      open_ = (g >= 0) & ~selected & (count < k)
      value = jnp.where(open_, value, -big)
      j = jnp.argmax(value)
      take = value[j] > -big
      selected = selected.at[j].set(selected[j] | take)
      order = order.at[j].set(jnp.where(take, step, order[j]))
      mine = take & same[j]
      min_d = jnp.where(mine, jnp.minimum(min_d, dist[j]), min_d)
      return selected, order, min_d, count + mine.astype(jnp.int32)

    init = (jnp.zeros(t, bool), jnp.full(t, t, jnp.int32),
            jnp.full(t, big), jnp.zeros(t, jnp.int32))
    selected, order, _, _ = jax.lax.fori_loop(0, t, body, init)
    return selected, (t - order).astype(jnp.float32)

  return jax.vmap(row)(x, group, k_token)


def select(ctx: Context) -> Choice:
  selected, order = divprune_mask(ctx.tokens, ctx.group, ctx.k_token)
  return Choice(selected, jnp.where(ctx.visual, order, 0.0))


METHOD = Method("divprune", PRE_LLM, select,
                summary="greedy max-min cosine diversity of the embeddings")

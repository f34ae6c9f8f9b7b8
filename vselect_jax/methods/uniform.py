"""Uniform selection: k tokens evenly spaced along each group's raster order
(token ``floor(i * N / k)`` for i < k)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import PRE_LLM, Choice, Context, Method
from vselect_jax.methods.ranking import group_sizes, rank_in_group


def uniform_mask(group: jax.Array, k_token: jax.Array) -> jax.Array:
  """bool[B, T]: the tokens at floor(i * N / k), i < k, of each group."""
  rank = rank_in_group(jnp.zeros(group.shape, jnp.int32), group)
  size = group_sizes(group)
  k = jnp.maximum(k_token, 1)
  i = -(-(rank * k) // jnp.maximum(size, 1))          # ceil(rank * k / N)
  hit = (i < k) & ((i * size) // k == rank)
  return (group >= 0) & (k_token > 0) & hit


def select(ctx: Context) -> Choice:
  selected = uniform_mask(ctx.group, ctx.k_token)
  return Choice(selected, selected.astype(jnp.float32))


METHOD = Method("uniform", PRE_LLM, select,
                summary="evenly spaced in raster order")

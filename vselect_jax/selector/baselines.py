"""Training-free baselines that drop visual tokens before the LLM, under the
same static-shape selection API as the learned scorer.

Each method turns a row's visual tokens into a bool selection of exactly
k tokens per group (the row, or each image with ``per_image``) plus a float
"importance" for visualisation:

* ``random``  seeded uniform scores, top-k;
* ``uniform`` k tokens evenly spaced along the group's raster order
  (token ``floor(i * N / k)`` for i < k);
* ``divprune`` greedy max-min diversity (farthest-point sampling) on cosine
  distance between post-merger embeddings (Alvar et al., 2025). The first
  pick is the token whose nearest other token is farthest, as the reference
  implementation does; then each step adds the token farthest from the
  selected set. k = max(1, floor(N * budget)) like every method here (the
  reference rounds instead).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Every ``method=``: the learned scorer, the pre-LLM baselines here and in
# ``visionzip``, and the in-LLM ones of ``in_llm``.
METHODS = ("selector", "random", "uniform", "divprune", "visionzip", "fastv",
           "dart")


def _rank_in_group(group: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per token: its index within its group (raster order) and group size."""
  same = (group[:, :, None] == group[:, None, :]) & (group >= 0)[:, None, :]
  earlier = jnp.tril(jnp.ones(same.shape[1:], bool), -1)[None]  # j < i
  rank = jnp.sum(same & earlier, axis=2)
  size = jnp.sum(same, axis=2)
  return rank, size


def random_scores(seed: int, shape) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), shape)


def uniform_mask(group: jax.Array, k_token: jax.Array) -> jax.Array:
  """bool[B, T]: floor(i * N / k) for i < k within each group."""
  rank, size = _rank_in_group(group)
  k = jnp.maximum(k_token, 1)
  i = -(-(rank * k) // jnp.maximum(size, 1))          # ceil(rank * k / N)
  hit = (i < k) & ((i * size) // k == rank)
  return (group >= 0) & (k_token > 0) & hit


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

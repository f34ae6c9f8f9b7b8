"""PruMerge+ (Shang et al., 2024): attention outliers and a spatially
uniform sample, each kept token absorbing its most key-similar neighbours.

As the reference's ``prumerge`` port for Qwen2.5-VL, per group (the row, or
each image with ``per_image``):

* score of a merged token = last-vision-block attention pooled over merge
  units, mean over heads and over the row's queries (= VisionZip's
  dominance / (merge_unit * visual tokens of the row));
* ``iqr`` = number of scores above Q3 + 1.5 IQR of the group (numpy's
  linear percentiles), at least 1; with k = max(1, floor(N r)):
  k <= iqr keeps the top k by score; else the top iqr, then the grid
  ``arange(0, N, max(1, N // k))`` (raster order, outliers skipped).
  The data-dependent counts become one ranking key (outliers by score,
  then grid tokens by position, then the rest) over a static top-k;
* each kept token i absorbs its ``NEIGHBOURS`` = 32 most key-cosine-similar
  other tokens j of its group (keys: that block's keys after RoPE, all
  heads concatenated, averaged over the merge unit), weighted by their
  un-normalised scores: x_i + sum_j a_j x_j (post-merger embeddings).

The reference fills up with ``randperm`` when outliers + grid fall short
of k; they never do (the grid alone has ceil(N / floor(N / k)) >= k
tokens), so the fill here (the best remaining by score) only orders tokens
past k. Deviation by default: each merged feature stays at its own token's
position. ``faithful=True`` reproduces the reference's scatter: the merged
features, taken in keep order (outliers by score, then the grid), are
written to the kept positions in ascending order, so features and M-RoPE
positions are misaligned. The last block's attention is restricted to each
image, as the reference's block mask.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import (PRE_LLM, VISION_LAST_BLOCK, Choice,
                                      Context, Method)
from vselect_jax.methods.ranking import group_sizes, rank_in_group
from vselect_jax.methods.visionzip import last_block_at_positions

NEIGHBOURS = 32
WHISKER = 1.5


def _group_order(values: jax.Array, group: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Each row's group members sorted by (group, value): the sorted values
  float32[B, T] (members first) and each token's group start slot
  int32[B, T]."""
  t = values.shape[1]
  member = group >= 0
  rank = rank_in_group(values, group)
  slot = rank_in_group(jnp.where(member, group, 0) * t + rank,
                       jnp.where(member, 0, -1))
  ordered = jax.vmap(lambda s, v: jnp.zeros(t, jnp.float32).at[s].set(
      v, mode="drop"))(jnp.where(member, slot, t), values.astype(jnp.float32))
  return ordered, slot - rank


def iqr_outliers(scores: jax.Array, group: jax.Array) -> jax.Array:
  """bool[B, T]: the group members scoring above Q3 + 1.5 (Q3 - Q1) of
  their group, percentiles interpolated linearly (``np.percentile``)."""
  n = group_sizes(group)
  ordered, start = _group_order(scores, group)

  def quantile(q):
    pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    v_lo = jnp.take_along_axis(ordered, start + lo, 1)
    v_hi = jnp.take_along_axis(ordered, start + hi, 1)
    return v_lo + (pos - lo) * (v_hi - v_lo)

  q1, q3 = quantile(0.25), quantile(0.75)
  return (group >= 0) & (scores > q3 + WHISKER * (q3 - q1))


def priority(scores: jax.Array, group: jax.Array, k_token: jax.Array,
             fill: jax.Array) -> jax.Array:
  """int32[B, T]: each token's place in PruMerge+'s keep order within its
  group (keep the k first): the top ``max(iqr, 1)`` by score (the outliers,
  or the best token when there are none), then the grid
  ``rank % max(1, N // k) == 0`` by position, then the rest by ascending
  ``fill``."""
  t = scores.shape[1]
  member = group >= 0
  n = group_sizes(group)
  by_score = rank_in_group(-scores, group)
  # The outliers are exactly the top-iqr by score (they beat every other).
  outlier = member & (iqr_outliers(scores, group) | (by_score == 0))
  raster = rank_in_group(jnp.zeros(group.shape, jnp.int32), group)
  step = jnp.maximum(1, n // jnp.maximum(k_token, 1))
  grid = member & ~outlier & (raster % step == 0)
  rest = member & ~outlier & ~grid
  within = jnp.where(outlier, by_score, jnp.where(
      grid, raster, rank_in_group(fill, group, rest)))
  cls = jnp.where(outlier, 0, jnp.where(grid, 1, 2))
  return rank_in_group(cls * t + within, group)


def merge_neighbours(tokens: jax.Array, keys: jax.Array, weight: jax.Array,
                     group: jax.Array, neighbours: int = NEIGHBOURS
                     ) -> jax.Array:
  """float[B, T, E]: every group member x_i + sum_j weight_j x_j over its
  ``neighbours`` most key-cosine-similar other members j (fewer in small
  groups); other positions unchanged."""
  t = tokens.shape[1]
  m = max(1, min(neighbours, t - 1))
  x = keys.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

  def row(xr, emb, w, g):
    ok = ((g[:, None] == g[None, :]) & (g[None, :] >= 0)
          & ~jnp.eye(t, dtype=bool))
    sim, idx = jax.lax.top_k(jnp.where(ok, xr @ xr.T, -jnp.inf), m)
    wt = jnp.where(jnp.isfinite(sim), w[idx], 0.0)
    mix = jnp.zeros((t, t), jnp.float32).at[
        jnp.arange(t)[:, None], idx].add(wt)
    e = emb.astype(jnp.float32)
    out = e + mix @ e
    return jnp.where((g >= 0)[:, None], out, e).astype(emb.dtype)

  return jax.vmap(row)(x, tokens, weight.astype(jnp.float32), group)


def misalign(tokens: jax.Array, order: jax.Array, group: jax.Array,
             selected: jax.Array) -> jax.Array:
  """The reference's scatter: the kept features in keep order (``order``
  ascending) written to the kept positions in ascending order, per group.
  float[B, T, E] (unselected positions unchanged)."""
  t = tokens.shape[1]
  gid = jnp.where(selected, group, 0) * t
  live = jnp.where(selected, 0, -1)
  by_order = rank_in_group(gid + rank_in_group(order, group, selected), live)
  by_pos = rank_in_group(gid + rank_in_group(
      jnp.zeros(group.shape, jnp.int32), group, selected), live)
  src = jax.vmap(lambda s: jnp.zeros(t, jnp.int32).at[s].set(
      jnp.arange(t, dtype=jnp.int32), mode="drop"))(
          jnp.where(selected, by_order, t))
  moved = jnp.take_along_axis(src, jnp.where(selected, by_pos, 0), 1)
  out = jnp.take_along_axis(tokens, moved[..., None], 1)
  return jnp.where(selected[..., None], out, tokens)


def select(ctx: Context) -> Choice:
  dom, keys = last_block_at_positions(ctx, flat_keys=True)
  unit = ctx.model.visual.config.merge_unit
  n_row = jnp.maximum(ctx.visual.sum(axis=1, keepdims=True), 1)
  scores = jnp.where(ctx.visual, dom / (unit * n_row), 0.0)
  order = priority(scores, ctx.group, ctx.k_token, -scores)
  selected = (ctx.group >= 0) & (order < ctx.k_token)
  tokens = merge_neighbours(ctx.tokens, keys, scores, ctx.group)
  if ctx.options["faithful"]:
    tokens = misalign(tokens, order, ctx.group, selected)
  x = jnp.where(ctx.visual[..., None], tokens.astype(ctx.x.dtype), ctx.x)
  return Choice(selected, scores, x=x)


METHOD = Method(
    "prumerge", PRE_LLM, select, needs=frozenset({VISION_LAST_BLOCK}),
    options={"faithful": False},
    summary="last-ViT-block attention outliers (IQR) + uniform grid + fill, "
    "each kept token merging its 32 key-nearest (PruMerge+)")

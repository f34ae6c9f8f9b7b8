"""HoloV (Zou et al., 2025): holistic pruning; the budget is shared out over
row-band crops by their attention and similarity variance, then each crop
keeps its most attended tokens.

As the reference's ``holov`` port for Qwen2.5-VL, per group (the row, or
each image with ``per_image``) of N tokens with k = max(1, floor(N r)):

* attention a = last-vision-block attention received per patch, mean over
  heads and queries, averaged over the merge unit (VisionZip's dominance,
  up to a constant that cancels below);
* P = max(1, floor((1024 / 576) N / k)) crops: contiguous chunks of
  ceil(N / P) tokens of the raster order (row bands), as ``torch.chunk``;
* per crop, on the post-merger embeddings: S = cosine similarities with a
  zero diagonal, mean_i = sum_j S_ij / (n - 1), var_i = sum_j (S_ij -
  mean_i)^2 / (n - 1) (the zero diagonal entry included); token score =
  1e3 a + 0.09 var s with s = mean|1e3 a| / (mean|var| + 1e-6) over the
  crop;
* crop weight = mean token score / the group's sum of them; allocation
  floor(w k), the remainder +1 to the heaviest crops (ties to the earlier);
  each crop keeps its top-allocation tokens by attention (the whole crop if
  the allocation exceeds it).

Deviations by default: the reference pads short selections with zero
vectors at position -1; we fill up to exactly k with the best remaining
tokens by attention. It leaves video unpruned; we prune it. With
``faithful=True`` two quirks of the reference are reproduced: the attention
scores stay in the vision tower's window order (so token i is scored with
window-order token i's attention, misaligned for images larger than one
window), and the pruned span starts one early, at ``<|vision_start|>``:
the decision for token i applies to the position before it, so the start
token can be dropped and each item's last token is always kept (k or k + 1
visual tokens per group).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import (PRE_LLM, VISION_LAST_BLOCK, Choice,
                                      Context, Method)
from vselect_jax.methods.ranking import group_sizes, rank_in_group
from vselect_jax.methods.visionzip import last_block_at_positions

ATTENTION_SCALE = 1e3
VARIANCE_WEIGHT = 0.09
# The reference's crop count: (1024 / 576) N / k = 16 N / (9 k).
CROPS_NUM, CROPS_DEN = 16, 9


def crop_ids(group: jax.Array, k_token: jax.Array) -> jax.Array:
  """int32[B, T]: each group member's crop (0, 1, ... in raster order),
  -1 elsewhere: P = max(1, floor(16 N / (9 k))) chunks of ceil(N / P)."""
  n = group_sizes(group)
  p = jnp.maximum(1, (CROPS_NUM * n) // (CROPS_DEN * jnp.maximum(k_token, 1)))
  size = jnp.maximum(1, -(-n // p))
  raster = rank_in_group(jnp.zeros(group.shape, jnp.int32), group)
  return jnp.where(group >= 0, raster // size, -1)


def _crop_group(group: jax.Array, crop: jax.Array) -> jax.Array:
  """int32[B, T]: one id per (group, crop), -1 outside: the group's first
  position + the crop index, unique and < T because a group's tokens are
  one run of visual tokens (items never interleave)."""
  t = group.shape[1]
  member = group >= 0
  first = jax.vmap(lambda g: jnp.full(t, t, jnp.int32).at[g].min(
      jnp.arange(t, dtype=jnp.int32), mode="drop"))(jnp.where(member, group, t))
  start = jnp.take_along_axis(first, jnp.maximum(group, 0), 1)
  return jnp.where(member, start + crop, -1)


def _sum_over(mask: jax.Array, v: jax.Array) -> jax.Array:
  """sum_j mask[i, j] v[j] for one row, exact (no matmul precision)."""
  return jnp.where(mask, v[None, :], 0).sum(1)


def _same(ids: jax.Array) -> jax.Array:
  """bool[T, T]: i and j in the same group (both >= 0)."""
  return (ids[:, None] == ids[None, :]) & (ids[:, None] >= 0)


def token_scores(attn: jax.Array, tokens: jax.Array, cgroup: jax.Array
                 ) -> jax.Array:
  """float32[B, T]: HoloV's token score 1e3 a + 0.09 var s within each
  crop (``cgroup``: one id per crop, -1 outside)."""
  t = attn.shape[1]
  x = tokens.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  n = group_sizes(cgroup).astype(jnp.float32)

  def row(xr, a, cg, nr):
    same = _same(cg)
    d = jnp.maximum(nr - 1, 1.0)
    sim = jnp.where(same & ~jnp.eye(t, dtype=bool), xr @ xr.T, 0.0)
    mean = sim.sum(1) / d
    var = jnp.where(same, (sim - mean[:, None]) ** 2, 0.0).sum(1) / d
    a = ATTENTION_SCALE * a
    s = _sum_over(same, jnp.abs(a)) / (_sum_over(same, jnp.abs(var)) + 1e-6
                                       * jnp.maximum(nr, 1.0))
    return jnp.where(cg >= 0, a + VARIANCE_WEIGHT * var * s, 0.0)

  return jax.vmap(row)(x, attn.astype(jnp.float32), cgroup, n)


def allocation(score: jax.Array, group: jax.Array, crop: jax.Array,
               k_token: jax.Array) -> jax.Array:
  """int32[B, T]: the number of tokens allotted to each token's crop:
  floor(w k) with w = crop mean score / the group's sum of crop means, the
  remainder +1 to the heaviest crops (ties to the earlier crop)."""
  cgroup = _crop_group(group, crop)
  n = group_sizes(cgroup).astype(jnp.float32)
  # One representative (the first token) per crop.
  first = (group >= 0) & (rank_in_group(jnp.zeros(group.shape, jnp.int32),
                                        cgroup) == 0)

  def weights(sc, g, cg, nr, f, k):
    cmean = _sum_over(_same(cg), sc) / jnp.maximum(nr, 1.0)
    total = _sum_over(_same(g), jnp.where(f, cmean, 0.0))
    w = cmean / jnp.where(total > 0, total, 1.0)
    base = jnp.floor(w * k).astype(jnp.int32)
    rem = k - _sum_over(_same(g), jnp.where(f, base, 0))
    return w, base, rem

  w, base, rem = jax.vmap(weights)(score, group, cgroup, n, first, k_token)
  crop_rank = rank_in_group(-w, group, first)
  crop_rank = jax.vmap(lambda cg, r, f: _sum_over(_same(cg), jnp.where(
      f, r, 0)))(cgroup, crop_rank, first)
  return jnp.where(group >= 0, base + (crop_rank < rem), 0)


def holov_mask(attn: jax.Array, tokens: jax.Array, group: jax.Array,
               k_token: jax.Array) -> tuple[jax.Array, jax.Array]:
  """HoloV's selection of exactly k per group.

  Args:
    attn: float32[B, T] attention received (visual positions).
    tokens: float[B, T, E] post-merger embeddings at their positions.
    group: int32[B, T] (-1 for text); k_token: int32[B, T].

  Returns:
    (bool[B, T] selected, float32[B, T] token scores).
  """
  t = attn.shape[1]
  member = group >= 0
  crop = crop_ids(group, k_token)
  cgroup = _crop_group(group, crop)
  score = token_scores(attn, tokens, cgroup)
  alloc = allocation(score, group, crop, k_token)
  in_crop = rank_in_group(-attn, cgroup)
  allotted = member & (in_crop < alloc)
  # Crops smaller than their allocation leave a shortfall: the best
  # remaining tokens by attention fill it, so exactly k are kept.
  fill = rank_in_group(-attn, group, member & ~allotted)
  key = jnp.where(allotted, in_crop, t + fill)
  selected = member & (rank_in_group(key, group) < k_token)
  return selected, score


def _shift_left(a: jax.Array, fill) -> jax.Array:
  """a[:, p + 1] at p (the last position gets ``fill``)."""
  pad = jnp.full(a.shape[:1] + (1,) + a.shape[2:], fill, a.dtype)
  return jnp.concatenate([a[:, 1:], pad], axis=1)


def select(ctx: Context) -> Choice:
  faithful = ctx.options["faithful"]
  attn, _ = last_block_at_positions(ctx, raster=not faithful)
  selected, score = holov_mask(attn, ctx.tokens, ctx.group, ctx.k_token)
  if not faithful:
    return Choice(selected, score)
  # The reference slices the image span from <|vision_start|>: decision i
  # applies to position i - 1 of the item; its last token is never a
  # candidate (always kept).
  return Choice(_shift_left(selected, False), _shift_left(score, 0.0),
                candidates=_shift_left(ctx.visual, False))


METHOD = Method(
    "holov", PRE_LLM, select, needs=frozenset({VISION_LAST_BLOCK}),
    options={"faithful": False},
    summary="budget shared over row-band crops by attention + similarity "
    "variance, top attention per crop (HoloV)")

"""VisionSelector: the learned importance scorer's top-k (Zhu et al., 2025).

At inference the k best-scoring visual tokens of each group are kept. In
training nothing is dropped: ``relax`` returns the differentiable soft top-k
mask (which scales the visual tokens), the hard top-k and the BCE between
them, as the reference trains the scorer.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import PRE_LLM, Choice, Context, Method, Relaxed
from vselect_jax.methods.ranking import top_k_in_group
from vselect_jax.selector import topk as topk_lib


def _pools(ctx: Context):
  """The training pools: each row (``pool="row"``) or each sample of a
  packed row (``pool="sample"``: its segment, as the reference pools its
  batch of one per device); (group int32[B, T], None for the row)."""
  pool = ctx.options.get("pool", "row")
  if pool not in ("row", "sample"):
    raise ValueError(f"selector option pool must be 'row' or 'sample', got "
                     f"{pool!r}")
  if pool == "sample":
    return jnp.where(ctx.visual, ctx.batch["segment_ids"], -1)
  return None


def _scores(ctx: Context) -> jax.Array:
  return ctx.model.visual.importance_scorer(ctx.tokens, ctx.visual,
                                            detach=ctx.detach_scorer,
                                            group=_pools(ctx))


def select(ctx: Context) -> Choice:
  scores = _scores(ctx)
  return Choice(top_k_in_group(scores, ctx.group, ctx.k_token), scores)


def relax(ctx: Context) -> Relaxed:
  return relax_scores(ctx, _scores(ctx))


def relax_scores(ctx: Context, scores: jax.Array) -> Relaxed:
  """Soft and hard top-k of ``scores`` float32[B, T] over each pool (the
  row, with ``k_row``, or each sample, with ``k_token``: the k of each
  visual token's sample) and their BCE (shared with the in-tower
  selector)."""
  group = _pools(ctx)
  if group is None:
    group = jnp.where(ctx.visual, 0, -1)
    k_token = jnp.where(ctx.visual, ctx.k_row[:, None], 0)
  else:
    k_token = jnp.where(ctx.visual, ctx.k_token, 0)
  soft = topk_lib.soft_topk_in_group(scores, k_token, group)
  hard = top_k_in_group(jax.lax.stop_gradient(scores), group, k_token)
  hard = hard.astype(jnp.float32)
  return Relaxed(soft, hard, topk_lib.selection_bce(soft, hard, ctx.visual))


def view(ctx: Context, choice: Choice) -> jax.Array:
  """The soft top-k mask the scorer is trained towards (what the reference
  draws)."""
  return topk_lib.soft_topk(choice.scores, ctx.k_row, ctx.visual)


METHOD = Method("selector", PRE_LLM, select, relax=relax, view=view,
                options={"pool": "row"},
                summary="learned importance scorer, top-k (VisionSelector)")

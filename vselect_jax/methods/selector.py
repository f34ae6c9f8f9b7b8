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


def _scores(ctx: Context) -> jax.Array:
  return ctx.model.visual.importance_scorer(ctx.tokens, ctx.visual,
                                            detach=ctx.detach_scorer)


def select(ctx: Context) -> Choice:
  scores = _scores(ctx)
  return Choice(top_k_in_group(scores, ctx.group, ctx.k_token), scores)


def relax(ctx: Context) -> Relaxed:
  return relax_scores(ctx, _scores(ctx))


def relax_scores(ctx: Context, scores: jax.Array) -> Relaxed:
  """The soft top-k of ``scores`` float32[B, T] pooled per row, its hard
  top-k and their BCE (shared with the in-tower selector)."""
  soft = topk_lib.soft_topk(scores, ctx.k_row, ctx.visual)
  pooled = jnp.where(ctx.visual, 0, -1)
  hard = top_k_in_group(jax.lax.stop_gradient(scores), pooled,
                        jnp.where(ctx.visual, ctx.k_row[:, None], 0))
  hard = hard.astype(jnp.float32)
  return Relaxed(soft, hard, topk_lib.selection_bce(soft, hard, ctx.visual))


def view(ctx: Context, choice: Choice) -> jax.Array:
  """The soft top-k mask the scorer is trained towards (what the reference
  draws)."""
  return topk_lib.soft_topk(choice.scores, ctx.k_row, ctx.visual)


METHOD = Method("selector", PRE_LLM, select, relax=relax, view=view,
                summary="learned importance scorer, top-k (VisionSelector)")

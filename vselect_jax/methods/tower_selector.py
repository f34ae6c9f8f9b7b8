"""VisionSelector inside the vision tower: a learned scorer after vision
block ``block`` keeps the top-k merge units; later blocks, the merger and
the LLM run on the kept units alone.

The scorer (``visual.block_scorer``, the LIS's math: q . mean(k) / sqrt(h))
reads each 2x2 merge unit's 4 patch hidden states, each through the next
block's RMSNorm (``scorer_input``), concatenated (width 4 x the vision
width), so one score is one future LLM token and what is kept is exactly
what becomes one. Budgets, groups (per row or ``per_image``) and
the training relaxation are the post-tower selector's, over the same visual
positions. ``block`` = the tower's depth is the post-tower selector itself
(the engine's ``select_at`` maps it there).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import (IN_VISION, VISION_BLOCK, Choice,
                                      Context, Method, Relaxed)
from vselect_jax.methods.ranking import top_k_in_group
from vselect_jax.methods.selector import relax_scores
from vselect_jax.selector import topk as topk_lib
from vselect_jax.selector.scorer import PAD_SCORE


def scorer_input(model, units: jax.Array, block: int) -> jax.Array:
  """What the block scorer reads: each patch of units float[B, U, 4 Dv]
  through vision block ``block``'s own pre-attention RMSNorm (``norm1``,
  frozen), i.e. the hidden states as that block's attention sees them.

  The residual stream inside the tower is not normalised and grows with
  depth (RMS ~31 after block 0 of the world's tower, against ~1.6 for the
  merged tokens the post-tower LIS reads); the LIS's score is quadratic in
  its input, so raw states put the soft top-k in saturation within a few
  steps and its gradient vanishes (bench/results.md, world selection).
  The norm makes the score independent of that scale."""
  b, u, w = units.shape
  dv = model.visual.config.hidden_size
  return model.visual.blocks[block].norm1(
      units.reshape(b, u, w // dv, dv)).reshape(b, u, w)


def _scores(ctx: Context) -> jax.Array:
  """float32[B, T]: each visual position's unit score (PAD_SCORE elsewhere)."""
  units, unit_valid, unit_at = ctx.extras[VISION_BLOCK]
  h = scorer_input(ctx.model, units, int(ctx.options["block"]))
  s = ctx.model.visual.block_scorer(h, unit_valid,
                                    detach=ctx.detach_scorer)     # [B, U]
  at = jnp.take_along_axis(s, jnp.maximum(unit_at, 0), axis=1)
  return jnp.where(ctx.visual, at, PAD_SCORE)


def select(ctx: Context) -> Choice:
  scores = _scores(ctx)
  return Choice(top_k_in_group(scores, ctx.group, ctx.k_token), scores)


def relax(ctx: Context) -> Relaxed:
  return relax_scores(ctx, _scores(ctx))


def view(ctx: Context, choice: Choice) -> jax.Array:
  return topk_lib.soft_topk(choice.scores, ctx.k_row, ctx.visual)


METHOD = Method("tower_selector", IN_VISION, select, relax=relax, view=view,
                block=lambda model, options: options["block"],
                options={"block": 16},
                summary="learned scorer inside the vision tower after block "
                        "`block` (units dropped there), top-k")

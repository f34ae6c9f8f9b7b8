"""Random selection: seeded uniform scores, top-k per group."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import PRE_LLM, Choice, Context, Method
from vselect_jax.methods.ranking import top_k_in_group


def random_scores(seed: int, shape) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), shape)


def select(ctx: Context) -> Choice:
  scores = random_scores(ctx.options["seed"], ctx.visual.shape)
  return Choice(top_k_in_group(scores, ctx.group, ctx.k_token),
                jnp.where(ctx.visual, scores, 0.0))


METHOD = Method("random", PRE_LLM, select, options={"seed": 0},
                summary="seeded uniform scores, top-k")

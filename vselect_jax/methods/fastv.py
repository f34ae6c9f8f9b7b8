"""FastV (Chen et al., 2024): prune inside the LLM at layer K = 2.

Layers [0, K) run on the whole prompt (their KV caches stay full length, as
the reference); the visual tokens are ranked by the attention they
*receive* in layer K-1, averaged over heads and summed over all query rows
of their sample (causal): the paper's "average attention received from all
other tokens" and the reference's default (``origin=False``). Because of the
causal mask this favours early tokens, as in the reference. Layers [K, L)
run on the kept tokens.

The reference ranks the whole span from the first to the last image token,
so on multi-image prompts it also ranks (and may drop) the text between
images and counts it in k. We rank the visual tokens only; with
``faithful_span=True`` the candidates and the count are that span, as the
reference (one group per row).
"""
from __future__ import annotations

import jax.numpy as jnp

from vselect_jax.methods.base import IN_LLM, LAYER_QK, Choice, Context, Method
from vselect_jax.methods.ranking import top_k_in_group
from vselect_jax.modeling.attention import attention_received

PRUNE_LAYER = 2


def prune_layer(model) -> int:
  """K: 2 as the reference, or fewer in models with fewer layers (at least
  one layer runs on each side)."""
  n = len(model.model.layers)
  if n < 2:
    raise ValueError("in-LLM pruning needs an LLM with at least 2 layers")
  return min(PRUNE_LAYER, n - 1)


def visual_span(visual: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """bool[B, T]: valid positions from each row's first to last visual
  token."""
  pos = jnp.arange(visual.shape[1])[None]
  first = jnp.min(jnp.where(visual, pos, visual.shape[1]), axis=1)
  last = jnp.max(jnp.where(visual, pos, -1), axis=1)
  return valid & (pos >= first[:, None]) & (pos <= last[:, None])


def select(ctx: Context) -> Choice:
  q, k = ctx.extras[LAYER_QK]
  seg = ctx.batch["segment_ids"]
  received = attention_received(q.astype(jnp.float32),
                                k.astype(jnp.float32), seg)
  if ctx.options["faithful_span"]:
    candidates = visual_span(ctx.visual, ctx.valid)
    group = jnp.where(candidates, 0, -1)
    k_token = jnp.where(candidates, ctx.k_row[:, None], 0)
  else:
    candidates, group, k_token = ctx.visual, ctx.group, ctx.k_token
  scores = jnp.where(candidates, received, 0.0)
  selected = top_k_in_group(jnp.where(candidates, received, -jnp.inf), group,
                            k_token)
  return Choice(selected, scores, candidates=candidates)


METHOD = Method(
    "fastv", IN_LLM, select, layer=prune_layer, needs=frozenset({LAYER_QK}),
    options={"faithful_span": False},
    count=lambda o: "span" if o["faithful_span"] else "visual",
    summary="attention received at LLM layer 1, top-k (inside the LLM)")

"""Dynamic-Qwen: Dynamic-LLaVA's trained image predictor inside the LLM.

At the input of LLM layer K = 2 (``fastv.prune_layer``: fewer in models
with fewer layers) the image predictor (``model.image_score_predictor``,
``selector/predictor.py``) gives every visual token log p(keep). Layers
[0, K) see every token.

Inference keeps the top-k visual tokens by log p(keep) with the reference's
``k = int(N_total * r)``, N_total counting every valid token of the prompt,
text included (``count_text=True``, the default: the reference's own
method, so it keeps a little more than r of the image); ``count_text=False``
makes k a fraction of the visual tokens like every other method (and
allows per-image budgets). k is capped at the visual tokens. Kept tokens
keep their original M-RoPE ids (the forward's in-LLM path).

Training (``relax``, through ``forward(..., relaxed=True)``): a hard
Gumbel-softmax sample of the predictor's log-probabilities with a
straight-through gradient is the keep policy of every visual token; layers
[K, L) run on every token under the policy-masked softmax
(``modeling/policy_attention.py``). The regulariser is the reference's
(mean keep - target)^2 over every visual token of the micro-batch; the step
weighs it (100) and anneals the temperature 1.0 -> 0.1 geometrically
(``gumbel_tau``). The traced inputs of a relaxation arrive in
``Context.extras[RELAX_ARGS]``: "key" (a PRNG key; absent: no noise, the
policy's mode), "tau" and "target" (the keep ratio, default 0.2).

Video tokens are scored like image tokens (the reference prunes only image
pad tokens, 151655).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.methods.base import IN_LLM, Choice, Context, Method, Relaxed
from vselect_jax.methods.fastv import prune_layer
from vselect_jax.methods.ranking import top_k_in_group

RELAX_ARGS = "relax_args"
TARGET = 0.2           # the reference's --budget (keep ratio trained for)
TAU_START, TAU_END = 1.0, 0.1


def gumbel_tau(step, total_steps: int, start: float = TAU_START,
               end: float = TAU_END):
  """The reference's temperature: start * (end / start) ** (step / total)
  (geometric; ``start`` when total_steps <= 0). Works on ints and traced
  arrays."""
  if total_steps <= 0:
    return start
  return start * (end / start) ** (step / total_steps)


def predict(ctx: Context) -> jax.Array:
  """log p float32[B, T, 2] (column 0 keep) at the layer-K input."""
  x = ctx.x
  if ctx.detach_scorer:
    x = jax.lax.stop_gradient(x)
  if not hasattr(ctx.model.model, "image_score_predictor"):
    raise ValueError("method 'dynamic_qwen' needs a model with the image "
                     "predictor (model.image_score_predictor; Qwen2.5-VL)")
  return ctx.model.model.image_score_predictor(
      x, ctx.visual, ctx.batch["segment_ids"])


def select(ctx: Context) -> Choice:
  keep = predict(ctx)[..., 0]
  selected = top_k_in_group(jnp.where(ctx.visual, keep, -jnp.inf),
                            ctx.group, ctx.k_token)
  return Choice(selected, jnp.where(ctx.visual, jnp.exp(keep), 0.0))


def hard_gumbel_keep(logp: jax.Array, key, tau) -> jax.Array:
  """torch ``gumbel_softmax(logp, tau, hard=True)[..., 0]``: the one-hot of
  argmax((logp + g) / tau) in the forward, the gradient of the softmax
  (straight-through). ``key`` None: no noise. float32[B, T]."""
  z = logp if key is None else logp + jax.random.gumbel(key, logp.shape)
  soft = jax.nn.softmax(z / tau, axis=-1)
  hard = jax.nn.one_hot(jnp.argmax(soft, -1), 2, dtype=soft.dtype)
  return (hard - jax.lax.stop_gradient(soft) + soft)[..., 0]


def relax(ctx: Context) -> Relaxed:
  args = ctx.extras.get(RELAX_ARGS, {})
  keep = hard_gumbel_keep(predict(ctx), args.get("key"),
                          args.get("tau", TAU_START))
  vis = ctx.visual.astype(jnp.float32)
  keep = keep * vis
  ratio = keep.sum() / jnp.maximum(vis.sum(), 1.0)
  reg = jnp.square(ratio - args.get("target", TARGET))
  return Relaxed(keep, jax.lax.stop_gradient(keep), reg)


METHOD = Method(
    "dynamic_qwen", IN_LLM, select, layer=prune_layer, relax=relax,
    options={"count_text": True},
    count=lambda o: "total" if o["count_text"] else "visual",
    summary="trained image predictor at LLM layer 2, top-k by log p(keep) "
            "(Dynamic-Qwen)")

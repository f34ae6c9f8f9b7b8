"""The scorer-training step: a pure function of (state, batch), jitted once.

Only the scorer trains (``TRAINABLE``: parameters under
``visual.importance_scorer``); vision tower, merger and LLM are frozen (the
tower's output is stop-gradiented; the LLM is rematerialised, since the CE
gradient must flow back through it into the soft mask). Loss, as the
reference: token-mean CE + w(step) * BCE(soft, hard).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vselect_jax.selector import select

TRAINABLE = nnx.All(nnx.Param, nnx.PathContains("importance_scorer"))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  trainable: Any        # nnx.State of the scorer (float32)
  frozen: Any           # nnx.State of everything else
  opt_state: Any
  step: jax.Array       # completed optimizer steps (int32 scalar)
  micro_step: jax.Array  # completed micro-batches (int32 scalar)


def split_model(model) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, trainable scorer state, frozen rest)."""
  return nnx.split(model, TRAINABLE, ...)


def init_state(model, tx: optax.GradientTransformation
               ) -> tuple[nnx.GraphDef, TrainState]:
  graphdef, trainable, frozen = split_model(model)
  trainable = jax.tree.map(lambda x: x.astype(jnp.float32), trainable)
  return graphdef, TrainState(trainable, frozen, tx.init(trainable),
                              jnp.int32(0), jnp.int32(0))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array,
                                                                 jax.Array]:
  """Token-mean next-token CE over labels != -100 (HF's shift by one).

  Returns (mean CE, number of supervised tokens).
  """
  logits = logits[:, :-1].astype(jnp.float32)
  target = labels[:, 1:]
  valid = target != -100
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(target, 0)[..., None],
                             axis=-1)[..., 0]
  n = valid.sum()
  return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(n, 1), n


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    reg_weight: Callable, *, grad_accum: int = 1,
                    remat: bool = True, compute_dtype=None):
  """Builds ``step(state, batch, k_row) -> (state, metrics)``.

  Args:
    graphdef: from ``init_state``.
    tx: the optimizer (``optim.make_optimizer``; MultiSteps if accumulating).
    reg_weight: schedule of the BCE weight over optimizer steps.
    grad_accum: micro-batches per optimizer step (for the step counter).
    remat: rematerialise LLM layers.
    compute_dtype: cast the scorer to this dtype for the forward (bf16 on
      accelerators); its float32 master copy is what the optimizer updates.
  """

  def loss_fn(trainable, frozen, batch, k_row, w):
    if compute_dtype is not None:
      trainable = jax.tree.map(lambda x: x.astype(compute_dtype), trainable)
    model = nnx.merge(graphdef, trainable, frozen)
    logits, soft, hard, bce = select.training_forward(
        model, batch, k_row, remat=remat)
    ce, n_tokens = cross_entropy(logits, batch["labels"])
    visual = batch["visual_index"] >= 0
    n_vis = jnp.maximum(visual.sum(), 1)
    metrics = {
        "ce": ce, "bce": bce, "reg_weight": w,
        "soft_mass_on_kept": jnp.sum(soft * hard) / jnp.maximum(
            hard.sum(), 1),
        "kept_fraction": hard.sum() / n_vis,
        "supervised_tokens": n_tokens,
        "visual_tokens": visual.sum(),
    }
    return ce + w * bce, metrics

  def step(state: TrainState, batch: dict, k_row: jax.Array):
    w = reg_weight(state.step)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable, state.frozen, batch, k_row, w)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    micro = state.micro_step + 1
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    new = TrainState(trainable, state.frozen, opt_state,
                     micro // grad_accum, micro)
    return new, metrics

  return step

"""The training step: a pure function of (state, batch), jitted once.

By default only the scorer trains (parameters under
``visual.importance_scorer``); vision tower, merger and LLM are frozen (the
tower's output is stop-gradiented; the LLM is rematerialised, since the CE
gradient must flow back through it into the soft mask). Loss: CE
(``loss.cross_entropy``: a token mean by default, the reference's per-group
means with ``ce_weighting``) + w(step) * BCE(soft, hard), as the reference.

With ``train_method="dynamic_qwen"`` the trainable part is Dynamic-Qwen's
image predictor (``model.image_score_predictor``): its hard Gumbel keep
policy (temperature ``tau(step)``, noise from ``seed`` and the micro-step)
masks attention in LLM layers >= 2, and the loss is CE + w(step) *
(mean keep - budget)^2 (w = 100 in its configs, held constant).

``Parts`` holds the reference's switches (``tune_mm_vision``,
``tune_mm_mlp``, ``tune_mm_llm``, ``tune_compressor``), so the same step
also trains a backbone: without the compressor it is plain next-token CE on
all visual tokens, with gradients into whichever parts are trainable.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from vselect_jax.forward import Selection, forward
from vselect_jax.training.loss import CEWeighting, cross_entropy


@dataclasses.dataclass(frozen=True)
class Parts:
  """Which parts train (the reference's ``tune_*`` flags).

  Attributes:
    tune_mm_vision: patch embedding and vision blocks.
    tune_mm_mlp: the patch merger.
    tune_mm_llm: the LLM (embeddings, layers, norm, head).
    tune_compressor: the importance scorer, with the selection loss.
  """
  tune_mm_vision: bool = False
  tune_mm_mlp: bool = False
  tune_mm_llm: bool = False
  tune_compressor: bool = True
  # Which scorer trains with the compressor: "importance_scorer" (after the
  # tower), "block_scorer" (inside it, ``config.select_at``) or
  # "image_score_predictor" (Dynamic-Qwen, ``config.train_method``); the
  # loop sets it, train_parts does not take it.
  scorer: str = "importance_scorer"

  @classmethod
  def from_config(cls, config) -> "Parts":
    """From ``config.train_parts`` (a mapping), defaults where absent."""
    given = dict(config.get("train_parts", None) or {})
    known = [f.name for f in dataclasses.fields(cls) if f.name != "scorer"]
    unknown = set(given) - set(known)
    if unknown:
      raise ValueError(f"unknown train_parts keys {sorted(unknown)}; known: "
                       f"{known}")
    return cls(**{k: bool(v) for k, v in given.items()})

  @property
  def vision_trains(self) -> bool:
    return self.tune_mm_vision or self.tune_mm_mlp

  def filter(self):
    """An NNX filter selecting the trainable parameters."""
    if not (self.tune_mm_vision or self.tune_mm_mlp or self.tune_mm_llm or
            self.tune_compressor):
      raise ValueError("train_parts: nothing to train")

    def trainable(path, value) -> bool:
      if not isinstance(value, nnx.Param):
        return False
      keys = [str(p) for p in path]
      if keys[:2] == ["model", "image_score_predictor"]:
        # Part of the LLM (``model.*``) as in the reference's tune_mm_llm,
        # and the compressor when Dynamic-Qwen trains.
        return self.tune_mm_llm or (self.tune_compressor and
                                    self.scorer == keys[1])
      if keys[0] == "visual":
        if "importance_scorer" in keys or "block_scorer" in keys:
          return self.tune_compressor and self.scorer in keys
        if "merger" in keys:
          return self.tune_mm_mlp
        return self.tune_mm_vision
      return self.tune_mm_llm
    return trainable


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
  trainable: Any        # nnx.State of the scorer (float32)
  frozen: Any           # nnx.State of everything else
  opt_state: Any
  step: jax.Array       # completed optimizer steps (int32 scalar)
  micro_step: jax.Array  # completed micro-batches (int32 scalar)


def split_model(model, parts: Parts = Parts()
                ) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """(graphdef, trainable state, frozen rest)."""
  return nnx.split(model, parts.filter(), ...)


def init_state(model, tx: optax.GradientTransformation,
               parts: Parts = Parts()) -> tuple[nnx.GraphDef, TrainState]:
  """Trainable parameters get float32 master copies and optimizer state."""
  graphdef, trainable, frozen = split_model(model, parts)
  trainable = jax.tree.map(lambda x: x.astype(jnp.float32), trainable)
  return graphdef, TrainState(trainable, frozen, tx.init(trainable),
                              jnp.int32(0), jnp.int32(0))


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    reg_weight: Callable, *, grad_accum: int = 1,
                    remat: bool = True, compute_dtype=None,
                    parts: Parts = Parts(),
                    ce_weighting: CEWeighting = CEWeighting(),
                    pool: str = "row", select_at: int | None = None,
                    soft_mask: str = "scale", train_method: str = "selector",
                    tau: Callable | None = None, budget: float = 0.2,
                    seed: int = 0):
  """Builds ``step(state, batch, k) -> (state, metrics)``; ``k`` is
  int32[B] per row (``pool="row"``) or, with ``pool="sample"``, int32[B, T]
  the k of each visual token's sample (``loop.selection_k``).

  Args:
    graphdef: from ``init_state``.
    tx: the optimizer (``optim.make_optimizer``; MultiSteps if accumulating).
    reg_weight: schedule of the BCE weight over optimizer steps.
    grad_accum: micro-batches per optimizer step (for the step counter).
    remat: rematerialise LLM layers (and the in-tower path's vision blocks
      after selection).
    compute_dtype: cast the trainable parameters to this dtype for the
      forward (bf16 on accelerators); their float32 master copies are what
      the optimizer updates.
    parts: what trains (must match ``init_state``).
    ce_weighting: how the CE averages supervised tokens (``loss``).
    pool: what the scorer's top-k pools: each packed row, or each sample
      in it (the reference's batch of one per device).
    select_at: train the in-tower scorer after this many vision blocks
      (method "tower_selector"; ``parts.scorer`` must be "block_scorer");
      None: the post-tower selector.
    soft_mask: "scale" (the reference) or "attn_bias" (``forward``).
    train_method: "selector" (the scorer named by ``select_at``) or
      "dynamic_qwen" (``parts.scorer`` must be "image_score_predictor";
      ``reg_weight`` then weighs (mean keep - budget)^2).
    tau: Dynamic-Qwen's Gumbel temperature over optimizer steps
      (``methods.dynamic_qwen.gumbel_tau``).
    budget: Dynamic-Qwen's keep-ratio target.
    seed: Dynamic-Qwen's Gumbel noise (folded with the micro-step).
  """
  relax_args = None
  if train_method == "dynamic_qwen":
    if select_at is not None or parts.scorer != "image_score_predictor":
      raise ValueError("train_method 'dynamic_qwen' trains the image "
                       "predictor (parts.scorer 'image_score_predictor'), "
                       "without select_at")
    method, options = "dynamic_qwen", (("count_text", True),)
    tau = tau or (lambda step: 1.0)
    relax_args = lambda state: {  # noqa: E731
        "key": jax.random.fold_in(jax.random.key(seed), state.micro_step),
        "tau": tau(state.step), "target": jnp.float32(budget)}
  elif train_method != "selector":
    raise ValueError(f"train_method must be 'selector' or 'dynamic_qwen', "
                     f"got {train_method!r}")
  elif select_at is None:
    method, options = "selector", (("pool", pool),)
  elif pool != "row":
    raise ValueError("the in-tower scorer pools per row; selection_pool "
                     f"{pool!r} is not supported with select_at")
  else:
    method, options = "tower_selector", (("block", int(select_at)),)

  def loss_fn(trainable, frozen, batch, k_row, w, relaxed_args):
    if compute_dtype is not None:
      trainable = jax.tree.map(lambda x: x.astype(compute_dtype), trainable)
    model = nnx.merge(graphdef, trainable, frozen)
    visual = batch["visual_index"] >= 0
    if not parts.tune_compressor:  # backbone training: all visual tokens
      out = forward(model, batch, remat=remat,
                    vision_grad=parts.vision_trains)
      ce, n_tokens = cross_entropy(model.head(out.hidden), batch["labels"],
                                   ce_weighting)
      return ce, {"ce": ce, "supervised_tokens": n_tokens,
                  "visual_tokens": visual.sum(), "reg_weight": w}
    # The training path: the scorer's soft top-k scales the visual tokens,
    # pooled over each row (as the reference pools over a micro-batch).
    if pool == "sample":  # k_row holds each token's sample's k
      k_token = jnp.where(visual, k_row, 0)
      k_row = k_token.max(1)
    else:
      k_token = jnp.where(visual, k_row[:, None], 0)
    out = forward(model, batch, Selection(method, k_token, k_row,
                                          options=options,
                                          relax_args=relaxed_args),
                  relaxed=True, remat=remat, vision_grad=parts.vision_trains,
                  soft_mask=soft_mask)
    soft, hard, bce = out.relaxed.soft, out.relaxed.hard, out.relaxed.reg
    ce, n_tokens = cross_entropy(model.head(out.hidden), batch["labels"],
                                 ce_weighting)
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
    args = None if relax_args is None else relax_args(state)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable, state.frozen, batch, k_row, w, args)
    if args is not None:
      metrics["gumbel_tau"] = jnp.asarray(args["tau"], jnp.float32)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    micro = state.micro_step + 1
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    new = TrainState(trainable, state.frozen, opt_state,
                     micro // grad_accum, micro)
    return new, metrics

  return step

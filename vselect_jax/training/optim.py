"""Optax optimizer and the schedules of scorer training.

The reference trains with AdamW (weight decay 0), lr 5e-5 with 3% linear
warmup then cosine decay to 0, global-norm clipping at 1.0, gradient
accumulation, and a BCE weight annealed linearly from 0.1 to 2.0 over
training, ``w = start + (end - start) * min(step / total, 1)`` where step
counts completed optimizer steps. Here that weight is an Optax schedule
evaluated inside the jitted step.
"""
from __future__ import annotations

import optax

REG_SHAPES = ("linear", "cosine", "constant_start", "constant_end", "step")


def learning_rate_schedule(lr: float, total_steps: int,
                           warmup_ratio: float = 0.03) -> optax.Schedule:
  """Linear warmup from 0 over ``ceil(warmup_ratio * total)`` steps, then
  cosine decay to 0 (HF ``get_cosine_schedule_with_warmup``)."""
  warmup = max(0, int(-(-warmup_ratio * total_steps // 1)))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=lr, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def reg_weight_schedule(start: float, end: float, total_steps: int,
                        shape: str = "linear") -> optax.Schedule:
  """The BCE weight w(step).

  Shapes: "linear" (the reference), "cosine" (start -> end along a half
  cosine), "constant_start" / "constant_end" (no annealing, for ablations),
  "step" (start for the first half, end after).
  """
  total = max(total_steps, 1)
  if shape == "linear":
    return optax.linear_schedule(start, end, total)
  if shape == "cosine":
    return lambda step: end + (start - end) * optax.cosine_decay_schedule(
        1.0, total)(step)
  if shape == "constant_start":
    return optax.constant_schedule(start)
  if shape == "constant_end":
    return optax.constant_schedule(end)
  if shape == "step":
    return optax.piecewise_constant_schedule(start, {total // 2: end / start}
                                             if start else {})
  raise ValueError(f"unknown reg weight shape {shape!r}; one of {REG_SHAPES}")


def make_optimizer(lr: float, total_steps: int, *, warmup_ratio: float = 0.03,
                   weight_decay: float = 0.0, clip_norm: float = 1.0,
                   b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                   grad_accum: int = 1) -> optax.GradientTransformation:
  """AdamW with warmup + cosine, global-norm clipping and accumulation.

  With ``grad_accum`` > 1 the micro-batch gradients are averaged over that
  many calls before one update (``optax.MultiSteps``), as the reference's
  loss / GAS scaling does.
  """
  tx = optax.chain(
      optax.clip_by_global_norm(clip_norm),
      optax.adamw(learning_rate_schedule(lr, total_steps, warmup_ratio),
                  b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
  if grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=grad_accum)
  return tx

"""Next-token cross-entropy of a packed micro-batch, and how its supervised
tokens are weighted.

Two weightings (``CEWeighting.mode``):

* ``"token_mean"`` (default): one mean over every supervised token of the
  micro-batch (all rows, all hosts). Every supervised token weighs the same,
  whatever sample or device it sits in.
* ``"reference_groups"``: the reference's weighting. Its HF Trainer takes a
  token mean per device micro-batch (8 or 16 samples) and DDP / gradient
  accumulation average those means over 8 ranks x 4 accumulation steps. Here
  the micro-batch's rows are split into G equal groups of
  ``rows_per_group`` consecutive packed rows (one group = one reference
  device micro-batch), and CE = mean over groups of each group's token mean.

Why token_mean is the default: the per-group means weight each token by
1 / (its group's supervised tokens), so tokens of groups with short answers
(one-word ChartQA / OCR-VQA answers) weigh more than tokens of groups with
long ones (COCO descriptions), and the objective changes with how samples
happen to be split across devices. The reference has it only because its
patched ``forward`` takes no ``**kwargs``, so HF 4.50 does not pass the
batch's token count; transformers itself normalises by the token count of
the whole accumulated batch since 4.46 (its gradient-accumulation fix).

Accumulation: ``optim.make_optimizer`` wraps the optimizer in
``optax.MultiSteps`` with its default ``use_grad_mean=True``, so the update
uses the plain mean of the micro-step gradients. With "reference_groups"
(equal G per micro-step) that is the reference's mean over ranks x
accumulation steps; with "token_mean" it is the mean over micro-steps of
each micro-step's token mean (not a token mean over the accumulated batch).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

IGNORE = -100
WEIGHTINGS = ("token_mean", "reference_groups")


@dataclasses.dataclass(frozen=True)
class CEWeighting:
  """How ``cross_entropy`` averages the supervised tokens.

  Attributes:
    mode: one of ``WEIGHTINGS``.
    rows_per_group: packed rows per group for "reference_groups" (one
      reference device micro-batch: 1 when a row holds about its 8 (3B)
      samples, 2 for the 7B's 16 with rows of ~8 samples).
  """
  mode: str = "token_mean"
  rows_per_group: int = 1

  def __post_init__(self):
    if self.mode not in WEIGHTINGS:
      raise ValueError(f"unknown ce_weighting {self.mode!r}; one of "
                       f"{WEIGHTINGS}")
    if int(self.rows_per_group) < 1:
      raise ValueError(f"rows_per_group must be >= 1, got "
                       f"{self.rows_per_group}")

  @classmethod
  def from_config(cls, config) -> "CEWeighting":
    """From ``config.loss`` (``ce_weighting``, ``rows_per_group``);
    defaults where absent."""
    loss = config.get("loss", None) or {}
    return cls(str(loss.get("ce_weighting", "token_mean")),
               int(loss.get("rows_per_group", 1)))


def token_nll(logits: jax.Array, labels: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  """Per-position next-token NLL (HF's shift by one; float32 log-softmax).

  Args:
    logits: [R, L, V]; labels: int[R, L], ``IGNORE`` where unsupervised.

  Returns:
    (nll float32[R, L - 1], 0 where unsupervised; valid bool[R, L - 1]).
  """
  logits = logits[:, :-1].astype(jnp.float32)
  target = labels[:, 1:]
  valid = target != IGNORE
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(target, 0)[..., None],
                             axis=-1)[..., 0]
  return jnp.where(valid, nll, 0.0), valid


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weighting: CEWeighting = CEWeighting()
                  ) -> tuple[jax.Array, jax.Array]:
  """CE of a micro-batch under ``weighting``.

  Args:
    logits: [R, L, V]; labels: int[R, L] (``IGNORE`` where unsupervised).
    weighting: see the module docstring. For "reference_groups" R must be
      a multiple of ``rows_per_group``; groups without a supervised token
      (padding rows) are left out of the mean (the reference would get NaN).

  Returns:
    (CE float32 scalar, number of supervised tokens int scalar).

  Raises:
    ValueError: R is not a multiple of ``rows_per_group`` (at trace time).
  """
  nll, valid = token_nll(logits, labels)
  n = valid.sum()
  if weighting.mode == "token_mean":
    return nll.sum() / jnp.maximum(n, 1), n
  rows, per = nll.shape[0], int(weighting.rows_per_group)
  if rows % per:
    raise ValueError(f"ce_weighting reference_groups: {rows} rows in the "
                     f"micro-batch do not split into groups of "
                     f"rows_per_group={per}")
  sums = nll.reshape(rows // per, -1).sum(1)
  counts = valid.reshape(rows // per, -1).sum(1)
  means = sums / jnp.maximum(counts, 1)
  filled = counts > 0
  return (jnp.where(filled, means, 0.0).sum() /
          jnp.maximum(filled.sum(), 1)), n

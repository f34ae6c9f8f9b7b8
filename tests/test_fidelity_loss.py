"""CE weighting (issue 14, item 3): the global token mean (default) and the
reference's mean of per-group token means, on a batch whose per-token NLL
is known by construction: with logits (log p, log(1 - p)) and target 0 a
token costs -log p, so p = 1/2, 1/4, 1/8 cost 1, 2, 3 x log 2."""
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.common import base_config
from vselect_jax.forward import Output
from vselect_jax.methods import Relaxed
from vselect_jax.training import step as step_lib
from vselect_jax.training.loss import CEWeighting, cross_entropy

LOG2 = math.log(2)
IGN = -100


def _batch(cost):
  """cost float[R, L-1]: NLL / log 2 of each predicted position, 0 where
  unsupervised -> (logits [R, L, 2], labels [R, L])."""
  r, t = cost.shape
  p = np.where(cost > 0, 2.0 ** -cost, 0.5)
  logits = np.zeros((r, t + 1, 2), np.float32)
  logits[:, :-1, 0] = np.log(p)
  logits[:, :-1, 1] = np.log1p(-p)
  labels = np.full((r, t + 1), IGN, np.int32)
  labels[:, 1:][cost > 0] = 0          # position i predicts label i + 1
  return jnp.asarray(logits), jnp.asarray(labels)


# 4 rows; rows 0-1 hold one supervised token costing 3 (row 1 none), rows
# 2-3 four tokens costing 1.
COST = np.array([[3, 0, 0, 0],
                 [0, 0, 0, 0],
                 [1, 1, 0, 0],
                 [0, 1, 1, 0]], np.float32)


def test_weightings_give_the_hand_computed_numbers():
  logits, labels = _batch(COST)
  ce, n = cross_entropy(logits, labels)
  assert int(n) == 5
  # Token mean: (3 + 4 * 1) / 5 tokens.
  np.testing.assert_allclose(float(ce), 7 / 5 * LOG2, rtol=1e-6)
  # Groups of 2 rows: (3/1 + 4/4) / 2.
  ce2, n2 = cross_entropy(logits, labels, CEWeighting("reference_groups", 2))
  assert int(n2) == 5
  np.testing.assert_allclose(float(ce2), 2 * LOG2, rtol=1e-6)
  # One row a group: row 1 has no supervised token and is left out:
  # (3/1 + 2/2 + 2/2) / 3.
  ce1, _ = cross_entropy(logits, labels, CEWeighting("reference_groups", 1))
  np.testing.assert_allclose(float(ce1), 5 / 3 * LOG2, rtol=1e-6)
  # One group of all rows is the token mean.
  ce4, _ = cross_entropy(logits, labels, CEWeighting("reference_groups", 4))
  np.testing.assert_allclose(float(ce4), float(ce), rtol=1e-6)


def test_weightings_agree_when_groups_have_equal_token_counts():
  cost = np.array([[3, 1, 0, 0], [0, 0, 0, 0],
                   [1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
  logits, labels = _batch(cost)
  a, _ = cross_entropy(logits, labels)
  b, _ = cross_entropy(logits, labels, CEWeighting("reference_groups", 2))
  np.testing.assert_allclose(float(a), 6 / 4 * LOG2, rtol=1e-6)
  np.testing.assert_allclose(float(b), float(a), rtol=1e-6)


def test_bad_weightings_are_named():
  logits, labels = _batch(COST)
  with pytest.raises(ValueError, match="do not split into groups"):
    cross_entropy(logits, labels, CEWeighting("reference_groups", 3))
  with pytest.raises(ValueError, match="unknown ce_weighting"):
    CEWeighting("per_sample")
  with pytest.raises(ValueError, match="rows_per_group"):
    CEWeighting("reference_groups", 0)


def test_config_default_and_switch():
  c = base_config()
  assert CEWeighting.from_config(c) == CEWeighting("token_mean", 1)
  c.loss.ce_weighting, c.loss.rows_per_group = "reference_groups", 2
  assert CEWeighting.from_config(c) == CEWeighting("reference_groups", 2)
  del c.loss                             # older configs: the default
  assert CEWeighting.from_config(c) == CEWeighting()


class _Scorer(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.zeros(()))


class _Visual(nnx.Module):
  def __init__(self):
    self.importance_scorer = _Scorer()


class _Model(nnx.Module):
  def __init__(self):
    self.visual = _Visual()

  def head(self, hidden):
    return hidden


def test_train_step_uses_the_weighting(monkeypatch):
  logits, labels = _batch(COST)

  def forward(model, batch, selection=None, **_):
    hidden = batch["logits"] + model.visual.importance_scorer.w.value
    zero = jnp.zeros(batch["visual_index"].shape)
    return Output(hidden, [], relaxed=Relaxed(zero, zero, jnp.float32(0)))

  monkeypatch.setattr(step_lib, "forward", forward)
  tx = optax.sgd(0.0)
  batch = {"logits": logits, "labels": labels,
           "visual_index": -jnp.ones(labels.shape, jnp.int32)}
  for weighting, want in ((CEWeighting(), 7 / 5),
                          (CEWeighting("reference_groups", 2), 2.0)):
    graphdef, state = step_lib.init_state(_Model(), tx)
    step = step_lib.make_train_step(graphdef, tx, lambda s: 0.0,
                                    ce_weighting=weighting)
    _, metrics = step(state, batch, jnp.zeros(4, jnp.int32))
    np.testing.assert_allclose(float(metrics["ce"]), want * LOG2, rtol=1e-6)

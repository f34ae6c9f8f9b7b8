"""The training path: soft mask on the visual tokens, BCE to the hard mask,
gradients into the scorer only."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE
from vselect_jax.host.inputs import prepare_batch
from tests.train_utils import relaxed_forward


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  path = tmp_path_factory.mktemp("train") / "hf"
  hf_tiny.make_model("tied_w56", seed=2).save_pretrained(path)
  jx = vselect_jax.from_pretrained(str(path))
  rng = np.random.default_rng(0)
  g1, g2 = [1, 6, 10], [1, 8, 8]
  r1 = [1] + hf_tiny.block(IMAGE, g1) + [2, 3]
  r2 = hf_tiny.block(IMAGE, g2) + [4, 5, 6, 7, 8]
  n = max(len(r1), len(r2))
  ids = np.zeros((2, n), np.int64)
  mask = np.zeros((2, n), np.int64)
  for i, r in enumerate((r1, r2)):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = 1
  prep = prepare_batch(jx.config, ids, mask, np.concatenate(
      [hf_tiny.pixels(rng, g1), hf_tiny.pixels(rng, g2)]), [g1, g2])
  return jx, prep, np.array([15, 16])


def test_outputs_and_bce(setup):
  jx, prep, n_vis = setup
  k = np.array([3, 16])  # row 1 keeps everything
  logits, soft, hard, bce = relaxed_forward(
      jx.module, prep.arrays, jnp.asarray(k), remat=False)
  visual = prep.arrays["visual_index"] >= 0
  soft, hard = np.asarray(soft), np.asarray(hard)
  np.testing.assert_allclose(soft.sum(1), k, atol=1e-4)
  np.testing.assert_array_equal(hard.sum(1), k)
  assert (soft[~visual] == 0).all() and (hard[~visual] == 0).all()
  ref = torch.nn.functional.binary_cross_entropy(
      torch.tensor(soft[visual]), torch.tensor(hard[visual]))
  np.testing.assert_allclose(float(bce), ref.item(), rtol=1e-5)
  # A row whose mask is all ones sees exactly the base model.
  base = jx.forward(np.asarray(prep.arrays["input_ids"])[1:, :prep.seq_len],
                    pixel_values=np.asarray(prep.arrays["pixel_values"])[1, :64],
                    image_grid_thw=[[1, 8, 8]]).logits
  n1 = int(prep.arrays["segment_ids"][1].sum())
  np.testing.assert_allclose(np.asarray(logits)[1, :n1], base[0, :n1],
                             atol=1e-5)


def test_gradients_reach_the_scorer_only(setup):
  jx, prep, _ = setup
  model = jx.module
  labels = np.asarray(prep.arrays["input_ids"])

  def loss(scorer_state, rest):
    m = nnx.merge(graphdef, scorer_state, rest)
    logits, _, _, bce = relaxed_forward(
        m, prep.arrays, jnp.array([3, 5]), remat=True)
    ce = -jnp.mean(jax.nn.log_softmax(logits)[0, :-1][
        jnp.arange(labels.shape[1] - 1), labels[0, 1:]])
    return ce + 0.5 * bce

  scorer_filter = nnx.PathContains("importance_scorer")
  graphdef, scorer_state, rest = nnx.split(model, scorer_filter, ...)
  grads = jax.grad(loss)(scorer_state, rest)
  flat = {"/".join(map(str, p[-2:])): np.asarray(v.get_value())
          for p, v in grads.flat_state()}
  assert sorted(flat) == ["k_proj/bias", "k_proj/kernel", "q_proj/bias",
                          "q_proj/kernel"]
  assert all(np.isfinite(g).all() for g in flat.values())
  for name in ("k_proj/bias", "k_proj/kernel", "q_proj/kernel"):
    assert np.abs(flat[name]).max() > 1e-8, name
  # q_proj's bias adds the same b_q . mean(k) to every score of a row; the
  # soft top-k is invariant to such shifts, so its gradient vanishes.
  assert np.abs(flat["q_proj/bias"]).max() < 1e-4 * np.abs(
      flat["q_proj/kernel"]).max()

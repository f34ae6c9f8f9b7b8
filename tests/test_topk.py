"""Differentiable top-k, BCE and budgets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from vselect_jax.selector import topk
from vselect_jax.selector.budget import budget_to_k, check_budget
from vselect_jax.methods.ranking import top_k_in_group as group_topk_mask


def _rows(rng, rows=6, n=50):
  s = rng.standard_normal((rows, n)).astype(np.float32) * 3
  n_valid = rng.integers(5, n + 1, rows)
  valid = np.arange(n)[None] < n_valid[:, None]
  k = np.array([rng.integers(1, nv) for nv in n_valid])
  return s, valid, k


def test_sums_to_k_and_padding_gets_nothing():
  rng = np.random.default_rng(0)
  s, valid, k = _rows(rng)
  s[~valid] = 50.0  # large padding scores must not attract mass
  m = np.asarray(topk.soft_topk(s, k, valid))
  np.testing.assert_allclose(m.sum(-1), k, atol=1e-4)
  assert (m[~valid] == 0).all()
  assert ((m >= 0) & (m <= 1)).all()


def test_gradient_matches_finite_differences_in_float64():
  rng = np.random.default_rng(1)
  s, valid, k = _rows(rng, rows=2, n=12)
  w = rng.standard_normal(s.shape)
  with jax.enable_x64(True):
    # The forward is float32 by design; compare the implicit gradient with
    # central differences of the *exact* solution, computed in float64 by
    # solving sum(sigmoid(s + t)) = k with many more bisection steps.
    def exact(x):
      def solve(row, kk, vv):
        lo, hi = -row.max() - 10, -row.min() + 10
        for _ in range(200):
          mid = (lo + hi) / 2
          tot = jnp.sum(jnp.where(vv, jax.nn.sigmoid(row + mid), 0))
          lo, hi = jnp.where(tot < kk, mid, lo), jnp.where(tot < kk, hi, mid)
        return jnp.where(vv, jax.nn.sigmoid(row + (lo + hi) / 2), 0)
      return jnp.stack([solve(x[i], k[i], valid[i]) for i in range(len(x))])

    x = jnp.asarray(s, jnp.float64)
    eps = 1e-5
    fd = np.zeros(s.shape)
    for i in range(s.shape[0]):
      for j in range(s.shape[1]):
        if not valid[i, j]:
          continue
        d = np.zeros(s.shape)
        d[i, j] = eps
        fd[i, j] = float(jnp.sum(w * (exact(x + d) - exact(x - d)))) / (2 * eps)
  g = np.asarray(jax.grad(lambda x: jnp.sum(w * topk.soft_topk(x, k, valid))
                          )(jnp.asarray(s)))
  np.testing.assert_allclose(g, fd, atol=2e-4, rtol=2e-3)
  assert (g[~valid] == 0).all()


def test_one_compile_across_k_and_sizes():
  traces = []

  @jax.jit
  def f(s, k, valid):
    traces.append(1)
    return topk.soft_topk(s, k, valid)

  rng = np.random.default_rng(2)
  for n_valid, k in ((10, 1), (40, 7), (64, 63), (3, 2)):
    s = rng.standard_normal((1, 64)).astype(np.float32)
    valid = np.arange(64)[None] < n_valid
    m = f(s, np.array([k]), valid)
    assert abs(float(m.sum()) - k) < 1e-4
  assert len(traces) == 1


def test_edge_cases_are_finite():
  s = np.array([[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0]], np.float32)
  valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)
  k = np.array([3, 0, 2])  # k >= n_valid; k == 0; no valid tokens
  m, vjp = jax.vjp(lambda x: topk.soft_topk(x, k, valid), jnp.asarray(s))
  np.testing.assert_array_equal(m, [[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  (g,) = vjp(jnp.ones_like(m))
  assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()


def test_bfloat16_input_matches_float32():
  rng = np.random.default_rng(3)
  s, valid, k = _rows(rng)
  a = topk.soft_topk(jnp.asarray(s, jnp.bfloat16), k, valid)
  b = topk.soft_topk(jnp.asarray(s, jnp.bfloat16).astype(jnp.float32), k,
                     valid)
  assert a.dtype == jnp.float32
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(np.asarray(a).sum(-1), k, atol=1e-4)


def test_bce_equals_torch_including_clamped_logs():
  p = np.array([[0.0, 1.0, 0.3, 0.9, 0.5]], np.float32)
  y = np.array([[1.0, 0.0, 0.0, 1.0, 1.0]], np.float32)
  valid = np.array([[1, 1, 1, 1, 0]], bool)
  ref = torch.nn.functional.binary_cross_entropy(
      torch.tensor(p[valid]), torch.tensor(y[valid]))
  np.testing.assert_allclose(topk.selection_bce(p, y, valid), ref.item(),
                             rtol=1e-6)
  assert float(topk.selection_bce(p, y, np.zeros_like(valid))) == 0.0


def test_hard_selection_ties_go_to_the_lower_index():
  s = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]], np.float32)
  group = np.array([[0, 0, 0, 0, 0, -1]], np.int32)
  k = np.where(group >= 0, 2, 0).astype(np.int32)
  sel = np.asarray(group_topk_mask(s, group, k))
  np.testing.assert_array_equal(sel, [[0, 1, 1, 0, 0, 0]])


def test_hard_selection_matches_torch_topk_per_group():
  rng = np.random.default_rng(4)
  s = rng.standard_normal((3, 40)).astype(np.float32)
  group = np.repeat(np.arange(4), 10)[None].repeat(3, 0).astype(np.int32)
  group[:, 35:] = -1  # text
  ks = np.array([[3, 1, 10, 2], [5, 5, 5, 5], [0, 2, 4, 3]])
  k_token = np.where(group >= 0, np.take_along_axis(
      ks, np.maximum(group, 0), 1), 0).astype(np.int32)
  sel = np.asarray(group_topk_mask(s, group, k_token))
  for b in range(3):
    for g in range(4):
      idx = np.flatnonzero(group[b] == g)
      kk = min(ks[b, g], len(idx))
      top = torch.topk(torch.tensor(s[b, idx]), kk).indices.numpy()
      expect = np.zeros(len(idx), bool)
      expect[top] = True
      np.testing.assert_array_equal(sel[b, idx], expect)
  assert not sel[:, 35:].any()


@pytest.mark.parametrize("n,b,k", [(10, 0.3, 3), (1280, 0.2, 256),
                                   (7, 0.1, 1), (5, 1.0, 5), (0, 0.5, 0),
                                   (100, 0.29, 28)])
def test_budget_to_k(n, b, k):
  assert budget_to_k(n, b) == k


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, float("nan"), "0.2",
                                 None, True])
def test_bad_budgets(bad):
  with pytest.raises(ValueError, match="budget"):
    check_budget(bad)

"""Per-sample pooling of the selector's training top-k inside packed rows
(``selection_pool="sample"``): with one sample per row it is the row
pooling; with two samples per row each keeps its own k, and each sample's
scores and soft mask are those of the sample alone."""
import types

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vselect_jax.methods import selector
from vselect_jax.methods.base import Context
from vselect_jax.selector.scorer import ImportanceScorer
from vselect_jax.training.loop import selection_k

E, T = 16, 24
BUDGET = 0.3


def _context(seg, visual, k_token, k_row, pool, tokens):
  model = types.SimpleNamespace(visual=types.SimpleNamespace(
      importance_scorer=ImportanceScorer(E, rngs=nnx.Rngs(0))))
  # Larger scorer weights than the 1e-4 init, so the scores spread.
  for proj in (model.visual.importance_scorer.q_proj,
               model.visual.importance_scorer.k_proj):
    proj.kernel.set_value(proj.kernel.get_value() * 1e4)
  visual = jnp.asarray(visual)
  batch = {"segment_ids": jnp.asarray(seg),
           "visual_index": jnp.where(visual, 0, -1)}
  return Context(model, batch, None, jnp.asarray(tokens), visual, seg > 0,
                 jnp.where(visual, 0, -1), jnp.asarray(k_token),
                 jnp.asarray(k_row), {"pool": pool}, {})


def _row(rng, samples):
  """One packed row: per sample 2 text tokens then n visual tokens."""
  seg = np.zeros(T, np.int32)
  visual = np.zeros(T, bool)
  t = 0
  for s, n in enumerate(samples):
    seg[t:t + 2 + n] = s + 1
    visual[t + 2:t + 2 + n] = True
    t += 2 + n
  return seg, visual


def _relax(seg, visual, pool, tokens):
  host = {"segment_ids": seg, "visual_index": np.where(visual, 0, -1)}
  k = selection_k(host, BUDGET, pool)
  if pool == "sample":
    k_token, k_row = k, k.max(1)
  else:
    k_token, k_row = np.where(visual, k[:, None], 0), k
  return selector.relax(_context(seg, visual, k_token, k_row, pool, tokens)
                        ), k


def test_one_sample_per_row_both_poolings_agree():
  rng = np.random.default_rng(0)
  rows = [_row(rng, [n]) for n in (10, 17)]
  seg = np.stack([r[0] for r in rows])
  visual = np.stack([r[1] for r in rows])
  tokens = rng.standard_normal((2, T, E)).astype(np.float32)
  by_row, _ = _relax(seg, visual, "row", tokens)
  by_sample, _ = _relax(seg, visual, "sample", tokens)
  np.testing.assert_allclose(by_sample.soft, by_row.soft, atol=1e-6)
  np.testing.assert_array_equal(by_sample.hard, by_row.hard)
  np.testing.assert_allclose(by_sample.reg, by_row.reg, rtol=1e-6)


def test_two_samples_per_row_keep_k_of_each():
  rng = np.random.default_rng(1)
  sizes = (7, 13)
  seg, visual = (a[None] for a in _row(rng, sizes))
  tokens = rng.standard_normal((1, T, E)).astype(np.float32)
  tokens[0, seg[0] == 2] += 3.0   # sample 2 scores differently overall
  out, k = _relax(seg, visual, "sample", tokens)
  want = [max(1, int(n * BUDGET)) for n in sizes]
  for s, n_keep in zip((1, 2), want):
    where = visual[0] & (seg[0] == s)
    assert set(k[0][where]) == {n_keep}
    assert int(np.asarray(out.hard)[0][where].sum()) == n_keep
    assert abs(float(np.asarray(out.soft)[0][where].sum()) - n_keep) < 1e-3
    # The same as that sample alone in its own row.
    alone_seg = np.where(seg[0] == s, 1, 0)[None]
    alone, _ = _relax(alone_seg, visual & (alone_seg > 0), "row",
                      tokens * (alone_seg > 0)[..., None])
    np.testing.assert_allclose(np.asarray(out.soft)[0][where],
                               np.asarray(alone.soft)[0][where], atol=1e-5)
  # Row pooling of the same row does not keep k of each sample.
  pooled, _ = _relax(seg, visual, "row", tokens)
  kept = [int(np.asarray(pooled.hard)[0][visual[0] & (seg[0] == s)].sum())
          for s in (1, 2)]
  assert kept != want and sum(kept) == max(1, int(sum(sizes) * BUDGET))

"""VisionZip, FastV and DART: their signals and selections on hand-checkable
inputs, FastV's ranking against HF's own attention weights, and the
two-stage (in-LLM) prefill and KV cache against the unpruned model."""
import numpy as np
import pytest
import torch

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE
import jax.numpy as jnp

from vselect_jax.host.inputs import prepare_batch
from vselect_jax import forward as forward_lib
from vselect_jax.methods import dart, fastv, visionzip
from vselect_jax.modeling.attention import attention_received


def _received_numpy(q, k, seg, causal):
  b, t, n, h = q.shape
  kv = k.shape[2]
  out = np.zeros((b, t))
  for r in range(b):
    for head in range(n):
      logits = q[r, :, head] @ k[r, :, head // (n // kv)].T / np.sqrt(h)
      mask = (seg[r][:, None] == seg[r][None, :]) & (seg[r] > 0)[:, None]
      if causal:
        mask &= np.tril(np.ones((t, t), bool))
      logits = np.where(mask, logits, -np.inf)
      top = logits.max(1, keepdims=True)
      p = np.exp(logits - np.where(np.isfinite(top), top, 0))
      p = np.where(mask, p, 0)
      p /= np.maximum(p.sum(1, keepdims=True), 1e-30)
      out[r] += p.sum(0) / n
  return out


@pytest.mark.parametrize("causal", [True, False])
def test_attention_received_matches_dense_numpy(causal):
  rng = np.random.default_rng(0)
  q = rng.standard_normal((2, 16, 4, 8)).astype(np.float32)
  k = rng.standard_normal((2, 16, 2, 8)).astype(np.float32)
  seg = np.array([[1] * 9 + [2] * 5 + [0] * 2, [0] * 3 + [1] * 13], np.int32)
  got = np.asarray(attention_received(q, k, seg, chunk=4, causal=causal))
  np.testing.assert_allclose(got, _received_numpy(q, k, seg, causal),
                             rtol=1e-5, atol=1e-5)
  # Each valid query hands out one unit of attention.
  np.testing.assert_allclose(got.sum(1), (seg > 0).sum(1), rtol=1e-5)


def test_dart_pivots_and_least_similar():
  # Text 0-1, visual 2-7, text 8-9 after the image. k = 5: four image
  # pivots (largest key norms, ties to the lower position: 2, 3, 4, 5) and
  # one more token for the first pivot in position order (2): the candidate
  # least similar to token 2, i.e. 7 (opposite direction) rather than 6.
  key_norm = np.array([[9, 9, 5, 1, 1, 1, 1, 1, 3, 2]], np.float32)
  emb = np.tile(np.array([1.0, 0.0], np.float32), (1, 10, 1))
  emb[0, 6] = [1.0, 0.2]
  emb[0, 7] = [-1.0, 0.1]
  visual = np.zeros((1, 10), bool)
  visual[0, 2:8] = True
  valid = np.ones((1, 10), bool)
  sel = np.asarray(dart.dart_mask(key_norm, emb, visual, valid,
                                    np.array([5], np.int32)))[0]
  np.testing.assert_array_equal(np.flatnonzero(sel), [2, 3, 4, 5, 7])
  # k = 2: two image pivots, nothing else; k = 6: every visual token.
  for k, expect in ((2, [2, 3]), (6, [2, 3, 4, 5, 6, 7])):
    sel = np.asarray(dart.dart_mask(key_norm, emb, visual, valid,
                                      np.array([k], np.int32)))[0]
    np.testing.assert_array_equal(np.flatnonzero(sel), expect)


def test_visionzip_dominant_and_contextual_merge():
  # Group 0: tokens 1-8 (N = 8), k = 3 -> ctx 1, two dominant (highest
  # dominance: 1 and 3); the rest {2, 4..8} has its first token (2) as the
  # target, which absorbs 4..8: emb[2] + mean(emb[4..8]).
  # Group 1: tokens 10-13, k = 1 -> ctx 1, no dominant; target 10.
  t = 14
  group = np.full((1, t), -1, np.int32)
  group[0, 1:9] = 0
  group[0, 10:14] = 1
  k = np.where(group == 0, 3, np.where(group == 1, 1, 0)).astype(np.int32)
  dom = np.zeros((1, t), np.float32)
  dom[0, 1:9] = [0.9, 0.1, 0.8, 0.2, 0.3, 0.1, 0.05, 0.0]
  dom[0, 10:14] = [0.1, 0.5, 0.2, 0.3]
  rng = np.random.default_rng(1)
  keys = rng.standard_normal((1, t, 4)).astype(np.float32)
  emb = rng.standard_normal((1, t, 6)).astype(np.float32)
  sel, out = visionzip.visionzip_select(dom, keys, emb, group, k)
  sel, out = np.asarray(sel)[0], np.asarray(out)[0]
  np.testing.assert_array_equal(np.flatnonzero(sel), [1, 2, 3, 10])
  np.testing.assert_allclose(out[2], emb[0, 2] + emb[0, 4:9].mean(0),
                             rtol=1e-5)
  np.testing.assert_allclose(out[10], emb[0, 10] + emb[0, 11:14].mean(0),
                             rtol=1e-5)
  untouched = [i for i in range(t) if i not in (2, 10)]
  np.testing.assert_array_equal(out[untouched], emb[0, untouched])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  path = tmp_path_factory.mktemp("llm") / "hf"
  hf = hf_tiny.make_model("untied_w112", seed=3)
  hf.save_pretrained(path)
  return hf, vselect_jax.from_pretrained(str(path))


def _inputs(rng, grids):
  ids = [1, 2]
  for g in grids:
    ids += hf_tiny.block(IMAGE, g) + [5]
  ids += [6, 7, 8]
  pix = np.concatenate([hf_tiny.pixels(rng, g) for g in grids])
  return np.array([ids]), pix, np.array(grids)


def test_visionzip_dominance_stays_within_each_image(models):
  _, jx = models
  rng = np.random.default_rng(0)
  ids, pix, grids = _inputs(rng, [[1, 6, 10], [1, 4, 4]])
  out = jx.forward(ids, pixel_values=pix, image_grid_thw=grids, budget=0.3,
                   method="visionzip")
  vis = np.flatnonzero(ids[0] == IMAGE)
  n1 = 15
  dom = out.scores[0, vis]
  # Each patch query hands out one unit of attention inside its image:
  # the mean over a merge unit sums to the image's merged-token count.
  np.testing.assert_allclose([dom[:n1].sum(), dom[n1:].sum()], [n1, 4],
                             rtol=1e-4)


def test_fastv_ranks_like_hf_attention_weights(models):
  hf, jx = models
  rng = np.random.default_rng(1)
  ids, pix, grids = _inputs(rng, [[1, 6, 10]])
  layer = fastv.prune_layer(jx.module) - 1   # the signal's layer
  hf.set_attn_implementation("eager")
  with torch.no_grad():
    att = hf(input_ids=torch.tensor(ids), pixel_values=torch.tensor(pix),
             image_grid_thw=torch.tensor(grids),
             mm_token_type_ids=torch.tensor((ids == IMAGE).astype(np.int64)),
             output_attentions=True).attentions[layer]
  received = att[0].mean(0).sum(0).numpy()
  vis = np.flatnonzero(ids[0] == IMAGE)
  for budget in (0.2, 0.5):
    k = max(1, int(len(vis) * budget))
    expect = np.sort(vis[np.argsort(-received[vis], kind="stable")[:k]])
    out = jx.forward(ids, pixel_values=pix, image_grid_thw=grids,
                     budget=budget, method="fastv")
    kept = out.keep_index[0]
    np.testing.assert_array_equal(kept[np.isin(kept, vis)], expect)


# random and uniform are a plain top-k in group: at k = N they keep all.
@pytest.mark.parametrize("method", ["visionzip", "fastv", "dart", "divprune",
                                    "holov"])
def test_full_budget_equals_the_base_model(models, method):
  # Keeping every token, the method's path (two LLM stages, merging) must
  # reduce to the plain model: logits and greedy tokens, batch of two.
  _, jx = models
  rng = np.random.default_rng(2)
  rows = [[1, 2] + hf_tiny.block(IMAGE, [1, 6, 10]) + [5, 6],
          [3] + hf_tiny.block(IMAGE, [1, 4, 4]) + [7, 8, 9]]
  ids, mask = hf_tiny.left_padded(rows)
  pix = np.concatenate([hf_tiny.pixels(rng, [1, 6, 10]),
                        hf_tiny.pixels(rng, [1, 4, 4])])
  kw = dict(attention_mask=mask, pixel_values=pix,
            image_grid_thw=[[1, 6, 10], [1, 4, 4]])
  base = jx.forward(ids, **kw).logits
  out = jx.forward(ids, **kw, budget=1.0, method=method)
  for r in range(2):
    keep = out.keep_index[r]
    keep = keep[keep >= 0]
    np.testing.assert_allclose(out.logits[r, :len(keep)], base[r, keep],
                               atol=2e-5)
  np.testing.assert_array_equal(
      jx.generate(ids, **kw, max_new_tokens=6),
      jx.generate(ids, **kw, max_new_tokens=6, budget=1.0, method=method))


@pytest.mark.parametrize("method", ["fastv", "dart"])
def test_in_llm_decode_uses_both_cache_stages(models, method):
  # Reference without a cache: the prompt + the generated tokens through
  # layers [0, K) at full length, then layers [K, L) on the prompt's kept
  # positions + the generated ones. Greedy decoding must pick its argmax at
  # every step (the lower layers attend the whole prompt, the upper ones
  # only the kept tokens).
  _, jx = models
  rng = np.random.default_rng(3)
  ids, pix, grids = _inputs(rng, [[1, 6, 10]])
  kw = dict(pixel_values=pix, image_grid_thw=grids, budget=0.3,
            method=method)
  kept = jx.forward(ids, **kw).keep_index[0]
  kept = kept[kept >= 0]
  tokens = jx.generate(ids, **kw, max_new_tokens=4)[0]
  m = jx.module
  k_layer = fastv.prune_layer(m)
  for step in range(len(tokens)):
    longer = np.concatenate([ids, tokens[None, :step]], axis=1)
    prep = prepare_batch(jx.config, longer, None, pix, grids)
    b = {n: jnp.asarray(v) for n, v in prep.arrays.items()}
    x = forward_lib.embed_inputs(m, b)[0]
    h, _ = m.model.run(x, b["position_ids"], b["segment_ids"],
                       layers=(0, k_layer), final_norm=False)
    idx = np.concatenate([kept, ids.shape[1] + np.arange(step)])
    hidden, _ = m.model.run(
        h[:, idx], b["position_ids"][:, :, idx],
        jnp.ones((1, len(idx)), jnp.int32),
        layers=(k_layer, len(m.model.layers)))
    assert tokens[step] == int(np.asarray(m.head(hidden))[0, -1].argmax())

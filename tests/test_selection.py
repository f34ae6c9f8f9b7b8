"""Budgeted inference: token dropping against HF fed the kept tokens,
budget 1.0 against the base model, batches, per-image budgets, compiles."""
import numpy as np
import pytest
import torch

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE, VIDEO


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  hf = hf_tiny.make_model("untied_w112", seed=11)
  path = tmp_path_factory.mktemp("sel") / "hf"
  hf.save_pretrained(path)
  jx = vselect_jax.from_pretrained(str(path))
  # A non-trivial scorer, so selections differ from "first k".
  rng = np.random.default_rng(0)
  for proj in ("q_proj", "k_proj"):
    layer = getattr(jx.module.visual.importance_scorer, proj)
    layer.kernel.set_value(rng.standard_normal(layer.kernel.shape).astype(
        np.float32))
  jx = vselect_jax.VisionLanguageModel(jx.config, jx.module)
  return hf, jx


def _two_image_prompt(rng):
  g1, g2 = [1, 6, 10], [1, 12, 8]
  ids = np.array([[7] + hf_tiny.block(IMAGE, g1) + [8, 9] +
                  hf_tiny.block(IMAGE, g2) + [10, 11]])
  pix = np.concatenate([hf_tiny.pixels(rng, g1), hf_tiny.pixels(rng, g2)])
  return dict(input_ids=ids, pixel_values=pix, image_grid_thw=np.array([g1, g2]))


def _hf_on_kept(hf, inputs, keep, position_ids):
  """HF logits when fed the kept tokens' embeddings and position ids."""
  ids = torch.tensor(inputs["input_ids"])
  with torch.no_grad():
    emb = hf.model.get_input_embeddings()(ids)
    feats = hf.model.get_image_features(
        torch.tensor(inputs["pixel_values"]),
        torch.tensor(inputs["image_grid_thw"])).pooler_output
    feats = torch.cat(feats)
    emb[ids == IMAGE] = feats
    keep_t = torch.tensor(keep)
    kept = emb[0, keep_t[0]][None]
    pos = torch.tensor(np.array(position_ids[:, :, keep[0]]))
    return hf(inputs_embeds=kept, position_ids=pos).logits.numpy()


@pytest.mark.parametrize("budget", [0.5, 0.2, 0.05])
def test_kept_logits_equal_hf_fed_the_kept_tokens(pair, budget):
  hf, jx = pair
  inputs = _two_image_prompt(np.random.default_rng(1))
  out = jx.forward(**inputs, budget=budget, soft_mask=True)
  ids = inputs["input_ids"]
  n_vis = int((ids == IMAGE).sum())
  k = max(1, int(np.floor(n_vis * budget)))
  keep = out.keep_index
  assert keep.shape == (1, ids.shape[1] - n_vis + k)
  assert (np.diff(keep[0]) > 0).all()                  # original order
  assert int((ids[0, keep[0]] == IMAGE).sum()) == k    # exactly k visual
  assert (ids[0, keep[0]] != IMAGE).sum() == ids.shape[1] - n_vis  # all text
  # The kept visual tokens are the k highest scores.
  vis_pos = np.flatnonzero(ids[0] == IMAGE)
  top = vis_pos[np.argsort(-out.scores[0, vis_pos], kind="stable")[:k]]
  np.testing.assert_array_equal(np.sort(top), keep[0][ids[0, keep[0]] == IMAGE])
  from vselect_jax.host.rope_index import get_rope_index
  pos, _ = get_rope_index(ids, image_grid_thw=inputs["image_grid_thw"],
                          image_token_id=IMAGE, video_token_id=VIDEO)
  ref = _hf_on_kept(hf, inputs, keep, pos.astype(np.int64))
  err = np.abs(out.logits - ref).max()
  assert err <= 1e-4, err
  assert abs(out.soft_mask[0, vis_pos].sum() - k) < 1e-3


def test_budget_one_equals_the_base_model(pair):
  _, jx = pair
  inputs = _two_image_prompt(np.random.default_rng(2))
  base = jx.forward(**inputs).logits
  full = jx.forward(**inputs, budget=1.0)
  np.testing.assert_array_equal(full.keep_index[0],
                                np.arange(base.shape[1]))
  np.testing.assert_allclose(full.logits, base, atol=1e-6, rtol=0)


def test_batch_rows_select_independently(pair):
  _, jx = pair
  rng = np.random.default_rng(3)
  (r1, r2), (g1, g2) = hf_tiny.two_image_rows()
  ids, mask = hf_tiny.left_padded([r1, r2])
  n = ids.shape[1]
  p1, p2 = hf_tiny.pixels(rng, g1), hf_tiny.pixels(rng, g2)
  batch = jx.forward(ids, mask, np.concatenate([p1, p2]), [g1, g2],
                     budget=[0.3, 0.5])
  for i, (r, p, g, b) in enumerate(((r1, p1, g1, 0.3), (r2, p2, g2, 0.5))):
    alone = jx.forward(np.array([r]), pixel_values=p, image_grid_thw=[g],
                       budget=b)
    m = alone.keep_index.shape[1]
    # Same tokens kept (shifted by the row's left padding) and same logits.
    np.testing.assert_array_equal(batch.keep_index[i, :m] - (n - len(r)),
                                  alone.keep_index[0])
    assert (batch.keep_index[i, m:] == -1).all()
    np.testing.assert_allclose(batch.logits[i, :m], alone.logits[0],
                               atol=1e-4, rtol=0)


def test_per_image_budgets(pair):
  _, jx = pair
  inputs = _two_image_prompt(np.random.default_rng(4))
  out = jx.forward(**inputs, budget=0.2, per_image=True)
  ids = inputs["input_ids"][0]
  kept = out.keep_index[0]
  vis_pos = np.flatnonzero(ids == IMAGE)
  first, second = vis_pos[:15], vis_pos[15:]  # 15 and 24 merged tokens
  assert np.isin(kept, first).sum() == 3 and np.isin(kept, second).sum() == 4


def test_text_only_with_budget_keeps_everything(pair):
  _, jx = pair
  ids = np.array([[5, 6, 7, 8]])
  out = jx.forward(ids, budget=0.1)
  np.testing.assert_array_equal(out.keep_index, [[0, 1, 2, 3]])
  np.testing.assert_allclose(out.logits, jx.forward(ids).logits, atol=1e-6)


@pytest.mark.parametrize("budget", [0, -0.5, 1.5, float("nan"), "0.2"])
def test_bad_budgets_are_refused(pair, budget):
  _, jx = pair
  inputs = _two_image_prompt(np.random.default_rng(5))
  with pytest.raises(ValueError, match="budget"):
    jx.forward(**inputs, budget=budget)


def test_budget_sweep_compiles_once_per_bucket(pair):
  _, shared = pair
  jx = vselect_jax.VisionLanguageModel(shared.config, shared.module)  # fresh
  inputs = _two_image_prompt(np.random.default_rng(6))
  sizes = set()
  for budget in (1.0, 0.5, 0.3, 0.2, 0.1, 0.05):
    out = jx.forward(**inputs, budget=budget, soft_mask=True)
    sizes.add(-(-out.keep_index.shape[1] // jx.seq_multiple))
  # Every compressed length here falls in the 64-token bucket: one program
  # serves every budget (k is a traced value, not a shape).
  assert sizes == {1}
  assert jx.num_compiles == 1

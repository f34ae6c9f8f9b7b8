"""PruMerge+ and HoloV: each algorithm step hand-checked on small
constructed inputs, the faithful switches reproducing the reference's
quirks, and sharded equal to unsharded (images and a video)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import END, IMAGE, START, VIDEO
from vselect_jax import sharding as shard_lib
from vselect_jax.methods import holov, prumerge

# One compiled program per helper instead of many eager ops (test time).
iqr_outliers = jax.jit(prumerge.iqr_outliers)
priority = jax.jit(prumerge.priority)
merge_neighbours = jax.jit(prumerge.merge_neighbours,
                           static_argnames="neighbours")
misalign = jax.jit(prumerge.misalign)
crop_ids = jax.jit(holov.crop_ids)
allocation = jax.jit(holov.allocation)
holov_mask = jax.jit(holov.holov_mask)

# Two groups in one row: 10 tokens (scores 1..9 and an outlier 50) and 5
# tokens (1, 1, 1, 1, 9), text around them.
GROUP = np.array([[-1] + [0] * 10 + [-1] + [1] * 5], np.int32)
SCORES = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 0, 1, 1, 1, 1, 9]],
                  np.float32)


def _k(k0, k1):
  return np.where(GROUP == 0, k0, np.where(GROUP == 1, k1, 0)
                  ).astype(np.int32)


def test_prumerge_iqr_outliers():
  # Group 0: Q1 = 3.25, Q3 = 7.75 (np.percentile), bound 14.5: only 50.
  # Group 1: Q1 = Q3 = 1, bound 1: only 9.
  out = np.asarray(iqr_outliers(SCORES, GROUP))[0]
  np.testing.assert_array_equal(np.flatnonzero(out), [10, 16])
  assert np.percentile(SCORES[0, 1:11], 75) + 1.5 * (
      np.percentile(SCORES[0, 1:11], 75) -
      np.percentile(SCORES[0, 1:11], 25)) == 14.5


def test_prumerge_outliers_then_grid_then_fill():
  fill = -jnp.asarray(SCORES)
  order = np.asarray(priority(SCORES, GROUP, _k(4, 2), fill))[0]
  # Group 0 (N = 10, k = 4, grid step 10 // 4 = 2): the outlier (pos 10),
  # then grid ranks 0, 2, 4, 6, 8 (pos 1, 3, 5, 7, 9), then the rest by
  # score: pos 8, 6, 4, 2.
  np.testing.assert_array_equal(order[1:11], [1, 9, 2, 8, 3, 7, 4, 6, 5, 0])
  # Group 1 (N = 5, k = 2, step 2): the outlier (pos 16), grid ranks 0, 2
  # (rank 4 is the outlier), then ties by position.
  np.testing.assert_array_equal(order[12:], [1, 3, 2, 4, 0])
  # k = 8: step 10 // 8 = 1, the grid is every token: the outlier, then
  # the first 7 by position; group 1 (k = 4): pos 16, then 12, 13, 14.
  k = _k(8, 4)
  best = np.asarray(priority(SCORES, GROUP, k, fill))[0]
  np.testing.assert_array_equal(np.flatnonzero((GROUP[0] >= 0) &
                                               (best < k[0])),
                                [1, 2, 3, 4, 5, 6, 7, 10, 12, 13, 14, 16])
  # The grid has ceil(N / (N // k)) >= k tokens, so outliers + grid always
  # cover k: the reference's (random) fill can never be reached.
  for k0 in range(1, 11):
    order = np.asarray(priority(SCORES, GROUP, _k(k0, 1), fill))[0]
    chosen = np.flatnonzero((GROUP[0] == 0) & (order < k0))
    assert len(chosen) == k0 and 10 in chosen
    grid = [1 + r for r in range(0, 10, max(1, 10 // k0))]
    assert set(chosen) <= set(grid) | {10}
  # k <= iqr: the top k by score (here the single outlier of each group).
  top = np.asarray(priority(SCORES, GROUP, _k(1, 1), fill))[0]
  np.testing.assert_array_equal(np.flatnonzero(top == 0), [10, 16])


def test_prumerge_merges_the_key_nearest_neighbours():
  # Four tokens of one group; keys: 0 and 1 close, 2 and 3 close.
  keys = np.array([[[1, 0], [1, 0.1], [0, 1], [0.1, 1]]], np.float32)
  tokens = np.array([[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                      [0, 0, 0, 1]]], np.float32)
  w = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
  group = np.zeros((1, 4), np.int32)
  out = np.asarray(merge_neighbours(tokens, keys, w, group,
                                             neighbours=1))[0]
  # x_i + a_j x_j with j the nearest other key: 0<->1, 2<->3.
  np.testing.assert_allclose(out, [[1, .2, 0, 0], [.1, 1, 0, 0],
                                   [0, 0, 1, .4], [0, 0, .3, 1]], atol=1e-6)
  # With more neighbours than members, every other member (weights).
  out = np.asarray(merge_neighbours(tokens, keys, w, group))[0]
  np.testing.assert_allclose(out[0], [1, .2, .3, .4], atol=1e-6)


def test_prumerge_faithful_scatter_misaligns_features():
  tokens = np.arange(6, dtype=np.float32).reshape(1, 6, 1) * 10
  group = np.array([[-1, 0, 0, 0, 0, -1]], np.int32)
  selected = np.array([[False, True, False, True, True, False]])
  # Keep order: pos 4 first, then 1, then 3.
  order = np.array([[9, 1, 9, 2, 0, 9]], np.int32)
  out = np.asarray(misalign(tokens, order, group, selected))[0, :, 0]
  # Ascending kept positions 1, 3, 4 get the features of 4, 1, 3.
  np.testing.assert_array_equal(out, [0, 40, 20, 10, 30, 50])


def test_holov_crops_and_allocation_by_hand():
  group = np.array([[-1] + [0] * 6 + [-1] + [1] * 9], np.int32)
  k = np.where(group == 0, 4, np.where(group == 1, 2, 0)).astype(np.int32)
  # P = max(1, 16 N // (9 k)): 96 // 36 = 2 crops of 3; 144 // 18 = 8
  # crops of ceil(9 / 8) = 2 -> 5 chunks (as torch.chunk).
  np.testing.assert_array_equal(
      np.asarray(crop_ids(group, k))[0],
      [-1, 0, 0, 0, 1, 1, 1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4])
  crop = np.array([[-1, 0, 0, 1, 1, 2, 2, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4]],
                  np.int32)
  score = np.array([[0, 1, 1, 3, 3, 2, 2, 0, 1, 1, 1, 1, 1, 1, 1, 1, 5]],
                   np.float32)
  alloc = np.asarray(allocation(score, group, crop, k))[0]
  # Group 0: weights 1/6, 1/2, 1/3 of k = 4 -> floors 0, 2, 1, the
  # remainder 1 to the heaviest crop: 0, 3, 1.
  np.testing.assert_array_equal(alloc[1:7], [0, 0, 3, 3, 1, 1])
  # Group 1: crop means 1, 1, 1, 1, 5 (sum 9), k = 2 -> floors 0, 0, 0, 0,
  # 1, remainder 1 to crop 4 again.
  np.testing.assert_array_equal(alloc[8:], [0] * 8 + [2])


def test_holov_keeps_top_attention_per_crop_and_fills_to_k():
  group = np.array([[0] * 6], np.int32)
  k = np.full((1, 6), 4, np.int32)            # 2 crops of 3
  attn = np.array([[5, 1, 2, 6, 4, 3]], np.float32)
  # Crop 1 similar tokens, crop 0 diverse: equal attention sums, so the
  # crop weights follow the variance term.
  tokens = np.array([[[1, 0], [0, 1], [-1, 0], [1, .1], [1, .2], [1, .3]]],
                    np.float32)
  sel, score = holov_mask(attn, tokens, group, k)
  crop = np.asarray(crop_ids(group, k))
  alloc = np.asarray(allocation(score, group, crop, k))[0]
  sel = np.asarray(sel)[0]
  assert sel.sum() == 4
  for c, members in ((0, [0, 1, 2]), (1, [3, 4, 5])):
    a = min(alloc[members[0]], 3)
    best = sorted(members, key=lambda i: -attn[0, i])[:a]
    assert set(np.flatnonzero(sel)) >= set(best)
  # A crop allotted more than it holds: kept whole, the rest filled by
  # attention elsewhere (exactly k).
  crop = np.array([[0, 1, 1, 1, 1, 1]], np.int32)
  score = np.array([[100, 1, 1, 1, 1, 1]], np.float32)
  assert np.asarray(allocation(score, group, crop, k))[0, 0] == 4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  # 2 x 2 merged-token windows: every image here spans several windows.
  path = tmp_path_factory.mktemp("pmhv") / "hf"
  hf_tiny.make_model("tied_w56", seed=8).save_pretrained(path)
  return str(path)


@pytest.fixture(scope="module")
def model(hf_dir):
  return vselect_jax.from_pretrained(hf_dir)


def _rows(rng, grid):
  """Row 0: an image of ``grid`` (15 tokens, several windows); row 1: a
  two-frame video (8 tokens). Left padded."""
  vid = [2, 4, 4]
  rows = [[1, 2] + hf_tiny.block(IMAGE, grid) + [5],
          [3] + hf_tiny.block(VIDEO, vid) + [6, 7]]
  ids, mask = hf_tiny.left_padded(rows)
  return dict(input_ids=ids, attention_mask=mask,
              pixel_values=hf_tiny.pixels(rng, grid), image_grid_thw=[grid],
              pixel_values_videos=hf_tiny.pixels(rng, vid),
              video_grid_thw=[vid])


GRIDS = ([1, 6, 10], [1, 10, 6])      # same buckets, different images
K_IMAGE, K_VIDEO = int(15 * 0.3), int(8 * 0.3)


def _kept(ids, out):
  """Per row, the kept token ids (-1 for padding)."""
  kept = np.take_along_axis(ids, np.maximum(out.keep_index, 0), 1)
  return np.where(out.keep_index >= 0, kept, -1)


def _exact_k(model, method):
  """Forward on both batches; exactly k per item, nothing else dropped,
  one compile. Returns the last batch and its output."""
  before = model.num_compiles
  for grid in GRIDS:
    inputs = _rows(np.random.default_rng(1), grid)
    ids = inputs["input_ids"]
    out = model.forward(**inputs, budget=0.3, method=method, per_image=True)
    kept = _kept(ids, out)
    assert (kept[0] == IMAGE).sum() == K_IMAGE
    assert (kept[1] == VIDEO).sum() == K_VIDEO
    for r in range(2):
      assert ((kept[r] != IMAGE) & (kept[r] != VIDEO) & (kept[r] >= 0)
              ).sum() == ((ids[r] != IMAGE) & (ids[r] != VIDEO) &
                          (inputs["attention_mask"][r] > 0)).sum()
  assert model.num_compiles == before + 1
  return inputs, out


def test_prumerge_keeps_exactly_k_and_faithful_misaligns(model):
  inputs, a = _exact_k(model, "prumerge")
  # Faithful: the same kept positions (outliers + grid), but the merged
  # features are scattered in keep order, so the logits change.
  b = model.forward(**inputs, budget=0.3, method="prumerge", per_image=True,
                    options={"faithful": True})
  np.testing.assert_array_equal(a.keep_index, b.keep_index)
  assert np.abs(a.logits - b.logits).max() > 1e-3


def test_holov_keeps_exactly_k_and_faithful_quirks(model):
  inputs, a = _exact_k(model, "holov")
  ids = inputs["input_ids"]
  b = model.forward(**inputs, budget=0.3, method="holov", per_image=True,
                    options={"faithful": True})
  # Scores in window order: the image's token scores differ from the
  # raster ones (shifted one early with the span).
  first = np.flatnonzero(ids[0] == IMAGE)
  assert not np.allclose(a.scores[0, first], b.scores[0, first - 1])
  # The span starts at <|vision_start|>: k decisions over the start token
  # and every item token but the last, which is always kept.
  kept = _kept(ids, b)
  for r, (tok, k) in enumerate(((IMAGE, K_IMAGE), (VIDEO, K_VIDEO))):
    assert (kept[r] == tok).sum() + (kept[r] == START).sum() - 1 == k
    last = np.flatnonzero((ids[r, :-1] == tok) & (ids[r, 1:] == END))
    assert set(last) <= set(b.keep_index[r])
  # By default the start tokens are never dropped.
  assert ((_kept(ids, a) == START).sum(1) == 1).all()


def test_sharded_equals_unsharded(hf_dir, model):
  many = vselect_jax.from_pretrained(
      hf_dir, mesh=shard_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2}))
  # The unsharded programs are the ones compiled above (same bucket).
  inputs = _rows(np.random.default_rng(2), GRIDS[1])
  for method in ("prumerge", "holov"):
    a = model.forward(**inputs, budget=0.3, method=method, per_image=True)
    b = many.forward(**inputs, budget=0.3, method=method, per_image=True)
    np.testing.assert_array_equal(b.keep_index, a.keep_index)
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-5, rtol=1e-5)

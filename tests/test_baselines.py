"""Baselines under the selection API: hand-checkable selections, exactly k
kept, no recompiles within a bucket."""
import jax.numpy as jnp
import numpy as np
import pytest

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE
from vselect_jax.methods import divprune, random, uniform


def test_uniform_is_evenly_spaced():
  group = np.array([[-1] + [0] * 10 + [-1] + [1] * 4], np.int32)
  k = np.where(group == 0, 3, np.where(group == 1, 2, 0)).astype(np.int32)
  sel = np.asarray(uniform.uniform_mask(group, k))[0]
  # group 0: floor(i * 10 / 3) = 0, 3, 6; group 1: floor(i * 4 / 2) = 0, 2
  np.testing.assert_array_equal(np.flatnonzero(sel), [1, 4, 7, 12, 14])


def test_divprune_picks_the_diverse_points():
  # Five 2-D embeddings: two tight pairs and one outlier; k = 3 picks the
  # outlier first (farthest nearest-neighbour), then one of each pair.
  pts = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99], [-1, -0.1]],
                 np.float32)
  tokens = pts[None]
  group = np.zeros((1, 5), np.int32)
  k = np.full((1, 5), 3, np.int32)
  sel, imp = divprune.divprune_mask(tokens, group, k)
  sel, imp = np.asarray(sel)[0], np.asarray(imp)[0]
  assert sel.sum() == 3 and sel[4]
  assert sel[:2].sum() == 1 and sel[2:4].sum() == 1
  assert imp[4] == imp.max()  # picked first


def test_random_depends_on_the_seed_only():
  a = np.asarray(random.random_scores(3, (2, 7)))
  np.testing.assert_array_equal(a, random.random_scores(3, (2, 7)))
  assert not np.array_equal(a, random.random_scores(4, (2, 7)))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  path = tmp_path_factory.mktemp("bl") / "hf"
  hf_tiny.make_model("untied_w112", seed=8).save_pretrained(path)
  return vselect_jax.from_pretrained(str(path))


@pytest.mark.parametrize("method", ["random", "uniform", "divprune",
                                    "selector", "visionzip", "fastv", "dart"])
def test_each_method_keeps_exactly_k_without_recompiles(model, method):
  jx = vselect_jax.VisionLanguageModel(model.config, model.module)
  rng = np.random.default_rng(0)
  for grid in ([1, 6, 10], [1, 8, 6]):  # same buckets, different images
    for per_image in (False, True):
      if method == "dart" and per_image:
        with pytest.raises(ValueError, match="per_image"):
          jx.forward(np.array([[1, 2]]), budget=0.3, method=method,
                     per_image=True)
        continue
      ids = np.array([[1, 2] + hf_tiny.block(IMAGE, grid) + [3] +
                      hf_tiny.block(IMAGE, [1, 4, 4]) + [4]])
      n1 = grid[1] * grid[2] // 4
      out = jx.forward(ids, pixel_values=np.concatenate(
          [hf_tiny.pixels(rng, grid), hf_tiny.pixels(rng, [1, 4, 4])]),
          image_grid_thw=[grid, [1, 4, 4]], budget=0.3, method=method,
          per_image=per_image)
      kept = ids[0, out.keep_index[0]]
      expect = (max(1, int(n1 * 0.3)) + 1 if per_image
                else max(1, int((n1 + 4) * 0.3)))
      assert (kept == IMAGE).sum() == expect
      assert (kept != IMAGE).sum() == (ids != IMAGE).sum()
  # pooled and per-image programs
  assert jx.num_compiles == (1 if method == "dart" else 2)


def test_unknown_method(model):
  with pytest.raises(ValueError, match="unknown selection method"):
    model.forward(np.array([[1, 2]]), budget=0.5, method="fastv2")

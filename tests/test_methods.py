"""The method registry: discovery, the one validation, ranking, FastV's
faithful span, and the scorer's gradient into a trainable vision tower."""
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE
from tests.train_utils import relaxed_forward
from vselect_jax import methods
from vselect_jax.methods import ranking
from vselect_jax.selector import topk
from vselect_jax.selector.budget import budget_to_k


def test_every_method_module_is_registered():
  found = set()
  for info in pkgutil.iter_modules(methods.__path__):
    module = importlib.import_module(f"vselect_jax.methods.{info.name}")
    if hasattr(module, "METHOD"):
      found.add(module.METHOD.name)
  assert set(methods.names()) == found
  assert {"selector", "random", "uniform", "divprune", "visionzip", "fastv",
          "dart"} <= found


def test_validation_is_one_place_and_names_the_problem():
  with pytest.raises(ValueError, match="did you mean 'fastv'"):
    methods.validate("fastvv")
  with pytest.raises(ValueError, match="no option"):
    methods.validate("fastv", options={"seed": 1})
  with pytest.raises(ValueError, match="must be bool"):
    methods.validate("fastv", options={"faithful_span": "yes"})
  with pytest.raises(ValueError, match="per_image"):
    methods.validate("dart", per_image=True)
  with pytest.raises(ValueError, match="budget"):
    methods.validate("uniform", budget=[0.2, 1.5])
  m, opts = methods.validate("random", 0.2, options={"seed": 3})
  assert m.name == "random" and opts == (("seed", 3),)


def test_rank_in_group_matches_brute_force():
  rng = np.random.default_rng(0)
  group = rng.integers(-1, 4, (3, 40)).astype(np.int32)
  key = rng.integers(0, 5, (3, 40)).astype(np.float32)   # many ties
  rank = np.asarray(ranking.rank_in_group(key, group))
  for b in range(3):
    for i in range(40):
      if group[b, i] < 0:
        continue
      same = np.flatnonzero(group[b] == group[b, i])
      before = [j for j in same if (key[b, j], j) < (key[b, i], i)]
      assert rank[b, i] == len(before)
  sizes = np.asarray(ranking.group_sizes(group))
  for b in range(3):
    for i in range(40):
      expect = (group[b] == group[b, i]).sum() if group[b, i] >= 0 else 0
      assert sizes[b, i] == expect


@pytest.fixture(scope="module")
def jx(tmp_path_factory):
  path = tmp_path_factory.mktemp("methods") / "hf"
  hf_tiny.make_model("untied_w112", seed=9).save_pretrained(path)
  return vselect_jax.from_pretrained(str(path))


def _two_images(rng):
  g1, g2 = [1, 6, 10], [1, 4, 4]
  between = [11, 12, 13, 14, 15, 16]
  ids = np.array([[1, 2] + hf_tiny.block(IMAGE, g1) + between +
                  hf_tiny.block(IMAGE, g2) + [7, 8]])
  pix = np.concatenate([hf_tiny.pixels(rng, g1), hf_tiny.pixels(rng, g2)])
  return dict(input_ids=ids, pixel_values=pix, image_grid_thw=[g1, g2])


def test_fastv_faithful_span_ranks_the_text_between_images(jx):
  inputs = _two_images(np.random.default_rng(0))
  ids = inputs["input_ids"][0]
  vis = np.flatnonzero(ids == IMAGE)
  span = np.arange(vis[0], vis[-1] + 1)
  budget = 0.3
  ours = jx.forward(**inputs, budget=budget, method="fastv")
  kept = ours.keep_index[0][ours.keep_index[0] >= 0]
  assert np.isin(kept, vis).sum() == budget_to_k(len(vis), budget)
  assert set(np.setdiff1d(np.arange(len(ids)), vis)) <= set(kept)
  ref = jx.forward(**inputs, budget=budget, method="fastv",
                   options={"faithful_span": True})
  kept = ref.keep_index[0][ref.keep_index[0] >= 0]
  in_span = np.isin(kept, span)
  # k counts the whole span (visual and the text between the images) ...
  assert in_span.sum() == budget_to_k(len(span), budget)
  # ... everything outside it is kept, and the span's kept positions are
  # its top-k by attention received.
  outside = np.setdiff1d(np.arange(len(ids)), span)
  assert set(outside) <= set(kept)
  top = span[np.argsort(-ref.scores[0, span], kind="stable")[:in_span.sum()]]
  np.testing.assert_array_equal(np.sort(top), kept[in_span])
  with pytest.raises(ValueError, match="per_image"):
    jx.forward(**inputs, budget=budget, method="fastv", per_image=True,
               options={"faithful_span": True})


def test_soft_mask_only_when_asked(jx, monkeypatch):
  calls = []
  soft = topk.soft_topk
  monkeypatch.setattr(topk, "soft_topk",
                      lambda *a, **k: calls.append(1) or soft(*a, **k))
  fresh = vselect_jax.VisionLanguageModel(jx.config, jx.module)
  inputs = _two_images(np.random.default_rng(1))
  out = fresh.forward(**inputs, budget=0.2)
  fresh.generate(**inputs, budget=0.2, max_new_tokens=2)
  assert out.soft_mask is None and not calls   # inference: no bisection
  out = fresh.forward(**inputs, budget=0.2, soft_mask=True)
  assert calls and out.soft_mask.shape == out.scores.shape


def test_scorer_gradient_reaches_a_trainable_vision_tower(jx):
  """With the vision tower trainable the scorer's input is not detached
  (as the reference's training path), so the BCE term alone sends
  gradients into the tower; with it frozen, none."""
  prep = jx.prepare(**_two_images(np.random.default_rng(2)))
  batch = {k: jnp.asarray(v) for k, v in prep.arrays.items()}
  graphdef, vision, rest = nnx.split(
      jx.module, nnx.All(nnx.Param, nnx.PathContains("blocks")), ...)

  def bce(vision_state, vision_grad):
    model = nnx.merge(graphdef, vision_state, rest)
    return relaxed_forward(model, batch, [5], vision_grad=vision_grad)[3]

  for vision_grad, expect_nonzero in ((True, True), (False, False)):
    grads = jax.grad(bce)(vision, vision_grad)
    norm = float(jnp.sqrt(sum(jnp.sum(g ** 2)
                              for g in jax.tree.leaves(grads))))
    assert (norm > 1e-9) == expect_nonzero, (vision_grad, norm)

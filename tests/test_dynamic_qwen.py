"""Dynamic-Qwen (the trained in-LLM baseline): the Gumbel temperature, the
reference's text-counting budget, the predictor's output, policy-masked
attention against dropping, training moving the keep ratio, export in the
reference's keys and back, and sharded against unsharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE
from tests.train_utils import packed_batch
from vselect_jax import forward as forward_lib
from vselect_jax import methods
from vselect_jax import sharding as shard_lib
from vselect_jax.checkpoint import scorer_export
from vselect_jax.host import train_batch as batch_lib
from vselect_jax.host.budgets import selection_budgets
from vselect_jax.methods import dynamic_qwen
from vselect_jax.modeling.policy_attention import policy_attention
from vselect_jax.selector.predictor import VisionPredictor, widths_for
from vselect_jax.training import loop, optim
from vselect_jax.training import step as step_lib

GRID = [1, 6, 10]   # 15 merged tokens


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("dq") / "hf"
  hf_tiny.make_model("untied_w112", seed=3).save_pretrained(path)  # 3 layers
  return str(path)


@pytest.fixture(scope="module")
def model(hf_dir):
  return vselect_jax.from_pretrained(hf_dir)


def _prompt(rng, text_after=3):
  ids = np.array([[1, 2] + hf_tiny.block(IMAGE, GRID) +
                  list(range(5, 5 + text_after))])
  return ids, hf_tiny.pixels(rng, GRID)


def test_gumbel_tau_anneals_geometrically_from_1_to_0_1():
  # tau = 1.0 * (0.1 / 1.0) ** (step / total), the reference's trainer.
  assert dynamic_qwen.gumbel_tau(0, 100) == pytest.approx(1.0)
  assert dynamic_qwen.gumbel_tau(50, 100) == pytest.approx(0.1 ** 0.5)
  assert dynamic_qwen.gumbel_tau(25, 100) == pytest.approx(0.1 ** 0.25)
  assert dynamic_qwen.gumbel_tau(100, 100) == pytest.approx(0.1)
  assert dynamic_qwen.gumbel_tau(7, 0) == 1.0   # no total yet: the start
  traced = jax.jit(lambda s: dynamic_qwen.gumbel_tau(s, 100))(jnp.int32(50))
  assert float(traced) == pytest.approx(0.1 ** 0.5, rel=1e-6)


def test_budget_counts_text_tokens_by_default():
  # Row 0: 10 valid positions, 4 visual; row 1: 20 valid (2 padding), 12
  # visual. int(N_total * r), capped at the visual tokens.
  item = -np.ones((2, 22), np.int32)
  seg = np.zeros((2, 22), np.int32)
  seg[0, :10] = 1
  item[0, 3:7] = 0
  seg[1, 2:22] = 1
  item[1, 4:16] = 0
  arrays = {"visual_item": item, "segment_ids": seg}
  expect = {0.3: ([3, 6], [1, 3]), 0.2: ([2, 4], [1, 2]),
            0.5: ([4, 10], [2, 6]), 1.0: ([4, 12], [4, 12])}
  for budget, (total, visual) in expect.items():
    _, k_row = selection_budgets(arrays, budget, False, "total")
    np.testing.assert_array_equal(k_row, total, err_msg=str(budget))
    _, k_row = selection_budgets(arrays, budget, False, "visual")
    np.testing.assert_array_equal(k_row, visual, err_msg=str(budget))
  # The eval records' kept count follows the same rule: 60 visual tokens
  # (a 1 x 12 x 20 grid) in a 100-token prompt at 0.3 keep 30, not 18.
  from vselect_jax.eval.runner import visual_token_counts
  grids = np.array([[1, 12, 20]])
  assert visual_token_counts(grids, 0.3, False, merge_unit=4,
                             total=100) == (60, 30)
  assert visual_token_counts(grids, 0.3, False, merge_unit=4) == (60, 18)
  assert visual_token_counts(grids, 1.0, False, merge_unit=4,
                             total=100) == (60, 60)
  m, opts = methods.validate("dynamic_qwen", 0.2)
  assert m.count(dict(opts)) == "total"
  assert m.count({"count_text": False}) == "visual"


def test_kept_counts_and_rank_by_log_p_keep(model):
  rng = np.random.default_rng(0)
  ids, pix = _prompt(rng)          # 2 + 17 + 3 = 22 tokens, 15 visual
  vis = np.flatnonzero(ids[0] == IMAGE)
  for budget, options, k in ((0.3, None, 6), (0.1, None, 2),
                             (0.3, {"count_text": False}, 4)):
    out = model.forward(ids, pixel_values=pix, image_grid_thw=[GRID],
                        budget=budget, method="dynamic_qwen",
                        options=options)
    kept = out.keep_index[0]
    kept_vis = kept[np.isin(kept, vis)]
    assert len(kept_vis) == k, (budget, options)
    # Every text token stays; the kept visual tokens are the k most likely.
    assert set(np.setdiff1d(np.arange(ids.shape[1]), vis)) <= set(kept)
    p = out.scores[0, vis]
    expect = np.sort(vis[np.argsort(-p, kind="stable")[:k]])
    np.testing.assert_array_equal(kept_vis, expect)
  with pytest.raises(ValueError, match="per_image budgets"):
    model.forward(ids, pixel_values=pix, image_grid_thw=[GRID], budget=0.3,
                  method="dynamic_qwen", per_image=True)


def test_predictor_log_softmax_and_isolation():
  w = widths_for(96)
  assert (w.width, w.heads, w.mlp, w.layers) == (96, 8, 384, 2)
  assert widths_for(3584) == type(w)(512, 8, 2048, 2)   # the reference's
  pred = VisionPredictor(96, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 12, 96)), jnp.float32)
  visual = np.zeros((2, 12), bool)
  visual[:, 2:6] = visual[:, 7:11] = True
  seg = np.array([[1] * 6 + [2] * 6, [1] * 12], np.int32)
  run = nnx.jit(lambda p, x: p(x, visual, seg))
  out = np.asarray(run(pred, x))
  assert out.shape == (2, 12, 2)
  np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-6)
  # Text positions and the other sample (segment) do not change a
  # sample's visual predictions.
  y = x.at[0, 0].set(5.0).at[0, 7:11].set(-3.0).at[0, 6].set(1.0)
  moved = np.asarray(run(pred, y))
  np.testing.assert_allclose(moved[0, 2:6], out[0, 2:6], atol=1e-6)
  assert not np.allclose(moved[0, 7:11], out[0, 7:11])


def _attention_numpy(q, k, v, seg):
  """Causal segment attention in float64, dense (the dropping reference)."""
  t, n, h = q.shape
  g = n // k.shape[1]
  mask = (seg[:, None] == seg[None, :]) & np.tril(np.ones((t, t), bool))
  out = np.zeros((t, n, h))
  for head in range(n):
    logits = q[:, head] @ k[:, head // g].T / np.sqrt(h)
    logits = np.where(mask, logits, -np.inf)
    p = np.exp(logits - logits.max(1, keepdims=True))
    out[:, head] = (p / p.sum(1, keepdims=True)) @ v[:, head // g]
  return out


def test_policy_attention_is_dropping_within_eps():
  # A kept query's output under a {0, 1} policy is attention over the kept
  # keys alone: exact with eps = 0, within ~eps with the reference's 1e-6.
  rng = np.random.default_rng(1)
  b, t, n, kh, h = 2, 12, 4, 2, 8
  q = rng.standard_normal((b, t, n, h)).astype(np.float32)
  k = rng.standard_normal((b, t, kh, h)).astype(np.float32)
  v = rng.standard_normal((b, t, kh, h)).astype(np.float32)
  seg = np.array([[1] * 7 + [2] * 5, [0] * 2 + [1] * 10], np.int32)
  policy = np.ones((b, t), np.float32)
  policy[0, [2, 3, 8]] = 0
  policy[1, [4, 5, 6]] = 0
  attend = jax.jit(policy_attention, static_argnums=5)
  for eps, tol in ((0.0, 1e-6), (1e-6, 1e-5)):
    got = np.asarray(attend(q, k, v, seg, policy, eps))
    for r in range(b):
      keep = np.flatnonzero((policy[r] > 0) & (seg[r] > 0))
      ref = _attention_numpy(q[r, keep], k[r, keep], v[r, keep], seg[r, keep])
      np.testing.assert_allclose(got[r, keep], ref, atol=tol, rtol=tol)
  # A dropped query attends the kept keys and itself (row 0, query 2: keys
  # 0, 1 and 2).
  got = np.asarray(attend(q, k, v, seg, policy, 0.0))
  cols = [0, 1, 2]
  ref = _attention_numpy(q[0, cols], k[0, cols], v[0, cols], seg[0, cols])
  np.testing.assert_allclose(got[0, 2], ref[2], atol=1e-6)
  # The straight-through gradient reaches a dropped key's decision.
  g = jax.jit(jax.grad(lambda p: policy_attention(q, k, v, seg, p).sum()))(
      jnp.asarray(policy))
  assert abs(float(g[0, 3])) > 1e-4


def test_policy_forward_equals_dropping_the_tokens(model):
  # Layers [0, K) on every token, then [K, L) under a {0, 1} policy, equals
  # the hard path that drops the policy's zeros at layer K (kept positions,
  # original M-RoPE ids), within the reference's eps.
  m = model.module
  rng = np.random.default_rng(2)
  ids, pix = _prompt(rng)
  prep = model.prepare(ids, None, pix, [GRID])
  batch = {n: jnp.asarray(v) for n, v in prep.arrays.items()}
  seg = batch["segment_ids"]
  layer = dynamic_qwen.prune_layer(m)
  assert layer == 2
  visual = np.asarray(batch["visual_index"] >= 0)
  policy = np.ones(visual.shape, np.float32)
  drop = np.flatnonzero(visual[0])[::2]
  policy[0, drop] = 0
  keep = np.flatnonzero((policy[0] > 0) & (np.asarray(seg[0]) > 0))

  @jax.jit
  def both(batch, policy, keep_index):
    text = m.model
    x = forward_lib.embed_inputs(m, batch)[0]
    pos, seg = batch["position_ids"], batch["segment_ids"]
    h, _ = text.run(x, pos, seg, layers=(0, layer), final_norm=False)
    soft, _ = text.run(h, pos, seg, layers=(layer, 3), key_policy=policy)
    hard, _ = text.run(forward_lib.gather(h, keep_index),
                       forward_lib.gather(pos, keep_index, axis=2),
                       forward_lib.gather(seg, keep_index),
                       layers=(layer, 3))
    return soft, hard

  soft, hard = both(batch, jnp.asarray(policy),
                    jnp.asarray(keep[None], jnp.int32))
  np.testing.assert_allclose(np.asarray(soft)[0, keep], np.asarray(hard)[0],
                             atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def trained(hf_dir, tmp_path_factory):
  """8 steps of ``train.py``'s loop with the Dynamic-Qwen recipe
  (``configs/dynamic_qwen_7b.recipe``): (workdir, final state, metrics of
  every step)."""
  import json

  from configs.dynamic_qwen_7b import recipe
  from tests.test_train_loop import _config
  from tests.train_utils import FakeData
  from vselect_jax.loading import load_model
  c = recipe(_config(total=8, every=8, mesh={"data": -1, "fsdp": 1,
                                                "tensor": 1}))
  c.optim.lr = 5e-3   # the tiny config's
  c.optim.warmup_ratio = 0.0
  c.remat = False
  c.log_every = 1
  work = str(tmp_path_factory.mktemp("dq_train"))
  out = loop.train(c, work, lambda c_, i, n: FakeData(3, i),
                   model=load_model(hf_dir), progress=False)
  with open(f"{work}/metrics.jsonl") as f:
    history = [json.loads(line) for line in f]
  return work, out["state"], history


def test_training_moves_the_keep_ratio_to_the_target(trained):
  _, state, history = trained
  assert {p[:2] for p, _ in state.trainable.flat_state()} == {
      ("model", "image_score_predictor")}
  assert [h["step"] for h in history] == list(range(1, 9))
  keep = [h["kept_fraction"] for h in history]
  loss = [h["loss"] for h in history]
  # A fresh predictor keeps about half; the sparsity term pulls to 0.2.
  assert abs(keep[0] - 0.2) > 0.15, keep
  assert np.mean(np.abs(np.array(keep[-3:]) - 0.2)) < abs(keep[0] - 0.2), keep
  assert np.mean(loss[-3:]) < loss[0], loss
  # Logged after each step: tau of the step's start, 0.1 ** (s / 8).
  np.testing.assert_allclose(
      [h["gumbel_tau"] for h in history],
      [0.1 ** (s / 8) for s in range(8)], rtol=1e-5)
  # The loss is CE + 100 * (keep - 0.2)^2 (the "bce" metric: the reg).
  np.testing.assert_allclose(
      [h["bce"] for h in history], [(f - 0.2) ** 2 for f in keep],
      rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(loss, [h["ce"] + 100 * h["bce"]
                                    for h in history], rtol=1e-5)


def test_export_in_reference_keys_loads_back(trained, model, hf_dir,
                                             tmp_path):
  # train.py's export: <workdir>/scorer.safetensors in the reference's keys.
  work, state, _ = trained
  src = f"{work}/scorer.safetensors"
  tensors = scorer_export.load_scorer(src, "image_score_predictor")
  p = "model.image_score_predictor."
  want = {p + n for n in (
      "down_mlp.0.weight", "down_mlp.0.bias", "down_mlp.1.weight",
      "down_mlp.1.bias", "output_mlp.0.weight", "output_mlp.0.bias",
      "output_mlp.2.weight", "output_mlp.2.bias", "output_mlp.4.weight",
      "output_mlp.4.bias")} | {
      f"{p}transformer.{i}.{n}" for i in (0, 1) for n in (
          "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.proj.weight",
          "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
          "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")}
  assert set(tensors) == want
  assert tensors[p + "down_mlp.1.weight"].shape == (96, 96)   # torch [out, in]
  assert tensors[p + "transformer.0.attn.qkv.weight"].shape == (288, 96)
  assert tensors[p + "output_mlp.4.weight"].shape == (2, 24)
  direct = scorer_export.scorer_tensors(state.trainable.to_pure_dict(),
                                        scorer="image_score_predictor")
  for name, value in direct.items():
    np.testing.assert_array_equal(tensors[name], value, err_msg=name)
  merged = str(tmp_path / "merged")
  scorer_export.merge_into(src, hf_dir, merged, "float32",
                           scorer="image_score_predictor")
  loaded = vselect_jax.from_pretrained(merged)
  graphdef, _, _ = step_lib.split_model(model.module, step_lib.Parts(
      scorer="image_score_predictor"))
  local = lambda tree: jax.tree.map(  # noqa: E731  (off the train mesh)
      lambda x: jnp.asarray(np.asarray(x)), tree)
  trained_model = vselect_jax.VisionLanguageModel(
      model.config, nnx.merge(graphdef, local(state.trainable),
                              local(state.frozen)))
  rng = np.random.default_rng(4)
  ids, pix = _prompt(rng)
  kw = dict(pixel_values=pix, image_grid_thw=[GRID], budget=0.3,
            method="dynamic_qwen")
  a, b = trained_model.forward(ids, **kw), loaded.forward(ids, **kw)
  np.testing.assert_array_equal(b.keep_index, a.keep_index)
  np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
  fresh = model.forward(ids, **kw).scores
  assert not np.allclose(fresh, a.scores, atol=1e-4)   # it did train
  # A predictor of the wrong width is refused, naming the tensors.
  bad = dict(tensors)
  bad[p + "down_mlp.1.weight"] = np.zeros((96, 64), np.float32)
  scorer_export.write_tensors(bad, str(tmp_path / "bad.safetensors"),
                              "float32")
  with pytest.raises(ValueError, match="down_mlp.1.weight"):
    scorer_export.merge_into(str(tmp_path / "bad.safetensors"), hf_dir,
                             str(tmp_path / "bad"), "float32",
                             scorer="image_score_predictor")


def test_sharded_forward_equals_unsharded(model, hf_dir):
  mesh = shard_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  many = vselect_jax.from_pretrained(hf_dir, mesh=mesh)
  rng = np.random.default_rng(5)
  rows = [[1, 2] + hf_tiny.block(IMAGE, GRID) + [5, 6],
          [3] + hf_tiny.block(IMAGE, [1, 4, 4]) + [7, 8, 9]]
  ids, mask = hf_tiny.left_padded(rows)
  pix = np.concatenate([hf_tiny.pixels(rng, GRID),
                        hf_tiny.pixels(rng, [1, 4, 4])])
  kw = dict(attention_mask=mask, pixel_values=pix,
            image_grid_thw=[GRID, [1, 4, 4]], budget=0.3,
            method="dynamic_qwen")
  a, b = model.forward(ids, **kw), many.forward(ids, **kw)
  np.testing.assert_array_equal(b.keep_index, a.keep_index)
  np.testing.assert_allclose(b.logits, a.logits, atol=1e-5, rtol=1e-5)
  # Two rows of 21 and 10 valid tokens: k = int(21 * .3) = 6, int(10 * .3)
  # = 3 visual tokens kept.
  vis = ids == IMAGE
  kept = [int(vis[r][a.keep_index[r][a.keep_index[r] >= 0]].sum())
          for r in range(2)]
  assert kept == [6, 3]


def test_configs_carry_the_reference_recipe():
  from configs import dynamic_qwen_7b, dynamic_qwen_tiny, world
  for c in (dynamic_qwen_7b.get_config(), dynamic_qwen_tiny.get_config(),
            world.make_config("dynamic_qwen")):
    assert c.train_method == "dynamic_qwen" and c.budget == 0.2
    assert (c.reg.start, c.reg.end) == (100.0, 100.0)
    assert dict(c.gumbel) == {"start": 1.0, "end": 0.1}
  c = dynamic_qwen_7b.get_config()
  assert (c.optim.lr, c.optim.warmup_ratio, c.optim.weight_decay) == (
      2e-4, 0.03, 0.0)
  with pytest.raises(ValueError, match="stage must be one of"):
    world.make_config("dynamic")

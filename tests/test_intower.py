"""Selection inside the vision tower (method "tower_selector", the engine's
``select_at``): the kept units' path against the whole tower with the
dropped patches cut out of attention, batches with several images and a
video, per-image budgets, and select_at = depth being the post-tower
selector bit for bit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE, VIDEO
from vselect_jax.forward import gather, place


@pytest.fixture(scope="module")
def jx(tmp_path_factory):
  hf = hf_tiny.make_model("untied_w112", seed=5)
  path = tmp_path_factory.mktemp("intower") / "hf"
  hf.save_pretrained(path)
  model = vselect_jax.from_pretrained(str(path))
  rng = np.random.default_rng(0)
  for scorer in (model.module.visual.importance_scorer,
                 model.module.visual.block_scorer):
    for proj in (scorer.q_proj, scorer.k_proj):
      proj.kernel.set_value(rng.standard_normal(proj.kernel.shape).astype(
          np.float32))
  out = vselect_jax.VisionLanguageModel(model.config, model.module)
  out.hf_path = str(path)
  return out


def _batch_inputs(rng):
  """Row 0: two images; row 1: a 2-frame video and an image (left-padded)."""
  g1, g2, gv, g3 = [1, 6, 10], [1, 12, 8], [2, 8, 8], [1, 4, 6]
  r0 = [7] + hf_tiny.block(IMAGE, g1) + [8] + hf_tiny.block(IMAGE, g2) + [9]
  r1 = [3] + hf_tiny.block(VIDEO, gv) + [4] + hf_tiny.block(IMAGE, g3) + [5]
  ids, mask = hf_tiny.left_padded([r0, r1])
  return dict(input_ids=ids, attention_mask=mask,
              pixel_values=np.concatenate([hf_tiny.pixels(rng, g)
                                           for g in (g1, g2, g3)]),
              image_grid_thw=np.array([g1, g2, g3]),
              pixel_values_videos=hf_tiny.pixels(rng, gv),
              video_grid_thw=np.array([gv]),
              second_per_grid_ts=np.array([1.0]))


def _reference_logits(jx, arrays, keep_index, j):
  """The whole tower from block j on, each dropped patch alone in its own
  segment (so kept patches attend only kept patches of their window or
  frame), merged, the kept tokens fed to the LLM at their positions."""
  model, cfg = jx.module, jx.config.vision
  b = {k: jnp.asarray(v) for k, v in arrays.items()}
  vi = b["visual_index"]
  t = vi.shape[1]
  kept = np.zeros(vi.shape, bool)
  for r in range(kept.shape[0]):
    kept[r, keep_index[r][keep_index[r] >= 0]] = True
  selected = jnp.asarray(kept) & (vi >= 0)
  unit = jnp.take_along_axis(b["merged_index"], jnp.maximum(vi, 0), axis=1)
  p = b["window_seg"].shape[1]
  slot_kept = jax.vmap(lambda u, s: jnp.zeros(p // 4, bool).at[
      jnp.where(s, u, p)].set(True, mode="drop"))(unit, selected)
  slot_kept = jnp.repeat(slot_kept, 4, axis=1)
  alone = -(jnp.arange(p) + 2)[None]

  def row(pv, lay, sk):
    x, cos, sin = model.visual.embed(pv, lay)
    x = model.visual.run_blocks(x, cos, sin, lay, 0, j)
    cut = {"window_seg": jnp.where(sk, lay["window_seg"], alone[0]),
           "frame_seg": jnp.where(sk, lay["frame_seg"], alone[0])}
    for i in range(j, cfg.depth):  # dense attention, no block structure
      blk = model.visual.blocks[i]
      x = blk(x, cos, sin, cut["frame_seg" if i in cfg.fullatt_block_indexes
                                else "window_seg"], None)
    return jnp.take(model.visual.merger(x), lay["merged_index"], axis=0)

  lay = {k: b[k] for k in ("patch_index", "window_seg", "frame_seg",
                           "rot_pos", "merged_index", "merged_valid")}
  merged = jax.jit(jax.vmap(row))(b["pixel_values"], lay, slot_kept)
  tokens, visual = place(merged, vi)
  x = model.model.embed_tokens(b["input_ids"])
  x = jnp.where(visual[..., None], tokens, x)
  keep = jnp.asarray(keep_index)
  seg = jnp.where(keep >= 0, gather(b["segment_ids"], keep), 0)
  hidden = model.model(gather(x, keep), gather(b["position_ids"], keep, 2),
                       seg)
  return np.asarray(model.head(hidden))


@pytest.mark.parametrize("j,per_image", [(2, True)])
def test_in_tower_selection_equals_the_tower_with_dropped_patches_cut(
    jx, j, per_image):
  inputs = _batch_inputs(np.random.default_rng(1))
  budget = 0.3
  out = jx.forward(**inputs, budget=budget, select_at=j, per_image=per_image)
  prep = jx.prepare(**{k: v for k, v in inputs.items()})
  ids = inputs["input_ids"]
  vis = (ids == IMAGE) | (ids == VIDEO)
  keep = out.keep_index
  for r in range(2):
    k = keep[r][keep[r] >= 0]
    # all text kept; visual kept = the budget's k (pooled or per image)
    assert (~vis[r][k]).sum() == ((~vis[r]) & (inputs["attention_mask"][r]
                                               > 0)).sum()
    if not per_image:
      assert vis[r][k].sum() == int(np.floor(vis[r].sum() * budget))
  if per_image:  # row 0's two images: floor(15 * .3) = 4, floor(24 * .3) = 7
    k0 = keep[0][keep[0] >= 0]
    first = np.flatnonzero(vis[0])[:15]
    assert np.isin(k0, first).sum() == 4 and vis[0][k0].sum() == 11
  # Bucketed keep_index to the prepared length (as the program saw it).
  kpad = np.full((2, prep.arrays["input_ids"].shape[1]), -1, np.int32)
  kpad[:, :keep.shape[1]] = keep
  ref = _reference_logits(jx, prep.arrays, kpad, j)[:, :keep.shape[1]]
  live = keep >= 0
  err = np.abs(out.logits - ref)[live].max()
  assert err <= 1e-5, err


def test_select_at_the_towers_end_is_the_post_tower_selector(jx):
  inputs = _batch_inputs(np.random.default_rng(2))
  a = jx.forward(**inputs, budget=0.2)
  b = jx.forward(**inputs, budget=0.2, select_at=jx.config.vision.depth)
  np.testing.assert_array_equal(a.logits, b.logits)
  np.testing.assert_array_equal(a.keep_index, b.keep_index)
  c = jx.forward(**inputs, budget=0.2, select_at=1)
  assert not np.array_equal(a.keep_index, c.keep_index)
  vis = (inputs["input_ids"] == IMAGE) | (inputs["input_ids"] == VIDEO)
  for r in range(2):  # pooled: floor(N * 0.2) of each row, the top scores
    k = c.keep_index[r][c.keep_index[r] >= 0]
    pos = np.flatnonzero(vis[r])
    n = int(np.floor(pos.size * 0.2))
    top = pos[np.argsort(-c.scores[r, pos], kind="stable")[:n]]
    np.testing.assert_array_equal(np.sort(top), k[vis[r][k]])
  with pytest.raises(ValueError, match="select_at must be an int"):
    jx.forward(**inputs, budget=0.2, select_at=99)
  with pytest.raises(ValueError, match="learned selector"):
    jx.forward(**inputs, budget=0.2, select_at=1, method="fastv")


# -- training (relaxed) and the soft mask "attn_bias" -----------------------

from vselect_jax import methods  # noqa: E402
from vselect_jax.forward import Selection, forward  # noqa: E402
from vselect_jax.methods.base import (IN_VISION, PRE_LLM, Choice,  # noqa
                                      Method, Relaxed)
from vselect_jax.selector import topk  # noqa: E402


def _fixed(stage, mask_fn):
  """A test method keeping the positions ``mask_fn(ctx)`` (relax: the same
  mask as the soft mask, or the soft top-k of ``ctx.options`` scores)."""
  def select(ctx):
    m = mask_fn(ctx) & ctx.visual
    return Choice(m, m.astype(jnp.float32))

  def relax(ctx):
    m = (mask_fn(ctx) & ctx.visual).astype(jnp.float32)
    return Relaxed(m, m, jnp.float32(0))
  return Method(f"fixed_{stage}", stage, select, relax=relax,
                block=(lambda model, o: 1) if stage == IN_VISION else None)


@pytest.fixture
def fixed_methods(monkeypatch):
  pattern = lambda ctx: (jnp.arange(ctx.visual.shape[1]) % 3 != 1)[None]
  registry = dict(methods._discover())
  for stage in (PRE_LLM, IN_VISION):
    m = _fixed(stage, pattern)
    registry[m.name] = m
  monkeypatch.setattr(methods, "_REGISTRY", registry)


@pytest.mark.parametrize("stage", [PRE_LLM, IN_VISION])
def test_attn_bias_at_zero_one_is_dropping(jx, fixed_methods, stage):
  inputs = _batch_inputs(np.random.default_rng(3))
  arrays = {k: jnp.asarray(v) for k, v in jx.prepare(**inputs).arrays.items()}
  t = arrays["input_ids"].shape[1]
  zeros = jnp.zeros((2, t), jnp.int32)
  name = f"fixed_{stage}"
  soft = forward(jx.module, arrays, Selection(name, zeros, zeros[:, 0]),
                 relaxed=True, soft_mask="attn_bias")
  hard = forward(jx.module, arrays, Selection(
      name, zeros, zeros[:, 0], size=t, vision_size=64), with_view=False)
  keep = np.asarray(hard.keep_index)
  live = keep >= 0
  a = np.asarray(soft.hidden)[np.arange(2)[:, None], np.maximum(keep, 0)]
  err = np.abs(a - np.asarray(hard.hidden))[live].max()
  assert err <= 1e-5, err
  # "scale" at the same mask is not dropping (the pre-norm undoes it).
  scaled = forward(jx.module, arrays, Selection(name, zeros, zeros[:, 0]),
                   relaxed=True, soft_mask="scale")
  b = np.asarray(scaled.hidden)[np.arange(2)[:, None], np.maximum(keep, 0)]
  assert np.abs(b - np.asarray(hard.hidden))[live].max() > 1e-3


def test_attn_bias_gradient_to_the_soft_topk_matches_finite_differences(jx):
  inputs = _batch_inputs(np.random.default_rng(4))
  arrays = {k: jnp.asarray(v) for k, v in jx.prepare(**inputs).arrays.items()}
  visual = arrays["visual_index"] >= 0
  t = visual.shape[1]
  rng = np.random.default_rng(0)
  base = jnp.asarray(rng.standard_normal((2, t)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((2, t, jx.config.text.hidden_size)),
                  jnp.float32)
  k_row = jnp.asarray([5, 7], jnp.int32)

  def relax(ctx, scores):
    soft = topk.soft_topk(scores, ctx.k_row, ctx.visual)
    return Relaxed(soft, soft, jnp.float32(0))

  @jax.jit
  def loss(scores):
    m = Method("fd", IN_VISION, lambda ctx: None, block=lambda *_: 1,
               relax=lambda ctx: relax(ctx, scores))
    registry = dict(methods._discover(), fd=m)
    old, methods._REGISTRY = methods._REGISTRY, registry
    try:
      out = forward(jx.module, arrays, Selection(
          "fd", jnp.where(visual, k_row[:, None], 0), k_row),
                    relaxed=True, soft_mask="attn_bias")
    finally:
      methods._REGISTRY = old
    return jnp.sum(out.hidden * w)

  g = jax.jit(jax.grad(loss))(base)
  assert np.abs(np.asarray(g)[~np.asarray(visual)]).max() == 0
  assert np.abs(np.asarray(g)).max() > 0
  for seed in range(2):
    d = jnp.asarray(np.random.default_rng(10 + seed).standard_normal(
        (2, t)), jnp.float32) * visual
    eps = 1e-2
    fd = (loss(base + eps * d) - loss(base - eps * d)) / (2 * eps)
    an = jnp.sum(g * d)
    assert abs(float(fd - an)) <= 2e-2 * abs(float(an)) + 1e-3, (fd, an)


def test_in_tower_training_step_trains_the_block_scorer_only(jx):
  from tests.train_utils import packed_batch
  from vselect_jax.host import train_batch as batch_lib
  from vselect_jax.training import loop, optim
  from vselect_jax.training import step as step_lib
  parts = step_lib.Parts(scorer="block_scorer")
  tx = optim.make_optimizer(1e-2, 10, warmup_ratio=0.0)
  graphdef, state = step_lib.init_state(jx.module, tx, parts)
  names = {"/".join(map(str, p)) for p, _ in state.trainable.flat_state()}
  assert names and all("block_scorer" in n for n in names)
  before = {n: np.asarray(v.get_value())
            for n, v in state.trainable.flat_state()}
  fn = jax.jit(step_lib.make_train_step(
      graphdef, tx, optim.reg_weight_schedule(0.1, 2.0, 10), parts=parts,
      remat=False, select_at=2))
  host = batch_lib.prepare_train_batch(jx.config, packed_batch(
      3, rows=1, length=64, patches=128))
  state, m = fn(state, host, loop.rows_k(host, 0.3))
  assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
  assert abs(float(m["kept_fraction"]) - 0.3) < 0.1
  moved = [n for n, v in state.trainable.flat_state()
           if not np.array_equal(np.asarray(v.get_value()), before[n])]
  assert moved


def test_block_scorer_exports_to_pytorch_and_loads_back(jx, tmp_path):
  from flax import nnx
  from vselect_jax.checkpoint import scorer_export
  tree = nnx.state(jx.module, nnx.Param).to_pure_dict()
  tensors = scorer_export.scorer_tensors(tree, scorer="block_scorer")
  dv = jx.config.vision.hidden_size * 4
  assert tensors["visual.block_scorer.q_proj.weight"].shape == (dv // 2, dv)
  src = tmp_path / "scorer.safetensors"
  scorer_export.write_tensors(tensors, str(src), "float32")
  with pytest.raises(KeyError, match="expected the scorer tensors"):
    scorer_export.load_scorer(str(src))          # not the LIS's names
  scorer_export.merge_into(str(src), jx.hf_path, str(tmp_path / "merged"),
                           "float32", scorer="block_scorer")
  back = vselect_jax.from_pretrained(str(tmp_path / "merged"))
  np.testing.assert_array_equal(
      np.asarray(back.module.visual.block_scorer.q_proj.kernel.get_value()),
      np.asarray(jx.module.visual.block_scorer.q_proj.kernel.get_value()))


def _checkpoints(jaxpr) -> int:
  """How many jax.checkpoint regions a jaxpr holds, nested ones included
  (the primitive is "remat2" in jax 0.10; a vmap keeps it)."""
  from jax.extend.core import jaxprs_in_params
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name.startswith(("remat", "checkpoint"))
    for sub in jaxprs_in_params(eqn.params):
      n += _checkpoints(sub)
  return n


def test_in_tower_remat_covers_the_blocks_after_selection_same_grads(jx):
  # "attn_bias": the soft mask's key bias also crosses each checkpoint.
  from flax import nnx
  inputs = _batch_inputs(np.random.default_rng(6))
  arrays = {k: jnp.asarray(v) for k, v in jx.prepare(**inputs).arrays.items()}
  visual = arrays["visual_index"] >= 0
  k_row = jnp.asarray([5, 7], jnp.int32)
  sel = Selection("tower_selector", jnp.where(visual, k_row[:, None], 0),
                  k_row, options=(("block", 1),))
  w = jnp.asarray(np.random.default_rng(1).standard_normal(
      visual.shape + (jx.config.text.hidden_size,)), jnp.float32)
  graphdef, scorer, rest = nnx.split(
      jx.module, lambda path, _: "block_scorer" in map(str, path), ...)

  def loss(scorer, remat):
    out = forward(nnx.merge(graphdef, scorer, rest), arrays, sel,
                  relaxed=True, remat=remat, soft_mask="attn_bias")
    return jnp.sum(out.hidden * w)

  # One trace per switch: its jaxpr is counted, then compiled and run.
  traced = {r: jax.jit(jax.grad(lambda s, r=r: loss(s, r))).trace(scorer)
            for r in (False, True)}
  # remat wraps every vision block after selection (blocks 1..3 here) and
  # every LLM layer (one checkpoint each in the backward pass); without it
  # nothing is checkpointed.
  count = {r: _checkpoints(t.jaxpr.jaxpr) for r, t in traced.items()}
  assert count == {False: 0, True: jx.config.vision.depth - 1 +
                   jx.config.text.num_hidden_layers}, count
  a, b = (jax.tree.leaves(traced[r].lower().compile()(scorer))
          for r in (False, True))
  scale = max(float(jnp.abs(x).max()) for x in a)
  assert scale > 0
  for x, y in zip(a, b):  # recomputation may round differently in float32
    assert float(jnp.abs(y - x).max()) <= 1e-5 * scale


def test_block_scorer_reads_the_next_blocks_normed_states(jx):
  # Inside the tower the residual stream is not normalised (its scale
  # grows with depth); a score quadratic in raw states saturates the soft
  # top-k. Through block j's norm1 the score ignores that scale.
  from vselect_jax.methods import tower_selector
  from vselect_jax.methods.base import VISION_BLOCK, Context
  u, dv = 8, jx.config.vision.hidden_size
  units = jnp.asarray(np.random.default_rng(2).standard_normal(
      (1, u, 4 * dv)), jnp.float32)
  visual = jnp.ones((1, u), bool)

  def scores(x):
    ctx = Context(jx.module, {}, None, None, visual, visual,
                  jnp.zeros((1, u), jnp.int32), None, None, {"block": 1},
                  {VISION_BLOCK: (x, visual, jnp.arange(u)[None])})
    return np.asarray(tower_selector._scores(ctx))

  a, b = scores(units), scores(30.0 * units)
  assert np.abs(a).max() > 0
  np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6 * np.abs(a).max())

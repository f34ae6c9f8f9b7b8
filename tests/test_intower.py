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
  return vselect_jax.VisionLanguageModel(model.config, model.module)


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
  merged = jax.vmap(row)(b["pixel_values"], lay, slot_kept)
  tokens, visual = place(merged, vi)
  x = model.model.embed_tokens(b["input_ids"])
  x = jnp.where(visual[..., None], tokens, x)
  keep = jnp.asarray(keep_index)
  seg = jnp.where(keep >= 0, gather(b["segment_ids"], keep), 0)
  hidden = model.model(gather(x, keep), gather(b["position_ids"], keep, 2),
                       seg)
  return np.asarray(model.head(hidden))


@pytest.mark.parametrize("j,per_image", [(1, False), (2, True)])
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
  # the kept tokens are the block scorer's top-k (pooled per row)
  if not per_image:
    for r in range(2):
      pos = np.flatnonzero(vis[r])
      top = pos[np.argsort(-out.scores[r, pos], kind="stable")[
          :int(np.floor(pos.size * budget))]]
      np.testing.assert_array_equal(np.sort(top), keep[r][vis[r][
          np.maximum(keep[r], 0)] & (keep[r] >= 0)])
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
  with pytest.raises(ValueError, match="select_at must be an int"):
    jx.forward(**inputs, budget=0.2, select_at=99)
  with pytest.raises(ValueError, match="learned selector"):
    jx.forward(**inputs, budget=0.2, select_at=1, method="fastv")

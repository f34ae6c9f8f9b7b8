"""Component parity with HF, so that a logit mismatch says where it comes
from: vision layout vs HF's window index, vision tower output, M-RoPE index."""
import numpy as np
import pytest
import torch
from transformers import vision_utils

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE, VIDEO
from vselect_jax.config import VisionConfig
from vselect_jax.host.rope_index import get_rope_index
from vselect_jax.host.vision_layout import build_vision_layout

GRIDS = [[[1, 6, 10]], [[1, 8, 8]], [[1, 16, 8], [2, 6, 4]],
         [[1, 2, 2], [1, 10, 14], [3, 8, 12]]]


@pytest.mark.parametrize("window", [56, 112])
@pytest.mark.parametrize("grids", GRIDS)
def test_layout_matches_hf_window_index(grids, window):
  cfg = VisionConfig(window_size=window)
  layout = build_vision_layout(grids, cfg)
  g = torch.tensor(grids)
  win_index, cu_win = vision_utils.get_vision_window_index(
      g, spatial_merge_size=2, window_size=window, patch_size=14)
  n = layout.num_patches
  # Patch slots in window order: HF permutes groups of 4 by window_index.
  expect_patch = (win_index.numpy()[:, None] * 4 + np.arange(4)).reshape(-1)
  np.testing.assert_array_equal(layout.patch_index[:n], expect_patch)
  # Window segments: boundaries at HF's cu_window_seqlens.
  bounds = np.flatnonzero(np.diff(layout.window_seg[:n])) + 1
  np.testing.assert_array_equal(bounds, cu_win.numpy()[1:-1])
  # Rotary coordinates: HF's, permuted the same way.
  pos = vision_utils.get_vision_position_ids(g, 2).numpy()
  np.testing.assert_array_equal(layout.rot_pos[:n], pos[expect_patch])
  # Un-permute index is the inverse window permutation.
  m = layout.num_merged
  np.testing.assert_array_equal(layout.merged_index[:m],
                                np.argsort(win_index.numpy()))
  assert (layout.window_seg[n:] == 0).all() and (layout.frame_seg[n:] == 0).all()
  cu = vision_utils.get_vision_cu_seqlens(g).numpy()
  bounds = np.flatnonzero(np.diff(layout.frame_seg[:n])) + 1
  np.testing.assert_array_equal(bounds, cu[1:-1])


def test_layout_rejects_bad_grids():
  cfg = VisionConfig()
  with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
    build_vision_layout([[1, 5, 8]], cfg)
  with pytest.raises(ValueError, match="do not fit"):
    build_vision_layout([[1, 32, 32]], cfg, capacity=64)
  with pytest.raises(ValueError, match=r"\[num_items, 3\]"):
    build_vision_layout(np.zeros((2, 2)), cfg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  hf = hf_tiny.make_model("untied_w112", seed=3)
  path = tmp_path_factory.mktemp("c") / "hf"
  hf.save_pretrained(path)
  return hf, vselect_jax.from_pretrained(str(path))  # HF dir, converted live


def test_vision_tower_matches_hf(tiny):
  hf, jx = tiny
  from vselect_jax.host.inputs import prepare_batch
  rng = np.random.default_rng(0)
  grids = [[1, 10, 14], [2, 8, 12]]
  pix = np.concatenate([hf_tiny.pixels(rng, g) for g in grids])
  with torch.no_grad():
    ref = hf.model.visual(torch.tensor(pix),
                          grid_thw=torch.tensor(grids)).pooler_output.numpy()
  ids = np.concatenate([hf_tiny.block(IMAGE, g) for g in grids])[None]
  prep = prepare_batch(jx.config, ids, pixel_values=pix,
                       image_grid_thw=np.array(grids))
  from vselect_jax.forward import encode
  ours = np.asarray(encode(jx.module, prep.arrays))[0]
  err = np.abs(ours[:ref.shape[0]] - ref).max()
  assert err < 1e-5, err


def _hf_rope(hf, ids, mask=None, **grids):
  tt = np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0))
  kw = {k: torch.tensor(np.asarray(v)) for k, v in grids.items()}
  pos, delta = hf.model.get_rope_index(
      torch.tensor(ids), torch.tensor(tt),
      attention_mask=None if mask is None else torch.tensor(mask), **kw)
  return pos.numpy(), delta.numpy()


def test_rope_index_matches_hf_for_images(tiny):
  hf, _ = tiny
  g1, g2 = [1, 6, 10], [1, 12, 8]
  r1 = [1] + hf_tiny.block(IMAGE, g1) + [2, 3] + hf_tiny.block(IMAGE, g2) + [4]
  r2 = [5, 6] + hf_tiny.block(IMAGE, [1, 4, 4]) + [7, 8]
  n = max(len(r1), len(r2))
  ids = np.zeros((2, n), np.int64)
  mask = np.zeros((2, n), np.int64)
  ids[0], mask[0] = r1, 1
  ids[1, n - len(r2):], mask[1, n - len(r2):] = r2, 1
  grids = np.array([g1, g2, [1, 4, 4]])
  ours, od = get_rope_index(ids, image_grid_thw=grids, attention_mask=mask,
                            image_token_id=IMAGE, video_token_id=VIDEO)
  ref, rd = _hf_rope(hf, ids, mask, image_grid_thw=grids)
  valid = mask.astype(bool)
  np.testing.assert_array_equal(ours[:, valid], ref[:, valid])
  np.testing.assert_array_equal(od, rd)


def test_rope_index_video_semantics():
  """Where 4.50 and 5.x differ (temporal ids beyond the spatial extent):
  ``hf450`` resumes text at max + 1, ``hf5`` at start + max(H, W)."""
  grid = [3, 4, 4]  # merged 2x2, t ids 0, 4, 8 at tokens_per_second 2
  ids = np.array([[1] + [VIDEO] * 12 + [2]])
  kw = dict(video_grid_thw=np.array([grid]), second_per_grid_ts=[2.0],
            image_token_id=IMAGE, video_token_id=VIDEO, tokens_per_second=2)
  p450, d450 = get_rope_index(ids, **kw)
  p5, _ = get_rope_index(ids, semantics="hf5", **kw)
  np.testing.assert_array_equal(p450[0, 0, 1:13], 1 + np.repeat([0, 4, 8], 4))
  np.testing.assert_array_equal(p450[1, 0, 1:5], 1 + np.array([0, 0, 1, 1]))
  np.testing.assert_array_equal(p450[2, 0, 1:5], 1 + np.array([0, 1, 0, 1]))
  assert p450[0, 0, -1] == 1 + 8 + 1 and p5[0, 0, -1] == 1 + 2
  assert d450[0, 0] == 10 + 1 - 14


def test_rope_index_video_matches_hf5(tiny):
  hf, _ = tiny
  grid = [3, 4, 4]
  ids = np.array([[1] + [VIDEO] * 12 + [2]])
  ours, _ = get_rope_index(ids, video_grid_thw=np.array([grid]),
                           second_per_grid_ts=[2.0], image_token_id=IMAGE,
                           video_token_id=VIDEO, tokens_per_second=2,
                           semantics="hf5")
  ref, _ = _hf_rope(hf, ids, video_grid_thw=np.array([grid]),
                    second_per_grid_ts=np.array([2.0]))
  np.testing.assert_array_equal(ours, ref)


def test_rope_index_rejects_mismatched_blocks():
  with pytest.raises(ValueError, match="shorter"):
    get_rope_index(np.array([[1] + [IMAGE] * 3 + [2]]),
                   image_grid_thw=[[1, 4, 4]], image_token_id=IMAGE)
  with pytest.raises(ValueError, match="more image blocks"):
    get_rope_index(np.array([[1, IMAGE, 2]]), image_token_id=IMAGE)

"""Logit parity with HF transformers (PyTorch) on tiny random models.

Each config is saved with ``save_pretrained``, converted with the CLI, loaded
with ``vselect_jax.from_pretrained`` and compared with HF in float32 on
awkward inputs. Tolerance: max |logit difference| <= 1e-4.
"""
import numpy as np
import pytest

import vselect_jax
from conversion import convert_hf
from tests import hf_tiny
from tests.hf_tiny import END, IMAGE, START, VIDEO

TOL = 1e-4


@pytest.fixture(scope="module", params=sorted(hf_tiny.CONFIGS))
def pair(request, tmp_path_factory):
  hf = hf_tiny.make_model(request.param)
  root = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(root / "hf")
  assert convert_hf.main(["--src", str(root / "hf"), "--dst",
                          str(root / "jax"), "--dtype", "float32",
                          "--no-progress"]) == 0
  return hf, vselect_jax.from_pretrained(str(root / "jax"))


def _compare(hf, jx, valid=None, hf_position_ids=None, **inputs):
  ours = jx.forward(**inputs).logits
  ref_inputs = dict(inputs)
  if hf_position_ids is not None:
    ref_inputs["position_ids"] = hf_position_ids
  ref = hf_tiny.hf_logits(hf, **ref_inputs)
  assert ours.shape == ref.shape
  if valid is not None:
    ours, ref = ours[valid], ref[valid]
  err = np.abs(ours - ref).max()
  assert err <= TOL, f"max logit error {err}"
  return err


def test_non_square_image(pair):
  hf, jx = pair
  rng = np.random.default_rng(0)
  for grid in ([1, 6, 10], [1, 10, 14], [1, 16, 8]):  # some divide windows
    ids = [[1, 2] + hf_tiny.block(IMAGE, grid) + [3, 4, 5]]
    _compare(hf, jx, input_ids=np.array(ids),
             pixel_values=hf_tiny.pixels(rng, grid),
             image_grid_thw=np.array([grid]))


def test_two_images_of_different_sizes(pair):
  hf, jx = pair
  rng = np.random.default_rng(1)
  g1, g2 = [1, 6, 10], [1, 12, 8]
  ids = [[7] + hf_tiny.block(IMAGE, g1) + [8, 9] + hf_tiny.block(IMAGE, g2)
         + [10, 11]]
  _compare(hf, jx, input_ids=np.array(ids),
           pixel_values=np.concatenate([hf_tiny.pixels(rng, g1),
                                        hf_tiny.pixels(rng, g2)]),
           image_grid_thw=np.array([g1, g2]))


def test_video_where_hf_versions_agree(pair):
  hf, jx = pair
  rng = np.random.default_rng(2)
  grid = [3, 8, 12]
  # Temporal ids 0, 1, 2 stay below the spatial extent, where transformers
  # 4.50 and 5.x place the following text identically.
  ids = [[1] + hf_tiny.block(VIDEO, grid) + [2, 3]]
  _compare(hf, jx, input_ids=np.array(ids),
           pixel_values_videos=hf_tiny.pixels(rng, grid),
           video_grid_thw=np.array([grid]),
           second_per_grid_ts=np.array([0.5]))


def test_long_video_with_released_model_positions(pair):
  """Large temporal ids: 5.x would resume text early; we follow 4.50. HF is
  given our position ids, so this checks the model, not the index rule."""
  hf, jx = pair
  rng = np.random.default_rng(3)
  grid = [4, 4, 6]
  ids = np.array([[1] + hf_tiny.block(VIDEO, grid) + [2, 3]])
  spgt = np.array([2.0])
  from vselect_jax.host.rope_index import get_rope_index
  pos, _ = get_rope_index(ids, video_grid_thw=np.array([grid]),
                          second_per_grid_ts=spgt, image_token_id=IMAGE,
                          video_token_id=VIDEO, tokens_per_second=2)
  # [1, START] then t = 2 + (0, 4, 8, 12): END resumes at 2 + 12 + 1.
  assert pos[0, 0, -3] == 15
  _compare(hf, jx, hf_position_ids=pos.astype(np.int64), input_ids=ids,
           pixel_values_videos=hf_tiny.pixels(rng, grid),
           video_grid_thw=np.array([grid]), second_per_grid_ts=spgt)


def test_image_and_video_in_one_prompt(pair):
  hf, jx = pair
  rng = np.random.default_rng(4)
  gi, gv = [1, 4, 6], [2, 6, 4]
  ids = [[1] + hf_tiny.block(VIDEO, gv) + [2] + hf_tiny.block(IMAGE, gi) + [3]]
  _compare(hf, jx, input_ids=np.array(ids),
           pixel_values=hf_tiny.pixels(rng, gi), image_grid_thw=np.array([gi]),
           pixel_values_videos=hf_tiny.pixels(rng, gv),
           video_grid_thw=np.array([gv]), second_per_grid_ts=np.array([0.5]))


def test_text_only(pair):
  hf, jx = pair
  ids = np.array([[5, 17, 301, 999, 0, 42, 7]])
  _compare(hf, jx, input_ids=ids)


def test_text_only_batch_with_left_padding(pair):
  hf, jx = pair
  ids = np.array([[0, 0, 0, 5, 6, 7], [11, 12, 13, 14, 15, 16]])
  mask = np.array([[0, 0, 0, 1, 1, 1], [1] * 6])
  # HF 5.x ignores padding when it infers text positions; the released
  # models (and we) count from the first real token, so HF gets ours.
  pos = np.broadcast_to(np.maximum(mask.cumsum(1) - 1, 0), (3, 2, 6))
  _compare(hf, jx, valid=mask.astype(bool), hf_position_ids=pos.copy(),
           input_ids=ids, attention_mask=mask)


def test_batch_of_two_with_images_and_padding(pair):
  hf, jx = pair
  rng = np.random.default_rng(5)
  (r1, r2), (g1, g2) = hf_tiny.two_image_rows()
  ids, mask = hf_tiny.left_padded([r1, r2])
  n = ids.shape[1]
  _compare(hf, jx, valid=mask.astype(bool), input_ids=ids,
           attention_mask=mask,
           pixel_values=np.concatenate([hf_tiny.pixels(rng, g1),
                                        hf_tiny.pixels(rng, g2)]),
           image_grid_thw=np.array([g1, g2]))

"""LLaVA-OneVision-1.5 host-side parts without the oracle: the processor's
OV parameters, the 1-D positions and the RICE layout (video frames)."""
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vselect_jax.config import LlavaOV15Config, RiceVisionConfig, TextConfig
from vselect_jax.data.image_processor import (LLAVA_OV15_PARAMS,
                                              ProcessorParams,
                                              pixel_bounds_from_hf_dict,
                                              preprocess_image,
                                              preprocess_video)
from vselect_jax.modeling.llava_ov import LlavaOneVision15
from vselect_jax.host.rice_layout import build_rice_layout
from vselect_jax.host.rope_index_1d import get_1d_position_ids


def test_processor_with_ov_params_matches_hf():
  """temporal patch 1 (588-long rows) and a non-CLIP mean/std, against HF's
  Qwen2-VL processor configured the same way."""
  rng = np.random.default_rng(0)
  params = ProcessorParams.from_hf_dict({
      "patch_size": 14, "merge_size": 2, "temporal_patch_size": 1,
      "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]})
  hf = Qwen2VLImageProcessorPil(
      patch_size=14, merge_size=2, temporal_patch_size=1,
      image_mean=list(params.mean), image_std=list(params.std),
      min_pixels=784, max_pixels=50176)
  for h, w in ((333, 517), (90, 60)):
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    ref = hf(images=[image], return_tensors="np")
    pix, grid = preprocess_image(image, 784, 50176, params=params)
    np.testing.assert_array_equal(grid, ref["image_grid_thw"][0])
    assert pix.shape == ref["pixel_values"].shape == (grid[1] * grid[2], 588)
    np.testing.assert_allclose(pix, ref["pixel_values"], atol=1e-5, rtol=0)


def test_ov_video_is_one_frame_per_grid_step():
  rng = np.random.default_rng(1)
  frames = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)
            for _ in range(3)]
  pix, grid = preprocess_video(frames, 784, 50176, params=LLAVA_OV15_PARAMS)
  assert grid.tolist() == [3, 4, 6] and pix.shape == (72, 588)
  one, _ = preprocess_image(frames[1], 784, 50176, params=LLAVA_OV15_PARAMS)
  np.testing.assert_array_equal(pix[24:48], one)


def test_pixel_bounds_from_processor_config():
  assert pixel_bounds_from_hf_dict(
      {"min_pixels": 200704, "max_pixels": 3240000}) == (200704, 3240000)
  assert pixel_bounds_from_hf_dict(
      {"size": {"shortest_edge": 3136, "longest_edge": 1003520}}) == (
          3136, 1003520)


def test_1d_positions_are_per_sample_cache_positions():
  ids = np.array([[5, 6, 7, 8], [5, 6, 0, 0], [0, 5, 6, 7]])
  mask = (ids > 0).astype(int)
  pos, deltas = get_1d_position_ids(ids, mask)
  assert pos.shape == (3, 3, 4) and pos.dtype == np.int32
  assert (pos[0] == pos[1]).all() and (pos[1] == pos[2]).all()
  assert pos[0].tolist() == [[0, 1, 2, 3], [0, 1, 1, 1], [1, 0, 1, 2]]
  assert (deltas == 0).all()
  with pytest.raises(ValueError, match="attention_mask shape"):
    get_1d_position_ids(ids, mask[:, :2])


def _tiny():
  cfg = LlavaOV15Config(
      vision=RiceVisionConfig(depth=2, hidden_size=32, intermediate_size=48,
                              num_heads=2, out_hidden_size=64),
      text=TextConfig(vocab_size=100, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, mrope_section=None,
                      attention_bias=False, qk_norm=True,
                      tie_word_embeddings=True, explicit_head_dim=16))
  # Random numpy weights into the abstract model: JAX's own init compiles
  # every parameter's shape (seconds on a loaded CPU).
  graphdef, state = nnx.split(nnx.eval_shape(
      lambda: LlavaOneVision15(cfg, rngs=nnx.Rngs(0))))
  rng = np.random.default_rng(0)
  leaves = [(p, v.replace(rng.normal(size=v.get_value().shape).astype(
      np.float32) * 0.2)) for p, v in state.flat_state()]
  return nnx.merge(graphdef, nnx.State.from_flat_path(leaves))


def test_video_frames_are_encoded_like_separate_images():
  """Each frame is its own segment with its own class token: a (2, h, w)
  video has the layout of two (1, h, w) images, and each frame's tokens
  are that frame encoded alone."""
  model = _tiny()
  vcfg = model.config.vision
  rng = np.random.default_rng(2)
  pix = rng.standard_normal((2 * 4 * 6, 588)).astype(np.float32)
  video = build_rice_layout([[2, 4, 6]], vcfg)
  images = build_rice_layout([[1, 4, 6], [1, 4, 6]], vcfg)
  assert video.num_frames == 2 and video.class_seg[:3].tolist() == [1, 2, 0]
  for key, value in video.arrays().items():
    np.testing.assert_array_equal(value, images.arrays()[key], err_msg=key)
  tower = nnx.jit(lambda m, p, lay: m.visual(p, lay))
  out = np.asarray(tower(model, pix, video.arrays()))[:video.num_merged]
  for f in range(2):
    one = np.asarray(tower(model, pix[24 * f:24 * (f + 1)], build_rice_layout(
        [[1, 4, 6]], vcfg, capacity=video.patch_index.shape[0]).arrays()))
    np.testing.assert_allclose(out[6 * f:6 * (f + 1)], one[:6], atol=1e-5)


def test_layout_refusals():
  vcfg = RiceVisionConfig()
  with pytest.raises(ValueError, match="do not fit the patch capacity"):
    build_rice_layout([[1, 16, 16]], vcfg, capacity=128)
  with pytest.raises(ValueError, match="class-token capacity"):
    build_rice_layout([[3, 2, 2]], vcfg, class_capacity=2)
  with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
    build_rice_layout([[1, 5, 4]], vcfg)

"""The numpy/PIL processor against HF's Qwen2VLImageProcessorPil: images of
many sizes and modes, and video frames checked frame by frame. (HF 5.x
composites transparency onto white: ``composite_transparency=True`` here;
the default follows the reference, tests/test_fidelity_transparency.py.)"""
import io

import numpy as np
import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vselect_jax.data import (preprocess_image, preprocess_video,
                              sample_frame_indices, smart_resize)
from vselect_jax.data.image_processor import decode_image

TRAIN = (784, 50176)              # the reference's training bounds
EVAL = (256 * 28 * 28, 2048 * 28 * 28)
TEMPORAL, PATCH = 2, 14


def _images():
  rng = np.random.default_rng(0)

  def rgb(h, w):
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))

  def smooth(h, w):  # natural-ish content: bicubic overshoot and rounding
    yy, xx = np.mgrid[0:h, 0:w]
    x = 127 + 120 * np.sin(xx[..., None] / 7.0 + yy[..., None] / 11.0 +
                           np.arange(3))
    return Image.fromarray(x.astype(np.uint8))

  yield "tiny", rgb(5, 9)
  yield "one_pixel", rgb(1, 1)
  yield "odd", rgb(333, 517)
  yield "smooth", smooth(300, 260)
  yield "huge", rgb(1500, 2100)
  yield "tall", rgb(1900, 30)
  yield "wide", rgb(20, 2000)
  yield "aspect_199", rgb(10, 1990)
  yield "exact", rgb(224, 448)
  yield "gray", Image.fromarray(rng.integers(0, 256, (120, 90),
                                             dtype=np.uint8), "L")
  yield "gray_alpha", Image.fromarray(
      rng.integers(0, 256, (70, 50, 2), dtype=np.uint8), "LA")
  yield "rgba", Image.fromarray(rng.integers(0, 256, (100, 140, 4),
                                             dtype=np.uint8), "RGBA")
  yield "palette", rgb(64, 96).convert("P", palette=Image.ADAPTIVE)
  pal = rgb(50, 70).convert("P", palette=Image.ADAPTIVE)
  pal.info["transparency"] = 3
  yield "palette_transparent", pal
  yield "cmyk", rgb(90, 60).convert("CMYK")
  yield "array", rng.integers(0, 256, (77, 201, 3), dtype=np.uint8)
  yield "array_rgba", rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)


@pytest.mark.parametrize("bounds", [TRAIN, EVAL], ids=["train", "eval"])
@pytest.mark.parametrize("name,image", list(_images()))
def test_matches_hf(name, image, bounds):
  lo, hi = bounds
  hf = Qwen2VLImageProcessorPil(min_pixels=lo, max_pixels=hi)
  ref = hf(images=[image], return_tensors="np")
  pix, grid = preprocess_image(image, lo, hi, composite_transparency=True)
  np.testing.assert_array_equal(grid, ref["image_grid_thw"][0])
  assert pix.shape == ref["pixel_values"].shape and pix.dtype == np.float32
  np.testing.assert_allclose(pix, ref["pixel_values"], atol=1e-5, rtol=0)


def test_gray_array_is_the_gray_image():
  x = np.random.default_rng(4).integers(0, 256, (40, 30), dtype=np.uint8)
  a, ga = preprocess_image(x, *TRAIN)
  b, gb = preprocess_image(Image.fromarray(x, "L"), *TRAIN)
  np.testing.assert_array_equal(ga, gb)
  np.testing.assert_array_equal(a, b)


def test_smart_resize_bounds_and_errors():
  for h, w in ((5, 9), (3000, 400), (999, 1001), (1, 1)):
    rh, rw = smart_resize(h, w, 28, *TRAIN)
    assert rh % 28 == 0 and rw % 28 == 0 and TRAIN[0] <= rh * rw <= TRAIN[1]
  with pytest.raises(ValueError, match="aspect ratio"):
    smart_resize(10, 2500)
  with pytest.raises(ValueError, match="empty"):
    smart_resize(0, 10)


def test_bad_inputs_are_named():
  with pytest.raises(ValueError, match="uint8"):
    preprocess_image(np.zeros((10, 10, 3), np.float32))
  with pytest.raises(ValueError, match="shape"):
    preprocess_image(np.zeros((10, 10, 2), np.uint8))
  with pytest.raises(ValueError, match="PIL image"):
    preprocess_image("not an image")


def test_truncated_image_is_refused():
  buf = io.BytesIO()
  Image.fromarray(np.random.default_rng(1).integers(
      0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
  data = buf.getvalue()
  decode_image(data)  # the whole file decodes
  with pytest.raises(Exception):
    decode_image(data[:len(data) // 2])


def _split_t(pix):
  """patches [N, 1176] -> [N, 3, T=2, 14, 14] (columns are (c, t, ph, pw))."""
  return pix.reshape(len(pix), 3, TEMPORAL, PATCH, PATCH)


def test_video_frames_against_hf_per_frame():
  rng = np.random.default_rng(2)
  frames = [Image.fromarray(rng.integers(0, 256, (90, 130, 3),
                                         dtype=np.uint8)) for _ in range(5)]
  lo, hi = 4 * 28 * 28, 32 * 28 * 28
  pix, grid = preprocess_video(frames, lo, hi)
  hf = Qwen2VLImageProcessorPil(min_pixels=lo, max_pixels=hi)
  refs = [hf(images=[f], return_tensors="np") for f in frames]
  # Odd count: the last frame is repeated to fill the temporal patch.
  assert grid[0] == 3
  np.testing.assert_array_equal(grid[1:], refs[0]["image_grid_thw"][0, 1:])
  per_t = int(grid[1] * grid[2])
  got = _split_t(pix)
  for t in range(int(grid[0])):
    block = got[t * per_t:(t + 1) * per_t]
    for slot in range(TEMPORAL):
      frame = min(2 * t + slot, len(frames) - 1)
      want = _split_t(refs[frame]["pixel_values"])[:, :, 0]
      np.testing.assert_allclose(block[:, :, slot], want, atol=1e-5, rtol=0)


def test_still_video_is_the_image_repeated():
  img = np.random.default_rng(3).integers(0, 256, (60, 60, 3), np.uint8)
  pix, grid = preprocess_video([img] * 4, 784, 50176)
  ipix, igrid = preprocess_image(img, 784, 50176)
  np.testing.assert_array_equal(grid, [2, igrid[1], igrid[2]])
  np.testing.assert_array_equal(pix, np.concatenate([ipix, ipix]))


def test_frame_sampling_as_the_reference():
  # 30 s at 10 fps: round(30 / 2) = 15 frames, clipped to 8.
  idx, spg = sample_frame_indices(300, 10.0)
  assert len(idx) == 8 and idx[0] == 0 and idx[-1] == 299
  assert (np.diff(idx) > 0).all()
  assert spg == pytest.approx(2 / (8 / 30))
  # 3 s: round(1.5) = 2, raised to the minimum of 4.
  idx, spg = sample_frame_indices(30, 10.0)
  assert len(idx) == 4 and spg == pytest.approx(2 / (4 / 3))
  # Fewer frames than the minimum: all of them.
  idx, _ = sample_frame_indices(3, 1.0)
  np.testing.assert_array_equal(idx, [0, 1, 2])

"""The numpy/PIL processor against HF's Qwen2VLImageProcessorPil."""
import numpy as np
import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vselect_jax.data import preprocess_image, smart_resize

MIN, MAX = 784, 50176 * 4


def _images():
  rng = np.random.default_rng(0)
  rgb = lambda h, w: Image.fromarray(rng.integers(0, 256, (h, w, 3),
                                                  dtype=np.uint8))
  yield "tiny", rgb(5, 9)
  yield "odd", rgb(333, 517)
  yield "huge", rgb(1500, 2100)
  yield "tall", rgb(1900, 30)
  yield "wide", rgb(20, 2000)
  yield "exact", rgb(224, 448)
  yield "gray", Image.fromarray(rng.integers(0, 256, (120, 90),
                                             dtype=np.uint8), "L")
  rgba = rng.integers(0, 256, (100, 140, 4), dtype=np.uint8)
  yield "rgba", Image.fromarray(rgba, "RGBA")
  yield "palette", rgb(64, 96).convert("P", palette=Image.ADAPTIVE)
  yield "array", rng.integers(0, 256, (77, 201, 3), dtype=np.uint8)


@pytest.mark.parametrize("name,image", list(_images()))
def test_matches_hf(name, image):
  hf = Qwen2VLImageProcessorPil(min_pixels=MIN, max_pixels=MAX)
  ref = hf(images=[image], return_tensors="np")
  pix, grid = preprocess_image(image, MIN, MAX)
  np.testing.assert_array_equal(grid, ref["image_grid_thw"][0])
  assert pix.shape == ref["pixel_values"].shape and pix.dtype == np.float32
  np.testing.assert_allclose(pix, ref["pixel_values"], atol=1e-5, rtol=0)


def test_smart_resize_bounds_and_errors():
  for h, w in ((5, 9), (3000, 40), (999, 1001)):
    rh, rw = smart_resize(h, w, 28, MIN, MAX)
    assert rh % 28 == 0 and rw % 28 == 0 and MIN <= rh * rw <= MAX
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

"""Transparent PNGs keep the colours the reference sees (issue 14, item 1).

The reference decodes with ``Image.open(f).convert("RGB")`` and its
transformers (4.50) passes RGB images through unchanged, so a transparent
palette index or a tRNS colour keeps its colour. Both PNG kinds are written
to disk and read through the training decode path (``SampleBuilder.image``)
and the evaluation one (``runner.load_image`` + ``preprocess_image``).
"""
import numpy as np
import pytest
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from vselect_jax.data import preprocess_image
from vselect_jax.data.image_processor import CLIP_MEAN, CLIP_STD
from vselect_jax.data.records import RawRecord
from vselect_jax.data.sample import SampleBuilder
from vselect_jax.eval import runner

BOUNDS = (784, 50176)           # 28 x 56 images need no resize
KEY = (10, 20, 30)              # the transparent colour
OTHER = (200, 100, 50)


def _palette_png(path):
  idx = np.zeros((28, 56), np.uint8)
  idx[:, 28:] = 1
  im = Image.fromarray(idx, "P")
  im.putpalette(list(KEY) + list(OTHER) + [0] * 762)
  im.save(path, transparency=0)           # palette index 0 is transparent


def _rgb_trns_png(path):
  arr = np.zeros((28, 56, 3), np.uint8)
  arr[:] = KEY
  arr[:, 28:] = OTHER
  Image.fromarray(arr).save(path, transparency=KEY)   # a tRNS chunk


def _channels(pix):
  """patches [N, 1176] -> per channel all values, sorted: [3, N * 392]
  (columns are (channel, t, 14, 14); layout-free comparison)."""
  return np.sort(pix.reshape(len(pix), 3, -1).transpose(1, 0, 2)
                 .reshape(3, -1), axis=1)


def _reference(path):
  """PIL convert("RGB") + rescale + CLIP normalisation, both temporal
  slots: per channel sorted values [3, 2 * H * W]."""
  x = np.asarray(Image.open(path).convert("RGB"), np.float32)
  x = (x * np.float32(1 / 255) - CLIP_MEAN) / CLIP_STD
  return np.sort(np.concatenate([x, x]).reshape(-1, 3).T, axis=1)


def _train(path):
  builder = SampleBuilder(None, min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
  rec = RawRecord("t", 0, "{}", root=str(path.parent))
  return builder.image(rec, path.name)


def _eval(path):
  settings = runner.EvalSettings(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1],
                                 jpeg_quality=None)
  return preprocess_image(runner.load_image(str(path), settings), *BOUNDS)


@pytest.mark.parametrize("write", [_palette_png, _rgb_trns_png],
                         ids=["palette_index", "rgb_trns"])
@pytest.mark.parametrize("decode", [_train, _eval], ids=["train", "eval"])
def test_transparent_png_keeps_its_colours(tmp_path, write, decode):
  path = tmp_path / "chart.png"
  write(path)
  assert Image.open(path).convert("RGB").info.get("transparency") == KEY
  pix, grid = decode(path)
  np.testing.assert_array_equal(grid, [1, 2, 4])
  got = _channels(pix)
  np.testing.assert_allclose(got, _reference(path), atol=1e-6, rtol=0)
  # Half the pixels are the key colour: red (10 - 122.8) / 68.5 = -1.646,
  # never white's 1.930.
  red = got[0]
  assert np.isclose(red, -1.6463, atol=1e-3).sum() == red.size // 2
  assert not np.isclose(red, 1.9303, atol=1e-3).any()


@pytest.mark.parametrize("write", [_palette_png, _rgb_trns_png],
                         ids=["palette_index", "rgb_trns"])
def test_composite_switch_is_transformers_5(tmp_path, write):
  path = tmp_path / "chart.png"
  write(path)
  rgb = Image.open(path).convert("RGB")
  pix, _ = preprocess_image(rgb, *BOUNDS, composite_transparency=True)
  hf = Qwen2VLImageProcessorPil(min_pixels=BOUNDS[0], max_pixels=BOUNDS[1])
  np.testing.assert_allclose(
      pix, hf(images=[rgb], return_tensors="np")["pixel_values"], atol=1e-5,
      rtol=0)
  red = _channels(pix)[0]
  assert np.isclose(red, 1.9303, atol=1e-3).sum() == red.size // 2
  # The training builder passes the switch through.
  builder = SampleBuilder(None, min_pixels=BOUNDS[0], max_pixels=BOUNDS[1],
                          composite_transparency=True)
  got, _ = builder.image(RawRecord("t", 0, "{}", root=str(tmp_path)),
                         path.name)
  np.testing.assert_array_equal(got, pix)

"""The Qwen2.5-VL image processor in numpy + PIL (no torch), for data workers.

Matches ``transformers``' ``Qwen2VLImageProcessor``: convert to RGB
(transparency composited onto white), ``smart_resize`` to multiples of 28
within [min_pixels, max_pixels], PIL bicubic resize, rescale by 1/255,
OpenAI-CLIP mean/std normalisation, the still image repeated over the
temporal patch (2), and patches laid out as the model expects: rows in
(h/28, w/28, 2, 2) order (each 2x2 merge group contiguous), columns in
(channel, t, 14, 14) order.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2
FACTOR = PATCH * MERGE


def smart_resize(height: int, width: int, factor: int = FACTOR,
                 min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
  """Target (height, width): multiples of ``factor``, area within
  [min_pixels, max_pixels], aspect ratio kept as well as possible."""
  if min(height, width) <= 0:
    raise ValueError(f"image has an empty side: {height} x {width}")
  if max(height, width) / min(height, width) > 200:
    raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f}"
                     " exceeds 200 (Qwen2.5-VL's limit)")
  h = round(height / factor) * factor
  w = round(width / factor) * factor
  if h * w > max_pixels:
    beta = math.sqrt(height * width / max_pixels)
    h = max(factor, math.floor(height / beta / factor) * factor)
    w = max(factor, math.floor(width / beta / factor) * factor)
  elif h * w < min_pixels:
    beta = math.sqrt(min_pixels / (height * width))
    h = math.ceil(height * beta / factor) * factor
    w = math.ceil(width * beta / factor) * factor
  return h, w


def to_rgb(image) -> Image.Image:
  """PIL RGB image from a PIL image or an HxW / HxWxC uint8 array."""
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8:
      raise ValueError(f"image arrays must be uint8, got {image.dtype}")
    if image.ndim == 2:
      image = Image.fromarray(image, "L")
    elif image.ndim == 3 and image.shape[2] in (1, 3, 4):
      image = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)
    else:
      raise ValueError(f"image array must be HxW or HxWxC (C in 1, 3, 4), "
                       f"got shape {image.shape}")
  if not isinstance(image, Image.Image):
    raise ValueError(f"expected a PIL image or a uint8 array, got "
                     f"{type(image).__name__}")
  if "A" in image.getbands() or image.info.get("transparency") is not None:
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return image.convert("RGB")


def preprocess_image(image, min_pixels: int = 56 * 56,
                     max_pixels: int = 14 * 14 * 4 * 1280
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One image to Qwen2.5-VL patches.

  Args:
    image: a PIL image or an HxWxC (or HxW) uint8 array.
    min_pixels, max_pixels: area bounds of the resized image.

  Returns:
    pixel_values float32[grid_h * grid_w, 1176] and grid_thw int64[3]
    (1, grid_h, grid_w), grid in 14-px patches.
  """
  rgb = to_rgb(image)
  h, w = smart_resize(rgb.height, rgb.width, FACTOR, min_pixels, max_pixels)
  if (rgb.height, rgb.width) != (h, w):
    rgb = rgb.resize((w, h), resample=Image.BICUBIC)
  x = np.asarray(rgb, np.float32) * np.float32(1 / 255)
  x = (x - CLIP_MEAN) / CLIP_STD                        # [H, W, C]
  gh, gw = h // PATCH, w // PATCH
  x = x.reshape(gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH, 3)
  # -> (gh/2, gw/2, 2, 2, C, 14, 14)
  x = x.transpose(0, 3, 1, 4, 6, 2, 5)
  x = np.broadcast_to(x[:, :, :, :, :, None],
                      x.shape[:5] + (TEMPORAL,) + x.shape[5:])
  pixels = np.ascontiguousarray(x).reshape(gh * gw, 3 * TEMPORAL * PATCH ** 2)
  return pixels, np.array([1, gh, gw], np.int64)

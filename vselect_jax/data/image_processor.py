"""The Qwen2.5-VL image processor in numpy + PIL (no torch), for data workers.

Matches ``transformers``' ``Qwen2VLImageProcessor``: convert to RGB,
``smart_resize`` to multiples of 28
within [min_pixels, max_pixels], PIL bicubic resize, rescale by 1/255,
OpenAI-CLIP mean/std normalisation, the still image repeated over the
temporal patch (2), and patches laid out as the model expects: rows in
(t, h/28, w/28, 2, 2) order (each 2x2 merge group contiguous), columns in
(channel, t, 14, 14) order. Videos take pairs of frames per temporal patch
(``preprocess_video``), sampled as the reference does
(``sample_frame_indices``).

Colour conversion follows the reference, not transformers 5.x: the reference
decodes with ``Image.open(f).convert("RGB")`` and its pinned transformers
(4.50) passes RGB images through unchanged, so transparency is ignored (alpha
dropped, a transparent palette index keeps its palette colour). transformers
5.x instead composites onto white every image with an alpha band or a
``transparency`` entry in ``image.info``, which PIL keeps after converting a
palette PNG with a transparency index or an RGB PNG with a tRNS chunk to
RGB: such charts and screenshots would come out whitened. That behaviour is
the switch ``composite_transparency=True`` (off by default).
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2
FACTOR = PATCH * MERGE
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH   # 1176 values per patch


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


def to_rgb(image, composite_transparency: bool = False) -> Image.Image:
  """PIL RGB image from a PIL image or an HxW / HxWxC uint8 array.

  By default PIL's ``convert("RGB")``, as the reference: transparency is
  ignored. ``composite_transparency=True`` composites images with an alpha
  band or a ``transparency`` entry onto white, as transformers 5.x's
  ``convert_to_rgb`` does.
  """
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
  if composite_transparency and ("A" in image.getbands() or
                                 image.info.get("transparency") is not None):
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  # An RGB image is used as is: convert() would copy it for nothing.
  return image if image.mode == "RGB" else image.convert("RGB")


def _patchify(frames: np.ndarray) -> np.ndarray:
  """Normalised frames float32[T, H, W, C] (T even, H and W multiples of
  28) -> patches float32[T/2 * H/14 * W/14, C * 2 * 14 * 14].

  Rows run over (t, h/28, w/28, 2, 2) so each 2x2 merge group is contiguous;
  columns over (channel, t, 14, 14) as the patch-embedding conv expects.
  """
  t, h, w, c = frames.shape
  gh, gw = h // PATCH, w // PATCH
  x = frames.reshape(t // TEMPORAL, TEMPORAL, gh // MERGE, MERGE, PATCH,
                     gw // MERGE, MERGE, PATCH, c)
  # -> (t/2, gh/2, gw/2, mh, mw, C, tp, ph, pw)
  x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
  return np.ascontiguousarray(x).reshape(
      (t // TEMPORAL) * gh * gw, c * TEMPORAL * PATCH * PATCH)


def _normalise(rgb: Image.Image) -> np.ndarray:
  """uint8 RGB -> float32[H, W, 3], rescaled by 1/255 then CLIP-normalised
  (two steps, as HF does, so rounding matches)."""
  x = np.asarray(rgb, np.float32) * np.float32(1 / 255)
  return (x - CLIP_MEAN) / CLIP_STD


def preprocess_image(image, min_pixels: int = 56 * 56,
                     max_pixels: int = 14 * 14 * 4 * 1280, *,
                     composite_transparency: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One image to Qwen2.5-VL patches (HF ``Qwen2VLImageProcessor``'s output).

  Args:
    image: a PIL image or an HxWxC (or HxW) uint8 array.
    min_pixels, max_pixels: area bounds of the resized image.
    composite_transparency: transformers 5.x's compositing onto white
      (``to_rgb``); off, as the reference.

  Returns:
    pixel_values float32[grid_h * grid_w, 1176] and grid_thw int64[3]
    = (1, grid_h, grid_w), grid in 14-px patches.
  """
  rgb = to_rgb(image, composite_transparency)
  h, w = smart_resize(rgb.height, rgb.width, FACTOR, min_pixels, max_pixels)
  if (rgb.height, rgb.width) != (h, w):
    rgb = rgb.resize((w, h), resample=Image.BICUBIC)
  x = _normalise(rgb)
  # A still image fills both temporal slots: broadcast, no second frame.
  frames = np.broadcast_to(x[None], (TEMPORAL,) + x.shape)
  return _patchify(frames), np.array([1, h // PATCH, w // PATCH], np.int64)


def preprocess_video(frames, min_pixels: int = 128 * 28 * 28,
                     max_pixels: int = 768 * 28 * 28, *,
                     composite_transparency: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Video frames to Qwen2.5-VL patches.

  All frames are resized to the size ``smart_resize`` gives the first one
  (per-frame area bounds), and an odd count is padded by repeating the last
  frame, as HF's video processor does.

  Args:
    frames: a sequence of PIL images or HxWxC uint8 arrays (already sampled,
      see ``sample_frame_indices``).
    min_pixels, max_pixels: area bounds of each resized frame.
    composite_transparency: as in ``preprocess_image``.

  Returns:
    pixel_values float32[T/2 * grid_h * grid_w, 1176] and grid_thw int64[3]
    = (ceil(T / 2), grid_h, grid_w).
  """
  frames = [to_rgb(f, composite_transparency) for f in frames]
  if not frames:
    raise ValueError("a video needs at least one frame")
  h, w = smart_resize(frames[0].height, frames[0].width, FACTOR, min_pixels,
                      max_pixels)
  xs = [_normalise(f if (f.height, f.width) == (h, w) else
                   f.resize((w, h), resample=Image.BICUBIC)) for f in frames]
  xs += xs[-1:] * (-len(xs) % TEMPORAL)
  grid = np.array([len(xs) // TEMPORAL, h // PATCH, w // PATCH], np.int64)
  return _patchify(np.stack(xs)), grid


def merged_tokens(grid_thw) -> int:
  """LLM tokens of one image / video of grid ``(t, h, w)`` (in 14-px
  patches): each ``MERGE`` x ``MERGE`` group of patches is one token."""
  return int(np.prod(grid_thw)) // (MERGE * MERGE)


def sample_frame_indices(total_frames: int, fps: float,
                         base_interval: float = 2.0, min_frames: int = 4,
                         max_frames: int = 8) -> tuple[np.ndarray, float]:
  """Which frames of a video the reference trains on, and their spacing.

  ``clip(round(duration / base_interval), min_frames, max_frames)`` frames,
  uniformly spaced (never more than the video has), then
  ``second_per_grid_t = temporal_patch / sampled_fps``.

  Returns:
    (frame indices int64[n], second_per_grid_t).
  """
  if total_frames <= 0 or fps <= 0:
    raise ValueError(f"video with {total_frames} frames at {fps} fps")
  duration = total_frames / fps
  n = int(np.clip(round(duration / base_interval), min_frames, max_frames))
  n = min(n, total_frames)
  idx = np.linspace(0, total_frames - 1, n).round().astype(np.int64)
  return idx, TEMPORAL / (n / duration)


def decode_image(data: bytes) -> Image.Image:
  """Fully decoded PIL image from file bytes.

  Truncated files raise (PIL's ``LOAD_TRUNCATED_IMAGES`` stays off), as do
  decompression bombs, so no worker trains on half an image.
  """
  img = Image.open(io.BytesIO(data))
  img.load()
  return img

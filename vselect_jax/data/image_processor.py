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

import dataclasses
import io
import math

import numpy as np
from PIL import Image

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
PATCH, MERGE, TEMPORAL = 14, 2, 2
FACTOR = PATCH * MERGE
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH   # 1176 values per patch


@dataclasses.dataclass(frozen=True)
class ProcessorParams:
  """What differs between the models' processors (``preprocessor_config``):
  patch layout and normalisation. Qwen2.5-VL by default; LLaVA-OV-1.5 has
  one frame per temporal patch (588 values per patch row)."""
  patch_size: int = PATCH
  merge_size: int = MERGE
  temporal_patch_size: int = TEMPORAL
  mean: tuple[float, ...] = tuple(CLIP_MEAN.tolist())
  std: tuple[float, ...] = tuple(CLIP_STD.tolist())

  @property
  def factor(self) -> int:
    return self.patch_size * self.merge_size

  @property
  def patch_dim(self) -> int:
    return 3 * self.temporal_patch_size * self.patch_size ** 2

  @classmethod
  def from_hf_dict(cls, d: dict) -> "ProcessorParams":
    """From a ``preprocessor_config.json`` dict (unset keys: defaults)."""
    f = cls()
    return cls(int(d.get("patch_size", f.patch_size)),
               int(d.get("merge_size", f.merge_size)),
               int(d.get("temporal_patch_size", f.temporal_patch_size)),
               tuple(float(x) for x in d.get("image_mean", f.mean)),
               tuple(float(x) for x in d.get("image_std", f.std)))


QWEN25_VL_PARAMS = ProcessorParams()
LLAVA_OV15_PARAMS = ProcessorParams(temporal_patch_size=1)


def pixel_bounds_from_hf_dict(d: dict) -> tuple[int, int]:
  """(min_pixels, max_pixels) of a ``preprocessor_config.json`` dict: the
  ``min_pixels`` / ``max_pixels`` keys, else ``size.shortest_edge`` /
  ``longest_edge`` (both are areas in HF's Qwen2-VL-style processors)."""
  size = d.get("size") or {}
  return (int(d.get("min_pixels", size.get("shortest_edge", 56 * 56))),
          int(d.get("max_pixels", size.get("longest_edge",
                                           14 * 14 * 4 * 1280))))


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


def _patchify(frames: np.ndarray,
              params: ProcessorParams = QWEN25_VL_PARAMS) -> np.ndarray:
  """Normalised frames float32[T, H, W, C] (T a multiple of the temporal
  patch tp, H and W multiples of 28) -> patches
  float32[T/tp * H/14 * W/14, C * tp * 14 * 14] (sizes for patch 14, merge 2).

  Rows run over (t, h/28, w/28, 2, 2) so each 2x2 merge group is contiguous;
  columns over (channel, t, 14, 14) as the patch-embedding conv expects.
  """
  t, h, w, c = frames.shape
  ps, ms, tp = params.patch_size, params.merge_size, params.temporal_patch_size
  gh, gw = h // ps, w // ps
  x = frames.reshape(t // tp, tp, gh // ms, ms, ps, gw // ms, ms, ps, c)
  # -> (t/tp, gh/2, gw/2, mh, mw, C, tp, ph, pw)
  x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
  return np.ascontiguousarray(x).reshape(
      (t // tp) * gh * gw, c * tp * ps * ps)


def _normalise(rgb: Image.Image,
               params: ProcessorParams = QWEN25_VL_PARAMS) -> np.ndarray:
  """uint8 RGB -> float32[H, W, 3], rescaled by 1/255 then normalised by the
  processor's mean/std (two steps, as HF does, so rounding matches)."""
  x = np.asarray(rgb, np.float32) * np.float32(1 / 255)
  return (x - np.asarray(params.mean, np.float32)) / np.asarray(params.std,
                                                                np.float32)


def preprocess_image(image, min_pixels: int = 56 * 56,
                     max_pixels: int = 14 * 14 * 4 * 1280, *,
                     params: ProcessorParams = QWEN25_VL_PARAMS,
                     composite_transparency: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
  """One image to Qwen2.5-VL patches (HF ``Qwen2VLImageProcessor``'s output).

  Args:
    image: a PIL image or an HxWxC (or HxW) uint8 array.
    min_pixels, max_pixels: area bounds of the resized image.
    params: the model's processor (``LLAVA_OV15_PARAMS`` for LLaVA-OV-1.5).
    composite_transparency: transformers 5.x's compositing onto white
      (``to_rgb``); off, as the reference.

  Returns:
    pixel_values float32[grid_h * grid_w, params.patch_dim] (1176 for
    Qwen2.5-VL, 588 for LLaVA-OV-1.5) and grid_thw int64[3]
    = (1, grid_h, grid_w), grid in 14-px patches.
  """
  rgb = to_rgb(image, composite_transparency)
  h, w = smart_resize(rgb.height, rgb.width, params.factor, min_pixels,
                      max_pixels)
  if (rgb.height, rgb.width) != (h, w):
    rgb = rgb.resize((w, h), resample=Image.BICUBIC)
  x = _normalise(rgb, params)
  # A still image fills all temporal slots: broadcast, no second frame.
  frames = np.broadcast_to(x[None], (params.temporal_patch_size,) + x.shape)
  return _patchify(frames, params), np.array(
      [1, h // params.patch_size, w // params.patch_size], np.int64)


def preprocess_video(frames, min_pixels: int = 128 * 28 * 28,
                     max_pixels: int = 768 * 28 * 28, *,
                     params: ProcessorParams = QWEN25_VL_PARAMS,
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
  h, w = smart_resize(frames[0].height, frames[0].width, params.factor,
                      min_pixels, max_pixels)
  xs = [_normalise(f if (f.height, f.width) == (h, w) else
                   f.resize((w, h), resample=Image.BICUBIC), params)
        for f in frames]
  tp, ps = params.temporal_patch_size, params.patch_size
  xs += xs[-1:] * (-len(xs) % tp)
  grid = np.array([len(xs) // tp, h // ps, w // ps], np.int64)
  return _patchify(np.stack(xs), params), grid


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

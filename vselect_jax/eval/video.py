"""Video frames as the reference's lmms-eval Qwen2.5-VL wrapper feeds them.

Two stages, as the wrapper does (section 4.3 of the reference's spec):

1. ``qwen_vl_utils.fetch_video``: sample at ``fps`` (2) frames a second,
   ``n = floor_2(clip(total / video_fps * fps, ceil_2(min_frames),
   floor_2(min(max_frames, total))))`` frames at
   ``round(linspace(0, total - 1, n))``; each frame is resized by
   ``smart_resize`` between ``min_pixels`` and the per-frame cap
   ``max(min(max_pixels, total_pixels / n * 2), int(min_pixels * 1.05))``.
2. The wrapper keeps ``linspace(0, n - 1, max_num_frames, dtype=int)`` of
   those (duplicates included when n < max_num_frames, as it does) and
   appends the last one when missing.

The processor then pads an odd frame count by repeating the last frame
(``data.preprocess_video``) and sets ``second_per_grid_t =
temporal_patch_size / processor_fps`` = 1.0 at its default fps 2.0, whatever
the actual sampling (as the reference). Only the frames finally kept are
converted to RGB arrays; decoding is sequential (PyAV), so a long video costs
one pass over its packets. Resizing uses PIL bicubic (qwen_vl_utils:
torchvision bicubic with antialias), a small difference.

A missing, unreadable or undecodable video raises ``records.BadRecordError``
("missing_file" / "corrupt_video"), which ``--skip-bad`` counts.
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from vselect_jax.eval import records as records_lib

FRAME_FACTOR = 2    # qwen_vl_utils: frame counts are multiples of this
TEMPORAL_PATCH = 2  # Qwen2.5-VL's temporal_patch_size


@dataclasses.dataclass(frozen=True)
class VideoSampling:
  """Every number of the frame sampling (defaults: the reference's).

  Attributes:
    fps: qwen_vl_utils sampling rate (``--video-fps``).
    min_frames, max_frames: its frame-count bounds (``--video-min-frames``,
      ``--video-max-frames``).
    min_pixels, max_pixels: per-frame area bounds (``--video-min-pixels``,
      ``--video-max-pixels``).
    total_pixels: the budget over all sampled frames that lowers the
      per-frame cap for long samplings (``--video-total-pixels``;
      qwen_vl_utils' ``VIDEO_TOTAL_PIXELS`` of the Qwen2.5-VL release).
    max_num_frames: the wrapper's re-subsampling (``--max-num-frames``).
    processor_fps: the HF processor's fps, giving ``second_per_grid_ts``
      (``--video-processor-fps``).
  """
  fps: float = 2.0
  min_frames: int = 4
  max_frames: int = 768
  min_pixels: int = 128 * 28 * 28
  max_pixels: int = 768 * 28 * 28
  total_pixels: int = 24576 * 28 * 28
  max_num_frames: int = 32
  processor_fps: float = 2.0

  def __post_init__(self):
    for name in ("min_frames", "max_frames", "min_pixels", "max_pixels",
                 "total_pixels", "max_num_frames"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"video {name} (--video-{name.replace('_', '-')}) "
                         f"must be a positive integer, got {v!r}")
    for name in ("fps", "processor_fps"):
      v = getattr(self, name)
      if not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
        raise ValueError(f"video {name} must be a positive number, got {v!r}")
    if self.min_pixels > self.max_pixels:
      raise ValueError(f"video min_pixels ({self.min_pixels}) is above "
                       f"max_pixels ({self.max_pixels})")
    if self.min_frames > self.max_frames:
      raise ValueError(f"video min_frames ({self.min_frames}) is above "
                       f"max_frames ({self.max_frames})")

  @property
  def second_per_grid_t(self) -> float:
    return TEMPORAL_PATCH / float(self.processor_fps)


def _floor(x, f):
  return int(math.floor(x / f) * f)


def _ceil(x, f):
  return int(math.ceil(x / f) * f)


def sampled_frame_count(total_frames: int, video_fps: float,
                        s: VideoSampling) -> int:
  """qwen_vl_utils' ``smart_nframes`` (fps mode).

  Raises:
    ValueError: a video too short for ``FRAME_FACTOR`` frames.
  """
  min_frames = _ceil(s.min_frames, FRAME_FACTOR)
  max_frames = _floor(min(s.max_frames, total_frames), FRAME_FACTOR)
  n = total_frames / video_fps * s.fps
  n = _floor(min(min(max(n, min_frames), max_frames), total_frames),
             FRAME_FACTOR)
  if not FRAME_FACTOR <= n <= total_frames:
    raise ValueError(f"a video of {total_frames} frames cannot give "
                     f"{FRAME_FACTOR}..{total_frames} sampled frames")
  return n


def frame_plan(total_frames: int, video_fps: float, s: VideoSampling
               ) -> tuple[np.ndarray, int, int]:
  """Which frames the model sees, and the per-frame pixel bounds.

  Returns:
    (indices int64[m] into the video, min_pixels, max_pixels); m is
    ``max_num_frames`` or one more (the appended last frame).
  """
  n = sampled_frame_count(total_frames, video_fps, s)
  first = np.round(np.linspace(0, total_frames - 1, n)).astype(np.int64)
  keep = np.linspace(0, n - 1, s.max_num_frames, dtype=int)
  if n - 1 not in keep:
    keep = np.append(keep, n - 1)
  cap = max(min(s.max_pixels, s.total_pixels / n * FRAME_FACTOR),
            int(s.min_pixels * 1.05))
  return first[keep], s.min_pixels, int(cap)


@dataclasses.dataclass
class Clip:
  """The frames of one video as sampled (before resizing)."""
  frames: list            # uint8[H, W, 3] per kept frame
  indices: np.ndarray     # int64[m] frame numbers in the video
  total_frames: int
  video_fps: float
  min_pixels: int
  max_pixels: int


def _bad(path: str, e: Exception) -> records_lib.BadRecordError:
  if isinstance(e, FileNotFoundError) or not os.path.isfile(path):
    return records_lib.BadRecordError("missing_file",
                                      f"video {path}: no such file")
  return records_lib.BadRecordError(
      "corrupt_video", f"cannot read video {path}: {type(e).__name__}: {e}")


def probe(path: str) -> tuple[int, float]:
  """(frame count, frames per second) from the container's header; counts
  the packets when the header has no frame count.

  Raises:
    records.BadRecordError: "missing_file" / "corrupt_video".
  """
  import av
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise ValueError("no video stream")
      stream = container.streams.video[0]
      rate = stream.average_rate or stream.guessed_rate
      fps = float(rate) if rate else 0.0
      total = int(stream.frames or 0)
      if total <= 0:
        total = sum(1 for p in container.demux(stream) if p.size)
  except Exception as e:  # av.error.FFmpegError, OSError, ValueError
    raise _bad(path, e) from e
  if total <= 0 or fps <= 0:
    raise records_lib.BadRecordError(
        "corrupt_video", f"cannot read video {path}: {total} frames at "
        f"{fps} fps")
  return total, fps


def load_clip(path: str, s: VideoSampling) -> Clip:
  """Decodes the frames ``frame_plan`` picks.

  A header that promises more frames than the stream decodes (common in
  cut files) gets the last decoded frame for the missing ones; a stream
  that decodes no frame at all is corrupt.

  Raises:
    records.BadRecordError: "missing_file" / "corrupt_video".
  """
  import av
  total, fps = probe(path)
  try:
    indices, lo, hi = frame_plan(total, fps, s)
  except ValueError as e:
    raise records_lib.BadRecordError("corrupt_video",
                                     f"video {path}: {e}") from e
  wanted = set(int(i) for i in indices)
  last_wanted = int(indices.max())
  got, last = {}, None
  try:
    with av.open(path) as container:
      for n, frame in enumerate(container.decode(video=0)):
        if n in wanted:
          got[n] = frame.to_ndarray(format="rgb24")
        last = n
        if n >= last_wanted:
          break
      if last is not None and last not in got:
        got[last] = frame.to_ndarray(format="rgb24")
  except Exception as e:
    raise _bad(path, e) from e
  if not got:
    raise records_lib.BadRecordError(
        "corrupt_video", f"cannot read video {path}: no frame decodes")
  frames = [got[min(int(i), last)] if min(int(i), last) in got
            else got[last] for i in indices]
  return Clip(frames, indices, total, fps, lo, hi)

"""One record to one training sample: decode, preprocess, tokenise, M-RoPE.

``SampleBuilder`` is what the grain workers run per record. Images are
opened and ``.convert("RGB")``-ed exactly as the reference's training data
code does (so an RGBA image loses its alpha and a transparent palette index
keeps its colour rather than being composited onto white), then go through
``preprocess_image`` (HF's processor, numpy). The prompt is
``chat.tokenize_conversation``, the template evaluation uses too. Every
failure is a ``RecordError`` whose ``kind`` the skip accounting counts.

A sample is a dict of numpy arrays:
  input_ids, labels int32[n]; position_ids int32[3, n];
  pixel_values float32[p, 1176] (its images' patches, in order);
  image_grid_thw int32[k, 3];
  and for video samples pixel_values_videos float32[pv, 1176],
  video_grid_thw int32[v, 3], second_per_grid_ts float32[v].
"""
from __future__ import annotations

import copy
import os
import threading

import numpy as np
# Imported at module level, not lazily in worker threads: concurrent first
# imports of transformers' lazy modules race ("cannot import name ...").
from transformers import AutoTokenizer

from vselect_jax import paths
from vselect_jax.data import chat
from vselect_jax.data.errors import RecordError
from vselect_jax.data.image_processor import (LLAVA_OV15_PARAMS,
                                              QWEN25_VL_PARAMS, decode_image,
                                              merged_tokens, preprocess_image,
                                              preprocess_video,
                                              sample_frame_indices)
from vselect_jax.data.records import RawRecord, media_paths, parse_record
from vselect_jax.host.rope_index import get_rope_index
from vselect_jax.host.rope_index_1d import get_1d_position_ids

FAMILIES = ("qwen2_5_vl", "llava_ov15")


def processor_params(family: str):
  """The image processor parameters of a model family."""
  if family not in FAMILIES:
    raise ValueError(f"unknown model family {family!r}; known: {FAMILIES}")
  return LLAVA_OV15_PARAMS if family == "llava_ov15" else QWEN25_VL_PARAMS

_LOAD_LOCK = threading.Lock()


class ThreadTokenizer:
  """A tokenizer per thread (HF fast tokenizers are not safe to call from
  several threads at once); pickles as its path or object, so grain worker
  processes rebuild their own.

  Args:
    tokenizer: a checkpoint / tokenizer directory, or a tokenizer object.
  """

  def __init__(self, tokenizer):
    self.spec = tokenizer
    self._local = threading.local()

  def __getstate__(self):
    return {"spec": self.spec}

  def __setstate__(self, state):
    self.__init__(state["spec"])

  def get(self):
    tok = getattr(self._local, "tok", None)
    if tok is None:
      with _LOAD_LOCK:
        if isinstance(self.spec, (str, os.PathLike)):
          tok = AutoTokenizer.from_pretrained(os.fspath(self.spec))
        else:
          tok = copy.deepcopy(self.spec)
      self._local.tok = tok
    return tok


def special_token_id(tokenizer, token: str) -> int:
  """Id of a special token; refuses tokenizers that lack it."""
  i = tokenizer.convert_tokens_to_ids(token)
  if i is None or i == tokenizer.unk_token_id or (
      tokenizer.convert_ids_to_tokens(i) != token):
    raise ValueError(f"tokenizer has no {token!r} token")
  return int(i)


class SampleBuilder:
  """Builds samples from ``RawRecord``s.

  Args:
    tokenizer: checkpoint directory or tokenizer object.
    min_pixels, max_pixels: image area bounds (training: 784 / 50176).
    tokens_per_second: M-RoPE temporal scale for video (the reference's data
      code hard-codes 2).
    allow_video: build video samples; otherwise they are refused as
      ``video_unsupported`` (the reference's selector training cannot take
      video, and packed training rows carry images only).
    video_min_pixels, video_max_pixels: per-frame area bounds (the
      reference's 4 * 28 * 28 / 32 * 28 * 28).
    video_fps: frame rate assumed for a folder of frames.
    composite_transparency: composite transparent pixels onto white after
      the RGB conversion, as transformers 5.x's processor would; off by
      default, as the reference (transformers 4.50) does not.
    family: "qwen2_5_vl", or "llava_ov15": its processor (588-value
      patches), 1-D positions (0..n-1) and ``<image>`` taking its
      surrounding newlines, as the LLaVA-OV-1.5 reference trains.
  """

  def __init__(self, tokenizer, *, min_pixels: int = 784,
               max_pixels: int = 50176, tokens_per_second: float = 2,
               allow_video: bool = False,
               video_min_pixels: int = 4 * 28 * 28,
               video_max_pixels: int = 32 * 28 * 28,
               video_fps: float = 2.0,
               composite_transparency: bool = False,
               family: str = "qwen2_5_vl"):
    self.params = processor_params(family)
    self.family = family
    self.tokenizer = ThreadTokenizer(tokenizer)
    self.min_pixels, self.max_pixels = min_pixels, max_pixels
    self.tokens_per_second = tokens_per_second
    self.allow_video = allow_video
    self.video_min_pixels = video_min_pixels
    self.video_max_pixels = video_max_pixels
    self.video_fps = video_fps
    self.composite_transparency = composite_transparency

  def image(self, record: RawRecord, rel: str):
    """Patches and grid of one image of the record."""
    data = record.read_media(rel)
    try:
      img = decode_image(data)
      if img.mode != "RGB":  # the reference's .convert("RGB"), no copy
        img = img.convert("RGB")
      return preprocess_image(
          img, self.min_pixels, self.max_pixels, params=self.params,
          composite_transparency=self.composite_transparency)
    except RecordError:
      raise
    except Exception as e:  # PIL raises many types for broken files
      raise RecordError("corrupt_image", f"{rel!r}: {type(e).__name__}: "
                        f"{e}") from e

  def video(self, record: RawRecord, rel: str):
    """Patches, grid and seconds per temporal patch of one video."""
    if record.root is None or not paths.isdir(
        paths.join(record.root, rel)):
      raise RecordError("video_unsupported", f"{rel!r}: only folders of "
                        "frames are read (no video decoder in the pipeline)")
    folder = paths.join(record.root, rel)
    names = sorted(n for n in paths.listdir(folder)
                   if not n.startswith("."))
    if not names:
      raise RecordError("missing_file", f"{rel!r}: no frames")
    idx, spg = sample_frame_indices(len(names), self.video_fps)
    try:
      frames = [decode_image(record.read_media(f"{rel}/{names[i]}"))
                .convert("RGB") for i in idx]
      pix, grid = preprocess_video(
          frames, self.video_min_pixels, self.video_max_pixels,
          params=self.params, composite_transparency=self.composite_transparency)
    except RecordError:
      raise
    except Exception as e:
      raise RecordError("corrupt_image", f"{rel!r}: {type(e).__name__}: "
                        f"{e}") from e
    return pix, grid, spg

  def __call__(self, record: RawRecord) -> dict:
    """The sample of ``record``; raises ``RecordError`` if there is none."""
    obj = parse_record(record.text)
    turns = chat.normalize_turns(obj.get("conversations"))
    image_paths = media_paths(obj, "image")
    video_paths = media_paths(obj, "video")
    if video_paths and not self.allow_video:
      raise RecordError("video_unsupported", "video samples are not "
                        "trained on (images only)")
    # Tag/media mismatches are caught before any decoding work.
    for tag, paths in (("<image>", image_paths), ("<video>", video_paths)):
      if chat.count_tags(turns, tag) != len(paths):
        raise RecordError("image_count", f"{chat.count_tags(turns, tag)} "
                          f"{tag} tags but {len(paths)} files")
    images = [self.image(record, p) for p in image_paths]
    videos = [self.video(record, p) for p in video_paths]
    tok = self.tokenizer.get()
    ov = self.family == "llava_ov15"
    ids, labels = chat.tokenize_conversation(
        tok, turns, [merged_tokens(g) for _, g in images],
        [merged_tokens(g) for _, g, _ in videos], eat_newlines=ov)
    image_grid = np.array([g for _, g in images], np.int64).reshape(-1, 3)
    video_grid = np.array([g for _, g, _ in videos], np.int64).reshape(-1, 3)
    pos, _ = get_1d_position_ids(ids[None]) if ov else get_rope_index(
        ids[None], image_grid_thw=image_grid if images else None,
        video_grid_thw=video_grid if videos else None,
        second_per_grid_ts=[s for _, _, s in videos] if videos else None,
        image_token_id=special_token_id(tok, "<|image_pad|>"),
        video_token_id=special_token_id(tok, "<|video_pad|>"),
        tokens_per_second=self.tokens_per_second)
    out = dict(
        input_ids=ids, labels=labels, position_ids=pos[:, 0].astype(np.int32),
        pixel_values=(np.concatenate([p for p, _ in images]) if images else
                      np.zeros((0, self.params.patch_dim), np.float32)),
        image_grid_thw=image_grid.astype(np.int32))
    if videos:
      out.update(pixel_values_videos=np.concatenate([p for p, _, _ in videos]),
                 video_grid_thw=video_grid.astype(np.int32),
                 second_per_grid_ts=np.array([s for _, _, s in videos],
                                             np.float32))
    return out

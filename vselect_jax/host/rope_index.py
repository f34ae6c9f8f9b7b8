"""Multimodal RoPE position ids (M-RoPE), computed on the host in numpy.

Qwen2.5-VL gives every token three position ids (temporal, height, width).
Text tokens carry the same id on all three axes and count up by one. A visual
block of an LLM grid (T, H, W) (merged tokens) starting after text whose next
id is ``s`` gets ``t = s + floor(t_idx * second_per_grid_t * tokens_per_second)``
(images: ``t = s``), ``h = s + row``, ``w = s + col``; text after it continues
from ``max(block) + 1``. These are the semantics the released models were
trained with (transformers 4.50, vLLM).

transformers 5.x differs for video only: it resumes text at
``s + max(H, W)`` instead of ``max(block) + 1``, which is smaller when the
temporal ids of a long video exceed the spatial extent. For images the two
agree. ``semantics="hf5"`` reproduces the 5.x rule for tests.

Padding tokens (``attention_mask == 0``) get position 1 like HF 4.50; they are
masked out of attention anyway.
"""
from __future__ import annotations

import numpy as np


def _as_np(x, dtype=np.int64):
  if x is None:
    return None
  return np.asarray(x).astype(dtype)


def get_rope_index(
    input_ids,
    image_grid_thw=None,
    video_grid_thw=None,
    second_per_grid_ts=None,
    attention_mask=None,
    *,
    spatial_merge_size: int = 2,
    image_token_id: int = 151655,
    video_token_id: int = 151656,
    tokens_per_second: float = 2,
    semantics: str = "hf450",
) -> tuple[np.ndarray, np.ndarray]:
  """Computes M-RoPE position ids for a batch of prompts.

  Images and videos are consumed in order across the whole batch, exactly as
  the HF processor lays out ``image_grid_thw`` / ``video_grid_thw``.

  Args:
    input_ids: int[B, L] token ids.
    image_grid_thw: int[num_images, 3] patch grids (before merging), or None.
    video_grid_thw: int[num_videos, 3] patch grids, or None.
    second_per_grid_ts: float[num_videos] seconds per temporal grid step;
      defaults to 1.0 per video.
    attention_mask: int[B, L] with 1 for real tokens; None means all real.
    spatial_merge_size: merge factor of the vision merger (2 for Qwen2.5-VL).
    image_token_id, video_token_id: pad token ids of the visual blocks.
    tokens_per_second: temporal scale for video ids (config value).
    semantics: "hf450" (released-model semantics, default) or "hf5".

  Returns:
    position_ids: int32[3, B, L].
    rope_deltas: int32[B, 1], ``max(position) + 1 - num_valid_tokens`` per row.
      Decoding continues at ``max(position) + 1 + step``.

  Raises:
    ValueError: when the pad tokens do not match the grids (a block is
      truncated, or there are more blocks than grids).
  """
  if semantics not in ("hf450", "hf5"):
    raise ValueError(f"unknown M-RoPE semantics {semantics!r}")
  ids = _as_np(input_ids)
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, seq], got shape {ids.shape}")
  batch, seq = ids.shape
  mask = (np.ones_like(ids) if attention_mask is None
          else _as_np(attention_mask)).astype(bool)
  if mask.shape != ids.shape:
    raise ValueError(
        f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
  image_grids = iter(_as_np(image_grid_thw).reshape(-1, 3)
                     if image_grid_thw is not None else [])
  video_grids = list(_as_np(video_grid_thw).reshape(-1, 3)
                     if video_grid_thw is not None else [])
  if second_per_grid_ts is None:
    seconds = [1.0] * len(video_grids)
  else:
    seconds = [float(s) for s in np.asarray(second_per_grid_ts).reshape(-1)]
  video_iter = iter(zip(video_grids, seconds))

  position_ids = np.ones((3, batch, seq), dtype=np.int64)
  deltas = np.zeros((batch, 1), dtype=np.int64)
  for b in range(batch):
    tokens = ids[b][mask[b]]
    n = tokens.shape[0]
    if n == 0:
      continue
    pieces = []
    next_pos = 0
    i = 0
    while i < n:
      tok = tokens[i]
      if tok == image_token_id or tok == video_token_id:
        is_video = tok == video_token_id
        try:
          if is_video:
            (t, h, w), spgt = next(video_iter)
          else:
            t, h, w = next(image_grids)
            spgt = 0.0
        except StopIteration:
          kind = "video" if is_video else "image"
          raise ValueError(
              f"row {b}: more {kind} blocks in input_ids than {kind} grids "
              "were given") from None
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        block = t * gh * gw
        if i + block > n or np.any(tokens[i:i + block] != tok):
          raise ValueError(
              f"row {b}: a visual block at token {i} should have {block} pad "
              f"tokens for grid {(int(t), int(h), int(w))} but is shorter")
        if is_video:
          # Float product in the same order as HF 4.50 before truncation.
          t_idx = (np.arange(t, dtype=np.float64) * spgt *
                   tokens_per_second).astype(np.int64)
        else:
          t_idx = np.zeros(t, dtype=np.int64)
        tt = np.broadcast_to(t_idx[:, None, None], (t, gh, gw)).reshape(-1)
        hh = np.broadcast_to(np.arange(gh)[None, :, None],
                             (t, gh, gw)).reshape(-1)
        ww = np.broadcast_to(np.arange(gw)[None, None, :],
                             (t, gh, gw)).reshape(-1)
        pieces.append(np.stack([tt, hh, ww]) + next_pos)
        if semantics == "hf5":
          next_pos += max(gh, gw)
        else:
          next_pos = int(pieces[-1].max()) + 1
        i += block
      else:
        j = i
        while j < n and tokens[j] != image_token_id and tokens[j] != video_token_id:
          j += 1
        pieces.append(np.broadcast_to(np.arange(next_pos, next_pos + j - i),
                                      (3, j - i)))
        next_pos += j - i
        i = j
    pos = np.concatenate(pieces, axis=1)
    position_ids[:, b, mask[b]] = pos
    deltas[b, 0] = pos.max() + 1 - n
  return position_ids.astype(np.int32), deltas.astype(np.int32)

"""Host-side preparation of a forward batch: validation, M-RoPE ids, vision
layout, visual-token placement and padding to static buckets.

Everything data-dependent is computed here in numpy; the device program sees
only arrays whose shapes depend on the buckets (batch, sequence bucket, patch
bucket).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vselect_jax.config import VLMConfig
from vselect_jax.modeling.buckets import bucket
from vselect_jax.modeling.rope_index import get_rope_index
from vselect_jax.modeling.vision_layout import build_vision_layout


@dataclasses.dataclass
class PreparedBatch:
  arrays: dict[str, np.ndarray]   # device inputs, static (bucketed) shapes
  seq_len: int                    # unpadded sequence length L
  rope_deltas: np.ndarray         # int32[B, 1] for decoding
  num_visual: np.ndarray          # int32[B] visual tokens per row
  has_vision: bool


def _array(x, name, dtype=None, ndim=None):
  if x is None:
    return None
  try:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
  except Exception as e:  # e.g. ragged lists
    raise ValueError(f"{name}: cannot be read as an array ({e})") from e
  if dtype is not None:
    a = a.astype(dtype, copy=False)
  if ndim is not None and a.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dims, got shape {a.shape}")
  return a


def prepare_batch(cfg: VLMConfig, input_ids, attention_mask=None,
                  pixel_values=None, image_grid_thw=None,
                  pixel_values_videos=None, video_grid_thw=None,
                  second_per_grid_ts=None, *, seq_multiple: int = 64,
                  seq_bucket: int | None = None,
                  patch_bucket: int | None = None) -> PreparedBatch:
  """Validates HF-processor style inputs and lays them out for the device.

  Args:
    cfg: model config.
    input_ids: int[B, L] (a 1-D array is taken as one row).
    attention_mask: int[B, L] (1 = token, 0 = padding), default all ones.
    pixel_values: float[num_image_patches, C]; image_grid_thw: int[I, 3].
    pixel_values_videos: float[num_video_patches, C]; video_grid_thw: [V, 3].
    second_per_grid_ts: float[V] seconds per temporal grid step.
    seq_multiple: sequence bucket granularity.
    seq_bucket, patch_bucket: force these padded sizes.

  Returns:
    The prepared batch. Device arrays: ``input_ids`` int32[B, T],
    ``segment_ids`` int32[B, T] (1 token, 0 pad), ``position_ids``
    int32[3, B, T], ``visual_index`` int32[B, T] and, with vision,
    ``pixel_values`` float32[P, C] plus the ``VisionLayout`` arrays.
  """
  ids = _array(input_ids, "input_ids", np.int64)
  if ids is None:
    raise ValueError("input_ids is required")
  if ids.ndim == 1:
    ids = ids[None]
  if ids.ndim != 2 or ids.shape[1] == 0:
    raise ValueError(f"input_ids must be [batch, seq] with seq > 0, got "
                     f"shape {ids.shape}")
  b, l = ids.shape
  mask = (np.ones_like(ids) if attention_mask is None
          else _array(attention_mask, "attention_mask", np.int64))
  if mask.ndim == 1:
    mask = mask[None]
  if mask.shape != ids.shape:
    raise ValueError(f"attention_mask shape {mask.shape} does not match "
                     f"input_ids shape {ids.shape}")
  if not np.isin(mask, (0, 1)).all():
    raise ValueError("attention_mask must contain only 0 and 1")
  if (mask.sum(1) == 0).any():
    raise ValueError("a row of attention_mask is all padding")

  vcfg = cfg.vision
  items = []  # (pad token, pixels, grids): images then videos, as HF
  for kind, pix, grid, tok in (
      ("image", pixel_values, image_grid_thw, cfg.image_token_id),
      ("video", pixel_values_videos, video_grid_thw, cfg.video_token_id)):
    pix = _array(pix, f"pixel_values{'_videos' if kind == 'video' else ''}",
                 np.float32)
    grid = _array(grid, f"{kind}_grid_thw", np.int64)
    n_tok = int(((ids == tok) & (mask == 1)).sum())
    if (pix is None) != (grid is None):
      raise ValueError(f"{kind}: pixel values and {kind}_grid_thw must be "
                       "given together")
    if pix is None:
      if n_tok:
        raise ValueError(f"input_ids hold {n_tok} {kind} pad tokens but no "
                         f"{kind} pixels were given")
      continue
    grid = grid.reshape(-1, 3) if grid.ndim == 1 else grid
    if grid.ndim != 2 or grid.shape[1] != 3:
      raise ValueError(f"{kind}_grid_thw must be [n, 3], got {grid.shape}")
    if pix.ndim != 2 or pix.shape[1] != vcfg.patch_dim:
      raise ValueError(f"{kind} pixel values must be [patches, "
                       f"{vcfg.patch_dim}], got shape {pix.shape}")
    n_patches = int(np.prod(grid, axis=1).sum())
    if pix.shape[0] != n_patches:
      raise ValueError(f"{kind} pixel values have {pix.shape[0]} patches but "
                       f"{kind}_grid_thw {grid.tolist()} implies {n_patches}")
    n_merged = n_patches // vcfg.merge_unit
    if n_tok != n_merged:
      raise ValueError(f"input_ids hold {n_tok} {kind} pad tokens but the "
                       f"{kind} grids give {n_merged} merged tokens")
    items.append((tok, pix, grid))

  position_ids, deltas = get_rope_index(
      ids, image_grid_thw=_array(image_grid_thw, "image_grid_thw", np.int64),
      video_grid_thw=_array(video_grid_thw, "video_grid_thw", np.int64),
      second_per_grid_ts=second_per_grid_ts, attention_mask=mask,
      spatial_merge_size=vcfg.spatial_merge_size,
      image_token_id=cfg.image_token_id, video_token_id=cfg.video_token_id,
      tokens_per_second=vcfg.tokens_per_second)

  t = seq_bucket or bucket(l, seq_multiple)
  if t < l:
    raise ValueError(f"sequence bucket {t} is shorter than the input ({l})")
  pad = t - l
  arrays = {
      "input_ids": np.pad(ids, ((0, 0), (0, pad))).astype(np.int32),
      "segment_ids": np.pad(mask, ((0, 0), (0, pad))).astype(np.int32),
      "position_ids": np.pad(position_ids, ((0, 0), (0, 0), (0, pad))),
  }
  # Row of the merged-token array for every visual pad token: image pads
  # (row-major over the batch) first, then video pads, as HF scatters them.
  # `visual_item` says which image / video each visual token belongs to (for
  # per-image budgets).
  visual_index = np.full((b, t), -1, np.int32)
  visual_item = np.full((b, t), -1, np.int32)
  offset = 0
  item_offset = 0
  for tok, _, grid in items:
    per_item = np.prod(grid, axis=1) // vcfg.merge_unit
    n = int(per_item.sum())
    where = np.zeros((b, t), bool)
    where[:, :l] = (ids == tok) & (mask == 1)
    visual_index[where] = offset + np.arange(n)
    visual_item[where] = item_offset + np.repeat(np.arange(len(grid)),
                                                 per_item)
    offset += n
    item_offset += len(grid)
  arrays["visual_index"] = visual_index
  arrays["visual_item"] = visual_item
  num_visual = (visual_index >= 0).sum(1).astype(np.int32)

  has_vision = bool(items)
  if has_vision:
    grids = np.concatenate([g for _, _, g in items])
    n_patches = sum(p.shape[0] for _, p, _ in items)
    cap = patch_bucket or bucket(n_patches, vcfg.window_patches * 4)
    layout = build_vision_layout(grids, vcfg, capacity=cap)
    # One copy into the padded bucket (pixels are the largest host array).
    pixels = np.zeros((cap, items[0][1].shape[1]), np.float32)
    np.concatenate([p for _, p, _ in items], out=pixels[:n_patches])
    arrays["pixel_values"] = pixels
    arrays.update(layout.arrays())
  return PreparedBatch(arrays, l, deltas, num_visual, has_vision)

"""Host-side preparation of a forward batch: validation, M-RoPE ids (1-D
positions for LLaVA-OV-1.5), vision layout (the family's, see ``rows``),
visual-token placement and padding to static buckets.

Everything data-dependent is computed here in numpy; the device program sees
only arrays whose shapes depend on the buckets (batch, sequence bucket, patch
bucket).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vselect_jax.config import VLMConfig
from vselect_jax.host.buckets import bucket
from vselect_jax.host.rope_index import get_rope_index
from vselect_jax.host.rope_index_1d import get_1d_position_ids
from vselect_jax.host.rows import patch_capacity, place_visual, vision_rows


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
    The prepared batch; its arrays are the per-row format of ``rows``
    (``segment_ids`` 1 for tokens, 0 for padding).
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
  vocab = cfg.text.vocab_size
  bad = (mask == 1) & ((ids < 0) | (ids >= vocab))
  if bad.any():
    r, c = map(int, np.argwhere(bad)[0])
    raise ValueError(f"input_ids[{r}, {c}] = {int(ids[r, c])} is outside the "
                     f"vocabulary [0, {vocab}) ({int(bad.sum())} such ids)")

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
    items.append((kind, tok, pix, grid))

  if cfg.family == "llava_ov15":
    # LLaVA-OV-1.5: positions = cache positions (1-D), deltas 0.
    position_ids, deltas = get_1d_position_ids(ids, mask)
  else:
    position_ids, deltas = get_rope_index(
        ids, image_grid_thw=_array(image_grid_thw, "image_grid_thw",
                                   np.int64),
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
  # The processor concatenates every row's images (then videos) in row
  # order; give each row its own items, pixels and layout.
  row_grids = [[] for _ in range(b)]
  row_pixels = [[] for _ in range(b)]
  pad_masks = [[] for _ in range(b)]
  row_counts = [[] for _ in range(b)]
  for kind, tok, pix, grid in items:
    per_item = np.prod(grid, axis=1)
    merged = per_item // vcfg.merge_unit
    starts = np.concatenate([[0], np.cumsum(per_item)])
    item = 0
    for r in range(b):
      where = np.zeros(t, bool)
      where[:l] = (ids[r] == tok) & (mask[r] == 1)
      need, first = int(where.sum()), item
      while need > 0 and item < len(grid):
        need -= int(merged[item])
        item += 1
      if need != 0:
        raise ValueError(
            f"row {r}: its {int(where.sum())} {kind} pad tokens are not a "
            f"whole number of the {kind}s given in order (the processor "
            f"puts each row's {kind}s after the previous row's)")
      row_grids[r].append(grid[first:item])
      row_pixels[r].append(pix[starts[first]:starts[item]])
      pad_masks[r].append(where)
      row_counts[r].append(merged[first:item])
  if not items:
    pad_masks = [[np.zeros(t, bool)] for _ in range(b)]
    row_counts = [[np.zeros(0, np.int64)] for _ in range(b)]
  placed = [place_visual(m, c) for m, c in zip(pad_masks, row_counts)]
  arrays["visual_index"] = np.stack([p[0] for p in placed])
  arrays["visual_item"] = np.stack([p[1] for p in placed])
  num_visual = (arrays["visual_index"] >= 0).sum(1).astype(np.int32)

  has_vision = bool(items)
  if has_vision:
    grids = [np.concatenate(g) for g in row_grids]
    pixels = [np.concatenate(p) for p in row_pixels]
    most = max(int(np.prod(g, axis=1).sum()) if len(g) else 0 for g in grids)
    cap = patch_bucket or patch_capacity(most, vcfg)
    arrays.update(vision_rows(vcfg, grids, pixels, cap))
  return PreparedBatch(arrays, l, deltas, num_visual, has_vision)

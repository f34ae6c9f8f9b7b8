"""Selection pictures: an image, its importance heatmap and the kept tokens.

The Qwen2.5-VL processor resizes an image to (grid_h * 14) x (grid_w * 14)
pixels; each merged visual token covers a 28 x 28 block of that resized
image, in raster order over a (grid_h / 2) x (grid_w / 2) grid. Drawing on
the resized image makes the grid line up exactly; the blocks are built in
numpy (``token_map``, ``dim_dropped``) so tests can check the alignment.

The reference draws the selector's soft top-k mask with ``jet`` over the
original image (``0.4 img + 0.6 heat``) and the kept patches separately; we
draw three panels: image, heatmap overlay, kept tokens (dropped ones dimmed).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

PATCH = 14
TOKEN = 28  # pixels per merged token side (2 x 2 patches)


def _check_grid(grid_hw) -> tuple[int, int]:
  gh, gw = (int(v) for v in grid_hw)
  if gh <= 0 or gw <= 0 or gh % 2 or gw % 2:
    raise ValueError(f"grid (h, w) = {tuple(grid_hw)} must be positive and "
                     "even (patches, merged 2 x 2)")
  return gh, gw


def _check_values(values, grid_hw, name: str) -> np.ndarray:
  gh, gw = _check_grid(grid_hw)
  v = np.asarray(values)
  n = (gh // 2) * (gw // 2)
  if v.shape != (n,):
    raise ValueError(f"{name} must have one entry per merged token: shape "
                     f"({n},) for grid {gh} x {gw}, got {v.shape}")
  return v


def token_map(values, grid_hw) -> np.ndarray:
  """float[grid_h * 14, grid_w * 14]: each token's value over its block."""
  gh, gw = _check_grid(grid_hw)
  v = _check_values(values, grid_hw, "values").astype(np.float64)
  v = v.reshape(gh // 2, gw // 2)
  return np.repeat(np.repeat(v, TOKEN, axis=0), TOKEN, axis=1)


def dim_dropped(image: np.ndarray, keep, grid_hw,
                factor: float = 0.25) -> np.ndarray:
  """uint8 image (already resized to the grid) with the blocks of dropped
  tokens scaled by ``factor``."""
  gh, gw = _check_grid(grid_hw)
  img = np.asarray(image)
  if img.shape[:2] != (gh * PATCH, gw * PATCH):
    raise ValueError(f"image is {img.shape[:2]}, expected "
                     f"{(gh * PATCH, gw * PATCH)} for grid {gh} x {gw}")
  kept = token_map(np.asarray(keep, bool), grid_hw) > 0.5
  scale = np.where(kept, 1.0, factor)[..., None]
  return np.clip(img.astype(np.float64) * scale, 0, 255).astype(np.uint8)


def resized(image, grid_hw) -> np.ndarray:
  """The image as the processor saw it: RGB, bicubic to the grid size."""
  gh, gw = _check_grid(grid_hw)
  if isinstance(image, np.ndarray):
    if image.ndim != 3 or image.shape[2] not in (3, 4):
      raise ValueError(f"image array must be H x W x 3 (or 4), got "
                       f"{image.shape}")
    image = Image.fromarray(image.astype(np.uint8))
  return np.asarray(image.convert("RGB").resize(
      (gw * PATCH, gh * PATCH), Image.BICUBIC))


def render_selection(image, grid_hw, scores, keep, path: str,
                     title: str = "") -> str:
  """Writes a three-panel PNG (image | heatmap | kept tokens) at ``path``.

  Args:
    image: PIL image or H x W x 3 uint8 array (the original).
    grid_hw: (grid_h, grid_w) in 14-px patches (``image_grid_thw[1:]``).
    scores: float[N] importance per merged token (raster order); shown
      min-max normalised.
    keep: bool[N] kept tokens.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  s = _check_values(scores, grid_hw, "scores").astype(np.float64)
  k = _check_values(keep, grid_hw, "keep").astype(bool)
  if not np.all(np.isfinite(s)):
    raise ValueError("scores must be finite")
  lo, hi = s.min(), s.max()
  norm = (s - lo) / (hi - lo) if hi > lo else np.full_like(s, 0.5)
  img = resized(image, grid_hw)
  heat = plt.get_cmap("jet")(token_map(norm, grid_hw))[..., :3] * 255
  overlay = (0.4 * img + 0.6 * heat).astype(np.uint8)
  dimmed = dim_dropped(img, k, grid_hw)
  h, w = img.shape[:2]
  fig, axes = plt.subplots(1, 3, figsize=(3 * max(2.5, w / 80), max(2.5, h / 80)
                                          + 0.6))
  for ax, panel, name in zip(axes, (img, overlay, dimmed),
                             ("image", "importance", "kept")):
    ax.imshow(panel, interpolation="nearest")
    ax.set_title(name, fontsize=9)
    ax.set_xticks(np.arange(0, w + 1, TOKEN) - 0.5, minor=True)
    ax.set_yticks(np.arange(0, h + 1, TOKEN) - 0.5, minor=True)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[2].grid(which="minor", color="white", linewidth=0.3, alpha=0.5)
  fig.suptitle(f"{title}  kept {int(k.sum())}/{k.size}".strip(), fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def frame_maps(values, grid_thw) -> list[np.ndarray]:
  """A video's per-token values split per temporal slot: grid_t arrays of
  (grid_h / 2) * (grid_w / 2) values (tokens are slot-major, then raster)."""
  t = int(grid_thw[0])
  gh, gw = _check_grid(grid_thw[1:])
  v = np.asarray(values)
  per = (gh // 2) * (gw // 2)
  if t <= 0 or v.shape != (t * per,):
    raise ValueError(f"values must have one entry per merged token: shape "
                     f"({t * per},) for grid {tuple(int(x) for x in grid_thw)}"
                     f", got {v.shape}")
  return [v[i * per:(i + 1) * per] for i in range(t)]


def render_frame_strip(frames, grid_thw, scores, keep, path: str,
                       title: str = "", max_slots: int = 8) -> str:
  """Writes a video's selection as a strip: one column per temporal slot
  (its first frame; at most ``max_slots``, evenly spaced), rows image |
  importance | kept tokens. Scores are min-max normalised over the whole
  video, so the slots compare.

  Args:
    frames: the sampled frames (uint8 H x W x 3), two per temporal slot
      (the processor's pairs; an odd last one repeated).
    grid_thw: (grid_t, grid_h, grid_w) of the video.
    scores, keep: float[N] / bool[N] over its merged tokens.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  gh, gw = _check_grid(grid_thw[1:])
  s_all = np.asarray(scores, np.float64)
  s_slots = frame_maps(s_all, grid_thw)
  k_slots = frame_maps(np.asarray(keep, bool), grid_thw)
  if not np.all(np.isfinite(s_all)):
    raise ValueError("scores must be finite")
  t = len(s_slots)
  if not frames:
    raise ValueError("no frames to draw")
  lo, hi = s_all.min(), s_all.max()
  slots = np.unique(np.linspace(0, t - 1, min(t, max_slots)).round()
                    .astype(int))
  fig, axes = plt.subplots(3, len(slots), squeeze=False,
                           figsize=(2.2 * len(slots), 6.8))
  for col, slot in enumerate(slots):
    img = resized(frames[min(2 * slot, len(frames) - 1)], (gh, gw))
    s = s_slots[slot]
    norm = (s - lo) / (hi - lo) if hi > lo else np.full_like(s, 0.5)
    heat = plt.get_cmap("jet")(token_map(norm, (gh, gw)))[..., :3] * 255
    k = k_slots[slot]
    panels = (img, (0.4 * img + 0.6 * heat).astype(np.uint8),
              dim_dropped(img, k, (gh, gw)))
    for row, panel in enumerate(panels):
      ax = axes[row, col]
      ax.imshow(panel, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
    axes[0, col].set_title(f"slot {slot}: kept {int(k.sum())}/{k.size}",
                           fontsize=8)
  for row, name in enumerate(("frame", "importance", "kept")):
    axes[row, 0].set_ylabel(name, fontsize=9)
  k_all = np.asarray(keep, bool)
  fig.suptitle(f"{title}  kept {int(k_all.sum())}/{k_all.size}".strip(),
               fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return path

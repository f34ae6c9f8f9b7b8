"""Token selection on the model: scoring, the training path (soft mask, no
tokens dropped) and the inference path (hard top-k, tokens dropped).

Visual tokens are handled where they sit in the sequence: ``visual_index``
(int32[B, T], -1 for text) says which merged token fills each position, so
one top-k per row pools all images and frames of that sample (the
reference's behaviour), and everything has static shapes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.selector import baselines
from vselect_jax.selector import topk as topk_lib


def visual_tokens_in_sequence(merged: jax.Array, visual_index: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Gathers merged tokens to their sequence positions.

  Args:
    merged: float[M, E] merged visual tokens of the whole batch (raster
      order), or float[B, M, E] per row (training batches).
    visual_index: int32[B, T] into the batch's (or the row's) tokens.

  Returns:
    tokens float[B, T, E] (zeros at text positions), valid bool[B, T].
  """
  valid = visual_index >= 0
  idx = jnp.maximum(visual_index, 0)
  if merged.ndim == 3:
    tokens = jnp.take_along_axis(merged, idx[..., None], axis=1)
  else:
    tokens = jnp.take(merged, idx, axis=0)
  return jnp.where(valid[..., None], tokens, 0), valid


def encode_images(model, batch: dict) -> jax.Array:
  """The vision tower on a batch: float[M, E] for one batch-wide layout, or
  float[B, M, E] under ``vmap`` for per-row layouts (training batches)."""
  if batch["pixel_values"].ndim == 3:
    keys = ("patch_index", "window_seg", "frame_seg", "rot_pos",
            "merged_index", "merged_valid")
    return jax.vmap(lambda pv, lay: model.visual(pv, lay))(
        batch["pixel_values"], {k: batch[k] for k in keys})
  return model.visual(batch["pixel_values"], batch)


def score(model, merged: jax.Array, visual_index: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Importance scores float32[B, T] (meaningful where valid) and valid."""
  tokens, valid = visual_tokens_in_sequence(merged, visual_index)
  return model.visual.importance_scorer(tokens, valid), valid


def group_topk_mask(scores: jax.Array, group: jax.Array, k_token: jax.Array
                    ) -> jax.Array:
  """Hard top-k within groups, ties broken by the lower position.

  One group per row gives the reference's pooled top-k over all images of a
  sample; one group per image gives per-image budgets. Static shapes: rank
  every token inside its group with two stable sorts (by score, then by
  group), O(T log T).

  Args:
    scores: float32[B, T].
    group: int32[B, T] group id of each visual token, -1 elsewhere.
    k_token: int32[B, T] the k of each token's group (0 elsewhere).

  Returns:
    bool[B, T]: selected visual tokens.
  """
  t = scores.shape[1]

  def row(s, g, k):
    by_score = jnp.argsort(-s, stable=True)        # best first, ties: lower
    order = by_score[jnp.argsort(g[by_score], stable=True)]
    sorted_g = g[order]
    first = jnp.searchsorted(sorted_g, sorted_g, side="left")
    rank = jnp.zeros(t, jnp.int32).at[order].set(
        (jnp.arange(t) - first).astype(jnp.int32))
    return (g >= 0) & (rank < k)

  return jax.vmap(row)(scores, group, k_token)


def select_keep(selected: jax.Array, visual: jax.Array,
                token_valid: jax.Array, size: int) -> jax.Array:
  """Positions to keep, packed to the left.

  Args:
    selected: bool[B, T] kept visual tokens.
    visual: bool[B, T] visual positions.
    token_valid: bool[B, T] non-padding positions.
    size: static output length Tc.

  Returns:
    int32[B, Tc]: original positions in ascending order, -1 as padding.
  """
  keep = token_valid & (~visual | selected)

  def row(mask):
    return jnp.nonzero(mask, size=size, fill_value=-1)[0].astype(jnp.int32)

  return jax.vmap(row)(keep)


def gather_positions(x: jax.Array, keep_index: jax.Array, axis: int = 1
                     ) -> jax.Array:
  """x[b, keep_index[b]] along ``axis`` (1 for [B, T, ...], 2 for
  [3, B, T]); padding (-1) reads position 0 (masked by the caller)."""
  idx = jnp.maximum(keep_index, 0)
  if axis == 1:
    idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)
  return jnp.take_along_axis(x, jnp.broadcast_to(idx[None], x.shape[:1] +
                                                 idx.shape), axis=2)


def compressed_inputs(model, batch: dict, k_token: jax.Array,
                      k_row: jax.Array, size: int, per_image: bool,
                      method: str = "selector", seed: int = 0):
  """Runs the vision tower and the scorer, and drops unselected tokens.

  Kept tokens keep the M-RoPE ids of the uncompressed prompt.

  Args:
    model: the ``Qwen25VL`` module.
    batch: prepared arrays (see ``inputs.prepare_batch``), with vision.
    k_token: int32[B, T] the k of each visual token's group.
    k_row: int32[B] total visual tokens kept per row (for the soft mask).
    size: static compressed length Tc.
    per_image: group by image instead of pooling the row.
    method: "selector" (the learned scorer) or a baseline of
      ``baselines.METHODS``.
    seed: for ``random``.

  Returns:
    A dict: ``embeds`` float[B, Tc, D], ``position_ids`` int32[3, B, Tc],
    ``segment_ids`` int32[B, Tc], ``keep_index`` int32[B, Tc] (rows packed
    left, -1 padding), ``scores`` and ``soft_mask`` float32[B, T].
  """
  merged = model.visual(batch["pixel_values"], batch)
  x = model.embed(batch["input_ids"], batch["visual_index"], merged)
  visual = batch["visual_index"] >= 0
  group = batch["visual_item"] if per_image else jnp.where(visual, 0, -1)
  if method == "selector":
    scores, _ = score(model, merged, batch["visual_index"])
    selected = group_topk_mask(scores, group, k_token)
    # The soft mask the scorer is trained towards, for visualisation.
    soft = topk_lib.soft_topk(scores, k_row, visual)
  elif method == "random":
    scores = baselines.random_scores(seed, visual.shape)
    selected = group_topk_mask(scores, group, k_token)
    soft = jnp.where(visual, scores, 0.0)
  elif method == "uniform":
    selected = baselines.uniform_mask(group, k_token)
    scores = soft = selected.astype(jnp.float32)
  elif method == "divprune":
    tokens, _ = visual_tokens_in_sequence(merged, batch["visual_index"])
    selected, scores = baselines.divprune_mask(tokens, group, k_token)
    soft = jnp.where(visual, scores, 0.0)
  else:
    raise ValueError(f"unknown selection method {method!r}; one of "
                     f"{baselines.METHODS}")
  keep = select_keep(selected, visual, batch["segment_ids"] > 0, size)
  return {
      "embeds": gather_positions(x, keep),
      "position_ids": gather_positions(batch["position_ids"], keep, axis=2),
      "segment_ids": jnp.where(
          keep >= 0, gather_positions(batch["segment_ids"], keep), 0),
      "keep_index": keep, "scores": scores, "soft_mask": soft}


def compressed_forward(model, batch: dict, k_token: jax.Array,
                       k_row: jax.Array, size: int, per_image: bool,
                       method: str = "selector", seed: int = 0):
  """Inference with selection: drop unselected visual tokens before the LLM.

  Returns:
    logits float32[B, Tc, V], keep_index int32[B, Tc], scores float32[B, T],
    soft_mask float32[B, T].
  """
  c = compressed_inputs(model, batch, k_token, k_row, size, per_image,
                        method, seed)
  logits = model.head(model.model(c["embeds"], c["position_ids"],
                                  c["segment_ids"]))
  return logits, c["keep_index"], c["scores"], c["soft_mask"]


def training_forward(model, batch: dict, k_row: jax.Array, *,
                     remat: bool = True):
  """Training path: the soft mask scales the visual tokens; none dropped.

  Args:
    model: the ``Qwen25VL`` module.
    batch: prepared arrays with vision; ``segment_ids`` may hold several
      packed samples per row.
    k_row: int32[B] visual tokens to keep per row (the pooled top-k).
    remat: rematerialise LLM layers in the backward pass.

  Returns:
    logits float32[B, T, V], soft float32[B, T], hard float32[B, T],
    bce float32 scalar (mean over valid visual tokens, logs clamped at -100).
  """
  merged = jax.lax.stop_gradient(encode_images(model, batch))  # frozen
  scores, visual = score(model, merged, batch["visual_index"])
  soft = topk_lib.soft_topk(scores, k_row, visual)
  k_token = jnp.where(visual, k_row[:, None], 0)
  hard = group_topk_mask(jax.lax.stop_gradient(scores),
                         jnp.where(visual, 0, -1), k_token).astype(jnp.float32)
  tokens, _ = visual_tokens_in_sequence(merged, batch["visual_index"])
  x = model.model.embed_tokens(batch["input_ids"])
  scaled = (tokens.astype(jnp.float32) * soft[..., None]).astype(x.dtype)
  x = jnp.where(visual[..., None], scaled, x)
  hidden = model.model(x, batch["position_ids"], batch["segment_ids"],
                       remat=remat)
  bce = topk_lib.selection_bce(soft, hard, visual)
  return model.head(hidden), soft, hard, bce

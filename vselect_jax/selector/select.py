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

from vselect_jax.selector import topk as topk_lib


def visual_tokens_in_sequence(merged: jax.Array, visual_index: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Gathers merged tokens to their sequence positions.

  Args:
    merged: float[M, E] merged visual tokens (raster order).
    visual_index: int32[B, T].

  Returns:
    tokens float[B, T, E] (zeros at text positions), valid bool[B, T].
  """
  valid = visual_index >= 0
  tokens = jnp.take(merged, jnp.maximum(visual_index, 0), axis=0)
  return jnp.where(valid[..., None], tokens, 0), valid


def score(model, merged: jax.Array, visual_index: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Importance scores float32[B, T] (meaningful where valid) and valid."""
  tokens, valid = visual_tokens_in_sequence(merged, visual_index)
  return model.visual.importance_scorer(tokens, valid), valid


def select_keep(scores: jax.Array, valid: jax.Array, k: jax.Array,
                token_valid: jax.Array, size: int) -> jax.Array:
  """Positions to keep after hard top-k, packed to the left.

  Args:
    scores: float32[B, T]; valid: bool[B, T] visual positions.
    k: int32[B] visual tokens to keep per row.
    token_valid: bool[B, T] non-padding positions.
    size: static output length Tc.

  Returns:
    int32[B, Tc]: original positions in ascending order, -1 as padding.
  """
  hard = topk_lib.hard_topk_mask(scores, k, valid) > 0
  keep = token_valid & (~valid | hard)

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

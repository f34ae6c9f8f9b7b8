"""Learnable Importance Scorer (LIS) of VisionSelector.

Two dense maps ``q_proj``, ``k_proj``: E -> E/2 with bias (weights
N(0, 1e-4), biases 0). score_i = q_i . mean_j(k_j) / sqrt(E/2), which equals
the reference's mean over keys of q k^T / sqrt(E/2) in O(N E) instead of
O(N^2 E). The mean runs over valid (non-padding) tokens only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.modeling.layers import Linear

# Finite, so a row without valid tokens never produces NaN downstream.
PAD_SCORE = -1e9


class ImportanceScorer(nnx.Module):

  def __init__(self, dim: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.q_proj = Linear(dim, dim // 2, use_bias=True,
                         axes=("embed", "selector_hidden"), dtype=dtype,
                         init_std=1e-4, rngs=rngs)
    self.k_proj = Linear(dim, dim // 2, use_bias=True,
                         axes=("embed", "selector_hidden"), dtype=dtype,
                         init_std=1e-4, rngs=rngs)

  def __call__(self, h: jax.Array, valid: jax.Array, *,
               detach: bool = True, group: jax.Array | None = None
               ) -> jax.Array:
    """Scores tokens.

    Args:
      h: float[B, N, E] merged visual tokens.
      valid: bool[B, N].
      detach: stop the gradient at ``h`` (the default: the scorer sits after
        a frozen vision merger). Training with the vision tower or merger
        trainable passes False, as the reference's training path does not
        detach the scorer's input, so the vision tower also receives the
        scorer's gradient.
      group: int32[B, N] pool of each token (ids in [0, N), -1 = none):
        the mean key is taken over each token's pool (per-sample pooling
        in packed rows); None pools the row's valid tokens.

    Returns:
      float32[B, N]; padding gets ``PAD_SCORE``. Computed in float32 even
      for bf16 inputs (the reference ran it in bf16).
    """
    if detach:
      h = jax.lax.stop_gradient(h)
    h = h.astype(jnp.float32)
    q = jnp.matmul(h, self.q_proj.kernel[...].astype(jnp.float32)) + \
        self.q_proj.bias[...].astype(jnp.float32)
    k = jnp.matmul(h, self.k_proj.kernel[...].astype(jnp.float32)) + \
        self.k_proj.bias[...].astype(jnp.float32)
    w = valid.astype(jnp.float32)[..., None]
    if group is None:
      mean_k = (k * w).sum(1) / jnp.maximum(w.sum(1), 1.0)  # [B, E/2]
      scores = jnp.einsum("bnd,bd->bn", q, mean_k) / jnp.sqrt(q.shape[-1])
    else:
      n = h.shape[1]
      ids = jnp.where(valid & (group >= 0), group, n)

      def pooled(x, g):  # per token, the sum of its pool: [N, ...]
        return jax.ops.segment_sum(x, g, num_segments=n + 1)[g]

      mean_k = jax.vmap(pooled)(k * w, ids) / jnp.maximum(
          jax.vmap(pooled)(w, ids), 1.0)                    # [B, N, E/2]
      scores = jnp.einsum("bnd,bnd->bn", q, mean_k) / jnp.sqrt(q.shape[-1])
    return jnp.where(valid, scores, PAD_SCORE)

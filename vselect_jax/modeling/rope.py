"""Rotary embeddings: the vision tower's 2D RoPE and the LLM's M-RoPE.

Both use the "rotate half" convention of HF: x * cos + rotate_half(x) * sin,
with cos/sin laid out as cat(f, f) over the head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rotate_half(x: jax.Array) -> jax.Array:
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([-x2, x1], axis=-1)


def vision_cos_sin(rot_pos: jax.Array, head_dim: int, theta: float
                   ) -> tuple[jax.Array, jax.Array]:
  """2D RoPE angles for the vision tower, always float32.

  Args:
    rot_pos: int32[P, 2] (row, col) patch coordinates.
    head_dim: attention head dim H; rows use H/4 frequencies, cols the next.

  Returns:
    cos, sin: float32[P, H].
  """
  spatial = head_dim // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(0, spatial, 2, dtype=jnp.float32)
                              / spatial))
  freqs = rot_pos.astype(jnp.float32)[..., None] * inv_freq  # [P, 2, H/4]
  freqs = freqs.reshape(freqs.shape[0], -1)                   # [P, H/2]
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_vision_rope(x: jax.Array, cos: jax.Array, sin: jax.Array
                      ) -> jax.Array:
  """x: float[B, P, N, H]; rotation in float32 (as HF), result in x.dtype."""
  x32 = x.astype(jnp.float32)
  c, s = cos[:, None, :], sin[:, None, :]
  return (x32 * c + rotate_half(x32) * s).astype(x.dtype)


def mrope_cos_sin(position_ids: jax.Array, head_dim: int, theta: float,
                  mrope_section: tuple[int, int, int], dtype
                  ) -> tuple[jax.Array, jax.Array]:
  """Multimodal RoPE angles.

  Frequency index i < s0 rotates with the temporal id, s0 <= i < s0+s1 with
  the row id, the rest with the column id (HF's chunked M-RoPE).

  Args:
    position_ids: int32[3, B, T].
    head_dim: H.
    mrope_section: (s0, s1, s2), summing to H/2.
    dtype: output dtype; HF computes in float32 and casts to the activation
      dtype, which we mirror.

  Returns:
    cos, sin: dtype[B, T, H].
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32)
                              / head_dim))
  freqs = position_ids.astype(jnp.float32)[..., None] * inv_freq  # [3,B,T,H/2]
  s0, s1, _ = mrope_section
  idx = jnp.arange(head_dim // 2)
  # Pick, for every frequency, the axis (t/h/w) that drives it (a select, not
  # a one-hot matmul, so it stays exact at any matmul precision).
  freqs = jnp.where(idx < s0, freqs[0],
                    jnp.where(idx < s0 + s1, freqs[1], freqs[2]))
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb).astype(dtype), jnp.sin(emb).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: float[B, T, N, H]; cos/sin: [B, T, H] in x's dtype."""
  c, s = cos[:, :, None, :], sin[:, :, None, :]
  return x * c + rotate_half(x) * s

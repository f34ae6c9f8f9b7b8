"""Basic layers with HF-mirroring parameter names and logical sharding axes.

Parameter names follow the HF checkpoint so conversion is a table of renames:
``Linear`` holds ``kernel`` (the transpose of torch's ``weight``, [in, out]) and
``bias``; ``RMSNorm`` and ``Embed`` keep torch's ``weight``.

Logical axis names are attached as ``axes`` metadata and resolved to mesh axes
by ``vselect_jax.sharding``. (Not ``out_sharding``: flax would then shard
eagerly at creation and require a mesh even on one CPU.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]


def _normal(rngs: nnx.Rngs, shape, dtype, stddev: float) -> jax.Array:
  return (stddev * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)


class Linear(nnx.Module):
  """y = x @ kernel + bias, kernel float[in, out]."""

  def __init__(self, in_features: int, out_features: int, *, use_bias: bool,
               axes: Axes = (None, None), dtype=jnp.float32,
               init_std: float = 0.02, rngs: nnx.Rngs):
    self.kernel = nnx.Param(
        _normal(rngs, (in_features, out_features), dtype, init_std),
        axes=axes)
    self.bias = (nnx.Param(jnp.zeros((out_features,), dtype),
                           axes=(axes[1],)) if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = jnp.matmul(x, self.kernel[...].astype(x.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(x.dtype)
    return y


class RMSNorm(nnx.Module):
  """Qwen2 RMSNorm: normalise in float32, scale in the input dtype (as HF)."""

  def __init__(self, dim: int, *, eps: float, axis_name: str | None = None,
               dtype=jnp.float32):
    self.weight = nnx.Param(jnp.ones((dim,), dtype), axes=(axis_name,))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
    return self.weight[...].astype(x.dtype) * normed


class Embed(nnx.Module):
  """Token embedding table float[vocab, dim]; ``attend`` is the tied head."""

  def __init__(self, vocab: int, dim: int, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.weight = nnx.Param(_normal(rngs, (vocab, dim), dtype, 0.02),
                            axes=("vocab", "embed"))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.weight[...], ids, axis=0)

  def attend(self, x: jax.Array) -> jax.Array:
    return jnp.matmul(x, self.weight[...].astype(x.dtype).T)


class SwiGLU(nnx.Module):
  """down(act(gate(x)) * up(x)); HF names gate_proj / up_proj / down_proj."""

  def __init__(self, dim: int, hidden: int, *, use_bias: bool, embed_axis: str,
               mlp_axis: str, dtype=jnp.float32, rngs: nnx.Rngs):
    self.gate_proj = Linear(dim, hidden, use_bias=use_bias,
                            axes=(embed_axis, mlp_axis), dtype=dtype, rngs=rngs)
    self.up_proj = Linear(dim, hidden, use_bias=use_bias,
                          axes=(embed_axis, mlp_axis), dtype=dtype, rngs=rngs)
    self.down_proj = Linear(hidden, dim, use_bias=use_bias,
                            axes=(mlp_axis, embed_axis), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))

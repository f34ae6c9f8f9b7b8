"""Dynamic-Qwen's image predictor (Dynamic-LLaVA's ``VisionPredictor``).

It reads the visual tokens' hidden states at the input of LLM layer K (2)
and gives each a log-probability of being kept and of being dropped:

  LN -> Linear(D, d) -> GELU                         (``down_mlp.{0,1}``)
  2 x ViT block (d wide, 8 heads, MLP 4d, pre-norm)  (``transformer.{i}``)
  channels [:d/2] stay per token; channels [d/2:] are mean-pooled over the
  sample's visual tokens (policy-masked) and concatenated back on every token
  Linear(d, d/2) -> GELU -> Linear(d/2, d/4) -> GELU -> Linear(d/4, 2)
                                                     (``output_mlp.{0,2,4}``)
  log-softmax; column 0 is "keep".

Parameter names mirror the reference's state dict
(``model.image_score_predictor.*``): torch ``nn.Sequential`` indices become
``down_mlp_0`` / ``output_mlp_4`` (the rule ``checkpoint.key_map`` applies
to every ``X_<i>``), ``nn.Linear.weight`` becomes ``kernel`` (transposed),
``nn.LayerNorm`` keeps ``weight`` / ``bias``.

Widths: the reference uses d = 512 for every model (D = 3584 on 7B). A
model narrower than 512 (the test and world models) gets d = D (rounded
down to a multiple of 4 x heads), so tiny models stay tiny.

Deviation (documented): the reference runs the predictor on the padded
[B, max visual, D] stack of each row's visual tokens with unmasked
attention (padding rows take part as keys); here attention and the pooled
mean only see visual tokens of the same sample (segment), which is what
the reference computes on its evaluation batches of one sample.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.modeling.layers import Linear

_MASK = -1e30
WIDTH, HEADS, MLP_RATIO, LAYERS = 512, 8, 4, 2
LN_EPS = 1e-5   # torch nn.LayerNorm's default


@dataclasses.dataclass(frozen=True)
class PredictorWidths:
  """d (the predictor's width), heads, MLP width and ViT blocks."""
  width: int
  heads: int
  mlp: int
  layers: int


def widths_for(hidden_size: int) -> PredictorWidths:
  """The reference's 512 / 8 / 2048 / 2, narrowed for models under 512."""
  d = WIDTH if hidden_size >= WIDTH else max(
      4 * HEADS, hidden_size // (4 * HEADS) * (4 * HEADS))
  return PredictorWidths(d, HEADS, MLP_RATIO * d, LAYERS)


class LayerNorm(nnx.Module):
  """torch ``nn.LayerNorm`` (float32 statistics, names weight / bias)."""

  def __init__(self, dim: int, *, axis: str | None, dtype):
    self.weight = nnx.Param(jnp.ones((dim,), dtype), axes=(axis,))
    self.bias = nnx.Param(jnp.zeros((dim,), dtype), axes=(axis,))

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + LN_EPS)
    return y * self.weight[...].astype(jnp.float32) + \
        self.bias[...].astype(jnp.float32)


def _linear(i, o, rngs, dtype, axes=("embed", None), bias=True):
  # Sharding: the d-wide dims ride on "embed" (fsdp) and the MLP's on "mlp"
  # (tensor), so the 7B's 512 x 2048 matrices are never fully replicated.
  return Linear(i, o, use_bias=bias, axes=axes, dtype=dtype, rngs=rngs)


class SelfAttention(nnx.Module):
  """timm ``Attention``: ``qkv`` (no bias) and ``proj``."""

  def __init__(self, d: int, heads: int, *, dtype, rngs: nnx.Rngs):
    self.heads = heads
    self.qkv = _linear(d, 3 * d, rngs, dtype, bias=False)
    self.proj = _linear(d, d, rngs, dtype)

  def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
    """x float32[B, T, d]; allowed bool[B, T, T] (query, key)."""
    b, t, d = x.shape
    h = d // self.heads
    q, k, v = jnp.moveaxis(self.qkv(x).reshape(b, t, 3, self.heads, h), 2, 0)
    logits = jnp.einsum("bqnh,bknh->bnqk", q, k) * h ** -0.5
    logits = jnp.where(allowed[:, None], logits, _MASK)
    out = jnp.einsum("bnqk,bknh->bqnh", jax.nn.softmax(logits, -1), v)
    return self.proj(out.reshape(b, t, d))


class Mlp(nnx.Module):

  def __init__(self, d: int, hidden: int, *, dtype, rngs: nnx.Rngs):
    self.fc1 = _linear(d, hidden, rngs, dtype, axes=("embed", "mlp"))
    self.fc2 = _linear(hidden, d, rngs, dtype, axes=("mlp", "embed"))

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """Pre-norm ViT block (timm ``SelfTransformerEncoderBlock``)."""

  def __init__(self, w: PredictorWidths, *, dtype, rngs: nnx.Rngs):
    self.norm1 = LayerNorm(w.width, axis="embed", dtype=dtype)
    self.attn = SelfAttention(w.width, w.heads, dtype=dtype, rngs=rngs)
    self.norm2 = LayerNorm(w.width, axis="embed", dtype=dtype)
    self.mlp = Mlp(w.width, w.mlp, dtype=dtype, rngs=rngs)

  def __call__(self, x, allowed):
    x = x + self.attn(self.norm1(x), allowed)
    return x + self.mlp(self.norm2(x))


class VisionPredictor(nnx.Module):
  """Keep / drop log-probabilities of visual tokens (see module doc)."""

  def __init__(self, hidden_size: int, *, widths: PredictorWidths | None = None,
               dtype=jnp.float32, rngs: nnx.Rngs):
    w = widths or widths_for(hidden_size)
    self.widths = w
    self.down_mlp_0 = LayerNorm(hidden_size, axis="embed", dtype=dtype)
    self.down_mlp_1 = _linear(hidden_size, w.width, rngs, dtype,
                              axes=("embed", None))
    self.transformer = nnx.List([Block(w, dtype=dtype, rngs=rngs)
                                 for _ in range(w.layers)])
    d = w.width
    self.output_mlp_0 = _linear(d, d // 2, rngs, dtype, axes=(None, None))
    self.output_mlp_2 = _linear(d // 2, d // 4, rngs, dtype, axes=(None, None))
    self.output_mlp_4 = _linear(d // 4, 2, rngs, dtype, axes=(None, None))

  def __call__(self, x: jax.Array, visual: jax.Array, segment_ids: jax.Array
               ) -> jax.Array:
    """Log-probabilities float32[B, T, 2] (column 0: keep).

    Args:
      x: float[B, T, D] hidden states (only visual positions are read).
      visual: bool[B, T] the tokens to score (the reference's
        ``image_prev_decision``: 1 on real visual tokens).
      segment_ids: int32[B, T]; attention and pooling stay in a segment.

    Rows without visual tokens, and non-visual positions, get finite
    garbage the caller masks.
    """
    p = visual.astype(jnp.float32)[..., None]
    h = jax.nn.gelu(self.down_mlp_1(self.down_mlp_0(x)), approximate=False)
    h = h * p
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    eye = jnp.eye(x.shape[1], dtype=bool)[None]
    # Visual keys of the query's sample (and itself, so no row is empty).
    allowed = (same & visual[:, None, :]) | eye
    for block in self.transformer:
      h = block(h, allowed)
    half = h.shape[-1] // 2
    # The policy-masked mean of the global half over the token's sample.
    pool = (same & visual[:, None, :]).astype(jnp.float32)
    glob = jnp.einsum("bqk,bkc->bqc", pool, h[..., half:]) / jnp.maximum(
        pool.sum(-1, keepdims=True), 1.0)
    h = jnp.concatenate([h[..., :half], glob], axis=-1)
    h = jax.nn.gelu(self.output_mlp_0(h), approximate=False)
    h = jax.nn.gelu(self.output_mlp_2(h), approximate=False)
    return jax.nn.log_softmax(self.output_mlp_4(h).astype(jnp.float32), -1)

"""Qwen2 decoder (the Qwen2.5-VL LLM) in Flax NNX, names mirroring HF.

Axis letters: B batch, T sequence, D width, N query heads, K kv heads,
H head dim, F MLP width, V vocab.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.config import TextConfig
from vselect_jax.modeling import rope
from vselect_jax.modeling.attention import dot_product_attention
from vselect_jax.modeling.layers import Embed, Linear, RMSNorm, SwiGLU


class Attention(nnx.Module):
  """Grouped-query attention with qkv bias and M-RoPE."""

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.head_dim
    self.num_heads = cfg.num_attention_heads
    self.num_kv_heads = cfg.num_key_value_heads
    self.head_dim = h
    self.q_proj = Linear(d, self.num_heads * h, use_bias=True,
                         axes=("embed", "q_heads"), dtype=dtype, rngs=rngs)
    self.k_proj = Linear(d, self.num_kv_heads * h, use_bias=True,
                         axes=("embed", "kv_heads"), dtype=dtype, rngs=rngs)
    self.v_proj = Linear(d, self.num_kv_heads * h, use_bias=True,
                         axes=("embed", "kv_heads"), dtype=dtype, rngs=rngs)
    self.o_proj = Linear(self.num_heads * h, d, use_bias=False,
                         axes=("q_heads", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               segment_ids: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    q = rope.apply_rope(q, cos, sin)
    k = rope.apply_rope(k, cos, sin)
    out = dot_product_attention(q, k, v, q_segment_ids=segment_ids,
                                kv_segment_ids=segment_ids, causal=True)
    return self.o_proj(out.reshape(b, t, -1))


class DecoderLayer(nnx.Module):

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                   dtype=dtype)
    self.self_attn = Attention(cfg, dtype=dtype, rngs=rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size,
                                            eps=cfg.rms_norm_eps, dtype=dtype)
    self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=False,
                      embed_axis="embed", mlp_axis="mlp", dtype=dtype,
                      rngs=rngs)

  def __call__(self, x, cos, sin, segment_ids):
    x = x + self.self_attn(self.input_layernorm(x), cos, sin, segment_ids)
    return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nnx.Module):
  """Embedding table, decoder layers and final norm (HF ``model.*``)."""

  def __init__(self, cfg: TextConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    self.embed_tokens = Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype,
                              rngs=rngs)
    self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs)
                            for _ in range(cfg.num_hidden_layers)])
    self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, dtype=dtype)

  @jax.named_scope("llm")
  def __call__(self, x: jax.Array, position_ids: jax.Array,
               segment_ids: jax.Array, remat: bool = False) -> jax.Array:
    """Runs the decoder on embeddings.

    Args:
      x: float[B, T, D] input embeddings.
      position_ids: int32[3, B, T] M-RoPE ids.
      segment_ids: int32[B, T]; tokens attend causally within a segment;
        0 marks padding.
      remat: rematerialise each layer in the backward pass (training).

    Returns:
      float[B, T, D] final hidden states (after the norm).
    """
    cfg = self.config
    cos, sin = rope.mrope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta,
                                  cfg.mrope_section, x.dtype)
    for layer in self.layers:
      if remat:
        x = nnx.remat(lambda l, *a: l(*a))(layer, x, cos, sin, segment_ids)
      else:
        x = layer(x, cos, sin, segment_ids)
    return self.norm(x)

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
from vselect_jax.modeling.attention import (cached_attention,
                                            dot_product_attention)
from vselect_jax.modeling.layers import Embed, Linear, RMSNorm, SwiGLU
from vselect_jax.modeling.policy_attention import policy_attention


class Attention(nnx.Module):
  """Grouped-query attention with M-RoPE (Qwen2: qkv bias; Qwen3, with
  ``cfg.qk_norm``: no biases, RMSNorm per head on q and k before RoPE)."""

  def __init__(self, cfg: TextConfig, *, dtype, rngs: nnx.Rngs):
    d, h = cfg.hidden_size, cfg.head_dim
    self.num_heads = cfg.num_attention_heads
    self.num_kv_heads = cfg.num_key_value_heads
    self.head_dim = h
    bias = cfg.attention_bias
    self.q_proj = Linear(d, self.num_heads * h, use_bias=bias,
                         axes=("embed", "q_heads"), dtype=dtype, rngs=rngs)
    self.k_proj = Linear(d, self.num_kv_heads * h, use_bias=bias,
                         axes=("embed", "kv_heads"), dtype=dtype, rngs=rngs)
    self.v_proj = Linear(d, self.num_kv_heads * h, use_bias=bias,
                         axes=("embed", "kv_heads"), dtype=dtype, rngs=rngs)
    self.o_proj = Linear(self.num_heads * h, d, use_bias=False,
                         axes=("q_heads", "embed"), dtype=dtype, rngs=rngs)
    # Qwen3 (HF names q_norm / k_norm); None for Qwen2.
    self.q_norm = (RMSNorm(h, eps=cfg.rms_norm_eps, dtype=dtype)
                   if cfg.qk_norm else None)
    self.k_norm = (RMSNorm(h, eps=cfg.rms_norm_eps, dtype=dtype)
                   if cfg.qk_norm else None)

  def queries_keys(self, x: jax.Array, cos: jax.Array, sin: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """Queries float[B, T, N, H] and keys float[B, T, K, H] after the
    per-head norms (Qwen3) and M-RoPE (what attention-based pruning
    reads)."""
    b, t, _ = x.shape
    q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
    k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    return rope.apply_rope(q, cos, sin), rope.apply_rope(k, cos, sin)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               segment_ids: jax.Array, cache: dict | None = None,
               key_bias: jax.Array | None = None,
               key_policy: jax.Array | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Self-attention; with ``cache`` the new keys/values are written at
    ``cache["index"]`` and the queries attend the whole cache.
    ``key_bias`` float32[B, T]: a logit bias per key (the soft mask's log,
    training only; not with a cache). ``key_policy`` float32[B, T]: a
    keep policy per key (Dynamic-Qwen's training, ``policy_attention``).

    Returns:
      (output float[B, T, D], (k, v)): the new tokens' keys and values
      [B, T, K, H] without a cache, the updated cache arrays
      [B, C, K, H] with one.
    """
    b, t, _ = x.shape
    q, k = self.queries_keys(x, cos, sin)
    v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
    if key_policy is not None:
      if cache is not None or key_bias is not None:
        raise ValueError("a key policy takes no cache and no key bias")
      out = policy_attention(q, k, v, segment_ids, key_policy)
    elif cache is None:
      out = dot_product_attention(q, k, v, q_segment_ids=segment_ids,
                                  kv_segment_ids=segment_ids, causal=True,
                                  kv_bias=key_bias)
    else:
      if key_bias is not None:
        raise ValueError("a key bias is not supported with a KV cache")
      idx = cache["index"]
      k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype),
                                       (0, idx, 0, 0))
      v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype),
                                       (0, idx, 0, 0))
      out = cached_attention(q, k, v, q_segment_ids=segment_ids,
                             kv_segment_ids=cache["segment_ids"], index=idx)
    return self.o_proj(out.reshape(b, t, -1)), (k, v)


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

  def __call__(self, x, cos, sin, segment_ids, cache=None, key_bias=None,
               key_policy=None):
    """Returns (hidden, kv) with kv as ``Attention`` returns it."""
    h, kv = self.self_attn(self.input_layernorm(x), cos, sin, segment_ids,
                           cache, key_bias, key_policy)
    x = x + h
    return x + self.mlp(self.post_attention_layernorm(x)), kv

  def queries_keys(self, x, cos, sin):
    """The layer's queries and keys for its input ``x`` (after RoPE)."""
    return self.self_attn.queries_keys(self.input_layernorm(x), cos, sin)


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
      position_ids: int32[3, B, T] M-RoPE ids (with ``mrope_section``
        None, 1-D RoPE reads row 0).
      segment_ids: int32[B, T]; tokens attend causally within a segment;
        0 marks padding.
      remat: rematerialise each layer in the backward pass (training).

    Returns:
      float[B, T, D] final hidden states (after the norm).
    """
    return self.run(x, position_ids, segment_ids, remat=remat)[0]

  def run(self, x: jax.Array, position_ids: jax.Array, segment_ids: jax.Array,
          *, remat: bool = False, cache: dict | None = None,
          layers: tuple[int, int] | None = None, final_norm: bool = True,
          probe: int | None = None, key_bias: jax.Array | None = None,
          key_policy: jax.Array | None = None
          ) -> tuple[jax.Array, dict]:
    """The decoder, also returning keys/values for a KV cache.

    Args:
      x, position_ids, segment_ids: as ``__call__``.
      remat: rematerialise layers in the backward pass.
      cache: None (prefill: every layer's new k/v are returned), or a cache
        ``{"k", "v": float[L, B, C, K, H], "segment_ids": int32[B, C],
        "index": int32[]}`` whose ``segment_ids`` already include the new
        tokens; the new tokens are written at ``index``.
      layers: run only layers [start, stop) (methods that prune inside the
        LLM run it in two stages); the cache then holds those layers.
      final_norm: apply the final RMSNorm (off for a first stage).
      probe: also return the queries and keys of this layer (in-LLM
      pruning reads them), as ``kv["probe"] = (q, k)``.
      key_bias: float32[B, T] logit bias per key in every layer (the soft
        mask "attn_bias": log(m) on visual tokens), or None.
      key_policy: float32[B, T] keep policy per key in every layer run
        (Dynamic-Qwen's policy-masked softmax), or None.

    Returns:
      (hidden float[B, T, D] after the final norm, {"k", "v"} stacked over
      layers: [L, B, T, K, H] for a prefill, [L, B, C, K, H] with a cache).
    """
    cfg = self.config
    # 1-D RoPE is M-RoPE with every frequency on the first (temporal) row.
    section = cfg.mrope_section or (cfg.head_dim // 2, 0, 0)
    cos, sin = rope.mrope_cos_sin(position_ids, cfg.head_dim, cfg.rope_theta,
                                  section, x.dtype)
    ks, vs = [], []
    start, stop = layers or (0, len(self.layers))
    probed = None
    for i in range(start, stop):
      layer = self.layers[i]
      if i == probe:
        probed = layer.queries_keys(x, cos, sin)
      layer_cache = None if cache is None else {
          "k": cache["k"][i - start], "v": cache["v"][i - start],
          "segment_ids": cache["segment_ids"], "index": cache["index"]}
      if remat:
        # Pure-function checkpoint over the layer's state: the backward pass
        # recomputes the layer instead of storing its activations.
        gd, st = nnx.split(layer)
        x, (k, v) = jax.checkpoint(
            lambda st, *a, gd=gd: nnx.merge(gd, st)(*a))(
                st, x, cos, sin, segment_ids, layer_cache, key_bias,
                key_policy)
      else:
        x, (k, v) = layer(x, cos, sin, segment_ids, layer_cache, key_bias,
                          key_policy)
      ks.append(k)
      vs.append(v)
    kv = {"k": jnp.stack(ks), "v": jnp.stack(vs)}
    if probe is not None:
      if probed is None:
        raise ValueError(f"probe layer {probe} is outside layers "
                         f"[{start}, {stop})")
      kv["probe"] = probed
    return (self.norm(x) if final_norm else x), kv

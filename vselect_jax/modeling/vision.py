"""Qwen2.5-VL vision tower in Flax NNX (attribute names mirror HF).

Axis letters: P patch slots (window order, padded), M merged tokens,
C patch row length (1176), D vision width, N heads, H head dim, E LLM width.

Input layout (window order, segment ids, rotary coordinates, un-permute
index) comes from ``vision_layout.build_vision_layout`` on the host; the
device sees fixed shapes only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.config import VisionConfig
from vselect_jax.modeling import rope
from vselect_jax.modeling.attention import (dot_product_attention,
                                            local_block_attention)
from vselect_jax.modeling.layers import Linear, RMSNorm, SwiGLU


class PatchEmbed(nnx.Module):
  """HF's Conv3d with kernel == stride over a pre-flattened (c, t, p, p) patch
  row is exactly a dense map C -> D (no bias)."""

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.proj = Linear(cfg.patch_dim, cfg.hidden_size, use_bias=False,
                       axes=(None, "vit_embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.proj(x)


class VisionAttention(nnx.Module):
  """Fused-qkv attention with the 2-D vision RoPE (float32 rotation)."""

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.num_heads = cfg.num_heads
    self.qkv = Linear(d, 3 * d, use_bias=True, axes=("vit_embed", "vit_heads"),
                      dtype=dtype, rngs=rngs)
    self.proj = Linear(d, d, use_bias=True, axes=("vit_heads", "vit_embed"),
                       dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
               segment_ids: jax.Array, window_block: int | None,
               key_bias: jax.Array | None = None) -> jax.Array:
    """x: [P, D]; cos/sin: float32[P, H]; segment_ids: int32[P];
    key_bias: float32[P] logit bias per key (a soft mask's log), or None.

    ``window_block`` set: windowed layer (segments span <= that many slots).
    """
    p, d = x.shape
    q, k, v = self._qkv(x, cos, sin)
    seg = segment_ids[None]
    bias = None if key_bias is None else key_bias[None]
    if window_block is not None:
      out = local_block_attention(q, k, v, segment_ids=seg, block=window_block,
                                  kv_bias=bias)
    else:
      out = dot_product_attention(q, k, v, q_segment_ids=seg,
                                  kv_segment_ids=seg, causal=False,
                                  kv_bias=bias)
    return self.proj(out.reshape(p, d))

  def _qkv(self, x, cos, sin):
    p, d = x.shape
    qkv = self.qkv(x).reshape(p, 3, self.num_heads, d // self.num_heads)
    q, k, v = (qkv[None, :, i] for i in range(3))  # [1, P, N, H]
    return (rope.apply_vision_rope(q, cos, sin),
            rope.apply_vision_rope(k, cos, sin), v)

  def queries_keys(self, x, cos, sin) -> tuple[jax.Array, jax.Array]:
    """Queries and keys [1, P, N, H] after RoPE (VisionZip reads them)."""
    q, k, _ = self._qkv(x, cos, sin)
    return q, k


class VisionBlock(nnx.Module):

  def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
    self.norm1 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
    self.norm2 = RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
    self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
    self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, use_bias=True,
                      embed_axis="vit_embed", mlp_axis="vit_mlp", dtype=dtype,
                      rngs=rngs)

  def __call__(self, x, cos, sin, segment_ids, window_block, key_bias=None):
    x = x + self.attn(self.norm1(x), cos, sin, segment_ids, window_block,
                      key_bias)
    return x + self.mlp(self.norm2(x))

  def queries_keys(self, x, cos, sin):
    """The block's attention queries and keys for its input ``x``."""
    return self.attn.queries_keys(self.norm1(x), cos, sin)


class PatchMerger(nnx.Module):
  """Norm (RMSNorm; LLaVA-OV-1.5's RICE passes a LayerNorm), concatenate
  each 2x2 group of patches, MLP with exact GELU.

  HF names the MLP ``mlp.0`` / ``mlp.2`` (an nn.Sequential); here they are
  ``mlp_0`` / ``mlp_2``.
  """

  def __init__(self, cfg, *, dtype, rngs: nnx.Rngs, norm=None):
    hidden = cfg.hidden_size * cfg.merge_unit
    self.merge_unit = cfg.merge_unit
    self.ln_q = (RMSNorm(cfg.hidden_size, eps=1e-6, dtype=dtype)
                 if norm is None else norm)
    self.mlp_0 = Linear(hidden, hidden, use_bias=True,
                        axes=("vit_embed", "vit_mlp"), dtype=dtype, rngs=rngs)
    self.mlp_2 = Linear(hidden, cfg.out_hidden_size, use_bias=True,
                        axes=("vit_mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [P, D] -> [P / merge_unit, E]."""
    x = self.ln_q(x).reshape(-1, self.merge_unit * x.shape[-1])
    return self.mlp_2(jax.nn.gelu(self.mlp_0(x), approximate=False))


class VisionTransformer(nnx.Module):
  """Patch embed -> blocks (window / full attention) -> merger -> raster."""

  def __init__(self, cfg: VisionConfig, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = cfg
    self.patch_embed = PatchEmbed(cfg, dtype=dtype, rngs=rngs)
    self.blocks = nnx.List([VisionBlock(cfg, dtype=dtype, rngs=rngs)
                            for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, dtype=dtype, rngs=rngs)

  @jax.named_scope("vision")
  def __call__(self, pixel_values: jax.Array, layout: dict[str, jax.Array],
               return_last_input: bool = False):
    """Encodes all images/frames of a batch.

    Args:
      pixel_values: float[num_patches_in, C] processor rows (any padding
        rows are never read).
      layout: the arrays of ``VisionLayout`` (P slots, M = P / 4).
      return_last_input: also return the last block's input (VisionZip reads
        that block's attention).

    Returns:
      float[M, E] merged tokens in raster order (concatenated items); rows
      past ``num_merged`` are padding. With ``return_last_input`` also
      (float[P, D] input of the last block in slot order, cos, sin).
    """
    x, cos, sin = self.embed(pixel_values, layout)
    last_input = None
    if return_last_input:
      x = self.run_blocks(x, cos, sin, layout, 0, len(self.blocks) - 1)
      last_input = x
      x = self.run_blocks(x, cos, sin, layout, len(self.blocks) - 1)
    else:
      x = self.run_blocks(x, cos, sin, layout, 0)
    merged = jnp.take(self.merger(x), layout["merged_index"], axis=0)
    if return_last_input:
      return merged, (last_input, cos, sin)
    return merged

  def embed(self, pixel_values: jax.Array, layout: dict[str, jax.Array]
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Patch embeddings in slot order float[P, D] and the rotary tables
    cos, sin float32[P, H]."""
    cfg = self.config
    dtype = self.patch_embed.proj.kernel.dtype
    x = jnp.take(pixel_values, layout["patch_index"], axis=0).astype(dtype)
    x = self.patch_embed(x)
    cos, sin = rope.vision_cos_sin(layout["rot_pos"], cfg.head_dim,
                                   cfg.rope_theta)
    return x, cos, sin

  def run_blocks(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 layout: dict[str, jax.Array], start: int,
                 stop: int | None = None,
                 key_bias: jax.Array | None = None,
                 remat: bool = False) -> jax.Array:
    """Blocks [start, stop) on slots x float[P, D]; ``layout`` needs
    ``window_seg`` and ``frame_seg`` int32[P] (any P that is a multiple of
    the window size: selection inside the tower passes the kept slots).
    ``key_bias`` float32[P]: a soft mask's log per key, or None. ``remat``:
    rematerialise each block in the backward pass (in-tower training)."""
    cfg = self.config
    full = set(cfg.fullatt_block_indexes)
    stop = len(self.blocks) if stop is None else stop
    for i in range(start, stop):
      blk = self.blocks[i]
      seg, window = ((layout["frame_seg"], None) if i in full else
                     (layout["window_seg"], cfg.window_patches))
      if remat:
        # As the LLM's layers (TextModel.run): a pure-function checkpoint
        # over the block's state, so only the block's input is stored.
        gd, st = nnx.split(blk)
        x = jax.checkpoint(
            lambda st, x, cos, sin, seg, kb, gd=gd, window=window:
            nnx.merge(gd, st)(x, cos, sin, seg, window, kb))(
                st, x, cos, sin, seg, key_bias)
      else:
        x = blk(x, cos, sin, seg, window, key_bias)
    return x

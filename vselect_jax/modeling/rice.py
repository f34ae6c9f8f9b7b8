"""RICE vision tower of LLaVA-OneVision-1.5 in Flax NNX (names mirror
lmms-engine's ``RiceTransformerPretrainedModel``).

Axis letters: P patch slots (processor order, padded), S class-token slots
(one per image / frame, padded), M = P / 4 merged tokens, C patch row length
(588), D vision width, N heads, H head dim, E LLM width.

The sequence the blocks see is the P patch slots followed by the S class
slots. Attention is restricted by segment id (one per image / frame), so
where a segment's class token sits does not matter; keeping the patches in
processor order means that after the blocks the first P rows are exactly the
merger's input (each 2x2 group contiguous) and the merged tokens come out in
raster order with no gather. The reference instead interleaves
``[cls, patches]`` per segment and unpacks them off by one for every segment
after the first (README, LLaVA-OneVision-1.5, "Several images"); this tower does what that
code means to do.

The host-side layout comes from ``rice_layout.build_rice_layout``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.config import RiceVisionConfig
from vselect_jax.modeling import rope
from vselect_jax.modeling.vision import (PatchEmbed, PatchMerger,
                                         VisionAttention)
from vselect_jax.modeling.layers import Linear


class LayerNorm(nnx.Module):
  """torch ``nn.LayerNorm``: statistics in float32, result in the input
  dtype; torch's names ``weight`` / ``bias``."""

  def __init__(self, dim: int, *, eps: float, dtype=jnp.float32):
    self.weight = nnx.Param(jnp.ones((dim,), dtype), axes=("vit_embed",))
    self.bias = nnx.Param(jnp.zeros((dim,), dtype), axes=("vit_embed",))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.weight[...].astype(jnp.float32) + \
        self.bias[...].astype(jnp.float32)
    return y.astype(x.dtype)


class RiceMlp(nnx.Module):
  """fc1 -> exact GELU -> fc2."""

  def __init__(self, cfg: RiceVisionConfig, *, dtype, rngs: nnx.Rngs):
    self.fc1 = Linear(cfg.hidden_size, cfg.intermediate_size, use_bias=True,
                      axes=("vit_embed", "vit_mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = Linear(cfg.intermediate_size, cfg.hidden_size, use_bias=True,
                      axes=("vit_mlp", "vit_embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class RiceBlock(nnx.Module):

  def __init__(self, cfg: RiceVisionConfig, *, dtype, rngs: nnx.Rngs):
    # The reference hard-codes eps 1e-5 for the block norms.
    self.norm1 = LayerNorm(cfg.hidden_size, eps=1e-5, dtype=dtype)
    self.norm2 = LayerNorm(cfg.hidden_size, eps=1e-5, dtype=dtype)
    # The Qwen2.5-VL tower's attention, without windows (full attention
    # within each image / frame segment): the same fused qkv, 2-D RoPE.
    self.attn = VisionAttention(cfg, dtype=dtype, rngs=rngs)
    self.mlp = RiceMlp(cfg, dtype=dtype, rngs=rngs)

  def queries_keys(self, x, cos, sin):
    """The attention's q, k [1, L, N, H] for this block's input x [L, D]."""
    return self.attn.queries_keys(self.norm1(x), cos, sin)

  def __call__(self, x, cos, sin, segment_ids):
    x = x + self.attn(self.norm1(x), cos, sin, segment_ids, None)
    return x + self.mlp(self.norm2(x))


class RiceVisionTransformer(nnx.Module):
  """Patch embed + class tokens -> pre-LayerNorm -> blocks -> drop class
  tokens -> merger."""

  def __init__(self, cfg: RiceVisionConfig, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.config = cfg
    self.patch_embed = PatchEmbed(cfg, dtype=dtype, rngs=rngs)  # 14x14 Conv2d
    d = cfg.hidden_size
    # Initialised as the reference: scale * randn, and randn angles.
    self.class_embedding = nnx.Param(
        (d ** -0.5 * jax.random.normal(rngs.params(), (d,))).astype(dtype),
        axes=("vit_embed",))
    self.class_pos_emb = nnx.Param(
        jax.random.normal(rngs.params(), (1, cfg.head_dim // 2)).astype(dtype),
        axes=(None, None))
    self.pre_layernorm = LayerNorm(d, eps=cfg.layer_norm_eps, dtype=dtype)
    self.blocks = nnx.List([RiceBlock(cfg, dtype=dtype, rngs=rngs)
                            for _ in range(cfg.depth)])
    self.merger = PatchMerger(cfg, dtype=dtype, rngs=rngs, norm=LayerNorm(
        cfg.hidden_size, eps=cfg.layer_norm_eps, dtype=dtype))

  def rotary(self, layout: dict[str, jax.Array]
             ) -> tuple[jax.Array, jax.Array]:
    """cos, sin float32[P + S, H]: 2-D RoPE of the patch slots, then the
    learned angles ``class_pos_emb`` for every class slot."""
    cfg = self.config
    cos_p, sin_p = rope.vision_cos_sin(layout["rot_pos"], cfg.head_dim,
                                       cfg.rope_theta)
    angles = self.class_pos_emb[...].astype(jnp.float32)
    emb = jnp.concatenate([angles, angles], axis=-1)      # [1, H]
    s = layout["class_seg"].shape[0]
    cos_c = jnp.broadcast_to(jnp.cos(emb), (s, emb.shape[-1]))
    sin_c = jnp.broadcast_to(jnp.sin(emb), (s, emb.shape[-1]))
    return (jnp.concatenate([cos_p, cos_c]), jnp.concatenate([sin_p, sin_c]))

  @jax.named_scope("vision")
  def __call__(self, pixel_values: jax.Array, layout: dict[str, jax.Array],
               return_last_input: bool = False):
    """Encodes all images/frames of a batch.

    Args:
      pixel_values: float[num_patches_in, C] processor rows (padding rows
        are never read).
      layout: the arrays of ``RiceLayout`` (extra keys are ignored).
      return_last_input: also return the last block's input.

    Returns:
      float[M, E] merged tokens in raster order (concatenated items); rows
      past ``num_merged`` are padding. With ``return_last_input`` also
      (float[P + S, D] input of the last block, patch slots then class
      slots, cos, sin).
    """
    dtype = self.patch_embed.proj.kernel.dtype
    p = layout["patch_index"].shape[0]
    x = jnp.take(pixel_values, layout["patch_index"], axis=0).astype(dtype)
    x = self.patch_embed(x)
    s = layout["class_seg"].shape[0]
    cls = jnp.broadcast_to(self.class_embedding[...].astype(dtype),
                           (s, x.shape[-1]))
    x = self.pre_layernorm(jnp.concatenate([x, cls]))
    seg = jnp.concatenate([layout["frame_seg"], layout["class_seg"]])
    cos, sin = self.rotary(layout)
    last_input = None
    for i, blk in enumerate(self.blocks):
      if i == len(self.blocks) - 1:
        last_input = x
      x = blk(x, cos, sin, seg)
    merged = self.merger(x[:p])  # class tokens dropped
    if return_last_input:
      return merged, (last_input, cos, sin)
    return merged

"""The forward of a selection inside the vision tower (stage IN_VISION).

Blocks [0, j) run on every patch slot; the method scores the 2x2 merge
units there and keeps k per group. Inference (hard): the kept units' patch
slots (4 each, window order, so each window's kept patches stay contiguous
and at most one window long) are gathered into a static bucket of
``Selection.vision_size`` units with their segment ids and rotary tables,
blocks [j, depth) and the merger run on them (window blocks through the
same ``local_block_attention``: a window's kept slots still span at most
one window), and the LLM gets the k merged tokens at their positions with
their original M-RoPE ids, the other visual positions dropped exactly as
for a post-tower selection. Training (relaxed): nothing is dropped; the soft
mask either scales the unit's patch hidden states after block j ("scale")
or enters every later vision block and every LLM layer as the key bias
log(m) ("attn_bias": m -> 0 is dropping).

Shapes: B rows, P patch slots, U = P / 4 units (window order), Pk / Uk
kept slots / units, T positions, Dv vision width, E LLM width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.forward import (Output, gather, place, select_keep,
                                 soft_log)
from vselect_jax.host.vision_layout import VisionLayout
from vselect_jax.methods.base import VISION_BLOCK, Context

def _layout(batch):
  return {k: batch[k] for k in VisionLayout.ARRAY_FIELDS}


def encode_front(model, batch: dict, stop: int):
  """Patch embed and blocks [0, stop) on every row: x float[B, P, Dv],
  cos, sin float32[B, P, H]."""
  def row(pv, lay):
    x, cos, sin = model.visual.embed(pv, lay)
    return model.visual.run_blocks(x, cos, sin, lay, 0, stop), cos, sin
  return jax.vmap(row)(batch["pixel_values"], _layout(batch))


def encode_back(model, x, cos, sin, seg_window, seg_frame, start: int,
                key_bias=None, remat: bool = False):
  """Blocks [start, depth) and the merger on slots x float[B, Ps, Dv]
  (Ps a multiple of the window size): merged float[B, Ps / 4, E] in slot
  order. key_bias: float32[B, Ps] or None. remat: rematerialise each block
  in the backward pass."""
  def row(x, cos, sin, ws, fs, kb):
    lay = {"window_seg": ws, "frame_seg": fs}
    return model.visual.merger(model.visual.run_blocks(
        x, cos, sin, lay, start, key_bias=kb, remat=remat))
  if key_bias is None:
    return jax.vmap(lambda *a: row(*a, None))(x, cos, sin, seg_window,
                                              seg_frame)
  return jax.vmap(row)(x, cos, sin, seg_window, seg_frame, key_bias)


def unit_of_position(batch: dict) -> jax.Array:
  """int32[B, T]: the window-order unit of each visual position (-1 else)."""
  vi = batch["visual_index"]
  unit = jnp.take_along_axis(batch["merged_index"], jnp.maximum(vi, 0),
                             axis=1)
  return jnp.where(vi >= 0, unit, -1).astype(jnp.int32)


def to_units(values: jax.Array, unit_at: jax.Array, num_units: int
             ) -> jax.Array:
  """Per-position values [B, T] -> per-unit [B, U] (0 where no position)."""
  def row(v, u):
    return jnp.zeros(num_units, v.dtype).at[
        jnp.where(u >= 0, u, num_units)].set(v, mode="drop")
  return jax.vmap(row)(values, unit_at)


def forward_in_vision(model, batch: dict, selection, method, options, *,
                      relaxed: bool, remat: bool, vision_grad: bool,
                      with_view: bool, soft_mask: str) -> Output:
  """``forward.forward`` for an IN_VISION method (see the module doc)."""
  cfg = model.visual.config
  unit = cfg.merge_unit
  j = int(method.block(model, dict(options)))
  if not 0 <= j < cfg.depth:
    raise ValueError(f"{method.name}: block must be in [0, {cfg.depth}) "
                     f"(the tower's depth is post-tower selection), got {j}")
  text = model.model
  pos, seg = batch["position_ids"], batch["segment_ids"]
  x_emb = text.embed_tokens(batch["input_ids"])
  visual = batch["visual_index"] >= 0
  xs, cos, sin = encode_front(model, batch, j)
  if not vision_grad:
    xs = jax.lax.stop_gradient(xs)
  b, p, dv = xs.shape
  u = p // unit
  units = xs.reshape(b, u, unit * dv)
  unit_valid = batch["window_seg"][:, ::unit] > 0
  unit_at = unit_of_position(batch)
  group = (batch["visual_item"] if selection.per_image
           else jnp.where(visual, 0, -1))
  ctx = Context(model, batch, x_emb, jnp.zeros(x_emb.shape, x_emb.dtype),
                visual, seg > 0, group, selection.k_token, selection.k_row,
                dict(options), {VISION_BLOCK: (units, unit_valid, unit_at)},
                detach_scorer=not vision_grad)

  if relaxed:
    if method.relax is None:
      raise ValueError(f"method {method.name!r} has no relaxation to train")
    r = method.relax(ctx)
    slot_soft = jnp.repeat(to_units(r.soft, unit_at, u), unit, axis=1)
    bias = None
    if soft_mask == "scale":
      xs = (xs.astype(jnp.float32) * slot_soft[..., None]).astype(xs.dtype)
    else:
      bias = soft_log(slot_soft)
    # The CE gradient reaches the scorer through blocks [j, depth) of every
    # patch: ``remat`` keeps only each block's input (the LLM's layers too).
    merged = encode_back(model, xs, cos, sin, batch["window_seg"],
                         batch["frame_seg"], j, bias, remat=remat)
    merged = jnp.take_along_axis(merged, batch["merged_index"][..., None],
                                 axis=1)                      # raster order
    tokens, _ = place(merged, batch["visual_index"])
    x = jnp.where(visual[..., None], tokens.astype(x_emb.dtype), x_emb)
    key_bias = (None if soft_mask == "scale" else
                jnp.where(visual, soft_log(r.soft), 0.0))
    hidden, kv = text.run(x, pos, seg, remat=remat, key_bias=key_bias)
    return Output(hidden, [(kv, seg)], relaxed=r)

  if selection.size is None or selection.vision_size is None:
    raise ValueError("a hard in-tower selection needs static kept lengths "
                     "(size and vision_size)")
  uk = selection.vision_size
  if (uk * unit) % cfg.window_patches or uk > u:
    raise ValueError(f"vision_size {uk} units must be a multiple of "
                     f"{cfg.window_patches // unit} and at most {u}")
  choice = method.select(ctx)
  selected = choice.selected & visual
  kept_unit = to_units(selected, unit_at, u)                      # [B, U]
  keep_units = jax.vmap(lambda m: jnp.nonzero(m, size=uk, fill_value=-1)[0]
                        )(kept_unit).astype(jnp.int32)            # [B, Uk]
  slots = jnp.where(keep_units[..., None] >= 0,
                    keep_units[..., None] * unit + jnp.arange(unit), -1
                    ).reshape(b, uk * unit)                       # [B, Pk]
  live = slots >= 0
  ws = jnp.where(live, gather(batch["window_seg"], slots), 0)
  fs = jnp.where(live, gather(batch["frame_seg"], slots), 0)
  merged = encode_back(model, gather(xs, slots), gather(cos, slots),
                       gather(sin, slots), ws, fs, j)             # [B, Uk, E]
  # Each selected position's index among its row's kept units.
  rank = jnp.cumsum(kept_unit.astype(jnp.int32), axis=1) - 1
  at = jnp.take_along_axis(rank, jnp.maximum(unit_at, 0), axis=1)
  tokens = jnp.take_along_axis(merged, jnp.maximum(at, 0)[..., None], axis=1)
  x = jnp.where(selected[..., None], tokens.astype(x_emb.dtype), x_emb)
  keep = select_keep(selected, visual, seg > 0, selection.size)
  seg_c = jnp.where(keep >= 0, gather(seg, keep), 0)
  hidden, kv = text.run(gather(x, keep), gather(pos, keep, axis=2), seg_c)
  view = None
  if with_view:
    view = method.view(ctx, choice) if method.view else choice.scores
  return Output(hidden, [(kv, seg_c)], keep, choice.scores, view)

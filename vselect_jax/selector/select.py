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

from vselect_jax.selector import baselines
from vselect_jax.selector import in_llm
from vselect_jax.selector import topk as topk_lib
from vselect_jax.selector import visionzip


def visual_tokens_in_sequence(merged: jax.Array, visual_index: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
  """Gathers merged tokens to their sequence positions.

  Args:
    merged: float[M, E] merged visual tokens of the whole batch (raster
      order), or float[B, M, E] per row (training batches).
    visual_index: int32[B, T] into the batch's (or the row's) tokens.

  Returns:
    tokens float[B, T, E] (zeros at text positions), valid bool[B, T].
  """
  valid = visual_index >= 0
  idx = jnp.maximum(visual_index, 0)
  if merged.ndim == 3:
    tokens = jnp.take_along_axis(merged, idx[..., None], axis=1)
  else:
    tokens = jnp.take(merged, idx, axis=0)
  return jnp.where(valid[..., None], tokens, 0), valid


def encode_images(model, batch: dict) -> jax.Array:
  """The vision tower on a batch: float[M, E] for one batch-wide layout, or
  float[B, M, E] under ``vmap`` for per-row layouts (training batches)."""
  if batch["pixel_values"].ndim == 3:
    keys = ("patch_index", "window_seg", "frame_seg", "rot_pos",
            "merged_index", "merged_valid")
    return jax.vmap(lambda pv, lay: model.visual(pv, lay))(
        batch["pixel_values"], {k: batch[k] for k in keys})
  return model.visual(batch["pixel_values"], batch)


def score(model, merged: jax.Array, visual_index: jax.Array
          ) -> tuple[jax.Array, jax.Array]:
  """Importance scores float32[B, T] (meaningful where valid) and valid."""
  tokens, valid = visual_tokens_in_sequence(merged, visual_index)
  return model.visual.importance_scorer(tokens, valid), valid


def group_topk_mask(scores: jax.Array, group: jax.Array, k_token: jax.Array
                    ) -> jax.Array:
  """Hard top-k within groups, ties broken by the lower position.

  One group per row gives the reference's pooled top-k over all images of a
  sample; one group per image gives per-image budgets. Static shapes: rank
  every token inside its group with two stable sorts (by score, then by
  group), O(T log T).

  Args:
    scores: float32[B, T].
    group: int32[B, T] group id of each visual token, -1 elsewhere.
    k_token: int32[B, T] the k of each token's group (0 elsewhere).

  Returns:
    bool[B, T]: selected visual tokens.
  """
  t = scores.shape[1]

  def row(s, g, k):
    by_score = jnp.argsort(-s, stable=True)        # best first, ties: lower
    order = by_score[jnp.argsort(g[by_score], stable=True)]
    sorted_g = g[order]
    first = jnp.searchsorted(sorted_g, sorted_g, side="left")
    rank = jnp.zeros(t, jnp.int32).at[order].set(
        (jnp.arange(t) - first).astype(jnp.int32))
    return (g >= 0) & (rank < k)

  return jax.vmap(row)(scores, group, k_token)


def select_keep(selected: jax.Array, visual: jax.Array,
                token_valid: jax.Array, size: int) -> jax.Array:
  """Positions to keep, packed to the left.

  Args:
    selected: bool[B, T] kept visual tokens.
    visual: bool[B, T] visual positions.
    token_valid: bool[B, T] non-padding positions.
    size: static output length Tc.

  Returns:
    int32[B, Tc]: original positions in ascending order, -1 as padding.
  """
  keep = token_valid & (~visual | selected)

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


def _pre_llm_selection(model, batch, merged, x, group, k_token, k_row,
                       method: str, seed: int, vision_extra):
  """Selection before the LLM: (selected bool[B, T], scores, soft float32
  [B, T], embeddings float[B, T, D] possibly merged)."""
  visual = batch["visual_index"] >= 0
  if method == "selector":
    scores, _ = score(model, merged, batch["visual_index"])
    selected = group_topk_mask(scores, group, k_token)
    # The soft mask the scorer is trained towards, for visualisation.
    soft = topk_lib.soft_topk(scores, k_row, visual)
  elif method == "random":
    scores = baselines.random_scores(seed, visual.shape)
    selected = group_topk_mask(scores, group, k_token)
    soft = jnp.where(visual, scores, 0.0)
  elif method == "uniform":
    selected = baselines.uniform_mask(group, k_token)
    scores = soft = selected.astype(jnp.float32)
  elif method == "divprune":
    tokens, _ = visual_tokens_in_sequence(merged, batch["visual_index"])
    selected, scores = baselines.divprune_mask(tokens, group, k_token)
    soft = jnp.where(visual, scores, 0.0)
  elif method == "visionzip":
    dominance, keys = visionzip.last_block_signals(model, *vision_extra,
                                                   batch)
    dom, _ = visual_tokens_in_sequence(dominance[:, None], batch[
        "visual_index"])
    keys, _ = visual_tokens_in_sequence(keys, batch["visual_index"])
    scores = soft = dom[..., 0]
    selected, x = visionzip.visionzip_select(scores, keys, x, group, k_token)
  else:
    raise ValueError(f"unknown selection method {method!r}; one of "
                     f"{baselines.METHODS}")
  return selected, scores, soft, x


def compressed_inputs(model, batch: dict, k_token: jax.Array,
                      k_row: jax.Array, size: int, per_image: bool,
                      method: str = "selector", seed: int = 0):
  """Runs the vision tower and a pre-LLM selection, and drops unselected
  tokens. Kept tokens keep the M-RoPE ids of the uncompressed prompt.

  Args:
    model: the ``Qwen25VL`` module.
    batch: prepared arrays (see ``inputs.prepare_batch``), with vision.
    k_token: int32[B, T] the k of each visual token's group.
    k_row: int32[B] total visual tokens kept per row (for the soft mask).
    size: static compressed length Tc.
    per_image: group by image instead of pooling the row.
    method: "selector" (the learned scorer) or a pre-LLM baseline
      ("random", "uniform", "divprune", "visionzip").
    seed: for ``random``.

  Returns:
    A dict: ``embeds`` float[B, Tc, D], ``position_ids`` int32[3, B, Tc],
    ``segment_ids`` int32[B, Tc], ``keep_index`` int32[B, Tc] (rows packed
    left, -1 padding), ``scores`` and ``soft_mask`` float32[B, T].
  """
  extra = None
  if method == "visionzip":
    merged, extra = model.visual(batch["pixel_values"], batch,
                                 return_last_input=True)
  else:
    merged = model.visual(batch["pixel_values"], batch)
  x = model.embed(batch["input_ids"], batch["visual_index"], merged)
  visual = batch["visual_index"] >= 0
  group = batch["visual_item"] if per_image else jnp.where(visual, 0, -1)
  selected, scores, soft, x = _pre_llm_selection(
      model, batch, merged, x, group, k_token, k_row, method, seed, extra)
  keep = select_keep(selected, visual, batch["segment_ids"] > 0, size)
  return {
      "embeds": gather_positions(x, keep),
      "position_ids": gather_positions(batch["position_ids"], keep, axis=2),
      "segment_ids": _kept_segments(batch["segment_ids"], keep),
      "keep_index": keep, "scores": scores, "soft_mask": soft}


def _kept_segments(segment_ids, keep):
  return jnp.where(keep >= 0, gather_positions(segment_ids, keep), 0)


def prune_layer(model) -> int:
  """K for the in-LLM methods: 2 as the reference, or fewer in models with
  fewer layers (at least one layer runs on each side)."""
  n = len(model.model.layers)
  if n < 2:
    raise ValueError("in-LLM pruning needs an LLM with at least 2 layers")
  return min(in_llm.PRUNE_LAYER, n - 1)


def _in_llm_prefill(model, batch, k_token, k_row, size, per_image, method):
  """FastV / DART: layers [0, K) on the full prompt, select, the rest on
  the kept tokens (see ``in_llm``)."""
  if method == "dart" and per_image:
    raise ValueError("dart pools its pivots over the row; per_image is not "
                     "supported")
  merged = model.visual(batch["pixel_values"], batch)
  x = model.embed(batch["input_ids"], batch["visual_index"], merged)
  pos, seg = batch["position_ids"], batch["segment_ids"]
  visual = batch["visual_index"] >= 0
  n_layers = len(model.model.layers)
  k_layer = prune_layer(model)
  h_prev, kv_0 = model.model.run(x, pos, seg, layers=(0, k_layer - 1),
                                 final_norm=False) if k_layer > 1 else (x,
                                                                        None)
  h, kv_1 = model.model.run(h_prev, pos, seg, layers=(k_layer - 1, k_layer),
                            final_norm=False)
  kv_a = kv_1 if kv_0 is None else {
      n: jnp.concatenate([kv_0[n], kv_1[n]]) for n in ("k", "v")}
  q, k = in_llm.layer_qk(model, k_layer - 1, h_prev, pos)
  if method == "fastv":
    scores = jnp.where(visual, in_llm.attention_received(q, k, seg), 0.0)
    group = batch["visual_item"] if per_image else jnp.where(visual, 0, -1)
    selected = group_topk_mask(jnp.where(visual, scores, -jnp.inf), group,
                               k_token)
  else:
    key_norm = jnp.abs(k).sum(axis=(2, 3))
    selected = in_llm.dart_mask(key_norm, model.model.norm(h), visual,
                                seg > 0, k_row)
    scores = jnp.where(visual, key_norm, 0.0)
  keep = select_keep(selected, visual, seg > 0, size)
  seg_c = _kept_segments(seg, keep)
  pos_c = gather_positions(pos, keep, axis=2)
  hidden, kv_b = model.model.run(gather_positions(h, keep), pos_c, seg_c,
                                 layers=(k_layer, n_layers))
  stages = [(kv_a, seg), (kv_b, seg_c)]
  return hidden, stages, keep, scores, scores


def compressed_prefill(model, batch: dict, k_token: jax.Array,
                       k_row: jax.Array, size: int, per_image: bool,
                       method: str = "selector", seed: int = 0):
  """The prompt pass with selection, for any method.

  Returns:
    hidden float[B, Tc, D] (after the final norm), stages: a list of
    ({"k", "v": [layers, B, len, K, H]}, segment_ids int32[B, len]) for
    consecutive layer ranges (one for pre-LLM methods; FastV and DART keep
    the full prompt in the layers below K), keep_index int32[B, Tc],
    scores and soft_mask float32[B, T].
  """
  if method in in_llm.METHODS:
    return _in_llm_prefill(model, batch, k_token, k_row, size, per_image,
                           method)
  c = compressed_inputs(model, batch, k_token, k_row, size, per_image,
                        method, seed)
  hidden, kv = model.model.run(c["embeds"], c["position_ids"],
                               c["segment_ids"])
  return (hidden, [(kv, c["segment_ids"])], c["keep_index"], c["scores"],
          c["soft_mask"])


def compressed_forward(model, batch: dict, k_token: jax.Array,
                       k_row: jax.Array, size: int, per_image: bool,
                       method: str = "selector", seed: int = 0):
  """Inference with selection: unselected visual tokens are dropped (before
  the LLM, or inside it for FastV / DART).

  Returns:
    logits float32[B, Tc, V], keep_index int32[B, Tc], scores float32[B, T],
    soft_mask float32[B, T].
  """
  hidden, _, keep, scores, soft = compressed_prefill(
      model, batch, k_token, k_row, size, per_image, method, seed)
  return model.head(hidden), keep, scores, soft


def full_forward(model, batch: dict, *, remat: bool = True,
                 vision_grad: bool = False) -> jax.Array:
  """All tokens through the model (backbone training): float32[B, T, V].

  ``vision_grad``: let gradients into the vision tower and merger."""
  merged = encode_images(model, batch)
  if not vision_grad:
    merged = jax.lax.stop_gradient(merged)
  tokens, visual = visual_tokens_in_sequence(merged, batch["visual_index"])
  x = model.model.embed_tokens(batch["input_ids"])
  x = jnp.where(visual[..., None], tokens.astype(x.dtype), x)
  hidden = model.model(x, batch["position_ids"], batch["segment_ids"],
                       remat=remat)
  return model.head(hidden)


def training_forward(model, batch: dict, k_row: jax.Array, *,
                     remat: bool = True, vision_grad: bool = False):
  """Training path: the soft mask scales the visual tokens; none dropped.

  Args:
    model: the ``Qwen25VL`` module.
    batch: prepared arrays with vision; ``segment_ids`` may hold several
      packed samples per row.
    k_row: int32[B] visual tokens to keep per row (the pooled top-k).
    remat: rematerialise LLM layers in the backward pass.
    vision_grad: let gradients into the vision tower and merger (off: they
      are frozen and their output is stop-gradiented).

  Returns:
    logits float32[B, T, V], soft float32[B, T], hard float32[B, T],
    bce float32 scalar (mean over valid visual tokens, logs clamped at -100).
  """
  merged = encode_images(model, batch)
  if not vision_grad:
    merged = jax.lax.stop_gradient(merged)  # frozen
  scores, visual = score(model, merged, batch["visual_index"])
  soft = topk_lib.soft_topk(scores, k_row, visual)
  k_token = jnp.where(visual, k_row[:, None], 0)
  hard = group_topk_mask(jax.lax.stop_gradient(scores),
                         jnp.where(visual, 0, -1), k_token).astype(jnp.float32)
  tokens, _ = visual_tokens_in_sequence(merged, batch["visual_index"])
  x = model.model.embed_tokens(batch["input_ids"])
  scaled = (tokens.astype(jnp.float32) * soft[..., None]).astype(x.dtype)
  x = jnp.where(visual[..., None], scaled, x)
  hidden = model.model(x, batch["position_ids"], batch["segment_ids"],
                       remat=remat)
  bce = topk_lib.selection_bce(soft, hard, visual)
  return model.head(hidden), soft, hard, bce

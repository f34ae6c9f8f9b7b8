"""Greedy decoding with a KV cache, with or without token selection.

The prompt (compressed or not) is prefilled once into a cache of
``prompt bucket + max_new_tokens`` slots; each step then feeds one token per
row. Decode positions continue from the *uncompressed* prompt: the next
M-RoPE id is max(prompt position ids) + 1 + step on all three axes, as
HF's ``generate`` does through ``rope_deltas`` (and the reference relies
on), whatever was dropped. Rows stop independently at EOS and are padded.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vselect_jax.selector import select


def _prompt(model, batch, has_vision, selection):
  """Embeddings, positions and segments of the prompt the LLM sees."""
  if selection is not None:
    k_token, k_row, size, per_image, method, seed = selection
    c = select.compressed_inputs(model, batch, k_token, k_row, size,
                                 per_image, method, seed)
    return c["embeds"], c["position_ids"], c["segment_ids"]
  merged = model.visual(batch["pixel_values"], batch) if has_vision else None
  x = model.embed(batch["input_ids"], batch["visual_index"], merged)
  return x, batch["position_ids"], batch["segment_ids"]


def greedy_generate(model, batch: dict, next_position: jax.Array,
                    eos_token_id: jax.Array, pad_token_id: jax.Array, *,
                    max_new_tokens: int, has_vision: bool,
                    selection=None) -> tuple[jax.Array, jax.Array]:
  """Greedy decoding (jit-compatible; all shapes static).

  Args:
    model: the ``Qwen25VL`` module.
    batch: prepared arrays (``inputs.prepare_batch``).
    next_position: int32[B] max M-RoPE id of each uncompressed prompt + 1.
    eos_token_id: int32 scalar (-1: none); pad_token_id: int32 scalar.
    max_new_tokens: static number of decode steps.
    has_vision: static.
    selection: None, or (k_token, k_row, size, per_image, method, seed)
      for budgets (method and seed static).

  Returns:
    tokens int32[B, max_new_tokens] (pad after EOS) and the number of steps
    taken (all rows done, or max_new_tokens).
  """
  x, pos, seg = _prompt(model, batch, has_vision, selection)
  b, t = seg.shape
  hidden, kv = model.model.run(x, pos, seg)
  last = t - 1 - jnp.argmax((seg > 0)[:, ::-1], axis=1)   # last real token
  logits = model.head(jnp.take_along_axis(hidden, last[:, None, None], 1))
  first = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)

  pad = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0), (0, 0))
  cache = {"k": jnp.pad(kv["k"], pad), "v": jnp.pad(kv["v"], pad),
           "segment_ids": jnp.pad(seg, ((0, 0), (0, max_new_tokens)))}
  tokens = jnp.full((b, max_new_tokens), pad_token_id, jnp.int32)
  tokens = tokens.at[:, 0].set(first)
  done = first == eos_token_id

  def cond(state):
    step, _, _, done = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, tokens, cache, done = state
    prev = tokens[:, step - 1]
    index = t + step - 1
    cache = dict(cache)
    cache["segment_ids"] = jax.lax.dynamic_update_slice(
        cache["segment_ids"], jnp.ones((b, 1), jnp.int32), (0, index))
    cache["index"] = index
    p = jnp.broadcast_to((next_position + step - 1)[None, :, None], (3, b, 1))
    emb = model.model.embed_tokens(prev[:, None])
    h, kv = model.model.run(emb, p, jnp.ones((b, 1), jnp.int32), cache=cache)
    nxt = jnp.argmax(model.head(h)[:, 0], axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, pad_token_id, nxt)
    tokens = tokens.at[:, step].set(nxt)
    done = done | (nxt == eos_token_id)
    cache = {"k": kv["k"], "v": kv["v"], "segment_ids": cache["segment_ids"]}
    return step + 1, tokens, cache, done

  init = (jnp.int32(1), tokens, cache, done)
  steps, tokens, _, _ = jax.lax.while_loop(cond, body, init)
  return tokens, steps

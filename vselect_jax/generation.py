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

from vselect_jax.forward import Output, Selection, forward


def prefill(model, batch: dict, selection: Selection | None = None, *,
            max_new_tokens: int, with_view: bool = False
            ) -> tuple[jax.Array, list, Output]:
  """Prompt pass: the first new token and a KV cache with room for the rest.

  Args:
    model: the VLM module.
    batch: device arrays (the per-row format of ``host.rows``).
    selection: None, or the tokens to keep (``forward.Selection``).
    max_new_tokens: static; the cache gets this many free slots.
    with_view: also compute the method's picture map.

  Returns:
    first int32[B] (greedy), the cache: one stage per consecutive range of
    layers (two for methods that prune inside the LLM), each {"k", "v":
    [layers, B, T_s + n, K, H], "segment_ids": int32[B, T_s + n]} where T_s
    is that stage's prompt length, and the forward's ``Output``.
  """
  out = forward(model, batch, selection, with_view=with_view)
  seg = out.stages[-1][1]
  t = seg.shape[1]
  last = t - 1 - jnp.argmax((seg > 0)[:, ::-1], axis=1)   # last real token
  logits = model.head(jnp.take_along_axis(out.hidden, last[:, None, None], 1))
  first = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
  pad = ((0, 0), (0, 0), (0, max_new_tokens), (0, 0), (0, 0))
  cache = [{"k": jnp.pad(kv["k"], pad), "v": jnp.pad(kv["v"], pad),
            "segment_ids": jnp.pad(s, ((0, 0), (0, max_new_tokens)))}
           for kv, s in out.stages]
  return first, cache, out


def decode(model, first: jax.Array, cache: list, next_position: jax.Array,
           eos_token_id: jax.Array, pad_token_id: jax.Array, *,
           max_new_tokens: int) -> tuple[jax.Array, jax.Array]:
  """Greedy steps after ``prefill`` until every row hit EOS.

  Args:
    first: int32[B] from ``prefill``; cache: its cache stages.
    next_position: int32[B] max M-RoPE id of each uncompressed prompt + 1.
    eos_token_id: int32 scalar (-1: none); pad_token_id: int32 scalar.
    max_new_tokens: static, as given to ``prefill``.

  Returns:
    tokens int32[B, max_new_tokens] (pad after EOS) and the number of steps
    taken (all rows done, or max_new_tokens).
  """
  b = first.shape[0]
  bounds, start = [], 0
  for c in cache:  # static layer ranges from the stage shapes
    bounds.append((start, start + c["k"].shape[0]))
    start += c["k"].shape[0]
  tokens = jnp.full((b, max_new_tokens), pad_token_id, jnp.int32)
  tokens = tokens.at[:, 0].set(first)
  done = first == eos_token_id

  def cond(state):
    step, _, _, done = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, tokens, cache, done = state
    prev = tokens[:, step - 1]
    p = jnp.broadcast_to((next_position + step - 1)[None, :, None], (3, b, 1))
    h = model.model.embed_tokens(prev[:, None])
    new_cache = []
    for i, (c, layers) in enumerate(zip(cache, bounds)):
      index = c["segment_ids"].shape[1] - max_new_tokens + step - 1
      segs = jax.lax.dynamic_update_slice(
          c["segment_ids"], jnp.ones((b, 1), jnp.int32), (0, index))
      h, kv = model.model.run(
          h, p, jnp.ones((b, 1), jnp.int32),
          cache={"k": c["k"], "v": c["v"], "segment_ids": segs,
                 "index": index},
          layers=layers, final_norm=i == len(cache) - 1)
      new_cache.append({"k": kv["k"], "v": kv["v"], "segment_ids": segs})
    nxt = jnp.argmax(model.head(h)[:, 0], axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, pad_token_id, nxt)
    tokens = tokens.at[:, step].set(nxt)
    done = done | (nxt == eos_token_id)
    return step + 1, tokens, new_cache, done

  init = (jnp.int32(1), tokens, cache, done)
  steps, tokens, _, _ = jax.lax.while_loop(cond, body, init)
  return tokens, steps

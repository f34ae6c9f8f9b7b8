"""Attention with segment ids: one entry point, backend-specific kernels.

Shapes: B batch, T queries, S keys, N query heads, K key/value heads
(N % K == 0, grouped-query attention), H head dim.

Masking is expressed with segment ids: query i attends key j iff their
segment ids are equal (and, with ``causal``, j <= i). Segment id 0 marks
padding; padding queries attend padding keys, which keeps every softmax row
non-empty and finite (their outputs are discarded by the caller).

Implementations:
* ``"reference"``: dense masked softmax in float32 (CPU, tests, any backend).
* ``"blockwise"``: the same math with an online softmax over key blocks, never
  materialising the logits; chosen by "auto" for long sequences off-GPU.
* ``"xla"`` / ``"cudnn"``: ``jax.nn.dot_product_attention`` with the boolean
  mask (GPU; cuDNN needs bf16/fp16 inputs).
* ``"splash"``: the Pallas TPU splash-attention kernel with segment ids
  (``"splash_interpret"`` runs it in interpret mode, for CPU tests).
* ``"auto"``: cuDNN on GPU for 16-bit inputs; splash on TPU and blockwise
  elsewhere for long sequences; the dense reference for short ones.

A key bias (``kv_bias`` float32[B, S], added to every logit of that key;
-inf-like values drop the key) is how a soft mask enters attention
(``soft_mask="attn_bias"``: log(m) per token). The reference, blockwise and
xla/cudnn paths take it; splash has no bias input and falls back to
blockwise when a bias is given.

``attention_received`` is the statistic that attention-based token pruning
reads (FastV in the LLM, VisionZip in the vision tower): the softmax mass
each key receives, computed blockwise from the layer's q and k.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def segment_mask(q_seg: jax.Array, kv_seg: jax.Array, causal: bool
                 ) -> jax.Array:
  """bool[B, T, S]: which keys each query may attend."""
  mask = q_seg[:, :, None] == kv_seg[:, None, :]
  if causal:
    t, s = q_seg.shape[1], kv_seg.shape[1]
    # Queries are the last T of the S positions (prefill: T == S).
    qpos = jnp.arange(t)[:, None] + (s - t)
    mask = mask & (jnp.arange(s)[None, :] <= qpos)[None]
  return mask


def _reference(q, k, v, mask, scale, kv_bias=None):
  b, t, n, h = q.shape
  kh = k.shape[2]
  g = n // kh
  q = q.reshape(b, t, kh, g, h)
  logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k,
                      preferred_element_type=jnp.float32) * scale
  if kv_bias is not None:
    logits = logits + kv_bias.astype(jnp.float32)[:, None, None, None, :]
  logits = jnp.where(mask[:, None, None], logits, _MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v,
                   preferred_element_type=jnp.float32)
  return out.reshape(b, t, n, h).astype(q.dtype)


def _blockwise(q, k, v, q_seg, kv_seg, causal, scale, block, kv_bias=None):
  """Online-softmax attention over key blocks (flash-attention style).

  Never materialises the [T, S] logits: on the CPU this is several times
  faster than the dense form for long sequences (memory bound), with the
  same float32 math up to summation order. With ``causal`` and T == S the
  queries are blocked too and each query block visits only the key blocks at
  or before it, halving the work.
  """
  b, t, n, h = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = n // kh
  pad = -s % block
  bias = (jnp.zeros((b, s), jnp.float32) if kv_bias is None
          else kv_bias.astype(jnp.float32))
  if pad:
    k = jnp.pad(k, ((0, 0), (0, pad), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pad), (0, 0), (0, 0)))
    kv_seg = jnp.pad(kv_seg, ((0, 0), (0, pad)), constant_values=-1)
    bias = jnp.pad(bias, ((0, 0), (0, pad)))
  nb = (s + pad) // block
  # Heads-first layouts so each step is two plain batched matmuls.
  qg = (q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4)
        .astype(jnp.float32) * scale)                          # [B,K,G,T,H]
  kb = k.reshape(b, nb, block, kh, h).transpose(1, 0, 3, 2, 4)  # [nb,B,K,S,H]
  vb = v.reshape(b, nb, block, kh, h).transpose(1, 0, 3, 2, 4)
  sb = kv_seg.reshape(b, nb, block).swapaxes(0, 1)
  bb = bias.reshape(b, nb, block).swapaxes(0, 1)
  qpos = jnp.arange(t) + (s - t)

  def attend(qg, qs, qp, nblocks):
    """Queries qg [B,K,G,Tq,H] over key blocks 0..nblocks-1."""
    tq = qg.shape[3]

    def step(carry, xs):
      m, total, acc = carry
      kj, vj, sj, bj, j = xs
      logits = jnp.einsum("BKGTH,BKSH->BKGTS", qg, kj,
                          preferred_element_type=jnp.float32)
      if kv_bias is not None:
        logits = logits + bj[:, None, None, None, :]
      mask = qs[:, :, None] == sj[:, None, :]
      if causal:
        kpos = j * block + jnp.arange(block)
        mask = mask & (kpos[None, :] <= qp[:, None])[None]
      mask = mask[:, None, None]
      logits = jnp.where(mask, logits, _MASK_VALUE)
      m_new = jnp.maximum(m, logits.max(-1))
      p = jnp.where(mask, jnp.exp(logits - m_new[..., None]), 0.0)
      corr = jnp.exp(m - m_new)
      total = total * corr + p.sum(-1)
      acc = acc * corr[..., None] + jnp.einsum(
          "BKGTS,BKSH->BKGTH", p, vj.astype(jnp.float32),
          preferred_element_type=jnp.float32)
      return (m_new, total, acc), None

    init = (jnp.full((b, kh, g, tq), _MASK_VALUE, jnp.float32),
            jnp.zeros((b, kh, g, tq), jnp.float32),
            jnp.zeros((b, kh, g, tq, h), jnp.float32))
    xs = (kb[:nblocks], vb[:nblocks], sb[:nblocks], bb[:nblocks],
          jnp.arange(nblocks))
    (_, total, acc), _ = jax.lax.scan(step, init, xs)
    return acc / jnp.maximum(total, 1e-30)[..., None]

  if causal and t == s and t % block == 0:
    out = jnp.concatenate([
        attend(qg[:, :, :, i * block:(i + 1) * block],
               q_seg[:, i * block:(i + 1) * block],
               qpos[i * block:(i + 1) * block], i + 1)
        for i in range(t // block)], axis=3)
  else:
    out = attend(qg, q_seg, qpos, nb)
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h).astype(q.dtype)


def _splash(q, k, v, q_seg, kv_seg, causal, scale, interpret=False):
  """Pallas splash attention (TPU) with segment ids.

  Sequences are padded to the 128-row blocks and the head dim to a multiple
  of 128 (zero columns change neither q.k nor the kept output columns);
  padded positions get their own segment so no row is empty. Runs on CPU in
  ``interpret`` mode for tests. Single-device: under a sharded mesh it must
  be wrapped in ``shard_map`` by the caller.
  """
  from jax.experimental.pallas.ops.tpu.splash_attention import (
      splash_attention_kernel as sk, splash_attention_mask as sm)
  b, t, n, h = q.shape
  s, kh = k.shape[1], k.shape[2]
  blk = 128
  tp, sp, hp = -t % blk, -s % blk, -h % blk
  q = jnp.pad(q * jnp.asarray(scale, q.dtype),
              ((0, 0), (0, tp), (0, 0), (0, hp)))
  k = jnp.pad(jnp.repeat(k, n // kh, axis=2), ((0, 0), (0, sp), (0, 0),
                                               (0, hp)))
  v = jnp.pad(jnp.repeat(v, n // kh, axis=2), ((0, 0), (0, sp), (0, 0),
                                               (0, hp)))
  pad_id = -2  # padded rows attend padded keys only
  qs = jnp.pad(q_seg, ((0, 0), (0, tp)), constant_values=pad_id)
  ks = jnp.pad(kv_seg, ((0, 0), (0, sp)), constant_values=pad_id)
  shape = (t + tp, s + sp)
  if causal:
    # Queries are the last T positions; with T == S this is the plain mask.
    base = sm.CausalMask(shape, offset=s - t)
  else:
    base = sm.FullMask(shape)
  sizes = sk.BlockSizes(block_q=blk, block_kv=blk, block_kv_compute=blk,
                        block_q_dkv=blk, block_kv_dkv=blk,
                        block_kv_dkv_compute=blk, block_q_dq=blk,
                        block_kv_dq=blk)
  kernel = sk.make_splash_mha(sm.MultiHeadMask([base] * n), head_shards=1,
                              q_seq_shards=1, block_sizes=sizes,
                              interpret=interpret)
  tr = lambda x: x.transpose(0, 2, 1, 3)
  out = jax.vmap(lambda a, bb, c, sq, sk_: kernel(
      a, bb, c, segment_ids=sk.SegmentIds(q=sq, kv=sk_)))(
          tr(q), tr(k), tr(v), qs, ks)
  return tr(out)[:, :t, :, :h].astype(q.dtype)


# Above this many keys the CPU/TPU fallback switches to the blockwise form.
BLOCKWISE_MIN_KEYS = 1024
BLOCKWISE_BLOCK = 512


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                          causal: bool, scale: float | None = None,
                          implementation: str = "auto",
                          kv_bias: jax.Array | None = None) -> jax.Array:
  """Softmax attention restricted to equal segment ids.

  Args:
    q: float[B, T, N, H]; k, v: float[B, S, K, H].
    q_segment_ids: int32[B, T]; kv_segment_ids: int32[B, S].
    causal: also restrict to keys at or before the query position.
    scale: logit scale, default H ** -0.5.
    implementation: "auto", "reference", "blockwise", "splash",
      "splash_interpret", "xla" or "cudnn".
    kv_bias: float[B, S] added to the logits of each key (a soft mask's
      log(m)), or None.

  Returns:
    float[B, T, N, H] in q's dtype.
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  if implementation == "auto":
    backend = jax.default_backend()
    if backend == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16):
      implementation = "cudnn"
    elif backend == "tpu" and k.shape[1] > BLOCKWISE_MIN_KEYS:
      implementation = "splash"
    elif k.shape[1] > BLOCKWISE_MIN_KEYS:
      implementation = "blockwise"
    else:
      implementation = "reference"
  if kv_bias is not None and implementation in ("splash",
                                                 "splash_interpret"):
    # The splash kernel has no additive-bias input; the blockwise form has
    # the same memory profile (only the soft-mask training path gets here).
    implementation = "blockwise"
  if implementation == "blockwise":
    return _blockwise(q, k, v, q_segment_ids, kv_segment_ids, causal, scale,
                      BLOCKWISE_BLOCK, kv_bias)
  if implementation in ("splash", "splash_interpret"):
    return _splash(q, k, v, q_segment_ids, kv_segment_ids, causal, scale,
                   interpret=implementation == "splash_interpret")
  mask = segment_mask(q_segment_ids, kv_segment_ids, causal)
  if implementation == "reference":
    return _reference(q, k, v, mask, scale, kv_bias)
  if implementation in ("xla", "cudnn"):
    # The mask is given per head: jax's cuDNN path reshapes a head-broadcast
    # mask wrongly under vmap (the vision tower is vmapped over packed rows).
    b, t, n, _ = q.shape
    mask = jnp.broadcast_to(mask[:, None], (b, n, t, k.shape[1]))
    bias = None
    if kv_bias is not None:  # a dense [B, N, T, S] bias, as jax takes it
      bias = jnp.broadcast_to(kv_bias.astype(q.dtype)[:, None, None, :],
                              (b, n, t, k.shape[1]))
    return jax.nn.dot_product_attention(
        q, k, v, bias=bias, mask=mask, scale=scale,
        implementation=implementation)
  raise ValueError(f"unknown attention implementation {implementation!r}")


def cached_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                     q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                     index: jax.Array, scale: float | None = None
                     ) -> jax.Array:
  """Queries at cache slots index..index+T-1 over a KV cache, causally.

  Args:
    q: float[B, T, N, H]; k, v: float[B, C, K, H] (the cache, already holding
      the new tokens); q_segment_ids int32[B, T]; kv_segment_ids int32[B, C]
      (0 for unwritten or padding slots); index: int32 scalar.

  Returns:
    float[B, T, N, H].
  """
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  t, c = q.shape[1], k.shape[1]
  qpos = index + jnp.arange(t)
  mask = ((q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]) &
          (jnp.arange(c)[None, None, :] <= qpos[None, :, None]))
  return _reference(q, k, v, mask, scale)


def local_block_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          segment_ids: jax.Array, block: int,
                          scale: float | None = None,
                          implementation: str = "auto",
                          kv_bias: jax.Array | None = None) -> jax.Array:
  """Attention within segments that each span at most ``block`` consecutive
  positions (the vision windows), in O(T * 3 * block) instead of O(T^2).

  A segment no longer than ``block`` that contains a query in block b lies
  within blocks b-1, b and b+1, so each query block attends to those three
  key blocks, masked by segment id. Static shapes, no per-window gathers.

  Args:
    q, k, v: float[B, T, N, H] with T a multiple of ``block``.
    segment_ids: int32[B, T] (0 = padding).
    block: the maximal segment length.
    implementation: as ``dot_product_attention`` (per block of queries;
      "auto" is the dense reference on CPU/TPU, cuDNN on GPU in bf16).
    kv_bias: float[B, T] per-key logit bias, or None.

  Returns:
    float[B, T, N, H].
  """
  b, t, n, h = q.shape
  if t % block:
    raise ValueError(f"length {t} is not a multiple of the block {block}")
  nb = t // block

  def neighbours(x):  # [B, T, ...] -> [B, nb, 3 * block, ...]
    x = x.reshape(b, nb, block, *x.shape[2:])
    pad = [(0, 0)] * x.ndim
    pad[1] = (1, 1)
    xp = jnp.pad(x, pad)
    return jnp.concatenate([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], axis=2)

  kb = neighbours(k).reshape(b * nb, 3 * block, n, h)
  vb = neighbours(v).reshape(b * nb, 3 * block, n, h)
  # Keys borrowed from outside the sequence get segment -1: never matched.
  seg_k = neighbours(segment_ids + 1) - 1
  qb = q.reshape(b * nb, block, n, h)
  seg_q = segment_ids.reshape(b * nb, block)
  bias = (None if kv_bias is None else
          neighbours(kv_bias).reshape(b * nb, 3 * block))
  out = dot_product_attention(
      qb, kb, vb, q_segment_ids=seg_q,
      kv_segment_ids=seg_k.reshape(b * nb, 3 * block), causal=False,
      scale=scale, implementation=implementation, kv_bias=bias)
  return out.reshape(b, t, n, h)


def attention_received(q: jax.Array, k: jax.Array, segment_ids: jax.Array,
                       chunk: int = 64, causal: bool = True) -> jax.Array:
  """Softmax attention received per key, mean over heads, summed over
  queries of the same segment (causal or not).

  Computed per chunk of queries so that [heads, T, T] is never held.

  Args:
    q: float32[B, T, N, H]; k: float32[B, T, K, H] (N a multiple of K).
    segment_ids: int32[B, T] (0 = padding).

  Returns:
    float32[B, T].
  """
  b, t, n, h = q.shape
  kv = k.shape[2]
  chunk = min(chunk, t)
  if t % chunk:
    raise ValueError(f"length {t} is not a multiple of the chunk {chunk}")
  qg = q.reshape(b, t, kv, n // kv, h) * (h ** -0.5)
  pos = jnp.arange(t)

  def body(c, total):
    i0 = c * chunk
    qc = jax.lax.dynamic_slice_in_dim(qg, i0, chunk, axis=1)
    sq = jax.lax.dynamic_slice_in_dim(segment_ids, i0, chunk, axis=1)
    logits = jnp.einsum("bckgh,bskh->bkgcs", qc, k)
    mask = (sq[:, :, None] == segment_ids[:, None, :]) & (sq > 0)[..., None]
    if causal:
      mask = mask & (pos[None, None, :] <=
                     (i0 + jnp.arange(chunk))[None, :, None])
    logits = jnp.where(mask[:, None, None], logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    p = jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0))
    p = p / jnp.maximum(p.sum(-1, keepdims=True), 1e-30)
    return total + p.mean(axis=(1, 2)).sum(axis=1)

  return jax.lax.fori_loop(0, t // chunk, body, jnp.zeros((b, t), jnp.float32))

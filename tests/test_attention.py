"""Attention implementations agree with the dense reference."""
import numpy as np
import pytest
import jax.numpy as jnp

from vselect_jax.modeling import attention


def _inputs(rng, b=2, t=300, n=4, kh=2, h=16):
  q = rng.standard_normal((b, t, n, h)).astype(np.float32)
  k = rng.standard_normal((b, t, kh, h)).astype(np.float32)
  v = rng.standard_normal((b, t, kh, h)).astype(np.float32)
  seg = np.sort(rng.integers(0, 4, (b, t)), axis=1).astype(np.int32)
  return q, k, v, seg


@pytest.mark.parametrize("causal,t", [(False, 300), (True, 300), (True, 256)])
def test_blockwise_equals_dense(causal, t):
  """t=300: padded last block; t=256 causal: the query-blocked path."""
  q, k, v, seg = _inputs(np.random.default_rng(0), t=t)
  kw = dict(q_segment_ids=seg, kv_segment_ids=seg, causal=causal)
  dense = attention.dot_product_attention(q, k, v, implementation="reference",
                                          **kw)
  # Block 64 on 300 keys: padding in the last block, segments across blocks.
  out = attention._blockwise(jnp.asarray(q), k, v, jnp.asarray(seg), seg,
                             causal, 16 ** -0.5, 64)
  np.testing.assert_allclose(out, dense, atol=2e-6, rtol=0)


def test_local_block_attention_equals_dense_window_mask():
  rng = np.random.default_rng(1)
  q, k, v, _ = _inputs(rng, b=1, t=256, n=2, kh=2)
  # Windows of <= 64 slots that straddle block boundaries.
  lengths = [30, 64, 50, 64, 20, 28]
  seg = np.repeat(np.arange(1, 7), lengths)[None].astype(np.int32)
  dense = attention.dot_product_attention(
      q, k, v, q_segment_ids=seg, kv_segment_ids=seg, causal=False,
      implementation="reference")
  local = attention.local_block_attention(q, k, v, segment_ids=seg, block=64)
  np.testing.assert_allclose(local, dense, atol=2e-6, rtol=0)


def test_unknown_implementation_is_refused():
  q, k, v, seg = _inputs(np.random.default_rng(2), t=8)
  with pytest.raises(ValueError, match="unknown attention"):
    attention.dot_product_attention(q, k, v, q_segment_ids=seg,
                                    kv_segment_ids=seg, causal=False,
                                    implementation="magic")


@pytest.mark.parametrize("causal", [False, True])
def test_splash_kernel_in_interpret_mode_equals_dense(causal):
  """The TPU kernel, run by the Pallas interpreter on CPU: odd lengths (padded
  to 128-blocks), head dim 80 (padded to 128), GQA, several segments."""
  rng = np.random.default_rng(3)
  q, k, v, seg = _inputs(rng, b=1, t=200, n=2, kh=1, h=80)
  seg = seg + 1
  kw = dict(q_segment_ids=seg, kv_segment_ids=seg, causal=causal)
  dense = attention.dot_product_attention(q, k, v, implementation="reference",
                                          **kw)
  splash = attention.dot_product_attention(
      q, k, v, implementation="splash_interpret", **kw)
  np.testing.assert_allclose(splash, dense, atol=1e-5, rtol=0)

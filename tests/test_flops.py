"""Step FLOPs: the LLM's linear FLOPs are 2 x tokens x its matmul weights."""
import jax
import numpy as np
from flax import nnx

from tests import hf_tiny
from vselect_jax.config import VLMConfig
from vselect_jax.modeling.vlm import Qwen25VL
from vselect_jax.training import flops


def test_llm_linear_flops_count_every_weight():
  cfg = VLMConfig.from_hf_dict(hf_tiny.make_config("untied_w112").to_dict())
  model = nnx.eval_shape(lambda: Qwen25VL(cfg, rngs=nnx.Rngs(0)))
  weights = 0
  for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name = "/".join(map(str, path))
    if ("model/layers" in name and name.endswith("kernel")) or (
        name.startswith("lm_head")):
      weights += int(np.prod(leaf.value.shape))
  tokens = 37
  assert flops.llm_forward_flops(cfg, tokens, attended=0) == 2 * tokens * (
      weights)
  # Attention adds 2 matmuls of q-width per attended key and layer.
  t = cfg.text
  extra = flops.llm_forward_flops(cfg, tokens, attended=5) - (
      flops.llm_forward_flops(cfg, tokens, attended=0))
  assert extra == tokens * t.num_hidden_layers * 4 * 5 * (
      t.num_attention_heads * t.head_dim)


def test_peaks():
  assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
  assert flops.peak_flops("TPU v5 lite") == 197e12
  assert flops.peak_flops(jax.devices("cpu")[0].device_kind) is None

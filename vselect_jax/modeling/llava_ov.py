"""LLaVA-OneVision-1.5 (RICE vision tower + Qwen3 LLM + head) as one NNX
module, with the same attributes as ``vlm.Qwen25VL``.

Attribute paths mirror the hub checkpoint as lmms-engine saves it:
``visual.*`` (RICE), ``model.*`` (the Qwen3 LLM, ``TextModel`` with
``qk_norm`` and 1-D RoPE), ``lm_head`` (absent when tied), and the
VisionSelector scorer at ``visual.importance_scorer`` on the merger output,
as in the reference's OV selector (``model.model.visual.importance_scorer``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.config import LlavaOV15Config
from vselect_jax.modeling.layers import Linear
from vselect_jax.modeling.rice import RiceVisionTransformer
from vselect_jax.modeling.text import TextModel
from vselect_jax.modeling.vlm import Qwen25VL
from vselect_jax.selector.scorer import ImportanceScorer


class LlavaOneVision15(nnx.Module):

  def __init__(self, cfg: LlavaOV15Config, *, dtype=jnp.float32,
               rngs: nnx.Rngs):
    if cfg.text.mrope_section is not None or not cfg.text.qk_norm:
      raise ValueError("LLaVA-OV-1.5's LLM is Qwen3: 1-D RoPE "
                       "(mrope_section None) and qk_norm")
    self.config = cfg
    self.visual = RiceVisionTransformer(cfg.vision, dtype=dtype, rngs=rngs)
    self.visual.importance_scorer = ImportanceScorer(
        cfg.text.hidden_size, dtype=dtype, rngs=rngs)
    self.model = TextModel(cfg.text, dtype=dtype, rngs=rngs)
    self.lm_head = (None if cfg.text.tie_word_embeddings else
                    Linear(cfg.text.hidden_size, cfg.text.vocab_size,
                           use_bias=False, axes=("embed", "vocab"),
                           dtype=dtype, rngs=rngs))

  # The (tied) head is the same as for Qwen2.5-VL.
  head = Qwen25VL.head

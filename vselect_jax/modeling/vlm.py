"""The Qwen2.5-VL model (vision tower + LLM + head) as one NNX module.

Attribute paths mirror the HF hub checkpoint: ``visual.*``, ``model.*``
(the LLM), ``lm_head`` (absent when tied to ``model.embed_tokens``), and the
VisionSelector scorer at ``visual.importance_scorer`` as in the released
VisionSelector checkpoints, and the in-tower scorer at
``visual.block_scorer`` (``{q,k}_proj.{weight,bias}``, input width
4 x the vision width; absent from HF checkpoints, freshly initialised), and
Dynamic-Qwen's image predictor at ``model.image_score_predictor`` (the
reference's state-dict path; fresh when absent).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vselect_jax.config import VLMConfig
from vselect_jax.modeling.layers import Linear
from vselect_jax.modeling.text import TextModel
from vselect_jax.modeling.vision import VisionTransformer
from vselect_jax.selector.predictor import VisionPredictor
from vselect_jax.selector.scorer import ImportanceScorer


class Qwen25VL(nnx.Module):

  def __init__(self, cfg: VLMConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.config = cfg
    self.visual = VisionTransformer(cfg.vision, dtype=dtype, rngs=rngs)
    # The scorer reads the merger output (LLM width); HF keeps it on `visual`.
    self.visual.importance_scorer = ImportanceScorer(
        cfg.text.hidden_size, dtype=dtype, rngs=rngs)
    # The in-tower scorer (method "tower_selector") reads a merge unit's 4
    # patch hidden states concatenated inside the tower (4 x vision width).
    self.visual.block_scorer = ImportanceScorer(
        cfg.vision.hidden_size * cfg.vision.merge_unit, dtype=dtype,
        rngs=rngs)
    self.model = TextModel(cfg.text, dtype=dtype, rngs=rngs)
    # Dynamic-Qwen (method "dynamic_qwen") reads LLM layer 2's input; the
    # reference keeps it on the LLM (``model.image_score_predictor``).
    self.model.image_score_predictor = VisionPredictor(
        cfg.text.hidden_size, dtype=dtype, rngs=rngs)
    self.lm_head = (None if cfg.text.tie_word_embeddings else
                    Linear(cfg.text.hidden_size, cfg.text.vocab_size,
                           use_bias=False, axes=("embed", "vocab"),
                           dtype=dtype, rngs=rngs))

  def head(self, hidden: jax.Array) -> jax.Array:
    """float[B, T, D] -> float32[B, T, V] logits."""
    if self.lm_head is None:
      logits = self.model.embed_tokens.attend(hidden)
    else:
      logits = self.lm_head(hidden)
    return logits.astype(jnp.float32)

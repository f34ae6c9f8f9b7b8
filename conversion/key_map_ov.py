"""HF LLaVA-OneVision-1.5 tensor names <-> vselect-jax parameter paths.

``LlavaOneVision15`` mirrors the names lmms-engine's ``save_pretrained``
writes, so the Qwen2.5-VL rename rules of ``key_map`` cover OV unchanged;
this module is the OV entry point (and the place for OV-only rules, should
any appear), with the same functions as ``key_map``:

| HF (either spelling)                           | vselect-jax path                 |
|------------------------------------------------|----------------------------------|
| ``model.visual.X`` / ``visual.X``              | ``visual/X``                     |
| ``model.language_model.X`` / ``model.X``       | ``model/X`` (Qwen3 LLM)          |
| ``lm_head.weight`` (untied only)               | ``lm_head/kernel``               |
| ``visual.patch_embed.proj.weight`` [D,3,14,14] | ``.../proj/kernel`` = W.reshape(D, -1).T |
| ``visual.class_embedding`` [D], ``visual.class_pos_emb`` [1, H/2] | unchanged |
| ``...merger.mlp.{0,2}``                        | ``.../merger/mlp_{0,2}``         |
| ``X.{weight,bias}`` of a LayerNorm / RMSNorm (``norm1``, ``pre_layernorm``, ``ln_q``, ``q_norm``, ...) | unchanged |
| ``X.weight`` of a Linear ([out, in])           | ``X/kernel`` ([in, out])         |
| ``model.visual.importance_scorer.*`` / legacy ``visual.importance_scorer.*`` | ``visual/importance_scorer/*`` |

The processor's patch rows are (C, 14, 14), the Conv2d kernel's order, so
flattening the kernel is exact.
"""
from __future__ import annotations

from conversion.key_map import (hf_key_to_path, normalize_hf_key,
                                path_to_hf_key, to_hf, to_jax)

# Both spellings normalise to this prefix.
SCORER_PREFIX = "visual.importance_scorer."

__all__ = ["SCORER_PREFIX", "hf_key_to_path", "normalize_hf_key",
           "path_to_hf_key", "to_hf", "to_jax"]

"""vselect-jax: VisionSelector (learnable visual-token compression) for
Qwen2.5-VL in JAX / Flax NNX."""
from vselect_jax.config import TextConfig, VisionConfig, VLMConfig
from vselect_jax.engine import (ForwardOutput, VisionLanguageModel,
                                from_pretrained)

__all__ = ["from_pretrained", "VisionLanguageModel", "ForwardOutput",
           "VLMConfig", "VisionConfig", "TextConfig"]
__version__ = "0.1.0"

"""Architecture configs: frozen (hashable) dataclasses read from HF config.json.

Both config.json layouts are accepted: the hub files of transformers 4.50
(text fields at the top level, ``rope_scaling`` with ``mrope_section``) and
transformers 5.x (``text_config`` / ``rope_parameters``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any


@dataclasses.dataclass(frozen=True)
class VisionConfig:
  depth: int = 32
  hidden_size: int = 1280
  intermediate_size: int = 3420
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 14
  spatial_merge_size: int = 2
  temporal_patch_size: int = 2
  window_size: int = 112
  out_hidden_size: int = 3584
  fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
  tokens_per_second: float = 2
  rope_theta: float = 10000.0

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch row: C * T * P * P (1176 for Qwen2.5-VL)."""
    return (self.in_channels * self.temporal_patch_size * self.patch_size ** 2)

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size ** 2

  @property
  def window_merged(self) -> int:
    """Window side in merged tokens (4 for Qwen2.5-VL: 112 px / 28 px)."""
    return self.window_size // self.spatial_merge_size // self.patch_size

  @property
  def window_patches(self) -> int:
    """Patches in one full window (64 for Qwen2.5-VL)."""
    return self.window_merged ** 2 * self.merge_unit


@dataclasses.dataclass(frozen=True)
class TextConfig:
  vocab_size: int = 152064
  hidden_size: int = 3584
  intermediate_size: int = 18944
  num_hidden_layers: int = 28
  num_attention_heads: int = 28
  num_key_value_heads: int = 4
  rms_norm_eps: float = 1e-6
  rope_theta: float = 1000000.0
  # None: plain 1-D RoPE, driven by row 0 of the int32[3, B, T] position ids
  # (LLaVA-OneVision-1.5's Qwen3 LLM; the three rows are then equal).
  mrope_section: tuple[int, int, int] | None = (16, 24, 24)
  tie_word_embeddings: bool = False
  # Qwen2 has q/k/v biases; Qwen3 has none but RMSNorms per head on q and k.
  attention_bias: bool = True
  qk_norm: bool = False
  # Qwen3 configs give head_dim explicitly (it need not be D / N).
  explicit_head_dim: int | None = None

  @property
  def head_dim(self) -> int:
    if self.explicit_head_dim is not None:
      return self.explicit_head_dim
    return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  family: str = "qwen2_5_vl"

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "VLMConfig":
    """Builds a config from an HF ``config.json`` dict (4.50 or 5.x layout)."""
    if d.get("model_type") not in (None, "qwen2_5_vl"):
      raise ValueError(
          f"expected a Qwen2.5-VL config (model_type 'qwen2_5_vl'), got "
          f"{d.get('model_type')!r}")
    t = dict(d.get("text_config") or {})
    for key, value in d.items():  # 4.50 layout: text fields at the top level
      if key not in ("text_config", "vision_config"):
        t.setdefault(key, value)
    rope = t.get("rope_parameters") or t.get("rope_scaling") or {}
    v = dict(d.get("vision_config") or {})
    vrope = v.get("rope_parameters") or {}
    tie = bool(d.get("tie_word_embeddings", t.get("tie_word_embeddings", False)))
    text = TextConfig(
        vocab_size=int(t["vocab_size"]),
        hidden_size=int(t["hidden_size"]),
        intermediate_size=int(t["intermediate_size"]),
        num_hidden_layers=int(t["num_hidden_layers"]),
        num_attention_heads=int(t["num_attention_heads"]),
        num_key_value_heads=int(t.get("num_key_value_heads")
                                or t["num_attention_heads"]),
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", t.get("rope_theta", 1e6))),
        mrope_section=tuple(int(x) for x in rope.get("mrope_section",
                                                     (16, 24, 24))),
        tie_word_embeddings=tie,
    )
    vision = VisionConfig(
        depth=int(v.get("depth", 32)),
        hidden_size=int(v.get("hidden_size", 1280)),
        intermediate_size=int(v.get("intermediate_size", 3420)),
        num_heads=int(v.get("num_heads", 16)),
        in_channels=int(v.get("in_channels", v.get("in_chans", 3))),
        patch_size=int(v.get("patch_size", 14)),
        spatial_merge_size=int(v.get("spatial_merge_size", 2)),
        temporal_patch_size=int(v.get("temporal_patch_size", 2)),
        window_size=int(v.get("window_size", 112)),
        out_hidden_size=int(v.get("out_hidden_size", text.hidden_size)),
        fullatt_block_indexes=tuple(int(i) for i in v.get(
            "fullatt_block_indexes", (7, 15, 23, 31))),
        tokens_per_second=float(v.get("tokens_per_second", 4)),
        rope_theta=float(vrope.get("rope_theta", 10000.0)),
    )
    if 2 * sum(text.mrope_section) != text.head_dim:
      raise ValueError(
          f"mrope_section {text.mrope_section} must sum to head_dim/2 = "
          f"{text.head_dim // 2}")
    if vision.out_hidden_size != text.hidden_size:
      raise ValueError(
          f"vision out_hidden_size {vision.out_hidden_size} != text hidden "
          f"size {text.hidden_size}")
    return cls(vision=vision, text=text, **_special_tokens(d))

  @classmethod
  def from_pretrained(cls, path: str) -> "VLMConfig":
    return _read_config_json(cls, path)


# --- LLaVA-OneVision-1.5 (RICE vision tower + Qwen3 LLM) -------------------


@dataclasses.dataclass(frozen=True)
class RiceVisionConfig:
  """lmms-engine's ``RiceConfig`` (``model_type`` "rice_vit"); defaults are
  the 8B's RICE ViT-L/14."""
  depth: int = 24
  hidden_size: int = 1024
  intermediate_size: int = 4096
  num_heads: int = 16
  in_channels: int = 3
  patch_size: int = 14
  spatial_merge_size: int = 2
  out_hidden_size: int = 4096      # RiceConfig.text_hidden_size
  layer_norm_eps: float = 1e-5
  rope_theta: float = 10000.0

  # The reference's patch embedding hard-codes one frame per patch.
  temporal_patch_size = 1

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def patch_dim(self) -> int:
    """Length of one flattened patch row: C * P * P (588 for RICE-L/14)."""
    return self.in_channels * self.patch_size ** 2

  @property
  def merge_unit(self) -> int:
    return self.spatial_merge_size ** 2


@dataclasses.dataclass(frozen=True)
class LlavaOV15Config:
  """``Llavaonevision1_5Config`` (``model_type`` "llavaonevision1_5")."""
  vision: RiceVisionConfig = RiceVisionConfig()
  text: TextConfig = TextConfig(
      vocab_size=151936, hidden_size=4096, intermediate_size=12288,
      num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
      rms_norm_eps=1e-6, rope_theta=1e6, mrope_section=None,
      attention_bias=False, qk_norm=True, explicit_head_dim=128)
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653
  family: str = "llava_ov15"

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any]) -> "LlavaOV15Config":
    """Builds a config from an LLaVA-OV-1.5 ``config.json`` dict.

    Unset fields take lmms-engine's defaults, as transformers would. The
    head is tied iff ``text_config.tie_word_embeddings`` (default False):
    transformers 4.57 ties by the text config, not the top-level flag.
    """
    if d.get("model_type") != "llavaonevision1_5":
      raise ValueError(
          f"expected a LLaVA-OneVision-1.5 config (model_type "
          f"'llavaonevision1_5'), got {d.get('model_type')!r}")
    t = dict(d.get("text_config") or {})
    v = dict(d.get("vision_config") or {})
    for key, bad in (("use_sliding_window", True),):
      if t.get(key) == bad:
        raise ValueError(f"text_config.{key}={bad} is not supported")
    scaling = t.get("rope_scaling")
    if scaling and scaling.get("rope_type", scaling.get("type")) not in (
        None, "default"):
      raise ValueError(f"text_config.rope_scaling {scaling} is not supported "
                       "(only default RoPE)")
    if v.get("temporal_patch_size", 1) != 1:
      raise ValueError(
          f"vision_config.temporal_patch_size={v['temporal_patch_size']}: the "
          "RICE tower embeds one frame per patch (temporal_patch_size 1)")
    if v.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"vision_config.hidden_act={v['hidden_act']!r} is not "
                       "supported (exact 'gelu')")
    if t.get("hidden_act", "silu") != "silu":
      raise ValueError(f"text_config.hidden_act={t['hidden_act']!r} is not "
                       "supported ('silu')")
    heads = int(t.get("num_attention_heads", 32))
    text = TextConfig(
        vocab_size=int(t.get("vocab_size", 151936)),
        hidden_size=int(t.get("hidden_size", 4096)),
        intermediate_size=int(t.get("intermediate_size", 12288)),
        num_hidden_layers=int(t.get("num_hidden_layers", 36)),
        num_attention_heads=heads,
        num_key_value_heads=int(t.get("num_key_value_heads") or heads),
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
        rope_theta=float(t.get("rope_theta", 1e6)),
        mrope_section=None,
        tie_word_embeddings=bool(t.get("tie_word_embeddings", False)),
        attention_bias=bool(t.get("attention_bias", False)),
        qk_norm=True,
        # Qwen3 reads `head_dim or hidden_size // heads`.
        explicit_head_dim=int(t.get("head_dim", 128) or
                              int(t.get("hidden_size", 4096)) // heads),
    )
    vision = RiceVisionConfig(
        depth=int(v.get("depth", 24)),
        hidden_size=int(v.get("hidden_size", 1024)),
        intermediate_size=int(v.get("intermediate_size", 4096)),
        num_heads=int(v.get("num_heads", 16)),
        in_channels=int(v.get("in_channels", 3)),
        patch_size=int(v.get("patch_size", 14)),
        spatial_merge_size=int(v.get("spatial_merge_size", 2)),
        out_hidden_size=int(v.get("text_hidden_size", 2560)),
        layer_norm_eps=float(v.get("layer_norm_eps", 1e-5)),
    )
    if vision.hidden_size % vision.num_heads or vision.head_dim % 4:
      raise ValueError(
          f"vision hidden_size {vision.hidden_size} / num_heads "
          f"{vision.num_heads} must give a head dim divisible by 4 (2-D RoPE)")
    if vision.out_hidden_size != text.hidden_size:
      raise ValueError(
          f"vision_config.text_hidden_size {vision.out_hidden_size} != "
          f"text_config.hidden_size {text.hidden_size}")
    return cls(vision=vision, text=text, **_special_tokens(d))

  @classmethod
  def from_pretrained(cls, path: str) -> "LlavaOV15Config":
    return _read_config_json(cls, path)


# config.json ``model_type`` -> the family's config class. A missing
# model_type is read as Qwen2.5-VL (the project's first family).
MODEL_TYPES = {None: VLMConfig, "qwen2_5_vl": VLMConfig,
               "llavaonevision1_5": LlavaOV15Config}

ModelConfig = VLMConfig | LlavaOV15Config


def config_from_hf_dict(d: dict[str, Any]) -> ModelConfig:
  """The family's config for an HF ``config.json`` dict, picked by its
  ``model_type`` (the one dispatch: loading, conversion, export, engine)."""
  kind = d.get("model_type")
  if kind not in MODEL_TYPES:
    raise ValueError(
        f"unsupported model_type {kind!r}: vselect-jax reads "
        f"{sorted(k for k in MODEL_TYPES if k)} (Qwen2.5-VL, "
        "LLaVA-OneVision-1.5)")
  return MODEL_TYPES[kind].from_hf_dict(d)


def read_model_config(path: str) -> ModelConfig:
  """``config_from_hf_dict`` of ``path``/config.json (local or gs://)."""
  return _read_config_json(config_from_hf_dict, path)


def _special_tokens(d: dict) -> dict:
  """The visual pad / boundary token ids of an HF config (Qwen's defaults;
  LLaVA-OV-1.5 uses the same vocabulary)."""
  return dict(
      image_token_id=int(d.get("image_token_id", 151655)),
      video_token_id=int(d.get("video_token_id", 151656)),
      vision_start_token_id=int(d.get("vision_start_token_id", 151652)),
      vision_end_token_id=int(d.get("vision_end_token_id", 151653)))


def _read_config_json(parse, path: str):
  from vselect_jax import paths
  parse = getattr(parse, "from_hf_dict", parse)
  file = paths.join(path, "config.json")
  if not paths.exists(file):
    raise FileNotFoundError(f"no config.json in {path!r}")
  with paths.open(file) as f:
    try:
      return parse(json.load(f))
    except KeyError as e:
      raise ValueError(f"{file} lacks the required field {e}") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"{file} is not valid JSON: {e}") from None

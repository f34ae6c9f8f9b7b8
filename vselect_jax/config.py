"""Architecture configs: frozen (hashable) dataclasses read from HF config.json.

Both config.json layouts are accepted: the hub files of transformers 4.50
(text fields at the top level, ``rope_scaling`` with ``mrope_section``) and
transformers 5.x (``text_config`` / ``rope_parameters``).
"""
from __future__ import annotations

import dataclasses
import json
import os
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
  mrope_section: tuple[int, int, int] = (16, 24, 24)
  tie_word_embeddings: bool = False

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads


@dataclasses.dataclass(frozen=True)
class VLMConfig:
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  image_token_id: int = 151655
  video_token_id: int = 151656
  vision_start_token_id: int = 151652
  vision_end_token_id: int = 151653

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
    return cls(
        vision=vision, text=text,
        image_token_id=int(d.get("image_token_id", 151655)),
        video_token_id=int(d.get("video_token_id", 151656)),
        vision_start_token_id=int(d.get("vision_start_token_id", 151652)),
        vision_end_token_id=int(d.get("vision_end_token_id", 151653)))

  @classmethod
  def from_pretrained(cls, path: str) -> "VLMConfig":
    file = os.path.join(path, "config.json")
    if not os.path.exists(file):
      raise FileNotFoundError(f"no config.json in {path!r}")
    with open(file) as f:
      try:
        return cls.from_hf_dict(json.load(f))
      except KeyError as e:
        raise ValueError(f"{file} lacks the required field {e}") from None
      except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None

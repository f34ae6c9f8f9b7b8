"""What a token-compression method is: its stage, its options and its
``select`` function, with the static-shape view of the prompt it reads.

A method sees one row-batched prompt at its selection point (inside the
vision tower after block ``block``, before the LLM, or at the input of LLM
layer ``layer``) and returns exactly which visual
tokens to keep, k per group (the row, or each image with ``per_image``); the
forward (``vselect_jax.forward``) drops the rest. Nothing here is
data-dependent in shape: the k are traced int32 arrays and the outputs are
bool / float32 [B, T] masks over the prompt's positions.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax

PRE_LLM = "pre_llm"
IN_LLM = "in_llm"
IN_VISION = "in_vision"  # after vision block ``block``: the rest runs on kept

# What a method may ask the forward to compute for it.
VISION_LAST_BLOCK = "vision_last_block"   # the last vision block's input
LAYER_QK = "layer_qk"                     # q/k of LLM layer ``layer - 1``
# Given to IN_VISION methods (always): the tower's state after ``block``.
VISION_BLOCK = "vision_block"


@dataclasses.dataclass
class Context:
  """The prompt at the selection point (B rows, T positions).

  Attributes:
    model: the VLM module (``model.visual``, ``model.model``, ...).
    batch: the device batch (the per-row format of ``host.rows``).
    x: float[B, T, D] hidden states entering the first layer after
      selection (embeddings for pre-LLM methods).
    tokens: float[B, T, E] post-merger visual tokens at their positions
      (zeros elsewhere).
    visual: bool[B, T] visual positions; valid: bool[B, T] non-padding.
    group: int32[B, T] selection group of each visual token, -1 elsewhere.
    k_token: int32[B, T] the k of each token's group; k_row: int32[B].
    options: the method's static options (defaults filled in).
    extras: what the method ``needs``: ``VISION_LAST_BLOCK`` ->
      (last_input float[B, P, D], cos, sin float32[B, P, H]);
      ``LAYER_QK`` -> (q float[B, T, N, H], k float[B, T, K, H]) after RoPE;
      ``VISION_BLOCK`` (IN_VISION methods) -> (units float[B, U, 4 Dv]: the
      hidden states after vision block ``block`` of each merge unit's 4
      patches, concatenated, in window order; unit_valid bool[B, U];
      unit_at int32[B, T]: the unit of each visual position, -1 elsewhere).
      For IN_VISION methods ``tokens`` is zeros (the merger has not run).
    detach_scorer: stop gradients at a learned scorer's input (training
      with a frozen vision tower, and inference).
  """
  model: Any
  batch: dict
  x: jax.Array
  tokens: jax.Array
  visual: jax.Array
  valid: jax.Array
  group: jax.Array
  k_token: jax.Array
  k_row: jax.Array
  options: Mapping[str, Any]
  extras: dict
  detach_scorer: bool = True


@dataclasses.dataclass
class Choice:
  """A method's decision.

  Attributes:
    selected: bool[B, T] the kept candidates (exactly k per group).
    scores: float32[B, T] the method's importance signal (for pictures).
    x: float[B, T, D] replacement hidden states (VisionZip's merges), or
      None to keep ``Context.x``.
    candidates: bool[B, T] positions the method may drop (default: the
      visual tokens); everything valid outside it is kept.
  """
  selected: jax.Array
  scores: jax.Array
  x: jax.Array | None = None
  candidates: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class Relaxed:
  """A trainable method's relaxation (nothing dropped): the soft mask that
  scales the visual tokens, the hard top-k it is pulled towards, and the
  regulariser (float32 [B, T], [B, T], scalar)."""
  soft: jax.Array
  hard: jax.Array
  reg: jax.Array


@dataclasses.dataclass(frozen=True)
class Method:
  """One compression method.

  Attributes:
    name: the ``method=`` string.
    stage: ``PRE_LLM`` (drop before the LLM), ``IN_LLM`` (at ``layer``) or
      ``IN_VISION`` (after vision block ``block``: later blocks, the merger
      and the LLM see only the kept merge units).
    select: ``Context -> Choice``.
    summary: one line for listings.
    layer: for IN_LLM, ``model -> K``: layers [0, K) see every token.
    block: for IN_VISION, ``(model, options) -> j``: vision blocks [0, j)
      see every patch (0 <= j < depth).
    needs: extras the forward must compute (``VISION_LAST_BLOCK``,
      ``LAYER_QK``).
    options: option name -> default (values are static; a given value must
      have the default's type).
    per_image: supports per-image budgets.
    relax: ``Context -> Relaxed`` for methods trained through a soft mask.
    view: ``(Context, Choice) -> float32[B, T]``, the picture's importance
      map (default: the scores).
    count: ``options -> name`` of what k is a fraction of: "visual" (the
      row's visual tokens) or "span" (first to last visual position).
  """
  name: str
  stage: str
  select: Callable[[Context], Choice]
  summary: str = ""
  layer: Callable[[Any], int] | None = None
  needs: frozenset = frozenset()
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  per_image: bool = True
  relax: Callable[[Context], Relaxed] | None = None
  view: Callable[[Context, Choice], jax.Array] | None = None
  count: Callable[[Mapping[str, Any]], str] = lambda options: "visual"
  block: Callable[[Any, Mapping[str, Any]], int] | None = None

  def __post_init__(self):
    if self.stage not in (PRE_LLM, IN_LLM, IN_VISION):
      raise ValueError(f"{self.name}: stage must be {PRE_LLM!r}, {IN_LLM!r} "
                       f"or {IN_VISION!r}, got {self.stage!r}")
    if (self.stage == IN_LLM) != (self.layer is not None):
      raise ValueError(f"{self.name}: in-LLM methods (only) need a layer")
    if (self.stage == IN_VISION) != (self.block is not None):
      raise ValueError(f"{self.name}: in-vision methods (only) need a block")

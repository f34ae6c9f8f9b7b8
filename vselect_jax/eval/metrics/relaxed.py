"""ChartQA relaxed accuracy (Methani et al. 2020, as used by Pix2Struct,
Qwen-VL and lmms-eval).

A numeric answer is right when it is within 5% of a numeric gold answer
(relative to the gold); anything else needs a case-insensitive exact match.
A trailing ``%`` divides the number by 100, on either side; so ``"45%"``
matches ``"0.45"`` but ``"45"`` does not match ``"45%"``. A gold answer of
zero cannot be used as a denominator and falls back to the string rule.
Neither side is stripped, as in lmms-eval.
"""
from __future__ import annotations

from collections.abc import Sequence

MAX_RELATIVE_CHANGE = 0.05


def _to_float(text: str) -> float | None:
  try:
    if text.endswith("%"):
      return float(text.rstrip("%")) / 100.0
    return float(text)
  except ValueError:
    return None


def relaxed_correctness(prediction: str, target: str,
                        max_relative_change: float = MAX_RELATIVE_CHANGE
                        ) -> bool:
  """Whether ``prediction`` is right for one gold ``target``."""
  pred_f = _to_float(prediction)
  gold_f = _to_float(target)
  # ``gold_f`` truthiness (not ``is not None``) is deliberate: a zero gold
  # answer has no relative tolerance and is compared as a string.
  if pred_f is not None and gold_f:
    return abs(pred_f - gold_f) / abs(gold_f) <= max_relative_change
  return prediction.lower() == target.lower()


def relaxed_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """1.0 if the prediction is relaxed-correct for any gold answer, else 0.0.

  ChartQA has one gold answer per question; the ``any`` only matters for
  hand-made data with several.
  """
  if not answers:
    raise ValueError("relaxed_accuracy needs at least one gold answer")
  return float(any(relaxed_correctness(prediction, a) for a in answers))

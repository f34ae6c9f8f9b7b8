"""POPE: yes/no object-hallucination probing.

Answers are read with the rule of the official POPE evaluation: take the text
before the first period, drop commas, and answer "no" if the words include
``no``/``not``/``No``; anything else, including an empty answer, is "yes".
Qwen2.5-VL answers a bare "Yes"/"No" here, where this agrees with lmms-eval's
exact match.

Metrics treat "yes" as the positive class. ``yes_ratio`` is the fraction of
*predicted* "yes" answers, the official definition and the number that shows
a model's bias; lmms-eval's ``pope_yes_ratio`` counts gold answers instead
(always 0.5 on POPE), so it is not reproduced.
"""
from __future__ import annotations

from collections.abc import Sequence


def parse_pope_answer(text: str) -> str:
  """``"yes"`` or ``"no"``."""
  first = text.split(".", 1)[0].replace(",", "")
  words = first.split()
  return "no" if ("No" in words or "no" in words or "not" in words) else "yes"


def pope_metrics(predictions: Sequence[str], golds: Sequence[str]
                 ) -> dict[str, float]:
  """Accuracy, precision, recall, F1 and yes ratio.

  Args:
    predictions: raw model answers.
    golds: ``"yes"`` / ``"no"`` (any case, surrounding space ignored).

  Returns:
    Fractions in [0, 1]; an undefined precision / recall / F1 (empty
    denominator) is 0, as in lmms-eval.
  """
  if len(predictions) != len(golds):
    raise ValueError("predictions and golds differ in length")
  if not golds:
    raise ValueError("pope_metrics needs at least one sample")
  tp = fp = tn = fn = 0
  for pred, gold in zip(predictions, golds):
    gold = gold.strip().lower()
    if gold not in ("yes", "no"):
      raise ValueError(f"POPE gold answers must be yes/no, got {gold!r}")
    p = parse_pope_answer(pred) == "yes"
    g = gold == "yes"
    tp += p and g
    fp += p and not g
    tn += not p and not g
    fn += not p and g
  n = tp + fp + tn + fn
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  f1 = (2 * precision * recall / (precision + recall)
        if precision + recall else 0.0)
  return {"accuracy": (tp + tn) / n, "precision": precision,
          "recall": recall, "f1": f1, "yes_ratio": (tp + fp) / n}

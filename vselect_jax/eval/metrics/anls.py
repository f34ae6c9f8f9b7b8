"""Average Normalized Levenshtein Similarity (DocVQA / ST-VQA).

Per question: ``1 - min_gold NL(gold, pred)`` where ``NL`` is the edit
distance divided by the longer string's length; a per-question score below
the threshold (0.5) becomes 0. The benchmark score is the mean over questions.

Matches lmms-eval's ``anls`` (itself the Qwen-VL / RRC evaluation): both
strings are lower-cased, stripped and have internal whitespace collapsed
before the distance is taken, but the length in the denominator is taken from
the *raw* strings. Keeping that quirk keeps our numbers comparable with the
published ones (it only matters for predictions with extra whitespace).
"""
from __future__ import annotations

from collections.abc import Sequence

ANLS_THRESHOLD = 0.5


def levenshtein(a: str, b: str) -> int:
  """Edit distance (insertions, deletions, substitutions all cost 1)."""
  if len(a) < len(b):
    a, b = b, a
  # Two-row dynamic programme over the shorter string.
  prev = list(range(len(b) + 1))
  for i, ca in enumerate(a, start=1):
    cur = [i]
    for j, cb in enumerate(b, start=1):
      cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
    prev = cur
  return prev[-1]


def _collapse(text: str) -> str:
  return " ".join(text.strip().lower().split())


def anls_score(prediction: str, answers: Sequence[str],
               threshold: float = ANLS_THRESHOLD) -> float:
  """ANLS of one prediction against its gold answers.

  Args:
    prediction: the model's answer.
    answers: one or more gold answers (the best match counts).
    threshold: similarities strictly below this score 0.

  Returns:
    A score in [0, 1].
  """
  if not answers:
    raise ValueError("anls_score needs at least one gold answer")
  det = _collapse(prediction)
  distances = []
  for gold in answers:
    length = max(len(gold), len(prediction))
    dist = levenshtein(_collapse(gold), det)
    distances.append(0.0 if length == 0 else dist / length)
  score = 1.0 - min(distances)
  return 0.0 if score < threshold else score

"""MMBench's CircularEval: a question counts only if every rotation of its
options is answered right.

MMBench stores each rotation of a question's options as its own row; the
rows of one question share ``index % 1_000_000`` (rotation ``k`` has index
``original + k * 1_000_000``). ``circular_accuracy`` groups the rows by that
key (the record's ``group``) and scores a group 1 only if all its rows are
correct. Plain accuracy over all rows and the accuracy of the original rows
(rotation 0, MMBench's "VanillaEval") are reported beside it.
"""
from __future__ import annotations

from collections.abc import Sequence

ROTATION_STRIDE = 1_000_000


def group_correct(groups: Sequence[str], correct: Sequence[bool]
                  ) -> dict[str, bool]:
  """{group: all of its rows correct}, in first-seen order."""
  if len(groups) != len(correct):
    raise ValueError(f"{len(groups)} groups but {len(correct)} results")
  out: dict[str, bool] = {}
  for g, c in zip(groups, correct):
    out[g] = out.get(g, True) and bool(c)
  return out


def circular_accuracy(groups: Sequence[str], correct: Sequence[bool]
                      ) -> float:
  """Fraction of groups whose every row is correct (0.0 for none)."""
  per = group_correct(groups, correct)
  return sum(per.values()) / len(per) if per else 0.0


def rotations(options: Sequence[str], answer: int) -> list[tuple[list, int]]:
  """Every rotation of ``options``: (options, answer index) for shift
  k = 0 .. n-1, where rotation k puts option ``(i + k) % n`` at place i
  (MMBench's circular shift)."""
  n = len(options)
  if not 0 <= answer < n:
    raise ValueError(f"answer index {answer} is not one of {n} options")
  return [([options[(i + k) % n] for i in range(n)], (answer - k) % n)
          for k in range(n)]

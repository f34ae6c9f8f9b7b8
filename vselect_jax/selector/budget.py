"""Budgets: the fraction of visual tokens kept, and the k it means."""
from __future__ import annotations

import math
import numbers


def check_budget(budget) -> float:
  """Returns the budget as a float, or raises ``ValueError`` naming it."""
  if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
    raise ValueError(f"budget must be a number in (0, 1], got {budget!r}")
  b = float(budget)
  if not (0.0 < b <= 1.0):  # also rejects NaN
    raise ValueError(f"budget must be in (0, 1], got {budget!r}")
  return b


def budget_to_k(n: int, budget) -> int:
  """k = max(1, floor(n * budget)) visual tokens kept out of n (0 if n == 0).

  The product is taken in float64 like the reference's Python math
  (``int(N * budget)``), so e.g. 10 * 0.3 = 3.0000000000000004 -> 3 and
  1280 * 0.2 = 256.
  """
  b = check_budget(budget)
  if n < 0:
    raise ValueError(f"token count must be >= 0, got {n}")
  if n == 0:
    return 0
  return max(1, min(n, math.floor(n * b)))

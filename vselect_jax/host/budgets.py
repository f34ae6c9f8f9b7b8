"""Budgets -> how many tokens each row (or image) keeps, on the host."""
from __future__ import annotations

import numpy as np

from vselect_jax.selector.budget import budget_to_k

COUNTS = ("visual", "span", "total")


def selection_budgets(arrays: dict, budget, per_image: bool,
                      count: str = "visual") -> tuple[np.ndarray, np.ndarray]:
  """k per visual token (the k of its group) and per row.

  Args:
    arrays: a host batch in the per-row format (``visual_item``,
      ``segment_ids``).
    budget: one fraction for the batch, or one per row.
    per_image: one group per image / video instead of one per row.
    count: what k is a fraction of: "visual" (the row's visual tokens),
      "span" (its valid positions from the first to the last visual token:
      FastV's faithful mode) or "total" (every valid position of the row,
      text included: Dynamic-Qwen's ``int(N_total * r)``; k is capped at
      the row's visual tokens, as the reference's top-k takes at most all
      of them).

  Returns:
    k_token int32[B, T] and k_row int32[B].
  """
  item = arrays["visual_item"]
  rows = item.shape[0]
  budgets = np.atleast_1d(np.asarray(budget, dtype=object))
  if budgets.shape[0] == 1:
    budgets = np.repeat(budgets, rows)
  if budgets.ndim != 1 or budgets.shape[0] != rows:
    raise ValueError(f"budget must be a number or one per row ({rows}), got "
                     f"{budget!r}")
  if count not in COUNTS:
    raise ValueError(f"count must be one of {COUNTS}, got {count!r}")
  visual = item >= 0
  valid = arrays["segment_ids"] > 0
  k_token = np.zeros(item.shape, np.int32)
  k_row = np.zeros(rows, np.int32)
  for b in range(rows):
    budget_to_k(0, budgets[b])  # validates even rows without images
    if per_image:
      for it in np.unique(item[b][visual[b]]):
        sel = item[b] == it
        k_token[b, sel] = budget_to_k(int(sel.sum()), budgets[b])
        k_row[b] += k_token[b, sel][0]
      continue
    n = int(visual[b].sum())
    if count == "span" and n:
      where = np.flatnonzero(visual[b])
      n = int(valid[b, where[0]:where[-1] + 1].sum())
    if count == "total" and n:
      k_row[b] = min(n, budget_to_k(int(valid[b].sum()), budgets[b]))
    else:
      k_row[b] = budget_to_k(n, budgets[b])
    k_token[b, visual[b]] = k_row[b]
  return k_token, k_row

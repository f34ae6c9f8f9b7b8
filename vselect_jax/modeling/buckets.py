"""Static-shape buckets: data-dependent sizes are rounded up so that inputs of
similar size share one compiled program.

A bucket is the smallest ``multiple * s`` with ``s`` in {1, 2, 3, 4, 6, 8, 12,
16, ...} (powers of two and 1.5x powers of two) that holds ``n``: at most 33%
padding, and O(log n) distinct shapes over any range of sizes.
"""
from __future__ import annotations


def bucket(n: int, multiple: int = 64) -> int:
  """Rounds ``n`` up to its bucket; ``bucket(0) == multiple``."""
  if n < 0:
    raise ValueError(f"size must be non-negative, got {n}")
  units = max(1, -(-n // multiple))
  step = 1
  while True:
    for s in (step, step + step // 2 if step >= 2 else step):
      if s >= units:
        return s * multiple
    step *= 2

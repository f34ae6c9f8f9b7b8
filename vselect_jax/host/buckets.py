"""Static-shape buckets: data-dependent sizes are rounded up so that inputs of
similar size share one compiled program.

A bucket is the smallest ``multiple * s`` that holds ``n``, where ``s`` runs
over 1..8 and then eight evenly spaced steps per octave (9, 10, ..., 16, 18,
20, ..., 32, 36, ...): at most 12.5% padding, and O(8 log n) distinct shapes
over any range of sizes.
"""
from __future__ import annotations

STEPS_PER_OCTAVE = 8


def bucket(n: int, multiple: int = 64) -> int:
  """Rounds ``n`` up to its bucket; ``bucket(0) == multiple``."""
  if n < 0:
    raise ValueError(f"size must be non-negative, got {n}")
  units = max(1, -(-n // multiple))
  if units <= STEPS_PER_OCTAVE:
    return units * multiple
  octave = 1 << (units - 1).bit_length() - 1          # largest power <= units
  step = octave // STEPS_PER_OCTAVE
  return -(-units // step) * step * multiple

"""Bad-data accounting: why a record was skipped, and when to stop the run.

A record that cannot become a training sample raises ``RecordError`` with a
``kind`` from ``SKIP_KINDS``; the pipeline turns it into a counted skip (never
a crashed worker). ``SkipMonitor`` adds the counts up and stops the run with
an error naming the kinds once they pass the allowed fraction of the records
read.
"""
from __future__ import annotations

import collections
import logging

log = logging.getLogger(__name__)

# Every reason a record can be skipped, in report order.
SKIP_KINDS = (
    "malformed",          # not JSON / not an object / bad conversation turns
    "no_assistant",       # no assistant turn to learn from
    "image_count",        # <image> / <video> tags do not match the media list
    "bad_path",           # media path leaves the dataset root
    "missing_file",       # media file absent (or absent from the shard)
    "corrupt_image",      # undecodable, truncated or degenerate image
    "video_unsupported",  # video sample in a training mixture, or no decoder
    "too_long",           # does not fit an empty row (tokens/patches/images)
    "error",              # anything unexpected while building the sample
)


class RecordError(ValueError):
  """A record that cannot be turned into a training sample.

  Attributes:
    kind: one of ``SKIP_KINDS``; the skip accounting counts by it.
  """

  def __init__(self, kind: str, message: str):
    if kind not in SKIP_KINDS:
      raise ValueError(f"unknown skip kind {kind!r}")
    super().__init__(message)
    self.kind = kind


class SkipMonitor:
  """Adds up per-batch skip counts; raises once they exceed a fraction.

  Args:
    max_fraction: skipped / read above which the run stops.
    min_seen: records to read before the fraction is judged (a single bad
      record early on would otherwise stop the run).
  """

  def __init__(self, max_fraction: float, min_seen: int = 50):
    self.max_fraction = max_fraction
    self.min_seen = min_seen
    self.counts = collections.Counter()
    self.seen = 0

  def add(self, seen: int, skipped: dict) -> None:
    """Counts ``seen`` records read, ``skipped`` {kind: n} of them skipped."""
    self.seen += int(seen)
    for kind, n in skipped.items():
      if int(n):
        self.counts[kind] += int(n)
    self.check()

  def update(self, batch: dict) -> None:
    """``add`` for a packed batch (its ``samples_seen`` and ``skipped``)."""
    self.add(batch["samples_seen"], batch["skipped"])

  @property
  def skipped(self) -> int:
    return sum(self.counts.values())

  def check(self) -> None:
    """Raises ``RuntimeError`` when too much of the data is being skipped."""
    if self.seen >= self.min_seen and self.skipped > (
        self.max_fraction * self.seen):
      raise RuntimeError(
          f"bad data: {self.skipped} of {self.seen} records skipped "
          f"({100 * self.skipped / self.seen:.2f}% > "
          f"{100 * self.max_fraction:.2f}% allowed; "
          f"DataConfig.max_skip_fraction); by kind: {self.report()}. "
          "The log has an example of each kind.")

  def report(self) -> str:
    """``"missing_file=3, too_long=1"`` in ``SKIP_KINDS`` order."""
    return ", ".join(f"{k}={self.counts[k]}" for k in SKIP_KINDS
                     if self.counts[k]) or "none"


class SkipLog:
  """Logs the first few skips of each kind with the record and reason, so a
  stopped run can be diagnosed without re-reading the data."""

  def __init__(self, per_kind: int = 3):
    self.per_kind = per_kind
    self.logged = collections.Counter()

  def __call__(self, kind: str, where: str, message: str) -> None:
    if self.logged[kind] < self.per_kind:
      self.logged[kind] += 1
      log.warning("skipped record %s (%s): %s", where, kind, message)

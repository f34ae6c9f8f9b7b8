"""A bounded prefetch thread: host preparation overlaps device steps.

The training loop's host work per micro-batch (the next packed batch from
the data iterator, its per-row vision layouts, k per row, FLOP counts) runs
here in one background thread, ``depth`` batches ahead, while the main
thread dispatches jitted steps. numpy and the grain iterator release the
GIL for most of that work, and the main thread only waits on the device
when it logs.

Resume stays exact: each prepared item carries the iterator state taken
right after its batch was read, and ``state`` is the one of the last item
handed out, so a checkpoint never covers batches that were only prefetched.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

_END = object()


class Prefetcher:
  """``prepare(next(iterator))``, up to ``depth`` items ahead, in a thread.

  Args:
    iterator: yields raw batches; ``get_state()`` (if it has one) must
      describe the position after the last ``next``.
    prepare: raw batch -> item (runs in the thread).
    depth: items prepared ahead (bounded: host memory is depth batches).

  Exceptions in the thread (bad data, a bug in ``prepare``) are raised by
  ``__next__`` in the caller, in order; ``StopIteration`` too.
  """

  def __init__(self, iterator: Iterator, prepare: Callable, depth: int = 2):
    if depth < 1:
      raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    self._it = iterator
    self._prepare = prepare
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self.state = _state_of(iterator)  # before anything was handed out
    self._thread = threading.Thread(target=self._run, daemon=True,
                                    name="vselect-prefetch")
    self._thread.start()

  def _run(self) -> None:
    while not self._stop.is_set():
      try:
        raw = next(self._it)
        state = _state_of(self._it)
        item = (self._prepare(raw), state, None)
      except StopIteration:
        item = (_END, None, None)
      except BaseException as e:  # handed to the caller, which re-raises
        item = (None, None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          continue
      if item[0] is _END or item[2] is not None:
        return

  def __iter__(self):
    return self

  def __next__(self):
    item, state, error = self._queue.get()
    if error is not None:
      raise error
    if item is _END:
      raise StopIteration
    self.state = state
    return item

  def close(self, timeout: float = 60.0) -> None:
    """Stops the thread; it drops what it holds once its current batch is
    read (a daemon thread, so a data read that hangs cannot block exit)."""
    self._stop.set()
    self._thread.join(timeout)


def _state_of(iterator):
  if hasattr(iterator, "get_state"):
    s = iterator.get_state()
    return s if isinstance(s, dict) else {"state": s}
  return None

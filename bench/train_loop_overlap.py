"""Does host preparation overlap device steps in ``training.loop``?

The smoke config's tiny model (``configs/smoke.py``, assets built and
cached) trains through ``loop.train`` three times on the same packed
batches, read once from the grain pipeline and then served from memory:

  device: batches served at once: step time ~ the device step (plus the
          per-row layout building, which runs in the prefetch thread);
  host:   the iterator alone, made slow by ``--host-ms`` of sleep per batch,
          plus ``prepare_train_batch`` (what the loop's thread does);
  both:   the loop on the slow iterator. Overlapped, its step time is close
          to max(host, device); serialised, it would be their sum.

Step times are medians of the loop's own ``step_time_s`` after
``--warmup`` steps (compilation). ``--host-ms`` defaults to the measured
device step, where overlap matters most (host = device).

    python bench/train_loop_overlap.py [--steps 16 --host-ms 200]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Served:
  """Packed batches from memory, ``sleep_s`` per batch (a slow host)."""

  def __init__(self, batches, sleep_s: float = 0.0):
    self.batches, self.sleep_s, self.i = batches, sleep_s, 0

  def __iter__(self):
    return self

  def __next__(self):
    if self.sleep_s:
      time.sleep(self.sleep_s)
    b = self.batches[self.i % len(self.batches)]
    self.i += 1
    return b


def _median_step(config, batches, sleep_s: float, warmup: int) -> float:
  from vselect_jax.training import loop
  with tempfile.TemporaryDirectory() as wd:
    loop.train(config, wd, lambda c, i, n: _Served(batches, sleep_s),
               progress=False)
    with open(os.path.join(wd, "metrics.jsonl")) as f:
      times = [json.loads(l)["step_time_s"] for l in f]
  return float(np.median(times[warmup:]))


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--steps", type=int, default=16)
  p.add_argument("--warmup", type=int, default=4)
  p.add_argument("--host-ms", type=float, default=None,
                 help="sleep per batch (default: the measured device step)")
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = p.parse_args(argv)

  from bench.forward import append_result, machine
  from configs import smoke
  from vselect_jax.data import make_train_iterator_from_config
  from vselect_jax.training import batch as batch_lib

  smoke.build_assets()
  config = smoke.get_config()
  config.total_steps = args.steps
  config.checkpoint_every = 10 ** 6
  config.log_every = 1
  it = make_train_iterator_from_config(config, 0, 1)
  batches = [next(it) for _ in range(4)]

  device = _median_step(config, batches, 0.0, args.warmup)
  host_s = device if args.host_ms is None else args.host_ms / 1e3
  import vselect_jax
  cfg = vselect_jax.from_pretrained(config.model_path).config
  t = time.perf_counter()
  for b in batches:
    batch_lib.prepare_train_batch(cfg, b)
  prepare = (time.perf_counter() - t) / len(batches)
  host = host_s + prepare
  both = _median_step(config, batches, host_s, args.warmup)
  hi, total = max(host, device), host + device
  print(f"device {device * 1e3:.0f} ms, host {host * 1e3:.0f} ms "
        f"(sleep {host_s * 1e3:.0f} + prepare {prepare * 1e3:.0f}); "
        f"loop {both * 1e3:.0f} ms vs max {hi * 1e3:.0f} / sum "
        f"{total * 1e3:.0f} ms")
  append_result(
      args.out,
      "## Host/device overlap in the training loop "
      "(bench/train_loop_overlap.py)",
      "configs/smoke.py's tiny model through `loop.train`; a slow iterator "
      "(sleep per batch) plus `prepare_train_batch` in the prefetch thread. "
      "Overlapped, the loop's step is ~max(host, device), not their sum. "
      "Medians of the loop's step_time_s after the compile steps.\n",
      "| date | machine | loop | device ms | host ms | loop ms | max ms | "
      "sum ms |",
      f"| {datetime.date.today()} | {machine()} | loop.train (prefetch "
      f"thread) | {device * 1e3:.0f} | {host * 1e3:.0f} | "
      f"{both * 1e3:.0f} | {hi * 1e3:.0f} | {total * 1e3:.0f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

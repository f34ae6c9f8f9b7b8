"""Training-data throughput: samples per second per host core.

Synthetic records (PIL-drawn shapes, charts and words at 224-392 px, one
image each) through the full per-sample path: JSON parse, image decode,
Qwen2.5-VL preprocessing (max_pixels 50176), chat template, tokenisation,
M-RoPE ids, and packing into fixed rows. One process, one thread, so the
figure is per core; grain's workers scale it with cores.

    python bench/data.py [--samples 400]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--samples", type=int, default=400)
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = p.parse_args(argv)

  from bench.forward import append_result, machine
  from vselect_jax.data import packing, testing
  from vselect_jax.data.pipeline import DataConfig, PackBatch
  from vselect_jax.data.records import load_records
  from vselect_jax.data.synthetic import write_synthetic_dataset

  tmp = tempfile.mkdtemp()
  reg = write_synthetic_dataset(tmp, args.samples, seed=0,
                                sizes=((224, 224), (336, 224), (280, 392)))
  testing.testing_tokenizer(os.path.join(tmp, "tok"))
  cfg = DataConfig(mixture="synthetic", registry=reg, row_length=1024,
                   patches_per_row=2048, max_images_per_row=8,
                   rows_per_batch=4, samples_per_row=8)
  builder = PackBatch(cfg, os.path.join(tmp, "tok"))
  recs = load_records("synthetic", reg, 0)
  builder.sample(recs[0])  # warm-up: tokenizer load
  t0 = time.perf_counter()
  samples = [builder.sample(r) for r in recs]
  t_samples = time.perf_counter() - t0
  stats = collections.Counter()
  t0 = time.perf_counter()
  rows = list(packing.pack(samples, cfg.row_length, cfg.patches_per_row,
                           cfg.max_images_per_row, stats=stats))
  t_pack = time.perf_counter() - t0
  rate = len(samples) / (t_samples + t_pack)
  waste = 1 - stats["tokens"] / stats["token_slots"]
  print(f"{len(samples)} samples: {rate:.1f} samples/s on one core "
        f"(packing {1e3 * t_pack / len(samples):.2f} ms/sample), "
        f"{len(rows)} rows, token padding {100 * waste:.1f}%")
  append_result(
      args.out, "## Data pipeline (bench/data.py)",
      "Synthetic one-image records, decode + preprocess + tokenise + pack, "
      "one thread.\n",
      "| date | machine | samples/s per core | token padding (1024-token rows) |",
      f"| {datetime.date.today()} | {machine()} | {rate:.1f} | "
      f"{100 * waste:.1f}% |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

"""Training-data throughput (samples per second per host core) and padding.

A realistic mix in the reference's proportions, "chart,coco%10,ocr": PNG
charts at 800x600, JPEG photos at 640x480 (sampled at 10%), JPEG covers at
300x450, through the whole grain pipeline (JSON parse, image decode,
Qwen2.5-VL preprocessing at max_pixels 50176, chat template, tokenisation,
M-RoPE ids, packing into 2048-token rows). One read thread and no worker
processes, so CPU seconds per sample is the per-core cost; grain's workers
multiply it by the cores given to them.

Padding is reported twice: on this synthetic stream (short QA), and on the
reference mix's length distribution (``synthetic.training_mix_lengths``:
multi-turn coco / ocr_vqa conversations), which is what training sees.

    python bench/data.py [--scale 1.0]
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TITLE = "## Data pipeline (bench/data.py)"


def cpu_seconds() -> float:
  """User + system CPU time of this process and its finished children."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  return own.ru_utime + own.ru_stime


def cpu_model() -> str:
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  return "unknown CPU"


def packing_waste(spec, lookahead: int, n: int = 20000, seed: int = 0):
  """Token / patch padding on the training mix's length distribution,
  leaving out the stream's last (partial) batch."""
  import numpy as np
  from vselect_jax.data import packing
  from vselect_jax.data.synthetic import training_mix_lengths
  tokens, merged = training_mix_lengths(np.random.default_rng(seed), n)
  samples = [dict(input_ids=np.zeros(t, np.int32),
                  labels=np.zeros(t, np.int32),
                  position_ids=np.zeros((3, t), np.int32),
                  pixel_values=np.zeros((4 * m, 1), np.float32),
                  image_grid_thw=np.array([[1, 2, 2 * m]], np.int32))
             for t, m in zip(tokens, merged)]
  spec = packing.RowSpec(spec.rows, spec.row_length, spec.patch_capacity,
                         spec.max_images, spec.max_samples, patch_dim=1)
  stats = collections.Counter()
  batches = list(packing.pack(samples, spec, lookahead=lookahead,
                              stats=stats))
  last = batches[-1]
  t_last = int((last["segment_ids"] > 0).sum())
  p_last = int(last["image_grid_thw"].prod(-1).sum())
  slots_t = stats["token_slots"] - spec.rows * spec.row_length
  slots_p = stats["patch_slots"] - spec.rows * spec.patch_capacity
  return (1 - (stats["tokens"] - t_last) / slots_t,
          1 - (stats["patches"] - p_last) / slots_p,
          stats["samples"] / stats["batches"] / spec.rows)


def replace_section(path: str, body: str) -> None:
  """Puts ``TITLE`` + ``body`` in results.md in place of any old section."""
  text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
  head, found, tail = text.partition(TITLE)
  rest = ""
  if found:
    _, sep, after = tail.partition("\n## ")
    rest = ("\n## " + after) if sep else ""
  text = head.rstrip("\n") + "\n\n" + TITLE + "\n\n" + body.strip("\n") + (
      "\n" + rest if rest else "\n")
  with open(path, "w") as f:
    f.write(text)


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--scale", type=float, default=2.0,
                 help="dataset size multiplier (1.0: 300 records read)")
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  p.add_argument("--no-write", action="store_true")
  args = p.parse_args(argv)

  from vselect_jax.data import DataConfig, make_train_iterator
  from vselect_jax.data import testing_tokenizer
  from vselect_jax.data.synthetic import write_synthetic_dataset

  tmp = tempfile.mkdtemp()
  n = lambda k: max(2, int(k * args.scale))
  reg = {}
  # name, records, (w, h), format, multi-turn fraction
  for name, count, size, fmt, turns in (
      ("chart", n(60), (800, 600), "png", 0.1),
      ("coco", n(750), (640, 480), "jpeg", 0.8),
      ("ocr", n(165), (300, 450), "jpeg", 0.9)):
    reg.update(write_synthetic_dataset(
        os.path.join(tmp, name), count, seed=len(reg), sizes=(size,),
        name=name, multi_turn_fraction=turns, two_image_fraction=0.0,
        image_format=fmt))
  tok = os.path.join(tmp, "tok")
  testing_tokenizer(tok)
  cfg = DataConfig(mixture="chart,coco%10,ocr", registry=reg, seed=0,
                   row_length=2048, patches_per_row=2048,
                   max_images_per_row=32, rows_per_batch=8,
                   read_threads=1, num_workers=0, max_skip_fraction=0.0)
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1,
                           repeat=False)
  first = next(it)           # start-up (tokenizer load) is not timed
  c0, t0 = cpu_seconds(), time.perf_counter()
  seen, tokens, slots = 0, 0, 0
  for b in it:
    seen += int(b["samples_seen"])
    tokens += int((b["segment_ids"] > 0).sum())
    slots += b["segment_ids"].size
  cpu, wall = cpu_seconds() - c0, time.perf_counter() - t0
  del first
  per_core = seen / cpu
  spec = cfg.row_spec()
  t_waste, p_waste, per_row = packing_waste(spec, cfg.pack_lookahead)
  t1, p1, _ = packing_waste(spec, 1)
  print(f"{seen} samples in {wall:.2f} s wall, {cpu:.2f} CPU s: "
        f"{per_core:.1f} samples/s per core ({seen / wall:.1f} wall)")
  print(f"token padding, synthetic stream: {100 * (1 - tokens / slots):.1f}%")
  print(f"training-mix lengths: token padding {100 * t_waste:.2f}% "
        f"(lookahead 1: {100 * t1:.2f}%), patch padding {100 * p_waste:.1f}%"
        f", {per_row:.1f} samples per row")
  if args.no_write:
    return 0
  today = datetime.date.today()
  cores = os.cpu_count()
  body = f"""
Realistic mix `chart,coco%10,ocr` in the reference's proportions (PNG
charts 800x600, JPEG photos 640x480, JPEG covers 300x450), full grain
pipeline: JSON parse, decode, Qwen2.5-VL preprocessing (max_pixels 50176),
chat template + tokenisation, M-RoPE ids, packing into 8 rows of 2048
tokens / 2048 patches. One read thread, no worker processes; samples per
CPU-second = per core. A host feeding one step per second at 8 x 2048
tokens (~{8 * per_row:.0f} samples) needs about
{8 * per_row / per_core:.1f} cores of workers (`num_workers`).

| date | machine (`nproc`) | samples/s per core | wall samples/s |
|---|---|---|---|
| {today} | {cores} cores, {cpu_model()} | {per_core:.1f} | {seen / wall:.1f} |

Padding with packing look-ahead {cfg.pack_lookahead} (rows of 2048 tokens,
2048 patches, 8 rows per batch), on the reference mix's length distribution
(`synthetic.training_mix_lengths`, 20k samples, {per_row:.1f} samples per
row): **{100 * t_waste:.2f}% of token slots** ({100 * t1:.2f}% when a batch
closes at its first miss), {100 * p_waste:.1f}% of patch slots. The
synthetic stream above (short QAs, {seen} records timed, last batch
partial) pads {100 * (1 - tokens / slots):.1f}% of its token slots.
"""
  replace_section(args.out, body)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

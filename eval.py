"""Evaluate on the VisionSelector benchmarks.

    python eval.py run --model DIR --task chartqa --data chartqa.jsonl \
        --budgets 1.0,0.3,0.2,0.1 --method selector --out results/
    python eval.py sweep --model DIR --task chartqa --data chartqa.jsonl \
        --methods selector,visionzip,divprune,random --budgets 1.0,0.5,0.3,0.2,0.1,0.05 --out results/
    python eval.py score --task chartqa --data chartqa.jsonl --predictions run/predictions.jsonl
    python eval.py convert --task docvqa --out data/ DocVQA/validation-*.parquet

``run`` generates with the model at each budget and writes, per (task,
method, budget), ``<out>/<task>/<method>_<budget>/predictions.jsonl`` and
``summary.json`` (metrics, timings, visual tokens, peak memory), and prints a
table. ``sweep`` runs a grid of methods and budgets and adds ``sweep.md``,
``sweep.csv``, ``sweep.png`` and the efficiency table ``efficiency.md`` /
``efficiency.csv`` (prefill, latency, peak memory, visual tokens, KV-cache
bytes and their ratios to budget 1.0). ``score`` scores saved predictions without
a model. ``convert`` turns lmms-lab parquet files (and the video
benchmarks' parquet / json + video files, ``--video-dir``) into the local
JSONL format. ``--batch-size N`` batches prompts of equal padded shapes;
``--distributed`` splits the records over JAX processes. Budget ``none`` runs the uncompressed base model.

``run`` and ``sweep`` check their options, the whole method x budget grid and
the data file (every line, every image exists and opens) before loading the
model, and stop at the first problem with its file, line and id (exit 2).
``--skip-bad`` skips bad records instead and counts them by kind in
``summary.json``. Examples are prepared ``--prefetch`` ahead of the model, so
memory does not grow with the data set.
"""
from __future__ import annotations

import argparse
import sys


def _budgets(text: str) -> list:
  out = []
  for part in text.split(","):
    part = part.strip().lower()
    if part in ("none", "orig"):
      out.append(None)
      continue
    try:
      b = float(part)
    except ValueError:
      raise argparse.ArgumentTypeError(
          f"budget {part!r} is not a number in (0, 1] or 'none'") from None
    if not 0.0 < b <= 1.0:
      raise argparse.ArgumentTypeError(f"budget {b} is not in (0, 1]")
    out.append(b)
  return out


def _options(text: str) -> dict:
  """'{"block": 8}' -> {"block": 8}."""
  import json
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise argparse.ArgumentTypeError(f"--options is not JSON: {e}") from None
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(
        f"--options must be a JSON object, got {text!r}")
  return value


def _mesh(text: str) -> dict:
  """'data=1,fsdp=2,tensor=4' -> {"data": 1, "fsdp": 2, "tensor": 4}."""
  from vselect_jax.sharding import MESH_AXES
  sizes = {}
  for part in text.split(","):
    name, _, value = part.partition("=")
    name = name.strip()
    if name not in MESH_AXES or not value.strip().lstrip("-").isdigit():
      raise argparse.ArgumentTypeError(
          f"mesh entry {part!r}: expected NAME=SIZE with NAME one of "
          f"{', '.join(MESH_AXES)}")
    sizes[name] = int(value)
  return sizes


def _add_model_args(p: argparse.ArgumentParser, sweep: bool) -> None:
  from vselect_jax.eval import tasks
  from vselect_jax import methods
  p.add_argument("--model", required=True,
                 help="converted vselect-jax dir, HF dir or hub id")
  p.add_argument("--tokenizer", default=None,
                 help="tokenizer dir (default: --model)")
  p.add_argument("--task", required=True, choices=sorted(tasks.TASKS))
  p.add_argument("--data", required=True, help="the task's JSONL file")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--budgets", type=_budgets, default=_budgets(
      "1.0,0.5,0.3,0.2,0.1,0.05" if sweep else "1.0,0.3,0.2,0.1"))
  if sweep:
    p.add_argument("--methods", default="selector,random,uniform,divprune",
                   help=f"comma-separated, from {','.join(methods.names())}")
  else:
    p.add_argument("--method", default="selector", choices=methods.names())
    p.add_argument("--visualize", type=int, default=0, metavar="N",
                   help="write selection pictures for the first N samples")
  p.add_argument("--dtype", default="auto",
                 choices=("auto", "float32", "bfloat16"),
                 help="auto: float32 on CPU, bfloat16 on accelerators")
  p.add_argument("--per-image", action="store_true",
                 help="budget per image instead of pooled per sample")
  p.add_argument("--limit", type=int, default=None,
                 help="only the first N (usable) records")
  p.add_argument("--seed", type=int, default=0, help="for --method random")
  p.add_argument("--options", type=_options, default={},
                 metavar="JSON",
                 help='method options, e.g. \'{"faithful": true}\' or '
                 '\'{"block": 8}\' (tower_selector); checked with the grid')
  p.add_argument("--min-pixels", type=int, default=200704)
  p.add_argument("--max-pixels", type=int, default=None,
                 help="default: the reference's for the model family "
                 "(Qwen2.5-VL 1605632, LLaVA-OV-1.5 3240000)")
  p.add_argument("--jpeg-quality", type=int, default=75,
                 help="JPEG round trip as the reference; 0 disables")
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help="override the task's generation limit")
  p.add_argument("--skip-bad", action="store_true",
                 help="skip bad records (malformed line, missing or corrupt "
                 "image) and count them in summary.json instead of stopping")
  p.add_argument("--prefetch", type=int, default=2, metavar="N",
                 help="examples prepared ahead of the model (host memory "
                 "grows with N)")
  p.add_argument("--batch-size", type=int, default=1, metavar="N",
                 help="prompts per generate call, grouped by padded shape "
                 "(the batch-1 predictions)")
  p.add_argument("--distributed", action="store_true",
                 help="join a multi-process run (jax.distributed, "
                 "auto-detected on TPU pods / SLURM): each process "
                 "evaluates every P-th record, scores are gathered once")
  p.add_argument("--mesh", type=_mesh, default=None,
                 metavar="data=D,fsdp=F,tensor=T",
                 help="shard the model over the devices (parameters by the "
                 "training's logical-axis rules, batch rows over data); "
                 "one size may be -1 (the rest), e.g. fsdp=-1")
  from vselect_jax.eval.video import VideoSampling
  v = VideoSampling()
  g = p.add_argument_group("video frames (the reference's lmms-eval "
                           "Qwen2.5-VL sampling)")
  g.add_argument("--video-fps", type=float, default=v.fps,
                 help="qwen_vl_utils sampling rate")
  g.add_argument("--video-min-frames", type=int, default=v.min_frames)
  g.add_argument("--video-max-frames", type=int, default=v.max_frames)
  g.add_argument("--video-min-pixels", type=int, default=v.min_pixels)
  g.add_argument("--video-max-pixels", type=int, default=v.max_pixels,
                 help="per-frame area cap")
  g.add_argument("--video-total-pixels", type=int, default=v.total_pixels,
                 help="area over all sampled frames (lowers the cap)")
  g.add_argument("--max-num-frames", type=int, default=v.max_num_frames,
                 help="frames kept of the sampled ones (uniform, + the "
                 "last)")
  g.add_argument("--video-processor-fps", type=float,
                 default=v.processor_fps,
                 help="second_per_grid_ts = 2 / this (the processor's)")
  p.add_argument("--no-progress", action="store_true")


def _family(model: str):
  """The model family from ``model``'s config.json (None when it cannot be
  read yet, e.g. a hub id: then the loaded model's)."""
  from vselect_jax.config import read_model_config
  try:
    return read_model_config(model).family
  except (OSError, ValueError):
    return None


def _settings(args):
  """EvalSettings from the flags; ValueError names a bad one."""
  from vselect_jax.eval import runner
  from vselect_jax.eval.video import VideoSampling
  if args.jpeg_quality < 0:
    raise ValueError(f"--jpeg-quality must be in [0, 100] (0 disables), got "
                     f"{args.jpeg_quality}")
  family = _family(args.model)
  return runner.EvalSettings(
      min_pixels=args.min_pixels, family=family,
      max_pixels=args.max_pixels or runner.MAX_PIXELS[family or
                                                     "qwen2_5_vl"],
      jpeg_quality=args.jpeg_quality or None, per_image=args.per_image,
      seed=args.seed, options=tuple(sorted(args.options.items())),
      limit=args.limit, max_new_tokens=args.max_new_tokens,
      skip_bad=args.skip_bad, prefetch=args.prefetch,
      batch_size=args.batch_size,
      video=VideoSampling(
          fps=args.video_fps, min_frames=args.video_min_frames,
          max_frames=args.video_max_frames,
          min_pixels=args.video_min_pixels,
          max_pixels=args.video_max_pixels,
          total_pixels=args.video_total_pixels,
          max_num_frames=args.max_num_frames,
          processor_fps=args.video_processor_fps))


def _load(args):
  import jax
  import vselect_jax
  from transformers import AutoTokenizer
  dtype = args.dtype
  if dtype == "auto":
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  mesh = None
  if args.mesh is not None:
    from vselect_jax.sharding import make_mesh
    mesh = make_mesh(args.mesh)
  elif jax.process_count() > 1:  # data parallel: a copy per process
    from vselect_jax.loading import one_device_mesh
    mesh = one_device_mesh()
  model = vselect_jax.from_pretrained(args.model, dtype=dtype, mesh=mesh)
  # Conversion copies the tokenizer files next to the weights.
  tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
  return model, tokenizer


def _check(args):
  """Everything that can be checked without the model: options, the grid,
  the data file. Returns (settings, methods, data)."""
  from vselect_jax.eval import records, tasks
  from vselect_jax.eval import sweep as sweep_lib
  settings = _settings(args)
  methods = ([m.strip() for m in args.methods.split(",") if m.strip()]
             if args.command == "sweep" else [args.method])
  sweep_lib.check_grid(methods, args.budgets, settings)
  data = records.read_data(args.data, tasks.get_task(args.task)
                           .required_fields, skip_bad=settings.skip_bad)
  if data.skipped:
    counts = ", ".join(f"{k} {n}" for k, n in data.skip_counts().items() if n)
    print(f"skipping {len(data.skipped)} bad records of {args.data} "
          f"({counts}); first: {data.skipped[0].error}", file=sys.stderr)
  return settings, methods, data


def run_command(args) -> int:
  import os
  from vselect_jax.eval import runner, score
  from vselect_jax.eval import sweep as sweep_lib
  from vselect_jax.eval.records import EvalDataError
  try:
    settings, methods, data = _check(args)
  except ValueError as e:  # EvalDataError included
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.distributed:
    from vselect_jax.training import distributed
    distributed.maybe_initialize()
  try:
    model, tokenizer = _load(args)
  except (OSError, ValueError, KeyError) as e:
    print(f"error: cannot load the model {args.model}: {e}", file=sys.stderr)
    return 2
  try:
    if args.command == "sweep":
      rows = sweep_lib.run_sweep(model, tokenizer, args.task, args.data,
                                 methods, args.budgets, args.out, settings,
                                 progress=not args.no_progress, data=data)
      print(sweep_lib.format_rows(rows, sweep_lib.headline_metric(args.task)))
      print(f"wrote {os.path.join(args.out, args.task)}/sweep.md, "
            "sweep.csv, sweep.png, efficiency.md, efficiency.csv")
      return 0
    rows = []
    for budget in args.budgets:
      cell = os.path.join(args.out, args.task,
                          f"{args.method}_{runner.budget_name(budget)}")
      summary = runner.run_one(model, tokenizer, args.task, args.data, budget,
                               args.method, cell, settings,
                               visualize=args.visualize,
                               progress=not args.no_progress, data=data)
      print(score.format_table(summary))
      print(f"wrote {cell}/predictions.jsonl, summary.json\n")
      rows.append(sweep_lib.sweep_row(summary, args.task))
    print(sweep_lib.format_rows(rows, sweep_lib.headline_metric(args.task)))
  except EvalDataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python eval.py", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  from vselect_jax.eval import lmms_convert, score
  _add_model_args(sub.add_parser("run", help="evaluate at budgets"), False)
  _add_model_args(sub.add_parser("sweep", help="methods x budgets grid"),
                  True)
  score.add_score_args(sub.add_parser("score", help="score predictions"))
  lmms_convert.add_convert_args(sub.add_parser(
      "convert", help="lmms-lab parquet -> local JSONL + images"))
  args = parser.parse_args(argv)
  if args.command in ("run", "sweep"):
    return run_command(args)
  if args.command == "score":
    return score.run_score(args)
  return lmms_convert.run_convert(args)


if __name__ == "__main__":
  sys.exit(main())

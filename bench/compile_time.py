"""Compile time of the prefill and of the scorer-training step vs depth.

The text decoder and the vision tower run their layers as Python loops, so
every layer is traced and compiled on its own and compile time grows with
depth. This measures it on the local device at small widths (compile time
depends on the number of ops, hardly on their sizes) with the 7B's head
counts: LLM 28 heads / 4 KV heads (head_dim 16), ViT 16 heads (head_dim 8),
full-attention ViT blocks every 8th block as the 7B's 7/15/23/31 (the last
block when the tower is shallower than 8), vocab 1024, float32 unless
``--dtype``. Input: one 224 x 224 image (256 patches, 64 visual tokens) in
a short prompt.

Programs, each timed as trace (Python, the layer loops) + lower (to
StableHLO) + compile (XLA), on a fresh model per depth:
  prefill       ``model.generate``'s prefill, ``budget=None``
  prefill@0.2   the same with ``budget=0.2`` (scorer + top-k selection)
  train         ``training/step.make_train_step`` with remat, jitted with the
                state shardings and donation as ``training/loop.py`` does
                (one packed row of 128 tokens)
Each compiled program is run once afterwards to check it works (``run ms``).

    python bench/compile_time.py                       # 4/8/16 and 28/32
    python bench/compile_time.py --text-layers 28 --vision-depth 32

Appends one row per (depth, program) to bench/results.md, "Compile time vs
depth", with the machine and its load average (the CPU may be shared).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROGRAMS = ("prefill", "prefill@0.2", "train")
IMAGE, VIDEO, START, END = 1000, 1001, 1002, 1003
GRID = (1, 16, 16)  # one 224 x 224 image


def full_attention_blocks(depth: int) -> tuple[int, ...]:
  """The 7B's pattern (every 8th block, 7/15/23/31 at depth 32)."""
  return tuple(range(7, depth, 8)) or (depth - 1,)


def make_config(text_layers: int, vision_depth: int):
  from vselect_jax.config import TextConfig, VisionConfig, VLMConfig
  txt = TextConfig(vocab_size=1024, hidden_size=448, intermediate_size=1024,
                   num_hidden_layers=text_layers, num_attention_heads=28,
                   num_key_value_heads=4, mrope_section=(2, 3, 3))
  vis = VisionConfig(depth=vision_depth, hidden_size=128,
                     intermediate_size=344, num_heads=16,
                     out_hidden_size=txt.hidden_size,
                     fullatt_block_indexes=full_attention_blocks(vision_depth))
  return VLMConfig(vision=vis, text=txt, image_token_id=IMAGE,
                   video_token_id=VIDEO, vision_start_token_id=START,
                   vision_end_token_id=END)


def stage_times(jitted, *args, **kwargs) -> tuple[dict, object]:
  """Seconds of trace, lower and compile; and the compiled program."""
  t0 = time.perf_counter()
  traced = jitted.trace(*args, **kwargs)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  return {"trace": t1 - t0, "lower": t2 - t1, "compile": t3 - t2,
          "hlo_kb": len(lowered.as_text()) / 1024}, compiled


def prefill_program(model, budget):
  """``(jitted, args, kwargs)`` exactly as ``model.generate`` calls its
  prefill for one image and ``budget``."""
  cfg = model.config
  visual = int(np.prod(GRID)) // cfg.vision.merge_unit
  ids = np.array([[START] + [IMAGE] * visual + [END] + list(range(10, 26))])
  pix = np.random.default_rng(0).standard_normal(
      (int(np.prod(GRID)), cfg.vision.patch_dim)).astype(np.float32)
  prep = model.prepare(ids, None, pix, np.array([GRID]))
  plan = model._plan(prep, budget, "selector", False, None, None)
  return model._prefill_jit, (model.state, prep.arrays, plan.k_token,
                              plan.k_row), dict(
      max_new_tokens=16, size=plan.size, method=plan.method,
      per_image=False, options=plan.options)


def train_program(model, dtype):
  """``(jitted, args, kwargs)`` of the training step as ``loop.train``
  builds it from ``configs/common.py`` (remat on, scorer only)."""
  import jax
  import jax.numpy as jnp
  from configs.common import base_config
  from vselect_jax import sharding as shard_lib
  from vselect_jax.host import train_batch as batch_lib
  from vselect_jax.training import loop, optim
  from vselect_jax.training import step as step_lib
  cfg, config = model.config, base_config()
  total, accum = int(config.total_steps), int(config.optim.grad_accum)
  tx = optim.make_optimizer(
      config.optim.lr, total, warmup_ratio=config.optim.warmup_ratio,
      weight_decay=config.optim.weight_decay,
      clip_norm=config.optim.clip_norm, grad_accum=accum)
  reg = optim.reg_weight_schedule(config.reg.start, config.reg.end, total,
                                  config.reg.shape)
  parts = step_lib.Parts.from_config(config)
  mesh = shard_lib.make_mesh(dict(config.mesh), jax.devices()[:1])
  graphdef, state = step_lib.init_state(model.module, tx, parts)
  sh = loop.state_shardings(state, mesh)
  state = jax.device_put(state, sh)
  step_fn = step_lib.make_train_step(
      graphdef, tx, reg, grad_accum=accum, remat=bool(config.remat),
      compute_dtype=jnp.dtype(dtype), parts=parts)
  jitted = jax.jit(step_fn, in_shardings=(sh, None, None),
                   out_shardings=(sh, None), donate_argnums=0)

  length, visual = 128, int(np.prod(GRID)) // cfg.vision.merge_unit
  ids = np.full((1, length), 10, np.int32)
  ids[0, 1] = START
  ids[0, 2:2 + visual] = IMAGE
  ids[0, 2 + visual] = END
  labels = np.full((1, length), -100, np.int32)
  labels[0, -16:] = 20
  raw = dict(input_ids=ids, labels=labels,
             segment_ids=np.ones((1, length), np.int32),
             position_ids=np.broadcast_to(np.arange(length, dtype=np.int32),
                                          (3, 1, length)).copy(),
             pixel_values=np.random.default_rng(0).standard_normal(
                 (1, int(np.prod(GRID)), cfg.vision.patch_dim)
             ).astype(np.float32),
             image_grid_thw=np.array([[GRID]]), num_images=np.array([1]))
  host = batch_lib.prepare_train_batch(cfg, raw)
  dev = {k: jnp.asarray(v) for k, v in host.items()}
  k_row = jnp.asarray(loop.rows_k(host, config.budget))
  return jitted, (state, dev, k_row), {}


def measure(text_layers: int, vision_depth: int, dtype: str,
            programs) -> list[tuple[str, dict]]:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  import vselect_jax
  from vselect_jax.modeling.vlm import Qwen25VL
  cfg = make_config(text_layers, vision_depth)
  rows = []
  for name in programs:
    # A fresh model per program: no jit cache is shared between them.
    model = vselect_jax.VisionLanguageModel(
        cfg, Qwen25VL(cfg, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
    if name == "train":
      jitted, args, kwargs = train_program(model, dtype)
    else:
      jitted, args, kwargs = prefill_program(
          model, None if name == "prefill" else float(name.split("@")[1]))
    times, compiled = stage_times(jitted, *args, **kwargs)
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times["run"] = time.perf_counter() - t
    times["total"] = times["trace"] + times["lower"] + times["compile"]
    print(f"{text_layers:2d}/{vision_depth:2d} {name:12s} trace "
          f"{times['trace']:6.2f} s  lower {times['lower']:6.2f} s  compile "
          f"{times['compile']:6.2f} s  total {times['total']:6.2f} s  "
          f"(StableHLO {times['hlo_kb']:.0f} KB, run "
          f"{times['run'] * 1e3:.0f} ms)", flush=True)
    rows.append((name, times))
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--text-layers", type=int, nargs="+",
                 default=[4, 8, 16, 28])
  p.add_argument("--vision-depth", type=int, nargs="+",
                 default=[4, 8, 16, 32],
                 help="one per --text-layers entry (paired in order)")
  p.add_argument("--programs", nargs="+", default=list(PROGRAMS),
                 choices=PROGRAMS)
  p.add_argument("--dtype", default="float32",
                 choices=("float32", "bfloat16"),
                 help="parameters, and the train step's compute dtype")
  p.add_argument("--no-warmup", action="store_true",
                 help="skip the untimed 1/1-layer pass that pays JAX's "
                 "one-time start-up costs before the first timed program")
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = p.parse_args(argv)
  if len(args.text_layers) != len(args.vision_depth):
    p.error(f"--text-layers {args.text_layers} and --vision-depth "
            f"{args.vision_depth} must have the same number of entries")
  if min(args.text_layers + args.vision_depth) < 1:
    p.error("layer counts must be >= 1")

  load = os.getloadavg()
  import jax
  # Only in-process compilation counts: no persistent cache hits.
  jax.config.update("jax_enable_compilation_cache", False)
  from bench.forward import append_result, machine
  where = machine()
  print(f"{where}; load average at start {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f}", flush=True)
  if not args.no_warmup:
    measure(1, 1, args.dtype, args.programs)
    print("(warm-up above, not recorded)", flush=True)
  results = []
  for t, v in zip(args.text_layers, args.vision_depth):
    results.append((t, v, measure(t, v, args.dtype, args.programs)))
  load_end = os.getloadavg()[0]

  print("\n| layers | program | trace s | lower s | compile s | total s |")
  for t, v, rows in results:
    for name, x in rows:
      print(f"| {t}/{v} | {name} | {x['trace']:.2f} | {x['lower']:.2f} | "
            f"{x['compile']:.2f} | {x['total']:.2f} |")
      append_result(
          args.out,
          "## Compile time vs depth (bench/compile_time.py)",
          "Trace + lower + compile seconds of the prefill (`generate`'s, "
          "budget None and 0.2) and of the scorer-training step (remat, "
          "as `training/loop.py` jits it), layers text/vision (7B: 28/32), "
          "7B head counts at small widths (LLM 448, ViT 128, vocab 1024), one "
          "224x224 image. Load = `os.getloadavg()` (1 min) at start / end "
          "of the run.\n",
          "| date | machine | load | dtype | layers | program | trace s | "
          "lower s | compile s | total s | StableHLO KB |",
          f"| {datetime.date.today()} | {where} | {load[0]:.2f}/"
          f"{load_end:.2f} | {args.dtype} | {t}/{v} | {name} | "
          f"{x['trace']:.2f} | {x['lower']:.2f} | {x['compile']:.2f} | "
          f"{x['total']:.2f} | {x['hlo_kb']:.0f} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

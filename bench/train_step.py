"""Scorer-training step time and achieved FLOP/s, Qwen2.5-VL-3B shapes.

Random weights, built directly in JAX (no checkpoint). On CPU the layer counts
are reduced (``--text-layers``, ``--vision-layers``); widths, heads and the
packed-row shape are the 3B's: one row of 2048 tokens packing 8 samples of
one 224x224 image (64 visual tokens, 256 patches) each. bf16 compute.

Model FLOPs per step: vision forward (no gradient needed) + LLM forward +
LLM backward to the activations (the soft mask's gradient flows back
through every layer; no weight gradients) + the rematerialised forward.
MFU is printed when the device's peak is known (``--peak-tflops``).

    python bench/train_step.py [--text-layers 2 --vision-layers 4]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--text-layers", type=int, default=2)
  p.add_argument("--vision-layers", type=int, default=4)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--peak-tflops", type=float, default=None)
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from flax import nnx

  from bench.forward import append_result, machine
  from vselect_jax.config import TextConfig, VisionConfig, VLMConfig
  from vselect_jax.modeling.vlm import Qwen25VL
  from vselect_jax.host import train_batch as batch_lib
  from vselect_jax.training import loop, optim
  from vselect_jax.training import step as step_lib

  vis = VisionConfig(depth=args.vision_layers, hidden_size=1280,
                     intermediate_size=3420, num_heads=16,
                     out_hidden_size=2048,
                     fullatt_block_indexes=(args.vision_layers - 1,))
  txt = TextConfig(vocab_size=151936, hidden_size=2048,
                   intermediate_size=11008,
                   num_hidden_layers=args.text_layers, num_attention_heads=16,
                   num_key_value_heads=2, tie_word_embeddings=True)
  cfg = VLMConfig(vision=vis, text=txt)
  model = Qwen25VL(cfg, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))

  rows, length, samples = 1, 2048, 8
  grid = [1, 16, 16]
  per = 64
  ids = np.full((rows, length), 100, np.int32)
  seg = np.zeros((rows, length), np.int32)
  labels = np.full((rows, length), -100, np.int32)
  pos = np.ones((3, rows, length), np.int32)
  stride = length // samples
  for s in range(samples):
    t0 = s * stride
    ids[0, t0 + 2:t0 + 2 + per] = cfg.image_token_id
    seg[0, t0:t0 + stride] = s + 1
    labels[0, t0 + stride - 32:t0 + stride] = 200
    pos[:, 0, t0:t0 + stride] = np.arange(stride)
  rng = np.random.default_rng(0)
  batch = dict(input_ids=ids, labels=labels, segment_ids=seg,
               position_ids=pos,
               pixel_values=rng.standard_normal(
                   (rows, samples * 256, 1176)).astype(np.float32),
               image_grid_thw=np.array([[grid] * samples]),
               num_images=np.array([samples]))
  host = batch_lib.prepare_train_batch(cfg, batch)
  k = loop.rows_k(host, 0.2)
  tx = optim.make_optimizer(5e-5, 100)
  graphdef, state = step_lib.init_state(model, tx)
  fn = jax.jit(step_lib.make_train_step(
      graphdef, tx, optim.reg_weight_schedule(0.1, 2.0, 100),
      compute_dtype=jnp.bfloat16), donate_argnums=0)
  dev = {key: jnp.asarray(v) for key, v in host.items()}
  state, m = fn(state, dev, jnp.asarray(k))
  jax.block_until_ready(m)
  times = []
  for _ in range(args.reps):
    t = time.perf_counter()
    state, m = fn(state, dev, jnp.asarray(k))
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  dt = float(np.median(times))

  from vselect_jax.training import flops as flops_lib
  flops = flops_lib.batch_flops(cfg, batch)
  achieved = flops / dt
  peak = (args.peak_tflops * 1e12 if args.peak_tflops else
          flops_lib.peak_flops(jax.devices()[0].device_kind))
  mfu = f"{100 * achieved / peak:.1f}%" if peak else "n/a (peak unknown)"
  print(f"step {dt * 1e3:.0f} ms, {flops / 1e12:.2f} TFLOP/step, "
        f"{achieved / 1e12:.3f} TFLOP/s, MFU {mfu}, loss {float(m['loss']):.3f}")
  append_result(
      args.out,
      "## Training step, Qwen2.5-VL-3B shapes (bench/train_step.py)",
      "bf16, one packed row of 2048 tokens with 8 images x 64 visual tokens, "
      "budget 0.2, remat on. Depth in the layers column (3B has 36/32).\n",
      "| date | machine | layers (text/vision) | step ms | TFLOP/step | "
      "TFLOP/s | MFU |",
      f"| {datetime.date.today()} | {machine()} | {args.text_layers}/"
      f"{args.vision_layers} | {dt * 1e3:.0f} | {flops / 1e12:.2f} | "
      f"{achieved / 1e12:.3f} | {mfu} |")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

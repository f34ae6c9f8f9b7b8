"""Training-step memory of in-tower selection, with and without remat.

XLA's compiled ``memory_analysis()`` of the jitted train step
(``training.step.make_train_step``, the pod recipe: bf16 frozen backbone,
bf16 compute, the scorer's float32 master copy) on one packed row of the
7B recipe (``configs/qwen25vl_7b.py``: 4096 tokens, 4096 patches = four
448 x 448 images of 1024 patches / 256 visual tokens each), at the 7B's
widths with reduced depth (``--vision-depth`` blocks, full attention at the
last of each quarter as on the 7B; ``--layers`` LLM layers). Nothing is
allocated: the model and state are abstract (``nnx.eval_shape``), so only
the compile runs. Rows: in-tower (``select_at``) and post-tower, each with
``remat`` off and on; "temp" is XLA's scratch (the activations the backward
pass keeps, plus work buffers), "args" the parameters and batch.

    python bench/intower_memory.py [--vision-depth 8 --select-at 4 --layers 2]

On CPU this measures the CPU compiler's buffer assignment; a TPU's differs
in detail (fusion, layouts), not in what remat removes.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GRID = (1, 32, 32)        # 448 x 448 px: 1024 patches, 256 visual tokens
IMAGES, LENGTH = 4, 4096


def model_config(vision_depth: int, layers: int):
  """Qwen2.5-VL-7B widths at reduced depth."""
  from bench.intower import full_configs
  from vselect_jax.config import VLMConfig
  import dataclasses
  vis, txt = full_configs("7b")
  full = tuple(sorted({(i + 1) * vision_depth // 4 - 1 for i in range(4)}))
  vis = dataclasses.replace(vis, depth=vision_depth,
                            fullatt_block_indexes=full)
  txt = dataclasses.replace(txt, num_hidden_layers=layers,
                            mrope_section=(16, 24, 24))
  return VLMConfig(vision=vis, text=txt)


def packed_row(cfg) -> dict:
  """One training row: IMAGES samples (image + 8 question tokens + 4
  supervised answer tokens), text padding to LENGTH."""
  from vselect_jax.host.rope_index import get_rope_index
  tokens = int(np.prod(GRID)) // cfg.vision.merge_unit
  out = dict(input_ids=np.zeros((1, LENGTH), np.int32),
             labels=np.full((1, LENGTH), -100, np.int32),
             segment_ids=np.zeros((1, LENGTH), np.int32),
             position_ids=np.ones((3, 1, LENGTH), np.int32),
             pixel_values=np.zeros((1, IMAGES * int(np.prod(GRID)), 1176),
                                   np.float32),
             image_grid_thw=np.tile(np.array(GRID, np.int32), (1, IMAGES, 1)),
             num_images=np.array([IMAGES], np.int32))
  t = 0
  for s in range(IMAGES):
    sample = ([cfg.vision_start_token_id] + [cfg.image_token_id] * tokens +
              [cfg.vision_end_token_id] + list(range(1000, 1008)) +
              list(range(2000, 2004)))
    n = len(sample)
    out["input_ids"][0, t:t + n] = sample
    out["labels"][0, t + n - 4:t + n] = sample[-4:]
    out["segment_ids"][0, t:t + n] = s + 1
    pos, _ = get_rope_index(np.array([sample]), image_grid_thw=[GRID],
                            image_token_id=cfg.image_token_id,
                            video_token_id=cfg.video_token_id)
    out["position_ids"][:, 0, t:t + n] = pos[:, 0]
    t += n
  out["segment_ids"][0, t:] = IMAGES + 1        # text filler to the end
  return out


def step_memory(cfg, host: dict, select_at, remat: bool) -> dict:
  """Compiles the train step on abstract state: bytes of temp / args."""
  import dataclasses
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from vselect_jax.modeling.vlm import Qwen25VL
  from vselect_jax.training import optim
  from vselect_jax.training import step as step_lib
  from vselect_jax.training.loop import rows_k
  parts = step_lib.Parts(scorer="importance_scorer" if select_at is None
                         else "block_scorer")
  module = nnx.eval_shape(lambda: Qwen25VL(cfg, dtype=jnp.bfloat16,
                                           rngs=nnx.Rngs(0)))
  graphdef, trainable, frozen = step_lib.split_model(module, parts)
  trainable = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, jnp.float32), trainable)
  tx = optim.make_optimizer(5e-5, 100)
  state = step_lib.TrainState(trainable, frozen,
                              jax.eval_shape(tx.init, trainable),
                              jax.ShapeDtypeStruct((), jnp.int32),
                              jax.ShapeDtypeStruct((), jnp.int32))
  fn = step_lib.make_train_step(
      graphdef, tx, optim.reg_weight_schedule(0.1, 2.0, 100), remat=remat,
      compute_dtype=jnp.bfloat16, parts=parts, select_at=select_at)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in
           host.items()}
  k = rows_k(host, 0.2)
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(state, batch, jax.ShapeDtypeStruct(
      np.shape(k), jnp.int32)).compile()
  m = compiled.memory_analysis()
  return {"temp": m.temp_size_in_bytes, "args": m.argument_size_in_bytes,
          "compile_s": time.perf_counter() - t}


def vision_back_memory(cfg, host: dict, start: int, remat: bool) -> dict:
  """The in-tower training path's vision part alone: the gradient to a
  per-patch soft mask (the "scale" relaxation) through blocks
  [start, depth) and the merger (``forward_in_vision.encode_back``), with
  an arbitrary linear loss; compiled on abstract inputs."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from vselect_jax.forward_in_vision import encode_back
  from vselect_jax.modeling.vlm import Qwen25VL
  module = nnx.eval_shape(lambda: Qwen25VL(cfg, dtype=jnp.bfloat16,
                                           rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(module)
  b, p = host["window_seg"].shape
  dv, hd = cfg.vision.hidden_size, cfg.vision.head_dim
  sds = jax.ShapeDtypeStruct

  def loss(m, state, xs, cos, sin, ws, fs):
    model = nnx.merge(graphdef, state)
    x = (xs.astype(jnp.float32) * m[..., None]).astype(xs.dtype)
    merged = encode_back(model, x, cos, sin, ws, fs, start, remat=remat)
    return jnp.sum(merged.astype(jnp.float32))

  args = (sds((b, p), jnp.float32), state, sds((b, p, dv), jnp.bfloat16),
          sds((b, p, hd), jnp.float32), sds((b, p, hd), jnp.float32),
          sds((b, p), jnp.int32), sds((b, p), jnp.int32))
  # What the backward pass keeps, as JAX leaves it to the compiler (the
  # residuals of the VJP, shapes only): what remat controls.
  _, vjp = jax.eval_shape(
      lambda m, *rest: jax.vjp(lambda m: loss(m, *rest), m), *args)
  saved = sum(int(np.prod(r.shape)) * r.dtype.itemsize
              for r in jax.tree.leaves(vjp))
  t = time.perf_counter()
  m = jax.jit(jax.grad(loss)).lower(*args).compile().memory_analysis()
  return {"temp": m.temp_size_in_bytes, "args": m.argument_size_in_bytes,
          "saved": saved, "compile_s": time.perf_counter() - t}


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--vision-depth", type=int, default=8)
  p.add_argument("--select-at", type=int, default=4)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  p.add_argument("--part", choices=("step", "vision"), default="step",
                 help="step: the whole train step; vision: the gradient "
                 "through the vision blocks after selection alone, with "
                 "j = --select-at and j = 0")
  args = p.parse_args(argv)
  from bench.forward import append_result, machine
  from vselect_jax.host import train_batch as batch_lib
  cfg = model_config(args.vision_depth, args.layers)
  host = batch_lib.prepare_train_batch(cfg, packed_row(cfg))
  gib = 2.0 ** 30
  if args.part == "vision":
    for start in (args.select_at, 0):
      for remat in (False, True):
        m = vision_back_memory(cfg, host, start, remat)
        n = args.vision_depth - start
        print(f"{n} blocks after selection, remat {remat!s:>5}: saved "
              f"{m['saved'] / gib:6.2f} GiB, temp {m['temp'] / gib:6.2f} GiB "
              f"(compile {m['compile_s']:.0f} s)", flush=True)
        append_result(
            args.out,
            "## In-tower training memory, vision part alone "
            "(bench/intower_memory.py --part vision)",
            "XLA memory_analysis() of the gradient to a per-patch soft "
            "mask through the vision blocks after selection and the merger "
            "alone (7B vision widths, bf16, 4 x 1024 patches in one row; "
            "the last block of each quarter full attention, blockwise on "
            "CPU). saved = the VJP's residuals (what the backward pass "
            "keeps, before the compiler; frozen weights it reads "
            "included); temp = XLA CPU's compiled scratch.\n",
            "| date | machine | blocks after selection | remat | saved GiB "
            "| temp GiB |",
            f"| {datetime.date.today()} | {machine()} | {n} of "
            f"{args.vision_depth} | {'on' if remat else 'off'} | "
            f"{m['saved'] / gib:.2f} | {m['temp'] / gib:.2f} |")
    return 0
  for select_at in (args.select_at, None):
    for remat in (False, True):
      m = step_memory(cfg, host, select_at, remat)
      where = "post-tower" if select_at is None else f"j = {select_at}"
      print(f"{where:>10} remat {remat!s:>5}: temp {m['temp'] / gib:6.2f} "
            f"GiB, args {m['args'] / gib:6.2f} GiB (compile "
            f"{m['compile_s']:.0f} s)", flush=True)
      append_result(
          args.out,
          "## In-tower training memory, remat off / on "
          "(bench/intower_memory.py)",
          "XLA memory_analysis() of the compiled train step (abstract "
          "state, nothing allocated): 7B widths at reduced depth, one "
          "packed row of the 7B recipe (4096 tokens, 4 x 1024 patches), "
          "bf16 frozen backbone and compute, budget 0.2. temp = XLA "
          "scratch (activations kept for the backward pass and work "
          "buffers); args = parameters + batch.\n",
          "| date | machine | vision blocks / LLM layers | selection | remat "
          "| temp GiB | args GiB |",
          f"| {datetime.date.today()} | {machine()} | {args.vision_depth} / "
          f"{args.layers} | {where} | {'on' if remat else 'off'} | "
          f"{m['temp'] / gib:.2f} | {m['args'] / gib:.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""`make pipeline-demo`: the pipeline end to end on a small local model.

No Qwen weights can be downloaded here, so a small random-init HF
Qwen2.5-VL checkpoint is built locally; it stands in for a hub download such
as ``Qwen/Qwen2.5-VL-3B-Instruct``. The demo then converts it with
``conversion.convert_hf``, draws an image, preprocesses it like the Qwen
processor, and runs the jitted forward pass without compression and at
VisionSelector budgets 1.0, 0.3, 0.2 and 0.1, printing the kept visual
tokens and times; finally it trains the scorer for a few steps with
``configs/smoke.py`` and says where the scorer and metrics went.

    python -m vselect_jax.demo --workdir demo_out
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

# Real Qwen2.5-VL special-token ids, so prompts look like the released model's.
IM_START, IM_END = 151644, 151645
VISION_START, VISION_END, IMAGE_PAD = 151652, 151653, 151655


def build_stand_in_checkpoint(path: str, seed: int = 0) -> None:
  """A ~25M-parameter random Qwen2.5-VL in HF format (Qwen vocabulary)."""
  import torch
  from transformers import (Qwen2_5_VLConfig,
                            Qwen2_5_VLForConditionalGeneration)
  torch.manual_seed(seed)
  cfg = Qwen2_5_VLConfig(
      text_config=dict(vocab_size=151936, hidden_size=128,
                       intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2,
                       rope_parameters={"rope_type": "default",
                                        "mrope_section": [4, 6, 6],
                                        "rope_theta": 1e6}),
      vision_config=dict(depth=4, hidden_size=128, intermediate_size=256,
                         num_heads=4, out_hidden_size=128,
                         fullatt_block_indexes=[3], window_size=112,
                         tokens_per_second=2),
      tie_word_embeddings=True)
  Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)


def draw_image(width: int = 532, height: int = 364, seed: int = 0):
  """A synthetic chart-like picture (odd size: 19 x 13 merged tokens)."""
  from PIL import Image, ImageDraw
  rng = np.random.default_rng(seed)
  img = Image.new("RGB", (width, height), (250, 250, 245))
  d = ImageDraw.Draw(img)
  for i, v in enumerate(rng.integers(40, height - 60, size=6)):
    x = 40 + i * 78
    d.rectangle([x, height - 30 - v, x + 50, height - 30],
                fill=tuple(int(c) for c in rng.integers(0, 200, 3)))
  d.text((20, 10), "quarterly revenue", fill=(0, 0, 0))
  return img


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="demo_out")
  args = parser.parse_args(argv)
  os.makedirs(args.workdir, exist_ok=True)
  hf_dir = os.path.join(args.workdir, "hf_stand_in")
  jax_dir = os.path.join(args.workdir, "converted")

  if not os.path.exists(os.path.join(hf_dir, "config.json")):
    print(f"[1/5] building a small random HF Qwen2.5-VL at {hf_dir}\n"
          "      (it stands in for a hub download: no weights can be fetched "
          "here)")
    build_stand_in_checkpoint(hf_dir)
  else:
    print(f"[1/5] reusing the stand-in HF checkpoint at {hf_dir}")

  from vselect_jax.checkpoint.convert import convert
  print(f"[2/5] converting {hf_dir} -> {jax_dir} (float32)")
  summary = convert(hf_dir, jax_dir, "float32", progress=False, overwrite=True)
  print(f"      {summary['tensors']} tensors, {summary['parameters']:,} "
        "parameters")

  import vselect_jax
  from transformers import Qwen2VLImageProcessorPil
  image = draw_image()
  proc = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4,
                                  max_pixels=28 * 28 * 1024)
  enc = proc(images=[image], return_tensors="np")
  grid = enc["image_grid_thw"]
  n_vis = int(np.prod(grid)) // 4
  print(f"[3/5] image {image.size[0]}x{image.size[1]} px -> grid "
        f"{grid[0].tolist()} -> {n_vis} visual tokens")
  prompt = ([IM_START, 872, 198, VISION_START] + [IMAGE_PAD] * n_vis +
            [VISION_END, 3838, 374, 279, 8426, 3619, 30, IM_END, 198,
             IM_START, 77091, 198])
  ids = np.array([prompt])

  model = vselect_jax.from_pretrained(jax_dir)
  inputs = dict(pixel_values=enc["pixel_values"], image_grid_thw=grid)
  print("[4/5] forward passes (first call per bucket compiles; times are the "
        "best of 3 after it)")
  print(f"      {'budget':>6}  {'visual kept':>11}  {'sequence':>8}  "
        f"{'time ms':>8}  next-token argmax")
  for budget in (None, 1.0, 0.3, 0.2, 0.1):
    out = model.forward(ids, **inputs, budget=budget)
    times = []
    for _ in range(3):
      t0 = time.perf_counter()
      out = model.forward(ids, **inputs, budget=budget)
      times.append(time.perf_counter() - t0)
    seq = out.logits.shape[1]
    kept = n_vis - (ids.shape[1] - seq)
    label = "none" if budget is None else f"{budget:.1f}"
    print(f"      {label:>6}  {kept:>5} / {n_vis:<4}  {seq:>8}  "
          f"{1e3 * min(times):>8.1f}  {int(out.logits[0, -1].argmax())}")
  print(f"      {model.num_compiles} compilation(s) in all. Random weights "
        "and an untrained scorer: the tokens are meaningless, the mechanics "
        "are not.")
  train_dir = os.path.join(args.workdir, "smoke_train")
  print(f"[5/5] training the scorer with configs/smoke.py (tiny model, "
        f"synthetic charts/shapes/words) into {train_dir}")
  import importlib
  import json
  import shutil
  from vselect_jax.training import loop
  shutil.rmtree(train_dir, ignore_errors=True)
  smoke_config = importlib.import_module("configs.smoke")
  smoke_config.build_assets()  # cached: the tiny model and synthetic data
  smoke = smoke_config.get_config()
  result = loop.train(smoke, train_dir, progress=True)
  with open(os.path.join(train_dir, "metrics.jsonl")) as f:
    lines = [json.loads(l) for l in f]
  first, last = lines[0], lines[-1]
  print(f"      step {first['step']}: CE {first['ce']:.3f}, BCE "
        f"{first['bce']:.3f} (w {first['reg_weight']:.2f}); step "
        f"{last['step']}: CE {last['ce']:.3f}, BCE {last['bce']:.3f} "
        f"(w {last['reg_weight']:.2f})")
  print(f"done. Converted checkpoint: {jax_dir}\n"
        f"      trained scorer (PyTorch layout): "
        f"{os.path.join(train_dir, 'scorer.safetensors')}\n"
        f"      metrics: {os.path.join(train_dir, 'metrics.jsonl')} and "
        f"TensorBoard logs in {os.path.join(train_dir, 'tensorboard')}\n"
        f"      checkpoints: {os.path.join(train_dir, 'checkpoints')} "
        f"(step {int(result['state'].step)})")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

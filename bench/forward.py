"""Jitted JAX forward vs HF PyTorch eager, same random weights and inputs.

A ~250M-parameter Qwen2.5-VL-shaped model (16-block vision tower of width 768,
8-layer LLM of width 1024) on one 896 x 868 image (992 visual tokens) plus a
short prompt, float32 on the CPU. Compile time is excluded (one warm-up call
per side); timings alternate between the two sides so both see the same
machine load. The ratio is appended to bench/results.md with the machine.

    python bench/forward.py [--reps 5]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def machine() -> str:
  cpu = platform.processor() or ""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  import jax
  where = f"{os.cpu_count()} CPU cores ({cpu})"
  if jax.default_backend() != "cpu":
    where = f"{jax.devices()[0].device_kind}, " + where
  return f"{where}, jax {jax.__version__} backend {jax.default_backend()}"


def append_result(path: str, title: str, intro: str, columns: str,
                  row: str) -> None:
  """Adds ``row`` to the table under ``title`` in results.md (created if
  missing); other sections are left as they are."""
  text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
  if title not in text:
    sep = "|" + "---|" * (columns.count("|") - 1)
    text = (text.rstrip("\n") + f"\n\n{title}\n\n{intro}\n{columns}\n{sep}\n")
  head, _, tail = text.partition(title)
  body, sep, rest = tail.partition("\n## ")
  lines = body.rstrip("\n").split("\n")
  last_row = max(i for i, l in enumerate(lines) if l.startswith("|"))
  lines.insert(last_row + 1, row)
  text = head + title + "\n".join(lines) + "\n" + (("\n## " + rest) if sep
                                                   else "")
  with open(path, "w") as f:
    f.write(text)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--dtype", default="float32",
                      choices=("float32", "bfloat16"))
  parser.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = parser.parse_args(argv)

  import torch
  from transformers import (Qwen2_5_VLConfig,
                            Qwen2_5_VLForConditionalGeneration)
  import vselect_jax

  torch.manual_seed(0)
  cfg = Qwen2_5_VLConfig(
      text_config=dict(vocab_size=32000, hidden_size=1024,
                       intermediate_size=2816, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=2,
                       rope_parameters={"rope_type": "default",
                                        "mrope_section": [16, 24, 24],
                                        "rope_theta": 1e6},
                       bos_token_id=None, eos_token_id=None),
      vision_config=dict(depth=16, hidden_size=768, intermediate_size=2048,
                         num_heads=12, out_hidden_size=1024,
                         fullatt_block_indexes=[3, 7, 11, 15],
                         window_size=112),
      image_token_id=31000, video_token_id=31001, vision_start_token_id=31002,
      vision_end_token_id=31003)
  hf = Qwen2_5_VLForConditionalGeneration(cfg).eval()
  n_params = sum(p.numel() for p in hf.parameters())
  tmp = tempfile.mkdtemp()
  hf.save_pretrained(tmp)
  jx = vselect_jax.from_pretrained(tmp, dtype=args.dtype)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  hf = hf.to(device=device, dtype=getattr(torch, args.dtype))

  grid = np.array([[1, 64, 62]])  # 896 x 868 px -> 32 x 31 merged tokens
  n_vis = int(grid.prod()) // 4
  rng = np.random.default_rng(0)
  pix = rng.standard_normal((int(grid.prod()), 1176)).astype(np.float32)
  ids = np.array([[5, 6, 31002] + [31000] * n_vis + [31003] +
                  list(range(100, 140))])
  tt = (ids == 31000).astype(np.int64)
  hf_in = dict(input_ids=torch.tensor(ids),
               pixel_values=torch.tensor(pix).to(getattr(torch, args.dtype)),
               image_grid_thw=torch.tensor(grid),
               mm_token_type_ids=torch.tensor(tt))
  hf_in = {k: v.to(device) for k, v in hf_in.items()}

  def run_hf():
    with torch.inference_mode():
      out = hf(**hf_in).logits.float().cpu()  # .cpu() synchronises
    return out

  def run_jax():
    return jx.forward(ids, pixel_values=pix, image_grid_thw=grid).logits

  ref = run_hf().numpy()
  ours = run_jax()
  err = float(np.abs(ours - ref).max())
  t_hf, t_jx = [], []
  for _ in range(args.reps):
    t0 = time.perf_counter(); run_hf(); t_hf.append(time.perf_counter() - t0)
    t0 = time.perf_counter(); run_jax(); t_jx.append(time.perf_counter() - t0)
  hf_s, jx_s = float(np.median(t_hf)), float(np.median(t_jx))
  ratio = hf_s / jx_s
  where = machine() + ("" if args.dtype == "float32" else f", {args.dtype}")
  line = (f"| {datetime.date.today()} | {where} | {n_params / 1e6:.0f}M | "
          f"{n_vis} | {hf_s * 1e3:.0f} | {jx_s * 1e3:.0f} | **{ratio:.2f}x** | "
          f"{err:.1e} |")
  print(f"params {n_params / 1e6:.0f}M, visual tokens {n_vis}, torch threads "
        f"{torch.get_num_threads()}")
  print(f"HF eager median {hf_s * 1e3:.0f} ms, JAX jit median "
        f"{jx_s * 1e3:.0f} ms, speedup {ratio:.2f}x, max |logit diff| {err:.1e}")
  append_result(
      args.out,
      "## Forward pass: JAX jit vs HF PyTorch eager (bench/forward.py)",
      "float32 unless the machine column says otherwise, batch 1, compile "
      "excluded, median of alternating runs.\n"
      "Target: >= 1.5x on CPU.\n",
      "| date | machine | params | visual tokens | HF ms | JAX ms | "
      "speedup | max logit diff |", line)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

"""Prefill speedup of selection inside the vision tower, against its FLOPs.

For j in {8, 16, 24, end} (vision blocks before selection; "end" = after
the tower, the released VisionSelector) and budgets 0.3 / 0.2 / 0.1, on
Qwen2.5-VL-7B and -3B shapes: one 896 x 1120 image (1280 visual tokens,
5120 patches) and 64 text tokens. Two tables:

* FLOPs at the real widths and depths (analytic, ``intower_flops``): the
  ceiling of each (j, budget) and of post-tower selection.
* Measured on this CPU at reduced depth and widths (``--shrink``: widths
  and depths divided by it, j scaled with the depth), every ratio against
  the same reduced model's full prefill in one run, beside that reduced
  model's FLOP ratio. Random weights, float32, device-resident inputs
  (``prefill_program``: vision tower, scorer, selection, LLM prefill and
  head), compile and warm-up excluded, the fastest of ``--reps`` runs
  (rows before 11:20 on 2026-12-01 used the median of 2).

    python bench/intower.py [--shrink 4 --reps 3 --models 7b,3b]
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.prefill import prefill_flops  # noqa: E402

BUDGETS = (0.3, 0.2, 0.1)
SPLITS = (8, 16, 24, None)           # None: after the tower
SHAPES = {  # (LLM width, MLP width, layers, heads, kv heads)
    "7b": (3584, 18944, 28, 28, 4),
    "3b": (2048, 11008, 36, 16, 2),
}


def intower_flops(vis, txt, patches: int, text_tokens: int, visual: int,
                  kept: int, j: int | None) -> float:
  """FLOPs (2 x MACs) of one prefill selecting after vision block j (None:
  after the tower, ``prefill.prefill_flops``): blocks [0, j) on every
  patch, the block scorer on every unit, blocks [j, depth) and the merger on
  the 4 * kept patches of the kept units, the LLM on text + kept tokens.
  Window attention is counted as each patch attending a full window (an
  upper bound for partly kept windows, as the post-tower model does)."""
  if j is None or j >= vis.depth:
    return prefill_flops(vis, txt, patches, text_tokens, visual, kept)
  d, f = vis.hidden_size, vis.intermediate_size
  full = set(vis.fullatt_block_indexes)

  def blocks(lo, hi, n):
    out = 0
    for i in range(lo, hi):
      out += n * 2 * (d * 3 * d + d * d + 3 * d * f)
      out += 2 * (2 * n * n * d) if i in full else 2 * (2 * n *
                                                       vis.window_patches * d)
    return out

  kp = 4 * kept
  vit = 2 * patches * vis.patch_dim * d + blocks(0, j, patches) + \
      blocks(j, vis.depth, kp)
  vit += 2 * kept * ((4 * d) ** 2 + 4 * d * txt.hidden_size)     # merger
  scorer = 2 * visual * 2 * (4 * d) * (2 * d)
  llm = prefill_flops(vis, txt, 0, text_tokens, 0, kept)  # LLM + head
  return vit + scorer + llm


def _best_ms(fn, reps: int) -> float:
  """The fastest of ``reps`` synchronised runs after a warm-up: on a shared
  CPU other processes only ever add time, so the minimum is the least
  noisy estimate."""
  import time
  import jax
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return 1e3 * min(times)


def configs(name: str, shrink: int):
  from vselect_jax.config import TextConfig, VisionConfig, VLMConfig
  h, ff, layers, heads, kv = SHAPES[name]
  depth = 32 // shrink
  # Qwen2.5-VL's full-attention blocks 7, 15, 23, 31 at the reduced depth.
  full = tuple(sorted({(i + 1) * depth // 4 - 1 for i in range(4)}))
  vis = VisionConfig(depth=depth, hidden_size=1280 // shrink,
                     intermediate_size=3420 // shrink,
                     num_heads=max(1, 16 // shrink), out_hidden_size=h // shrink,
                     fullatt_block_indexes=full)
  # The real vocabulary (the special token ids), tied: only the head of the
  # last position reads it.
  txt = TextConfig(vocab_size=152064, hidden_size=h // shrink,
                   intermediate_size=ff // shrink,
                   num_hidden_layers=max(1, layers // shrink),
                   num_attention_heads=max(1, heads // shrink),
                   num_key_value_heads=max(1, kv // shrink),
                   mrope_section=(16, 24, 24), tie_word_embeddings=True)
  return VLMConfig(vision=vis, text=txt)


def full_configs(name: str):
  from vselect_jax.config import TextConfig, VisionConfig
  h, ff, layers, heads, kv = SHAPES[name]
  return (VisionConfig(out_hidden_size=h),
          TextConfig(vocab_size=152064, hidden_size=h, intermediate_size=ff,
                     num_hidden_layers=layers, num_attention_heads=heads,
                     num_key_value_heads=kv))


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--shrink", type=int, default=4)
  p.add_argument("--reps", type=int, default=3)
  p.add_argument("--models", default="7b,3b")
  p.add_argument("--splits", default="8,16,24,end",
                 help="j values (vision blocks of the full model); end = "
                 "after the tower")
  p.add_argument("--out", default=os.path.join(
      os.path.dirname(os.path.abspath(__file__)), "results.md"))
  args = p.parse_args(argv)

  import jax.numpy as jnp
  from flax import nnx

  import vselect_jax
  from bench.forward import append_result, machine
  from vselect_jax.modeling.vlm import Qwen25VL
  from vselect_jax.selector.budget import budget_to_k

  grid = np.array([[1, 64, 80]])           # 896 x 1120 px
  patches = int(grid.prod())
  visual = patches // 4                    # 1280
  text_tokens = 64
  header = ("| date | machine | model | layers text/vision, widths | j | "
            "budget | kept | prefill ms | speedup | FLOP ratio | % of FLOP "
            "ratio | full-size FLOP ratio |")
  for name in args.models.split(","):
    fvis, ftxt = full_configs(name)
    cfg = configs(name, args.shrink)
    vis, txt = cfg.vision, cfg.text
    model = vselect_jax.VisionLanguageModel(
        cfg, Qwen25VL(cfg, dtype=jnp.float32, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    pix = rng.standard_normal((patches, 1176)).astype(np.float32)
    ids = np.array([[cfg.vision_start_token_id] + [cfg.image_token_id] *
                    visual + [cfg.vision_end_token_id] +
                    list(range(1000, 1000 + text_tokens - 2))])
    prep = model.prepare(ids, None, pix, grid)
    base_ms = _best_ms(model.prefill_program(prep, None), args.reps)
    base_fl = intower_flops(vis, txt, patches, text_tokens, visual, visual,
                            None)
    full_base = intower_flops(fvis, ftxt, patches, text_tokens, visual,
                              visual, None)
    print(f"{name}: full prefill {base_ms:.0f} ms")
    splits = [None if v == "end" else int(v)
              for v in args.splits.split(",")]
    for j in splits:
      jr = None if j is None else j * vis.depth // 32
      for budget in BUDGETS:
        kept = budget_to_k(visual, budget)
        ms = _best_ms(model.prefill_program(prep, budget, select_at=jr),
                        args.reps)
        ratio = base_fl / intower_flops(vis, txt, patches, text_tokens,
                                        visual, kept, jr)
        full_ratio = full_base / intower_flops(fvis, ftxt, patches,
                                               text_tokens, visual, kept, j)
        speed = base_ms / ms
        jname = "end" if j is None else str(j)
        print(f"  j {jname:>3} budget {budget}: {ms:7.0f} ms, speedup "
              f"{speed:.2f}x, FLOP ratio {ratio:.2f}x "
              f"({100 * speed / ratio:.0f}%), full-size FLOP ratio "
              f"{full_ratio:.2f}x")
        append_result(
            args.out,
            "## Selection inside the vision tower: speedup vs FLOPs "
            "(bench/intower.py)",
            "One 896 x 1120 image (1280 visual tokens) + 64 text tokens; j = "
            "vision blocks before selection (end = after the tower, "
            "post-tower VisionSelector). Measured on a model with depths and "
            "widths divided by the shrink factor (j scaled with the depth), "
            "random weights, float32, device-resident prefill "
            "(prefill_program), against the same model's full prefill in "
            "the same run; FLOP ratio = that reduced model's; full-size = "
            "the real 7B / 3B shapes (the ceiling argument).\n",
            header,
            f"| {datetime.date.today()} | {machine()} | {name} | "
            f"{txt.num_hidden_layers}/{vis.depth}, /{args.shrink} | "
            f"{jname} | {budget} | {kept} | {ms:.0f} | {speed:.2f}x | "
            f"{ratio:.2f}x | {100 * speed / ratio:.0f}% | "
            f"{full_ratio:.2f}x |")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Post-tower vs in-tower selection on the synthetic world, with both soft
masks: accuracy at each budget and the soft/hard gap.

On the frozen stage-1 backbone of ``make demo-world1`` (``vselect_jax.world_demo``:
3 LLM layers, 2 vision blocks, the last with full attention, 36-64 merged
tokens per image) this trains four scorers at budget 0.2 with the reference
recipe (``configs/world.py:selector``): post-tower (the LIS after the tower)
and in-tower (``select_at=1``: the block scorer after the first of the 2
vision blocks), each with ``soft_mask`` "scale" and "attn_bias". Each is
then evaluated on the held-out questions:

* hard selection (``eval.sweep.run_sweep``, as the demo: method "selector"
  or "tower_selector" with option block=1) at budgets 1.0 0.3 0.2 0.1 0.05;
* the soft/hard gap at 0.2: held-out accuracy through the training path
  (the soft mask of the scorer's kind, nothing dropped, teacher-forced:
  ``eval.relaxed_accuracy.teacher_forced``) against the hard top-k's
  teacher-forced accuracy on the same packed rows (k pooled per row, as in
  training); all held-out questions, whatever ``--limit``.

Trained scorers are cached in ``--workdir`` (``<name>/scorer.safetensors``,
merged into ``<name>/hf``); a rerun only re-evaluates. The backbone and the
world's data are read from ``--world`` (a ``world_demo`` workdir), never
written. Every part is timed; the table goes to
``<workdir>/world_selection.md`` and ``.json``.

    python bench/world_selection.py --world runs/world --workdir runs/world_selection \\
        [--steps 300] [--limit 400] [--train-only]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BUDGETS = (1.0, 0.3, 0.2, 0.1, 0.05)
GAP_BUDGET = 0.2
SELECT_AT = 1                 # after the first of the world's 2 blocks
RUNS = (  # name, select_at, soft_mask
    ("post_scale", None, "scale"),
    ("post_attn_bias", None, "attn_bias"),
    ("tower1_scale", SELECT_AT, "scale"),
    ("tower1_attn_bias", SELECT_AT, "attn_bias"),
)


def train(out: str, backbone: str, assets: str, select_at, soft_mask: str,
          steps: int | None) -> tuple[str, float]:
  """Trains one scorer into ``out`` unless cached; (merged HF dir, s)."""
  from configs import world as world_cfg
  from vselect_jax.checkpoint import scorer_export
  from vselect_jax.training import loop
  t = time.perf_counter()
  scorer_file = os.path.join(out, "scorer.safetensors")
  if os.path.exists(scorer_file):
    print(f"{out}: cached scorer")
  else:
    c = world_cfg.make_config("selector", assets)
    c.model_path = backbone
    c.select_at = select_at
    c.soft_mask = soft_mask
    c.total_steps = steps or c.total_steps
    print(f"{out}: training ({c.total_steps} steps, select_at {select_at}, "
          f"soft_mask {soft_mask})", flush=True)
    loop.train(c, out, progress=False)
  merged = os.path.join(out, "hf")
  if not os.path.exists(os.path.join(merged, "config.json")):
    scorer_export.merge_into(
        scorer_file, backbone, merged, "float32",
        scorer="importance_scorer" if select_at is None else "block_scorer")
  return merged, time.perf_counter() - t


def evaluate(model, tok, test: str, out: str, select_at, soft_mask: str,
             assets: str, backbone: str, limit: int) -> dict:
  """Hard sweep over BUDGETS and the soft/hard gap at GAP_BUDGET."""
  from configs import world as world_cfg
  from vselect_jax.eval import relaxed_accuracy, runner, sweep
  method = "selector" if select_at is None else "tower_selector"
  options = () if select_at is None else (("block", select_at),)
  settings = runner.EvalSettings(min_pixels=world_cfg.MIN_PIXELS,
                                 max_pixels=world_cfg.MAX_PIXELS,
                                 jpeg_quality=None, limit=limit,
                                 options=options)
  t = time.perf_counter()
  rows = sweep.run_sweep(model, tok, "world", test, (method,), BUDGETS,
                         os.path.join(out, "sweep"), settings, progress=False)
  sweep_s = time.perf_counter() - t
  low = min(BUDGETS)      # the hardest cell, by kind (as the README's table)
  with open(os.path.join(out, "sweep", "world", f"{method}_"
                         f"{runner.budget_name(low)}", "summary.json")) as f:
    by_kind = json.load(f)["details"]["accuracy_by_category"]
  t = time.perf_counter()
  c = world_cfg.make_config("selector", assets)
  c.model_path = backbone             # its tokenizer packs the rows
  batches = relaxed_accuracy.held_out_rows(c, test, os.path.join(out, "tf"))
  gap = relaxed_accuracy.teacher_forced(model, batches, GAP_BUDGET,
                                        method=method, options=options,
                                        soft_mask=soft_mask)
  return {"hard": {str(r["budget"]): r["metric"] for r in rows},
          "kept": {str(r["budget"]): r["kept_fraction"] for r in rows},
          "by_kind_at_lowest": by_kind, "gap": gap, "sweep_s": sweep_s,
          "gap_s": time.perf_counter() - t}


def table(results: dict, limit: int) -> str:
  head = ("| scorer | soft mask | " + " | ".join(f"{b:g}" for b in BUDGETS)
          + f" | {min(BUDGETS):g}, busy only | soft (TF) 0.2 | hard (TF) 0.2 | soft - hard (TF) | train s "
          "| eval s |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for name, select_at, soft_mask in RUNS:
    r = results.get(name)
    if r is None or "hard" not in r:
      continue
    where = "post-tower" if select_at is None else f"in-tower, j = {select_at}"
    g = r["gap"]
    lines.append(
        f"| {where} | {soft_mask} | "
        + " | ".join(f"{r['hard'][str(b)]:.3f}" for b in BUDGETS)
        + f" | {r['by_kind_at_lowest'].get('busy', float('nan')):.3f}"
        + f" | {g['soft']:.3f} | {g['hard']:.3f} | "
        f"{g['soft'] - g['hard']:+.3f} | {r['train_s']:.0f} | "
        f"{r['sweep_s'] + r['gap_s']:.0f} |")
  return "\n".join(lines) + (
      f"\n\nGenerated exact-match accuracy on {limit} held-out questions per "
      "budget column (hard top-k); TF = teacher-forced answer accuracy at "
      f"budget {GAP_BUDGET} through the training path (soft) and with the "
      "hard top-k (hard) on the same questions.\n")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--world", default="runs/world",
                 help="a world_demo workdir with backbone/hf and assets/")
  p.add_argument("--workdir", default="runs/world_selection")
  p.add_argument("--steps", type=int, default=None,
                 help="scorer steps (default: the recipe's 300)")
  p.add_argument("--limit", type=int, default=400,
                 help="held-out questions per cell (the test split is 400)")
  p.add_argument("--train-only", action="store_true")
  p.add_argument("--runs", default=",".join(r[0] for r in RUNS))
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  from transformers import AutoTokenizer
  import vselect_jax
  from configs import world as world_cfg

  t0 = time.perf_counter()
  backbone = os.path.join(args.world, "backbone", "hf")
  assets = os.path.join(args.world, "assets")
  if not os.path.exists(os.path.join(backbone, "config.json")):
    raise FileNotFoundError(f"{backbone}: no stage-1 backbone (run "
                            "python -m vselect_jax.world_demo first)")
  test = world_cfg.asset_paths(assets)["test"]
  if not os.path.exists(test):
    raise FileNotFoundError(f"{test}: the world's test split is missing")
  os.makedirs(args.workdir, exist_ok=True)
  record = os.path.join(args.workdir, "world_selection.json")
  results = json.load(open(record)) if os.path.exists(record) else {}
  wanted = args.runs.split(",")
  unknown = set(wanted) - {r[0] for r in RUNS}
  if unknown:
    raise ValueError(f"--runs: unknown {sorted(unknown)}")
  tok = AutoTokenizer.from_pretrained(backbone)
  for name, select_at, soft_mask in RUNS:
    if name not in wanted:
      continue
    out = os.path.join(args.workdir, name)
    merged, train_s = train(out, backbone, assets, select_at, soft_mask,
                            args.steps)
    r = results.setdefault(name, {})
    if "train_s" not in r or train_s > 60:  # keep the first (real) time
      r["train_s"] = train_s
    json.dump(results, open(record, "w"), indent=1)
    if args.train_only:
      continue
    shutil.rmtree(os.path.join(out, "sweep"), ignore_errors=True)
    model = vselect_jax.from_pretrained(merged)
    r.update(evaluate(model, tok, test, out, select_at, soft_mask, assets,
                      backbone, args.limit))
    print(f"{name}: {json.dumps({k: r[k] for k in ('hard', 'gap')})} "
          f"(sweep {r['sweep_s']:.0f} s, gap {r['gap_s']:.0f} s)", flush=True)
    json.dump(results, open(record, "w"), indent=1)
  text = table(results, args.limit)
  with open(os.path.join(args.workdir, "world_selection.md"), "w") as f:
    f.write(text)
  print("\n" + text)
  print(f"{time.perf_counter() - t0:.0f} s; {record}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

"""The paper's two claims on the second synthetic world (``data.world2``):
does a learned scorer beat the heuristics where the evidence is small and
faint, and does annealing the BCE weight close the soft/hard gap?

Stage 1 trains the backbone from scratch with every visual token, in three
phases from an easier world to the evaluation's (``configs/world2.py``,
cached); stage 2 trains the scorer at 0.2
(``configs/world2.py:selector``); every method of ``world_demo.METHODS`` is
swept at budgets 1.0 0.3 0.2 0.1 0.05 on the held-out split, per question
kind. ``--evidence`` adds which methods keep the evidence tokens
(``eval.evidence``). ``--anneal`` adds the annealing grid: scorers trained
with the linear schedule (0.1 -> 2.0), w held at 0 and w held at 2.0, at
0.2 and 0.05, with the multiplicative ("scale") and the attention-bias soft
mask; each run checkpoints every ``--anneal-every`` steps and every
checkpoint is scored teacher-forced on the held-out split through the soft
mask and with the hard top-k (``eval.relaxed_accuracy``). Everything is
cached in the workdir: a second run starts where the first stopped, and
JAX's persistent compilation cache (``<workdir>/xla_cache``) spares it the
compiles. ``--seed N`` is a replicate: its own random-init model, training
step and data order (the same images).

  python -m vselect_jax.world2_demo --workdir runs/world2 [--evidence] [--anneal]
  python -m vselect_jax.world2_demo --workdir runs/world2_seed1 --seed 1

Outputs: ``<workdir>/tables.json`` and ``<workdir>/tables.md`` (sweep per
kind, evidence recall, annealing curves; a run replaces the parts it
computed and keeps the others), the sweep's own table/plot under
``sweep/world`` (budgets below 1.0) and ``sweep/full/world`` (1.0).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import time

from vselect_jax.world_demo import BUDGETS, METHODS, backbone, \
    dynamic_qwen, selector, with_scorer

# label -> (run directory name, w start, w end)
ANNEAL_RUNS = {"linear": ("linear", 0.1, 2.0), "w0": ("w0", 0.0, 0.0),
               "w2": ("w2", 2.0, 2.0)}
ANNEAL_BUDGETS = (0.2, 0.05)
SOFT_MASKS = ("scale", "attn_bias")


def model_spec(seed: int = 0) -> dict:
  """The random-init model of replicate ``seed`` (``configs/world2.py:
  MODEL``; seed 0 is the model of every earlier run, its directory name
  unchanged)."""
  from configs import world2 as cfg
  return dict(cfg.MODEL, seed=seed) if seed else dict(cfg.MODEL)


def stage_config(stage: str, assets_dir: str, seed: int = 0):
  """``configs/world2.py``'s ``stage`` config over ``assets_dir`` for
  replicate ``seed``: its own init model (``model_spec``), and the training
  step's and the data order's seeds shifted by ``seed``."""
  from configs import world2 as cfg
  c = cfg.make_config(stage, assets_dir, model_spec(seed))
  c.seed += seed
  c.data.seed += seed
  return c


def per_kind(cell_dir: str) -> dict:
  """{"all": accuracy, kind: accuracy, ...} of one sweep cell's
  ``summary.json``."""
  with open(os.path.join(cell_dir, "summary.json")) as f:
    s = json.load(f)
  return {"all": s["metrics"]["accuracy"],
          **s["details"].get("accuracy_by_category", {})}


# At budget 1.0 a method that only selects keeps every token: it is the
# model with every token (tests/test_baselines_llm.py), so the sweep runs
# that once (as "selector") and copies it; PruMerge+ still merges each
# kept token's neighbours into it at 1.0, so it runs.
CHANGES_AT_FULL = ("prumerge",)


def sweep_by_kind(model, tok, test: str, out: str, settings, methods,
                  budgets) -> dict:
  """Runs the sweep (``<out>/world``; budget 1.0 in ``<out>/full``);
  returns {method: {budget: per_kind(...)}}."""
  from vselect_jax.eval import runner, sweep
  partial = tuple(b for b in budgets if b < 1.0)
  sweep.run_sweep(model, tok, "world", test, methods, partial, out, settings,
                  progress=False)
  cells = {(m, b): os.path.join(out, "world", f"{m}_{runner.budget_name(b)}")
           for m in methods for b in partial}
  if len(partial) < len(budgets):
    full = ("selector",) + tuple(m for m in methods if m in CHANGES_AT_FULL)
    sweep.run_sweep(model, tok, "world", test, full, (1.0,),
                    os.path.join(out, "full"), settings, progress=False)
    for m in methods:
      cells[m, 1.0] = os.path.join(out, "full", "world", (
          m if m in full else "selector") + "_1")
  return {m: {str(b): per_kind(cells[m, b]) for b in budgets}
          for m in methods}


def checkpoint_scorer(run_dir: str, step: int) -> str:
  """The scorer of ``run_dir``'s training checkpoint ``step`` as
  ``<run_dir>/curve/<step>/scorer.safetensors`` (its path)."""
  import orbax.checkpoint as ocp
  from vselect_jax.checkpoint import scorer_export
  dst = os.path.join(run_dir, "curve", str(step), "scorer.safetensors")
  if not os.path.exists(dst):
    tree = ocp.StandardCheckpointer().restore(
        os.path.join(run_dir, "checkpoints", str(step), "state"))
    # The trained parameters only: the optimizer moments hold a
    # same-named subtree.
    tensors = scorer_export.scorer_tensors(tree["trainable"], run_dir)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    scorer_export.write_tensors(tensors, dst, "float32", "qwen2_5_vl")
  return dst


def anneal_curve(run_dir: str, backbone_dir: str, config, batches) -> list:
  """Trains (cached) the scorer of ``config`` in ``run_dir`` with a
  checkpoint every ``config.checkpoint_every`` steps; returns [{"step",
  "soft", "hard"}] over its checkpoints (teacher-forced held-out accuracy
  through the soft mask and with the hard top-k at ``config.budget``)."""
  from vselect_jax.eval import relaxed_accuracy
  selector(run_dir, backbone_dir, config)
  steps = sorted(int(s) for s in os.listdir(os.path.join(run_dir,
                                                         "checkpoints"))
                 if s.isdigit())
  curve = []
  for step in steps:
    model = with_scorer(backbone_dir, checkpoint_scorer(run_dir, step))
    acc = relaxed_accuracy.teacher_forced(model, batches, config.budget,
                                          soft_mask=config.soft_mask)
    curve.append({"step": step, "soft": acc["soft"], "hard": acc["hard"],
                  "samples": acc["samples"]})
    print(f"  step {step}: soft {acc['soft']:.3f} hard {acc['hard']:.3f}")
  return curve


def _markdown(tables: dict, limit: int) -> str:
  lines = []
  sweep = tables.get("sweep", {})
  if sweep:
    budgets = list(next(iter(sweep.values())))
    kinds = list(next(iter(sweep.values()))[budgets[0]])
    for kind in kinds:
      lines += [f"\n### {kind} (accuracy on the held-out questions; "
                f"--limit {limit})\n",
                "| method | " + " | ".join(budgets) + " |",
                "|---" * (1 + len(budgets)) + "|"]
      for m, row in sweep.items():
        lines.append(f"| {m} | " + " | ".join(
            f"{row[b].get(kind, float('nan')):.3f}" for b in row) + " |")
  evidence = tables.get("evidence", {})
  if evidence:
    budgets = list(next(iter(evidence.values())))
    first = next(iter(evidence.values()))[budgets[0]]
    kinds = list(first["hit"])
    lines += [f"\n### evidence kept ({first['questions']} held-out "
              "questions): questions with an evidence token kept / mean "
              "fraction of evidence tokens kept; the questions with none "
              "kept and the sweep's accuracy on them\n",
              "| method | " + " | ".join(
                  f"{b} {k}" for b in budgets
                  for k in (*kinds, "none kept")) + " |",
              "|---" * (1 + len(budgets) * (len(kinds) + 1)) + "|"]
    for m, row in evidence.items():
      cells = []
      for b in budgets:
        c = row[b]
        cells += [f"{c['hit'][k]:.2f} / {c['kept'][k]:.2f}" for k in kinds]
        acc = c.get("missed_accuracy")
        cells.append(f"{len(c['missed'])}" + (
            f" ({acc:.2f})" if acc is not None else ""))
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
  for key, curve in tables.get("anneal", {}).items():
    lines.append(f"\n{key}: " + ", ".join(
        f"{p['step']}: {p['soft']:.3f}/{p['hard']:.3f}" for p in curve)
                 + "  (step: soft/hard)")
  return "\n".join(lines) + "\n"


def plot_anneal(curves: dict, path: str) -> str:
  """One panel per (soft mask, budget) of ``tables["anneal"]`` (keys
  "<mask>, budget <b>, <schedule>"): held-out accuracy over scorer steps,
  through the soft mask (dashed) and with the hard top-k (solid), one
  colour per schedule."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = list(dict.fromkeys(k.rsplit(", ", 1)[0] for k in curves))
  schedules = list(dict.fromkeys(k.rsplit(", ", 1)[1] for k in curves))
  cols = min(2, len(panels))
  rows = -(-len(panels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.6 * rows),
                           squeeze=False, sharey=True)
  for ax in axes.flat[len(panels):]:
    ax.set_visible(False)
  for ax, panel in zip(axes.flat, panels):
    for i, label in enumerate(schedules):
      curve = curves.get(f"{panel}, {label}")
      if not curve:
        continue
      steps = [p["step"] for p in curve]
      color = f"C{i}"
      ax.plot(steps, [p["hard"] for p in curve], "-o", color=color,
              label=f"{label} hard")
      ax.plot(steps, [p["soft"] for p in curve], "--", color=color,
              label=f"{label} soft")
    ax.set_title(panel, fontsize=10)
    ax.set_xlabel("scorer step")
    ax.grid(True, alpha=0.3)
  for ax in axes[:, 0]:
    ax.set_ylabel("held-out accuracy (teacher-forced)")
  axes.flat[len(panels) - 1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="runs/world2")
  p.add_argument("--limit", type=int, default=400,
                 help="test records per sweep cell")
  p.add_argument("--backbone-steps", type=int, default=None)
  p.add_argument("--selector-steps", type=int, default=None)
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
  p.add_argument("--no-sweep", action="store_true")
  p.add_argument("--seed", type=int, default=0,
                 help="a replicate: N > 0 draws another random-init model "
                 "and another data order for every training stage (the "
                 "same images and test split); use its own --workdir")
  p.add_argument("--compile-cache", default=None, metavar="DIR",
                 help="JAX's persistent compilation cache (default "
                 "<workdir>/xla_cache; '' turns it off): a rerun compiles "
                 "nothing it compiled before")
  p.add_argument("--evidence", action="store_true",
                 help="also score which methods keep the evidence tokens "
                 "(eval.evidence) at --evidence-budgets")
  p.add_argument("--evidence-budgets", default="0.2,0.05")
  p.add_argument("--evidence-limit", type=int, default=200,
                 help="held-out questions for --evidence")
  p.add_argument("--anneal", action="store_true")
  p.add_argument("--anneal-every", type=int, default=50,
                 help="checkpoint (and evaluate) every N scorer steps")
  p.add_argument("--anneal-budgets", default=",".join(map(str,
                                                          ANNEAL_BUDGETS)))
  p.add_argument("--anneal-masks", default=",".join(SOFT_MASKS))
  p.add_argument("--anneal-runs", default=",".join(ANNEAL_RUNS),
                 help="subset of linear (w 0.1 -> 2.0), w0 (held at 0), w2 "
                 "(held at 2.0)")
  p.add_argument("--anneal-limit", type=int, default=0,
                 help="held-out batches for the curves (0: the whole split)")
  args = p.parse_args(argv)
  if args.seed < 0:
    p.error(f"--seed must be >= 0, got {args.seed}")
  logging.basicConfig(level=logging.WARNING)
  cache = (os.path.join(args.workdir, "xla_cache")
           if args.compile_cache is None else args.compile_cache)
  if cache:
    import jax
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
  from transformers import AutoTokenizer
  from configs import world2 as cfg
  from vselect_jax.eval import relaxed_accuracy, runner

  t0 = time.perf_counter()
  assets_dir = os.path.join(args.workdir, "assets")
  make_config = functools.partial(stage_config, assets_dir=assets_dir,
                                  seed=args.seed)
  assets = cfg.build_assets(assets_dir, model=model_spec(args.seed))
  hf = assets["model"]
  for stage in cfg.STAGES[:3]:        # stage 1's curriculum, easiest first
    c = make_config(stage)
    c.model_path = hf
    c.total_steps = args.backbone_steps or c.total_steps
    hf = backbone(os.path.join(args.workdir, stage), c)
  print(f"stage 1 done at {time.perf_counter() - t0:.0f} s")
  # Each run updates what it computed; the rest of a previous run's tables
  # stay.
  tables_path = os.path.join(args.workdir, "tables.json")
  tables = {}
  if os.path.exists(tables_path):
    with open(tables_path) as f:
      tables = json.load(f)
  if not args.no_sweep or args.evidence:
    c = make_config("selector")
    c.total_steps = args.selector_steps or c.total_steps
    model = selector(os.path.join(args.workdir, "selector"), hf, c)
    if "dynamic_qwen" in args.methods.split(","):
      d = make_config("dynamic_qwen")
      model = dynamic_qwen(os.path.join(args.workdir, "dynamic_qwen"), hf,
                           os.path.join(args.workdir, "selector", "hf"), d)
    tok = AutoTokenizer.from_pretrained(hf)
    # Batches of 8 of one image size: the same predictions as one at a
    # time (eval.runner.group_batches), several times faster here.
    settings = runner.EvalSettings(min_pixels=cfg.MIN_PIXELS,
                                   max_pixels=cfg.MAX_PIXELS,
                                   jpeg_quality=None, limit=args.limit,
                                   batch_size=8)
    methods = tuple(args.methods.split(","))
  if not args.no_sweep:
    tables["sweep"] = sweep_by_kind(
        model, tok, assets["test"], os.path.join(args.workdir, "sweep"),
        settings, methods, tuple(float(b) for b in args.budgets.split(",")))
    runner.run_one(model, tok, "world", assets["test"], 0.2, "selector",
                   os.path.join(args.workdir, "pictures"),
                   dataclasses.replace(settings, limit=8), visualize=4,
                   progress=False)
    print(f"sweep done at {time.perf_counter() - t0:.0f} s")
  if args.evidence:
    from vselect_jax.eval import evidence
    tables["evidence"] = evidence.recall(
        model, tok, "world", assets["test"], methods,
        tuple(float(b) for b in args.evidence_budgets.split(",")),
        dataclasses.replace(settings, limit=args.evidence_limit))
    # The sweep's answers on the questions whose evidence a method dropped:
    # right ones were read from other tokens (the tower's full-attention
    # block mixes them; an in-LLM method's first layers saw everything).
    # Random's draws depend on the batch's shape, so its sweep cells kept
    # other tokens than here: not paired.
    for m, row in tables["evidence"].items():
      for b, cell in row.items():
        preds = os.path.join(args.workdir, "sweep", "world", f"{m}_{b}",
                             "predictions.jsonl")
        if m != "random" and os.path.exists(preds):
          cell["missed_accuracy"], _ = evidence.accuracy_on(
              preds, assets["test"], cell["missed"])
    print(f"evidence done at {time.perf_counter() - t0:.0f} s")
  if args.anneal:
    base = make_config("selector")
    base.model_path = hf
    batches = list(relaxed_accuracy.held_out_rows(
        base, assets["test"], os.path.join(args.workdir, "held_out"),
        args.anneal_limit))
    tables["anneal"] = {}
    for mask in args.anneal_masks.split(","):
      for budget in (float(b) for b in args.anneal_budgets.split(",")):
        for label in args.anneal_runs.split(","):
          if label not in ANNEAL_RUNS:
            raise ValueError(f"unknown --anneal-runs entry {label!r}; one "
                             f"of {list(ANNEAL_RUNS)}")
          c = make_config("selector")
          c.total_steps = args.selector_steps or c.total_steps
          c.budget, c.soft_mask = budget, mask
          name, c.reg.start, c.reg.end = ANNEAL_RUNS[label]
          c.checkpoint_every = args.anneal_every
          c.keep_checkpoints = c.total_steps // args.anneal_every + 1
          key = f"{mask}, budget {budget:g}, {label}"
          print(f"annealing: {key}")
          run_dir = os.path.join(args.workdir, "anneal",
                                 f"{mask}_{budget:g}_{name}")
          tables["anneal"][key] = anneal_curve(run_dir, hf, c, batches)
        print(f"annealing {mask}, budget {budget:g} done at "
              f"{time.perf_counter() - t0:.0f} s")
  if tables.get("anneal"):
    plot_anneal(tables["anneal"], os.path.join(args.workdir, "anneal.png"))
  with open(tables_path, "w") as f:
    json.dump(tables, f, indent=1)
  with open(os.path.join(args.workdir, "tables.md"), "w") as f:
    f.write(_markdown(tables, args.limit))
  print(_markdown(tables, args.limit))
  print(f"{time.perf_counter() - t0:.0f} s; tables: {args.workdir}/tables.md")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

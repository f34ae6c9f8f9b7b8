"""The paper's table in miniature, on the synthetic world (CPU, minutes).

Stage 1 trains a small Qwen2.5-VL-architecture model from scratch on the
world with every visual token (``configs/world.py:backbone``) and writes it
as an HF checkpoint; stage 2 freezes it and trains the scorer at budget 0.2
with the reference recipe (``configs/world.py:selector``); stage 3 trains
the Dynamic-Qwen baseline's image predictor on the same frozen backbone
(``configs/world.py:dynamic_qwen``; layer 2 of the 3-layer LLM); then every
method
is swept over budgets on the held-out split (``eval.py sweep``) and a few
selections are drawn. Stages are cached in the workdir: a second run starts
where the first stopped.

  python -m vselect_jax.world_demo --workdir runs/world [--ablations]

``--ablations`` also trains scorers with the BCE weight held at 0 and at its
final value (2.0), and evaluates them next to the annealed one.

This is a synthetic world standing in for Qwen2.5-VL-3B/7B; the numbers say
whether the machinery learns, not what the paper's models score.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time

METHODS = ("selector", "random", "uniform", "divprune", "visionzip", "fastv",
           "dart", "prumerge", "holov", "dynamic_qwen")
BUDGETS = (1.0, 0.3, 0.2, 0.1, 0.05)


def _assets(workdir: str) -> str:
  return os.path.join(workdir, "assets")


def backbone(out: str, config) -> str:
  """Stage 1, cached in ``out``: trains ``config`` (a backbone config) and
  returns the HF directory it ends with."""
  from vselect_jax.training import loop
  hf = os.path.join(out, "hf")
  if os.path.exists(os.path.join(hf, "config.json")):
    print(f"stage 1: cached backbone {hf}")
    return hf
  print("stage 1: training the backbone from scratch (every visual token)")
  loop.train(config, out, progress=True)
  return hf


def selector(out: str, backbone_dir: str, config):
  """Stage 2, cached in ``out``: trains the scorer of ``config`` on the
  frozen ``backbone_dir``; returns the model with that scorer."""
  from vselect_jax.training import loop
  scorer_file = os.path.join(out, "scorer.safetensors")
  if os.path.exists(scorer_file):
    print(f"stage 2: cached scorer {scorer_file}")
  else:
    print(f"stage 2: training the scorer ({out}) on the frozen backbone")
    config.model_path = backbone_dir
    loop.train(config, out, progress=True)
  return with_scorer(backbone_dir, scorer_file)  # <out>/hf


def with_scorer(backbone_dir: str, scorer_file: str,
                scorer: str = "importance_scorer"):
  """The backbone with the trained scorer, through the export path users
  take: ``scorer.safetensors`` merged into the HF checkpoint
  (``checkpoint.scorer_export``, behind ``conversion.export_scorer``), then
  loaded like any VisionSelector. ``scorer``: which part the file holds."""
  import vselect_jax
  from vselect_jax.checkpoint import scorer_export
  merged = os.path.join(os.path.dirname(scorer_file), "hf")
  if not os.path.exists(os.path.join(merged, "config.json")):
    scorer_export.merge_into(scorer_file, backbone_dir, merged, "float32",
                             scorer=scorer)
  return vselect_jax.from_pretrained(merged)


def dynamic_qwen(out: str, backbone_dir: str, base_dir: str, config):
  """Stage 3, cached in ``out``: trains Dynamic-Qwen's image predictor
  (``config``: ``configs/world.py:dynamic_qwen``) on the frozen
  ``backbone_dir``; returns ``base_dir`` (the backbone with the trained
  scorer) with the predictor merged in, so one model runs every method."""
  from vselect_jax.training import loop
  predictor_file = os.path.join(out, "scorer.safetensors")
  if os.path.exists(predictor_file):
    print(f"stage 3: cached Dynamic-Qwen predictor {predictor_file}")
  else:
    print(f"stage 3: training the Dynamic-Qwen predictor ({out}) on the "
          "frozen backbone")
    config.model_path = backbone_dir
    loop.train(config, out, progress=True)
  return with_scorer(base_dir, predictor_file, "image_score_predictor")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="runs/world")
  p.add_argument("--limit", type=int, default=200,
                 help="test records per sweep cell")
  p.add_argument("--ablations", action="store_true")
  p.add_argument("--backbone-steps", type=int, default=None)
  p.add_argument("--selector-steps", type=int, default=None)
  p.add_argument("--dynamic-qwen-steps", type=int, default=None)
  p.add_argument("--methods", nargs="+", default=list(METHODS),
                 help="methods of the main sweep (default: all)")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  from transformers import AutoTokenizer
  from configs import world as world_cfg
  from vselect_jax.eval import runner, sweep

  t0 = time.perf_counter()
  assets = world_cfg.build_assets(_assets(args.workdir))
  c = world_cfg.make_config("backbone", _assets(args.workdir))
  c.total_steps = args.backbone_steps or c.total_steps
  hf = backbone(os.path.join(args.workdir, "backbone"), c)
  tok = AutoTokenizer.from_pretrained(hf)
  settings = runner.EvalSettings(min_pixels=world_cfg.MIN_PIXELS,
                                 max_pixels=world_cfg.MAX_PIXELS,
                                 jpeg_quality=None, limit=args.limit)
  runs = {"annealed 0.1->2.0": None}
  if args.ablations:
    runs.update({"w = 0": (0.0, 0.0), "w = 2.0": (2.0, 2.0)})
  tables = {}
  for label, reg in runs.items():
    name = "selector" if reg is None else f"selector_w{reg[0]:g}"
    c = world_cfg.make_config("selector", _assets(args.workdir))
    c.total_steps = args.selector_steps or c.total_steps
    if reg is not None:
      c.reg.start, c.reg.end = reg
    model = selector(os.path.join(args.workdir, name), hf, c)
    if reg is None and "dynamic_qwen" in args.methods:
      d = world_cfg.make_config("dynamic_qwen", _assets(args.workdir))
      d.total_steps = args.dynamic_qwen_steps or d.total_steps
      model = dynamic_qwen(os.path.join(args.workdir, "dynamic_qwen"), hf,
                           os.path.join(args.workdir, name, "hf"), d)
    methods = tuple(args.methods) if reg is None else ("selector",)
    out = os.path.join(args.workdir, "sweep" if reg is None else name)
    rows = sweep.run_sweep(model, tok, "world", assets["test"], methods,
                           BUDGETS, out, settings, progress=False)
    if reg is None and "dynamic_qwen" in methods:
      # Dynamic-Qwen's own k counts the prompt's text too (~60 text tokens
      # to ~46 visual here, so it keeps about 2.3 r of the image); with
      # count_text=False its k is the other methods'.
      visual_k = dataclasses.replace(settings,
                                     options=(("count_text", False),))
      extra = sweep.run_sweep(model, tok, "world", assets["test"],
                              ("dynamic_qwen",), BUDGETS,
                              out + "_dynamic_qwen_visual_k", visual_k,
                              progress=False)
      rows += [dict(r, method="dynamic_qwen(count_text=False)")
               for r in extra]
    tables[label] = rows
    if reg is None:
      runner.run_one(model, tok, "world", assets["test"], 0.2, "selector",
                     os.path.join(args.workdir, "pictures"), settings,
                     visualize=4, progress=False)
  for label, rows in tables.items():
    print(f"\n== scorer: {label} (accuracy on {args.limit} held-out "
          "questions)")
    print(sweep.format_rows(rows, "accuracy"))
  with open(os.path.join(args.workdir, "tables.json"), "w") as f:
    json.dump(tables, f, indent=1)
  where = os.path.join(args.workdir, "sweep", "world")
  print(f"\n{time.perf_counter() - t0:.0f} s; table: {where}/sweep.md, "
        f"plot: {where}/sweep.png, pictures: "
        f"{args.workdir}/pictures/visualize/, all tables: "
        f"{args.workdir}/tables.json")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

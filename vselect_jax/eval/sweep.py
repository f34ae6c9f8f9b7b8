"""``eval.py sweep``: a (method x budget) grid on one task, as a table and a
plot.

Each cell is an ``eval.py run`` (``runner.run_one``) into
``<out>/<task>/<method>_<budget>/``; then ``<out>/<task>/sweep.md``,
``sweep.csv`` and ``sweep.png`` (the headline metric and the prefill time
against the kept fraction of visual tokens, one line per method).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from vselect_jax.eval import runner
from vselect_jax.eval import tasks as tasks_lib


def headline_metric(task: str) -> str:
  """The metric a sweep plots: the task's first promised key."""
  return tasks_lib.get_task(task).metric_keys[0]


def sweep_row(summary: dict, task: str) -> dict:
  """One table row from a run's summary."""
  eff = summary.get("efficiency", {})
  before = eff.get("visual_tokens_before", {}).get("mean")
  after = eff.get("visual_tokens_after", {}).get("mean")
  prefill = eff.get("prefill_ms", {}).get("mean")
  return {"method": summary["method"],
          "budget": 1.0 if summary["budget"] is None else summary["budget"],
          "kept_fraction": (after / before) if before else 1.0,
          "metric": summary["metrics"][headline_metric(task)],
          "prefill_ms": prefill}


def run_sweep(model, tokenizer, task: str, data_path: str,
              methods: Sequence[str], budgets: Sequence, out_dir: str,
              settings: runner.EvalSettings = runner.EvalSettings(), *,
              progress: bool = True) -> list[dict]:
  """Runs every (method, budget), writes the table and plot; returns the
  rows."""
  from vselect_jax.eval import sweep_report
  spec = tasks_lib.get_task(task)
  examples = runner.prepare_examples(tokenizer, spec, data_path, settings)
  task_dir = os.path.join(out_dir, task)
  rows = []
  for method in methods:
    for budget in budgets:
      cell = os.path.join(task_dir,
                          f"{method}_{runner.budget_name(budget)}")
      summary = runner.run_one(model, tokenizer, task, data_path, budget,
                               method, cell, settings, progress=progress,
                               examples=examples)
      rows.append(sweep_row(summary, task))
  metric = headline_metric(task)
  sweep_report.write_sweep_table(rows, os.path.join(task_dir, "sweep.md"),
                              os.path.join(task_dir, "sweep.csv"),
                              metric_name=metric)
  sweep_report.plot_sweep(rows, os.path.join(task_dir, "sweep.png"),
                       metric_name=metric)
  return rows


def format_rows(rows: Sequence[dict], metric: str) -> str:
  """A plain-text table for the terminal."""
  lines = [f"{'method':<10} {'budget':>6} {'kept':>6} {metric:>18} "
           f"{'prefill ms':>10}"]
  for r in rows:
    pf = "-" if r["prefill_ms"] is None else f"{r['prefill_ms']:.1f}"
    lines.append(f"{r['method']:<10} {r['budget']:>6g} "
                 f"{r['kept_fraction']:>6.3f} {r['metric']:>18.4f} {pf:>10}")
  return "\n".join(lines)


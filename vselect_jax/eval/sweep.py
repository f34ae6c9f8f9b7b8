"""``eval.py sweep``: a (method x budget) grid on one task, as a table and a
plot.

Each cell is an ``eval.py run`` (``runner.run_one``) into
``<out>/<task>/<method>_<budget>/``; then ``<out>/<task>/sweep.md``,
``sweep.csv`` and ``sweep.png`` (the headline metric and the prefill time
against the kept fraction of visual tokens, one line per method), and the
paper's efficiency table ``efficiency.md`` / ``efficiency.csv``
(``sweep_report.write_efficiency_table``).

The whole grid is checked first (``check_grid``) and the data file is
validated once; every cell then streams its examples (``runner.ExampleStream``)
so memory does not grow with the data set.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from vselect_jax.eval import records as records_lib
from vselect_jax.eval import runner
from vselect_jax.eval import tasks as tasks_lib


def check_grid(methods: Sequence[str], budgets: Sequence,
               settings: runner.EvalSettings = runner.EvalSettings()) -> None:
  """Checks every (method, budget) cell can run, before any does.

  Args:
    methods: selection method names.
    budgets: fractions in (0, 1], or None for the base model.
    settings: the options every cell runs with (``per_image``).

  Raises:
    ValueError: listing every problem: unknown or repeated methods, bad or
      repeated budgets, a method that does not support the options.
  """
  from vselect_jax import methods as methods_lib
  from vselect_jax.selector.budget import check_budget
  known = methods_lib.names()
  problems = []
  if not methods:
    problems.append("no methods")
  unknown = [m for m in methods if m not in known]
  if unknown:
    problems.append(f"unknown method{'s' * (len(unknown) > 1)} "
                    f"{', '.join(map(repr, unknown))} (known: "
                    f"{', '.join(known)})")
  for name, values in (("method", methods), ("budget", budgets)):
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
      problems.append(f"{name} listed twice: {', '.join(repeated)}")
  if not budgets:
    problems.append("no budgets")
  for b in budgets:
    if b is not None:
      try:
        check_budget(b)
      except ValueError as e:
        problems.append(str(e))
  for m in dict.fromkeys(methods):
    if m in known:
      try:  # per-method options: what generate() would refuse mid-sweep
        methods_lib.validate(m, None, settings.per_image,
                             dict(getattr(settings, "options", ())))
      except ValueError as e:
        problems.append(str(e))
  if problems:
    raise ValueError("bad method x budget grid: " + "; ".join(problems))


def headline_metric(task: str) -> str:
  """The metric a sweep plots: the task's first promised key."""
  return tasks_lib.get_task(task).metric_keys[0]


def sweep_row(summary: dict, task: str) -> dict:
  """One table row from a run's summary."""
  eff = summary.get("efficiency", {})
  mean = lambda k: eff.get(k, {}).get("mean")
  before, after = mean("visual_tokens_before"), mean("visual_tokens_after")
  return {"method": summary["method"],
          "budget": 1.0 if summary["budget"] is None else summary["budget"],
          "kept_fraction": (after / before) if before else 1.0,
          "metric": summary["metrics"][headline_metric(task)],
          "prefill_ms": mean("prefill_ms"), "latency_ms": mean("latency_ms"),
          "peak_memory_bytes": mean("peak_memory_bytes"),
          "visual_tokens_before": before, "visual_tokens_after": after,
          "kv_cache_bytes": mean("kv_cache_bytes")}


def run_sweep(model, tokenizer, task: str, data_path: str,
              methods: Sequence[str], budgets: Sequence, out_dir: str,
              settings: runner.EvalSettings = runner.EvalSettings(), *,
              progress: bool = True,
              data: records_lib.EvalData | None = None) -> list[dict]:
  """Runs every (method, budget), writes the table and plot; returns the
  rows.

  Args:
    data: the data file as ``records.read_data`` validated it (read here
      when None).

  Raises:
    ValueError: a bad grid (``check_grid``), before any cell runs.
    records.EvalDataError: a bad data file or record.
  """
  from vselect_jax.eval import sweep_report
  check_grid(methods, budgets, settings)
  spec = tasks_lib.get_task(task)
  if data is None:
    data = records_lib.read_data(data_path, spec.required_fields,
                                 skip_bad=settings.skip_bad)
  task_dir = os.path.join(out_dir, task)
  rows = []
  for method in methods:
    for budget in budgets:
      cell = os.path.join(task_dir,
                          f"{method}_{runner.budget_name(budget)}")
      summary = runner.run_one(model, tokenizer, task, data_path, budget,
                               method, cell, settings, progress=progress,
                               data=data)
      rows.append(sweep_row(summary, task))
  metric = headline_metric(task)
  sweep_report.write_sweep_table(rows, os.path.join(task_dir, "sweep.md"),
                              os.path.join(task_dir, "sweep.csv"),
                              metric_name=metric)
  sweep_report.plot_sweep(rows, os.path.join(task_dir, "sweep.png"),
                       metric_name=metric)
  sweep_report.write_efficiency_table(
      rows, os.path.join(task_dir, "efficiency.md"),
      os.path.join(task_dir, "efficiency.csv"))
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


"""``eval.py score``: scores an existing predictions file without a model.

  python eval.py score --task docvqa --data docvqa_val.jsonl \
      --predictions run/predictions.jsonl [--out DIR]

writes ``summary.json`` (next to the predictions unless ``--out``) and prints
a table. ``summary.json``::

  {"task": ..., "lmms_task": ..., "num_samples": N,
   "metrics": {...},            # the task's headline numbers
   "details": {...},            # breakdowns
   "efficiency": {...},         # only for fields the predictions carry
   "data": ..., "predictions": ...}
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence

from vselect_jax.eval import records as records_lib
from vselect_jax.eval import tasks as tasks_lib

SUMMARY_NAME = "summary.json"
SAMPLES_NAME = "scored_samples.jsonl"


def percentile(values: Sequence[float], q: float) -> float:
  """The q-th percentile (0..100), linear interpolation between order
  statistics (numpy's default)."""
  if not values:
    raise ValueError("percentile of no values")
  xs = sorted(values)
  pos = (len(xs) - 1) * q / 100.0
  lo = int(pos)
  hi = min(lo + 1, len(xs) - 1)
  return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def efficiency_summary(preds: Sequence[records_lib.Prediction]) -> dict:
  """Mean / p50 / p90 of the timing fields and means of the token counts
  and memory, for each field some prediction carries (over those that do;
  ``count`` says how many)."""
  out = {}
  for key in records_lib.EFFICIENCY_FIELDS:
    vals = [getattr(p, key) for p in preds if getattr(p, key) is not None]
    if not vals:
      continue
    entry = {"mean": statistics.fmean(vals), "count": len(vals)}
    if key.endswith("_ms"):
      entry["p50"] = percentile(vals, 50)
      entry["p90"] = percentile(vals, 90)
    out[key] = entry
  return out


def score_predictions(task: str, data_path: str, predictions_path: str,
                      allow_missing: bool = False,
                      return_samples: bool = False,
                      records: Sequence[records_lib.EvalRecord] | None = None
                      ) -> dict:
  """Scores a predictions file against a data file.

  Args:
    task: a name from ``tasks.TASKS``.
    data_path: the task's JSONL data file.
    predictions_path: JSONL with ``id`` and ``prediction`` per line.
    allow_missing: score only the records that have a prediction (a partial
      run) instead of failing when some are missing.
    return_samples: add ``"samples"`` (per-record scores) to the result.
    records: the records to score against, already read from ``data_path``
      (a run that skipped bad ones); default: all of ``data_path``.

  Returns:
    The summary dict (see the module docstring).

  Raises:
    records.EvalDataError: on a malformed file, unknown / duplicate ids, or
      missing predictions unless ``allow_missing``.
  """
  spec = tasks_lib.get_task(task)
  recs = (list(records) if records is not None else
          records_lib.load_records(data_path, spec.required_fields))
  preds = records_lib.load_predictions(predictions_path,
                                       [r.id for r in recs])
  missing = [r.id for r in recs if r.id not in preds]
  if missing and not allow_missing:
    shown = ", ".join(repr(m) for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    raise records_lib.EvalDataError(
        f"{predictions_path}: no prediction for {len(missing)} of {len(recs)}"
        f" records ({shown}{more}); pass allow_missing / --allow-missing to "
        "score a partial run")
  recs = [r for r in recs if r.id in preds]
  if not recs:
    raise records_lib.EvalDataError(f"{predictions_path}: no predictions")
  ordered = [preds[r.id] for r in recs]
  try:
    result = tasks_lib.score_task(spec, recs, [p.prediction for p in ordered])
  except ValueError as e:
    raise records_lib.EvalDataError(f"{data_path}: {e}") from None
  summary = {
      "task": spec.name,
      "lmms_task": spec.lmms_task,
      "num_samples": len(recs),
      "num_missing": len(missing),
      "metrics": result.metrics,
      "details": result.details,
      "efficiency": efficiency_summary(ordered),
      "data": os.path.abspath(data_path),
      "predictions": os.path.abspath(predictions_path),
  }
  if return_samples:
    summary["samples"] = result.per_sample
  return summary


def format_table(summary: dict) -> str:
  """A plain two-column table of the headline metrics and efficiency."""
  rows = [("task", summary["task"]), ("num_samples", summary["num_samples"])]
  rows += list(summary["metrics"].items())
  for key, entry in summary.get("efficiency", {}).items():
    stats = ", ".join(f"{k} {v:.4g}" for k, v in entry.items()
                      if k != "count")
    rows.append((key, stats))
  width = max(len(str(k)) for k, _ in rows)
  lines = []
  for k, v in rows:
    if isinstance(v, float):
      v = f"{v:.4f}" if abs(v) <= 1 else f"{v:.2f}"
    lines.append(f"{str(k):<{width}}  {v}")
  return "\n".join(lines)


def add_score_args(parser: argparse.ArgumentParser) -> None:
  """Adds the ``score`` sub-command's arguments to ``parser``."""
  parser.add_argument("--task", required=True, choices=sorted(tasks_lib.TASKS))
  parser.add_argument("--data", required=True,
                      help="the task's JSONL data file")
  parser.add_argument("--predictions", required=True,
                      help="JSONL with id and prediction per line")
  parser.add_argument("--out", default=None,
                      help="directory for summary.json (default: the "
                      "predictions file's directory)")
  parser.add_argument("--allow-missing", action="store_true",
                      help="score only the records that have predictions")
  parser.add_argument("--samples", action="store_true",
                      help=f"also write per-sample scores to {SAMPLES_NAME}")


def run_score(args: argparse.Namespace) -> int:
  """Runs ``score`` from parsed arguments; returns the exit status."""
  try:
    summary = score_predictions(args.task, args.data, args.predictions,
                                allow_missing=args.allow_missing,
                                return_samples=args.samples)
  except records_lib.EvalDataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out_dir = args.out or os.path.dirname(os.path.abspath(args.predictions))
  os.makedirs(out_dir, exist_ok=True)
  samples = summary.pop("samples", None)
  with open(os.path.join(out_dir, SUMMARY_NAME), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")
  if samples is not None:
    with open(os.path.join(out_dir, SAMPLES_NAME), "w") as f:
      for row in samples:
        f.write(json.dumps(row) + "\n")
  print(format_table(summary))
  print(f"wrote {os.path.join(out_dir, SUMMARY_NAME)}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m vselect_jax.eval.score --task ... --data ... ...``."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_score_args(parser)
  return run_score(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

"""The budget sweep as a table (markdown and CSV) and a plot (PNG).

Rows are dicts with ``method``, ``budget``, ``kept_fraction`` (visual tokens
after / before), ``metric`` and ``prefill_ms`` (or None).
"""
from __future__ import annotations

import csv
from collections.abc import Sequence

COLUMNS = ("method", "budget", "kept_fraction", "metric", "prefill_ms")


def _ordered(rows: Sequence[dict]) -> list[dict]:
  return sorted(rows, key=lambda r: (r["method"], -float(r["budget"])))


def write_sweep_table(rows: Sequence[dict], md_path: str, csv_path: str,
                      metric_name: str = "accuracy") -> None:
  """One line per (method, budget): by method, then descending budget."""
  rows = _ordered(rows)
  head = ["method", "budget", "kept fraction", metric_name, "prefill ms"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    pf = "-" if r["prefill_ms"] is None else f"{r['prefill_ms']:.1f}"
    lines.append(f"| {r['method']} | {float(r['budget']):g} | "
                 f"{r['kept_fraction']:.4f} | {r['metric']:.4f} | {pf} |")
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=COLUMNS)
    w.writeheader()
    for r in rows:
      w.writerow({c: ("" if r[c] is None else r[c]) for c in COLUMNS})


def plot_sweep(rows: Sequence[dict], path: str,
               metric_name: str = "accuracy") -> str:
  """Metric and prefill time against the kept fraction, one line per
  method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
  for method in sorted({r["method"] for r in rows}):
    mine = sorted((r for r in rows if r["method"] == method),
                  key=lambda r: r["kept_fraction"])
    x = [r["kept_fraction"] for r in mine]
    ax_m.plot(x, [r["metric"] for r in mine], marker="o", label=method)
    timed = [r for r in mine if r["prefill_ms"] is not None]
    if timed:
      ax_t.plot([r["kept_fraction"] for r in timed],
                [r["prefill_ms"] for r in timed], marker="o", label=method)
  for ax, ylabel in ((ax_m, metric_name), (ax_t, "prefill ms")):
    ax.set_xscale("log")
    ax.set_xlabel("kept fraction of visual tokens")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path

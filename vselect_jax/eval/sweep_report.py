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


def _write(md_path: str, csv_path: str, head: list, cells: list,
           columns: Sequence[str], rows: Sequence[dict]) -> None:
  """A markdown table (``head`` over formatted ``cells``) and the raw
  ``rows``' ``columns`` as CSV (None as empty)."""
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  lines += ["| " + " | ".join(c) + " |" for c in cells]
  with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(columns))
    w.writeheader()
    for r in rows:
      w.writerow({c: ("" if r.get(c) is None else r[c]) for c in columns})


def write_sweep_table(rows: Sequence[dict], md_path: str, csv_path: str,
                      metric_name: str = "accuracy") -> None:
  """One line per (method, budget): by method, then descending budget."""
  rows = _ordered(rows)
  head = ["method", "budget", "kept fraction", metric_name, "prefill ms"]
  cells = []
  for r in rows:
    pf = "-" if r["prefill_ms"] is None else f"{r['prefill_ms']:.1f}"
    cells.append([r["method"], f"{float(r['budget']):g}",
                  f"{r['kept_fraction']:.4f}", f"{r['metric']:.4f}", pf])
  _write(md_path, csv_path, head, cells, COLUMNS, rows)


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


EFFICIENCY_COLUMNS = (
    "method", "budget", "kept_fraction", "prefill_ms", "latency_ms",
    "peak_memory_bytes", "visual_tokens_before", "visual_tokens_after",
    "kv_cache_bytes", "prefill_speedup", "latency_speedup",
    "memory_reduction", "kv_cache_reduction")


def efficiency_rows(rows: Sequence[dict]) -> list[dict]:
  """``rows`` with the ratios to the same method's budget-1.0 cell:
  ``prefill_speedup`` / ``latency_speedup`` (time at 1.0 / time here) and
  ``memory_reduction`` / ``kv_cache_reduction`` (1 - here / at 1.0, the
  paper's "86% memory reduction"); None without a budget-1.0 cell or a
  value on either side."""
  full = {r["method"]: r for r in rows if float(r["budget"]) == 1.0}
  out = []
  for r in _ordered(rows):
    base = full.get(r["method"], {})

    def ratio(key, reduction):
      a, b = base.get(key), r.get(key)
      if a is None or b is None or not a or not b:
        return None
      return 1.0 - b / a if reduction else a / b
    out.append({**r, "prefill_speedup": ratio("prefill_ms", False),
                "latency_speedup": ratio("latency_ms", False),
                "memory_reduction": ratio("peak_memory_bytes", True),
                "kv_cache_reduction": ratio("kv_cache_bytes", True)})
  return out


def write_efficiency_table(rows: Sequence[dict], md_path: str,
                           csv_path: str) -> list[dict]:
  """The efficiency table (``EFFICIENCY_COLUMNS``) as markdown and CSV;
  returns its rows. Memory is the device's peak bytes in use (weights
  included; absent on CPU), KV-cache bytes the prompt's cache after
  selection (``runner.kv_cache_bytes``), both means over the samples."""
  table = efficiency_rows(rows)

  def fmt(key, v):
    if v is None:
      return "-"
    if key.endswith("_bytes"):
      return f"{v / 2**20:.1f} MiB"
    if key.endswith("_reduction") or key == "kept_fraction":
      return f"{100 * v:.2f}%"
    if key.endswith("_speedup"):
      return f"{v:.2f}x"
    if key.endswith("_ms"):
      return f"{v:.1f}"
    if key.startswith("visual_tokens"):
      return f"{v:.1f}"
    return f"{v:g}" if isinstance(v, float) else str(v)
  head = ["method", "budget", "kept", "prefill ms", "latency ms",
          "peak memory", "visual tokens before", "after", "KV cache",
          "prefill speedup", "latency speedup", "memory reduction",
          "KV-cache reduction"]
  cells = [[fmt(c, r.get(c)) for c in EFFICIENCY_COLUMNS] for r in table]
  _write(md_path, csv_path, head, cells, EFFICIENCY_COLUMNS, table)
  return table

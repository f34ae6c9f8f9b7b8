"""The paper's efficiency table from a sweep's rows: ratios to budget 1.0
per method, markdown and CSV; the KV-cache bytes of a run's rows."""
import csv
import types

import numpy as np
import pytest

from vselect_jax.eval import runner, sweep, sweep_report


def _row(method, budget, prefill, mem, kv):
  return {"method": method, "budget": budget, "kept_fraction": budget,
          "metric": 0.5, "prefill_ms": prefill, "latency_ms": 2 * prefill,
          "peak_memory_bytes": mem, "visual_tokens_before": 100.0,
          "visual_tokens_after": 100.0 * budget, "kv_cache_bytes": kv}


def test_ratios_to_budget_one_and_files(tmp_path):
  rows = [_row("selector", 0.2, 50.0, 600.0, 20.0),
          _row("selector", 1.0, 86.5, 1000.0, 100.0),
          _row("random", 0.2, 40.0, None, 10.0)]  # no budget-1.0 cell
  table = sweep_report.write_efficiency_table(
      rows, str(tmp_path / "e.md"), str(tmp_path / "e.csv"))
  sel = [r for r in table if r["method"] == "selector"]
  assert [r["budget"] for r in sel] == [1.0, 0.2]
  assert sel[1]["prefill_speedup"] == pytest.approx(1.73)
  assert sel[1]["latency_speedup"] == pytest.approx(1.73)
  assert sel[1]["memory_reduction"] == pytest.approx(0.4)
  assert sel[1]["kv_cache_reduction"] == pytest.approx(0.8)
  assert sel[0]["prefill_speedup"] == pytest.approx(1.0)
  rnd = [r for r in table if r["method"] == "random"][0]
  assert rnd["prefill_speedup"] is None and rnd["memory_reduction"] is None
  md = open(tmp_path / "e.md").read()
  assert "| selector | 0.2 | 20.00% | 50.0 | 100.0 |" in md and "1.73x" in md
  got = list(csv.DictReader(open(tmp_path / "e.csv")))
  assert got[0]["method"] == "random" and got[0]["memory_reduction"] == ""
  assert float(got[2]["kv_cache_reduction"]) == pytest.approx(0.8)


def test_sweep_row_carries_the_efficiency_means():
  summary = {"method": "selector", "budget": None,
             "metrics": {"relaxed_accuracy": 0.25},
             "efficiency": {k: {"mean": v} for k, v in (
                 ("visual_tokens_before", 64.0), ("visual_tokens_after", 64.0),
                 ("prefill_ms", 3.0), ("latency_ms", 5.0),
                 ("kv_cache_bytes", 1024.0))}}
  row = sweep.sweep_row(summary, "chartqa")
  assert row["budget"] == 1.0 and row["kv_cache_bytes"] == 1024.0
  assert row["latency_ms"] == 5.0 and row["peak_memory_bytes"] is None


def test_kv_cache_bytes_counts_kept_tokens_per_layer():
  text = types.SimpleNamespace(num_key_value_heads=2, head_dim=8,
                               num_hidden_layers=4)
  model = types.SimpleNamespace(config=types.SimpleNamespace(text=text),
                                dtype=np.float32, module=None)
  per = 2 * 2 * 8 * 4  # k and v, heads, head dim, float32
  assert runner.kv_cache_bytes(model, "selector", None, 100, 60, 60) == (
      4 * 100 * per)
  assert runner.kv_cache_bytes(model, "selector", 0.5, 100, 60, 30) == (
      4 * 70 * per)

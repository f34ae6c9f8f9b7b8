"""The global batch and the run length, from the config and the host count.

A config states the global batch as packed rows per optimizer step, all
hosts together (``config.global_batch_rows``). Rows, not samples, because
rows are what is exact: a packed row holds as many samples as fit (7.7 on
average in rows of 2048 tokens on the reference mix, 15.6 in rows of 4096;
``bench/data.py``), so the samples in one step vary with the data while the
rows never do. Each micro-batch holds ``global_batch_rows / grad_accum``
rows; each host feeds ``global_batch_rows / (grad_accum * process_count)``
of them. A count that does not divide is an error that says which.

The run length is ``config.total_steps`` when set, else derived from
``config.epochs`` over the mixture's records:

  total_steps = ceil(epochs * records / (global_batch_rows * samples_per_row))

with ``samples_per_row = config.data.mean_samples_per_row`` (the packing
figure measured for the row shape): packing decides how many samples a row
holds, so the epochs of a run are an estimate either way; the loop logs
the records actually read as it goes.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """What one optimizer step holds and how many the run takes.

  Attributes:
    global_rows: packed rows per optimizer step, all hosts.
    grad_accum: micro-batches per optimizer step.
    process_count: hosts feeding data.
    host_rows: rows each host feeds per micro-batch.
    total_steps: optimizer steps of the run (> 0).
    records: records in the mixture (one epoch), if known.
    samples_per_row: mean samples per packed row used for the estimates.
    epochs: the epochs ``total_steps`` covers (estimate), if known.
  """
  global_rows: int
  grad_accum: int
  process_count: int
  host_rows: int
  total_steps: int
  records: int | None = None
  samples_per_row: float | None = None
  epochs: float | None = None

  @property
  def samples_per_step(self) -> float | None:
    if self.samples_per_row is None:
      return None
    return self.global_rows * self.samples_per_row

  def describe(self) -> str:
    """One line for the log, e.g. "global batch 32 rows/step (~498 samples
    at 15.6/row) = 2 micro-batches x 4 hosts x 4 rows; 289 steps = 1.00
    epochs of 144,000 records"."""
    spr = self.samples_per_step
    samples = f" (~{spr:.0f} samples at {self.samples_per_row:.1f}/row)" if (
        spr is not None) else ""
    epochs = (f"{self.epochs:.2f} epochs of {self.records:,} records"
              if self.epochs is not None else "epochs unknown (the data "
              "iterator does not report its record count)")
    return (f"global batch {self.global_rows} rows/step{samples} = "
            f"{self.grad_accum} micro-batch(es) x {self.process_count} "
            f"host(s) x {self.host_rows} rows; {self.total_steps} steps = "
            f"{epochs}")


def host_rows(config, process_count: int) -> int:
  """Rows this host feeds per micro-batch (see the module docstring)."""
  rows, accum = _global_rows(config), _grad_accum(config)
  if process_count < 1:
    raise ValueError(f"process_count must be >= 1, got {process_count}")
  share = accum * process_count
  if rows % share:
    raise ValueError(
        f"global_batch_rows={rows} does not divide into grad_accum={accum} "
        f"micro-batches x {process_count} hosts (= {share}): choose "
        f"global_batch_rows as a multiple of {share}, or change "
        "optim.grad_accum")
  return rows // share


def check_batch_devices(config, batch_devices: int) -> None:
  """A micro-batch's rows split evenly over the mesh's batch axes."""
  micro = _global_rows(config) // _grad_accum(config)
  if micro % batch_devices:
    raise ValueError(
        f"a micro-batch of {micro} rows (global_batch_rows="
        f"{_global_rows(config)} / grad_accum={_grad_accum(config)}) does "
        f"not split over the {batch_devices} devices of the mesh's data x "
        "fsdp axes: make global_batch_rows / grad_accum a multiple of "
        f"{batch_devices} (e.g. lower optim.grad_accum)")


def make_plan(config, process_count: int,
              records: int | None = None) -> BatchPlan:
  """The run's ``BatchPlan``; ``records`` is the mixture's size (needed
  when ``total_steps`` is derived from ``epochs``)."""
  rows = host_rows(config, process_count)
  spr = config.data.get("mean_samples_per_row", None) if (
      "data" in config) else None
  spr = float(spr) if spr else None
  total = config.get("total_steps", None)
  if total is not None:
    total = int(total)
    if total <= 0:
      raise ValueError(
          f"total_steps must be a positive number of optimizer steps, got "
          f"{total}: a run of {total} steps would export the untrained "
          "scorer as if trained")
  else:
    epochs = config.get("epochs", None)
    if epochs is None or float(epochs) <= 0:
      raise ValueError(f"epochs must be > 0 (got {epochs}) when total_steps "
                       "is not set")
    if records is None or spr is None:
      raise ValueError(
          "total_steps is not set and cannot be derived from epochs: "
          + ("the data iterator does not report its record count"
             if records is None else "config.data.mean_samples_per_row is "
             "not set") + "; set --config.total_steps")
    total = max(1, math.ceil(float(epochs) * records / (
        _global_rows(config) * spr)))
  epochs = None
  if records and spr:
    epochs = total * _global_rows(config) * spr / records
  return BatchPlan(_global_rows(config), _grad_accum(config), process_count,
                   rows, total, records, spr, epochs)


def _global_rows(config) -> int:
  if "rows_per_batch" in config.get("data", {}):
    raise ValueError(
        "config.data.rows_per_batch (rows per host) is replaced by "
        "config.global_batch_rows (rows per optimizer step, all hosts)")
  rows = config.get("global_batch_rows", None)
  if rows is None or int(rows) < 1:
    raise ValueError(f"global_batch_rows must be >= 1, got {rows}")
  return int(rows)


def _grad_accum(config) -> int:
  accum = int(config.get("optim", {}).get("grad_accum", 1))
  if accum < 1:
    raise ValueError(f"optim.grad_accum must be >= 1, got {accum}")
  return accum

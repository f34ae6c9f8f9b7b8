"""The training loop behind ``train.py``.

Single- and multi-host: the config states the global batch
(``global_batch``); each process feeds its share, arrays are assembled with
``jax.make_array_from_process_local_data`` and the jitted step runs with
explicit in/out shardings and donated state. Host preparation runs in a
prefetch thread (``prefetch``) and the step count lives on the host, so the
loop waits on the device only to log (one step late) and to checkpoint.

The loop resumes from ``<workdir>/checkpoints`` by itself (falling back past
broken steps), saying which settings differ from the checkpointed run's;
SIGTERM (TPU preemption) or SIGINT saves a checkpoint and returns with
``preempted`` set. Only process 0 writes metrics.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import signal
import time
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vselect_jax import paths
from vselect_jax import sharding as shard_lib
from vselect_jax.selector.budget import budget_to_k
from vselect_jax.host import train_batch as batch_lib
from vselect_jax.training import flops as flops_lib
from vselect_jax.training import global_batch, optim
from vselect_jax.training import loss as loss_lib
from vselect_jax.training import step as step_lib
from vselect_jax.training.checkpointing import Checkpointer
from vselect_jax.training.prefetch import Prefetcher

log = logging.getLogger("vselect_jax.train")


class _Preempted:
  """Records SIGTERM (TPU preemption) or SIGINT (Ctrl-C) so the loop can
  checkpoint once and exit between steps. A second SIGINT interrupts at
  once (KeyboardInterrupt), for a save that hangs."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signal: str | None = None
    self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

  def _handle(self, signum, frame):
    if self.signal is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name

  def restore(self):
    for s, old in self._old.items():
      signal.signal(s, old)


def rows_k(batch: dict, budget: float) -> np.ndarray:
  """k per packed row: the pooled top-k over all its visual tokens."""
  n = (np.asarray(batch["visual_index"]) >= 0).sum(1)
  return np.array([budget_to_k(int(v), budget) for v in n], np.int32)


def selection_k(batch: dict, budget: float, pool: str = "row") -> np.ndarray:
  """The step's k: per row (``rows_k``, int32[B]) for ``pool="row"``; for
  ``pool="sample"`` int32[B, T], at each visual token the k of its sample
  (``budget_to_k`` of that sample's visual tokens), 0 elsewhere."""
  if pool == "row":
    return rows_k(batch, budget)
  if pool != "sample":
    raise ValueError(f"selection_pool must be 'row' or 'sample', got "
                     f"{pool!r}")
  visual = np.asarray(batch["visual_index"]) >= 0
  seg = np.asarray(batch["segment_ids"])
  k = np.zeros(seg.shape, np.int32)
  for r in range(seg.shape[0]):
    for s in np.unique(seg[r][visual[r]]):
      where = visual[r] & (seg[r] == s)
      k[r, where] = budget_to_k(int(where.sum()), budget)
  return k


def state_shardings(state: step_lib.TrainState, mesh) -> step_lib.TrainState:
  """Parameters by their logical axes; optimizer moments as the parameters
  they belong to (``tx.init`` made them like the parameters, already on
  this mesh when the model was loaded onto it: moving them would be a
  cross-host transfer), everything else replicated."""
  replicated = NamedSharding(mesh, P())

  def moment(x):
    s = getattr(x, "sharding", None)
    if isinstance(s, NamedSharding) and s.mesh == mesh and x.ndim:
      return s
    return replicated

  return step_lib.TrainState(
      shard_lib.state_shardings(state.trainable, mesh),
      shard_lib.state_shardings(state.frozen, mesh),
      jax.tree.map(moment, state.opt_state),
      replicated, replicated)


class _Metrics:
  """JSONL + TensorBoard (if tensorboardX is installed) on process 0."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self.jsonl = None
    self.tb = None
    if not self.enabled:
      return
    paths.makedirs(workdir)
    self.jsonl = paths.open_append(paths.join(workdir, "metrics.jsonl"))
    try:
      self.tb = paths.summary_writer(paths.join(workdir, "tensorboard"))
    except ImportError:
      log.warning("tensorboardX not installed: metrics go to metrics.jsonl")

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.jsonl:
      self.jsonl.close()
    if self.tb:
      self.tb.close()


def train(config, workdir: str,
          make_iterator: Callable[..., Iterator[dict]] | None = None,
          *, model=None, progress: bool = True) -> dict:
  """Trains the scorer; returns the outcome.

  Args:
    config: an ``ml_collections.ConfigDict`` (see ``configs/``).
    workdir: checkpoints, metrics and the exported scorer go here.
    make_iterator: ``(config, process_index, process_count) -> iterator`` of
      host-local packed batches of ``global_batch.host_rows(config,
      process_count)`` rows, with ``get_state`` / ``set_state`` (and
      ``num_records``, to derive steps from epochs); defaults to the grain
      pipeline of ``vselect_jax.data``.
    model: an already loaded ``(config, module)`` (``loading.load_model``;
      tests); else ``config.model_path`` is loaded onto the mesh.

  Returns:
    {"state", "step" (host int), "metrics" (last logged), "plan"
    (``BatchPlan``), "preempted" (None, "SIGTERM" or "SIGINT"),
    "already_complete" (the workdir held a finished run), "config_changes"
    (settings that differ from the checkpointed run's), "corrupt" (broken
    checkpoint steps set aside)}.
  """
  pi, pc = jax.process_index(), jax.process_count()
  # Bad batch or step counts fail here, before anything loads or trains.
  global_batch.host_rows(config, pc)
  if config.get("total_steps", None) is not None:
    global_batch.make_plan(config, pc)
  paths.makedirs(workdir)
  mesh = shard_lib.make_mesh(dict(config.mesh))
  if model is None:  # straight onto the training mesh, never whole on one
    from vselect_jax.loading import load_model   # device
    model = load_model(config.model_path,
                       config.get("param_dtype", "float32"), mesh=mesh)
  cfg, module = model
  data_family = (config.get("data", None) or {}).get("family", cfg.family)
  if data_family != cfg.family:
    raise ValueError(f"config.data.family is {data_family!r} but the model "
                     f"{config.model_path!r} is {cfg.family!r}")
  global_batch.check_batch_devices(
      config, mesh.shape["data"] * mesh.shape["fsdp"])
  if make_iterator is None:
    from vselect_jax.data import make_train_iterator_from_config
    make_iterator = make_train_iterator_from_config
  data = make_iterator(config, pi, pc)
  plan = global_batch.make_plan(config, pc,
                                getattr(data, "num_records", None))
  log.info("%s", plan.describe())
  total, accum = plan.total_steps, plan.grad_accum
  tx = optim.make_optimizer(
      config.optim.lr, total, warmup_ratio=config.optim.warmup_ratio,
      weight_decay=config.optim.weight_decay,
      clip_norm=config.optim.clip_norm, grad_accum=accum)
  reg = optim.reg_weight_schedule(config.reg.start, config.reg.end, total,
                                  config.reg.get("shape", "linear"))
  parts = step_lib.Parts.from_config(config)
  select_at = config.get("select_at", None)
  if select_at is not None and int(select_at) >= cfg.vision.depth:
    select_at = None  # the tower's end: the post-tower selector
  if select_at is not None:
    parts = dataclasses.replace(parts, scorer="block_scorer")
  train_method = config.get("train_method", "selector")
  tau = None
  if train_method == "dynamic_qwen":  # the image predictor, Gumbel-annealed
    from vselect_jax.methods.dynamic_qwen import gumbel_tau
    parts = dataclasses.replace(parts, scorer="image_score_predictor")
    g = config.get("gumbel", None) or {}
    tau_start, tau_end = g.get("start", 1.0), g.get("end", 0.1)
    tau = lambda s: gumbel_tau(s, total, tau_start, tau_end)  # noqa: E731
  graphdef, state = step_lib.init_state(module, tx, parts)
  sh = state_shardings(state, mesh)
  state = jax.device_put(state, sh)
  compute = config.get("compute_dtype", None)
  step_fn = step_lib.make_train_step(
      graphdef, tx, reg, grad_accum=accum, remat=config.get("remat", True),
      compute_dtype=jnp.dtype(compute) if compute else None, parts=parts,
      ce_weighting=loss_lib.CEWeighting.from_config(config),
      pool=config.get("selection_pool", "row"), select_at=select_at,
      soft_mask=config.get("soft_mask", "scale"), train_method=train_method,
      tau=tau, budget=float(config.budget), seed=int(config.get("seed", 0)))
  jitted = jax.jit(step_fn, in_shardings=(sh, None, None),
                   out_shardings=(sh, None), donate_argnums=0)

  peak = flops_lib.peak_flops(jax.devices()[0].device_kind)
  record = config_record(config, plan)
  ckpt = Checkpointer(workdir, keep=config.get("keep_checkpoints", 2),
                      async_save=config.get("async_checkpointing", True))
  changes, corrupt = [], []
  resumed = ckpt.restore_latest(state)
  if resumed is not None:
    state, corrupt = resumed["state"], resumed["corrupt"]
    if resumed["data"] is not None and hasattr(data, "set_state"):
      data.set_state(resumed["data"])
    changes = config_changes(resumed["config"], record)
    log.info("resumed from step %d", resumed["step"])
    if changes:
      log.warning("settings differ from the checkpointed run's (step %d): "
                  "%s", resumed["step"], "; ".join(changes))
  # The step lives on the host from here on: reading it from the device
  # would wait for every step to finish before the next is dispatched.
  step, micro = int(state.step), int(state.micro_step)
  already_complete = step >= total
  if already_complete:
    log.warning("the run in %s is already complete at step %d (of %d): "
                "nothing to train", workdir, step, total)

  def global_array(x, batch_axis=0):
    s = shard_lib.batch_sharding(mesh, x.ndim, batch_axis)
    return jax.make_array_from_process_local_data(s, np.asarray(x))

  def prepare(raw):  # runs in the prefetch thread
    rows = np.asarray(raw["input_ids"]).shape[0]
    if rows != plan.host_rows:
      raise ValueError(
          f"the data iterator gave {rows} rows per batch; this host must "
          f"feed {plan.host_rows} ({plan.describe()})")
    host = batch_lib.prepare_train_batch(cfg, raw)
    return dict(host=host, k=selection_k(host, config.budget,
                                         config.get("selection_pool", "row")),
                skips={k: raw[k] for k in ("skipped", "samples_seen")
                       if k in raw},
                tokens=float(np.asarray(raw["segment_ids"] > 0).sum()),
                flops=flops_lib.batch_flops(cfg, raw))

  from vselect_jax.data import SkipMonitor
  skips = SkipMonitor(config.data.get("max_skip_fraction", 0.01))
  metrics_out = _Metrics(workdir)
  preempted = _Preempted()
  feed = None if already_complete else Prefetcher(
      data, prepare, int(config.get("prefetch_batches", 2)))
  bar = None
  if progress and pi == 0 and not already_complete:
    from tqdm import tqdm
    bar = tqdm(total=total, initial=step, desc="train")
  last = {}
  every = int(config.get("log_every", 1))
  window = dict(t=time.perf_counter(), step=step, tokens=0.0, flops=0.0)
  pending = None  # a log step's metrics, fetched after the next dispatch

  def flush():
    """Logs ``pending`` (waits for that step only)."""
    nonlocal pending, last
    if pending is None:
      return
    at, metrics, tokens, flops = pending
    pending = None
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    now = time.perf_counter()
    dt = (now - window["t"]) / max(at - window["step"], 1)
    window.update(t=now, step=at)
    achieved = flops * pc / max(dt, 1e-9)
    values.update(tflops_per_s=achieved / 1e12)
    if peak is not None:
      values.update(mfu=achieved / (peak * jax.device_count()))
    values.update(step_time_s=dt, tokens_per_s=tokens * pc / max(dt, 1e-9),
                  lr=float(optim.learning_rate_schedule(
                      config.optim.lr, total,
                      config.optim.warmup_ratio)(at - 1)))
    if plan.records:  # this host's reads, scaled: hosts read alike
      values.update(epoch=skips.seen * pc / plan.records)
    last = values
    if not np.isfinite(values["loss"]):
      raise FloatingPointError(f"non-finite loss at step {at}: {values}")
    metrics_out.write(at, values)
    if bar is not None:
      bar.set_postfix(loss=f"{values['loss']:.4f}", step_s=f"{dt:.2f}",
                      tok_s=f"{values['tokens_per_s']:.0f}")

  try:
    while step < total:
      item = next(feed)
      if "skipped" in item["skips"]:  # bad records, counted by the pipeline
        skips.update(item["skips"])
      dev = {k: global_array(v, 1 if k == "position_ids" else 0)
             for k, v in item["host"].items()}
      state, metrics = jitted(state, dev, global_array(item["k"]))
      micro += 1
      window["tokens"] += item["tokens"]
      window["flops"] += item["flops"]
      if micro % accum == 0:
        step += 1
        flush()  # the previous log step ran while this one was dispatched
        if step % every == 0 or step == total:
          # Per step, averaged over the window since the last log.
          n = max(step - window["step"], 1)
          pending = (step, metrics, window["tokens"] / n,
                     window["flops"] / n)
          window.update(tokens=0.0, flops=0.0)
        if bar is not None:
          bar.update(1)
        if step % int(config.checkpoint_every) == 0 or step == total:
          ckpt.save(step, state, feed.state, config=record)
      if preempted.signal:
        log.warning("%s: checkpointing at step %d and exiting",
                    preempted.signal, step)
        if ckpt.latest_step() != step:
          ckpt.save(step, state, feed.state, force=True, config=record)
        break
    flush()
  finally:
    if feed is not None:
      feed.close()
    preempted.restore()
    ckpt.close()
    metrics_out.close()
    if bar is not None:
      bar.close()
  # A signal during the last step still leaves a finished run.
  stopped_by = preempted.signal if step < total else None
  # A finished run is exported again (an export cut short is redone),
  # but not under settings it did not train with.
  if step >= total and not (already_complete and changes):
    _export(state, graphdef, parts, cfg, config, workdir, pi)
  return {"state": state, "step": step, "metrics": last, "plan": plan,
          "preempted": stopped_by, "already_complete": already_complete,
          "config_changes": changes, "corrupt": corrupt}


def config_record(config, plan: global_batch.BatchPlan) -> dict:
  """The run's settings as saved with each checkpoint (JSON), the derived
  step count included."""
  record = json.loads(config.to_json_best_effort())
  record["total_steps"] = plan.total_steps
  return record


def config_changes(saved: dict | None, now: dict) -> list[str]:
  """Settings that differ, as "key: checkpoint -> now" (dotted keys)."""
  if saved is None:
    return []
  a, b = _flatten(saved), _flatten(now)
  return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _export(state, graphdef, parts, cfg, config, workdir: str, pi: int):
  """The trained scorer as ``scorer.safetensors`` (PyTorch layout), and,
  when backbone parts trained, the whole model as an HF checkpoint in
  ``<workdir>/hf``. Every process joins the gathers (parameters may be
  sharded across hosts); process 0 writes."""
  from flax import nnx
  from jax.experimental import multihost_utils
  from vselect_jax.checkpoint import hf_export, scorer_export
  dtype = config.get("export_dtype", "bfloat16")
  if parts.tune_compressor:
    pure = multihost_utils.process_allgather(
        state.trainable.to_pure_dict(), tiled=True)
    if pi == 0:
      with paths.local_target(paths.join(workdir,
                                         "scorer.safetensors")) as dst:
        scorer_export.write_tensors(
            scorer_export.scorer_tensors(pure, scorer=parts.scorer), dst,
            dtype, cfg.family)
  if parts.tune_mm_vision or parts.tune_mm_mlp or parts.tune_mm_llm:
    model = nnx.merge(graphdef, state.trainable, state.frozen)
    pure = multihost_utils.process_allgather(
        nnx.state(model, nnx.Param).to_pure_dict(), tiled=True)
    if pi == 0:
      hf_export.export_hf(pure, cfg, config.model_path,
                          paths.join(workdir, "hf"), dtype,
                          include_scorer=parts.tune_compressor)

"""The training loop behind ``train.py``.

Single- and multi-host: each process feeds its share of the global batch;
arrays are assembled with ``jax.make_array_from_process_local_data`` and the
jitted step runs with explicit in/out shardings and donated state. The loop
resumes from ``<workdir>/checkpoints`` by itself; SIGTERM (TPU preemption)
saves a checkpoint and exits cleanly. Only process 0 writes metrics.
"""
from __future__ import annotations

import json
import logging
import os
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
from vselect_jax.training import loss as loss_lib
from vselect_jax.training import optim
from vselect_jax.training import step as step_lib
from vselect_jax.training.checkpointing import Checkpointer

log = logging.getLogger("vselect_jax.train")


class _Preempted:
  """Flags SIGTERM so the loop can checkpoint and exit between steps."""

  def __init__(self):
    self.flag = False
    self._old = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, *_):
    self.flag = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._old)


def rows_k(batch: dict, budget: float) -> np.ndarray:
  """k per packed row: the pooled top-k over all its visual tokens."""
  n = (np.asarray(batch["visual_index"]) >= 0).sum(1)
  return np.array([budget_to_k(int(v), budget) for v in n], np.int32)


def state_shardings(state: step_lib.TrainState, mesh) -> step_lib.TrainState:
  replicated = NamedSharding(mesh, P())
  return step_lib.TrainState(
      shard_lib.state_shardings(state.trainable, mesh),
      shard_lib.state_shardings(state.frozen, mesh),
      jax.tree.map(lambda _: replicated, state.opt_state),
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
  """Trains the scorer; returns the last metrics.

  Args:
    config: an ``ml_collections.ConfigDict`` (see ``configs/``).
    workdir: checkpoints, metrics and the exported scorer go here.
    make_iterator: ``(config, process_index, process_count) -> iterator`` of
      host-local packed batches with ``get_state`` / ``set_state``; defaults
      to the grain pipeline of ``vselect_jax.data``.
    model: an already loaded ``VisionLanguageModel`` (tests); else
      ``config.model_path`` is loaded.
  """
  import vselect_jax
  paths.makedirs(workdir)
  if model is None:
    model = vselect_jax.from_pretrained(config.model_path,
                                        dtype=config.get("param_dtype",
                                                         "float32"))
  cfg = model.config
  mesh = shard_lib.make_mesh(dict(config.mesh))
  total = int(config.total_steps)
  accum = int(config.optim.get("grad_accum", 1))
  tx = optim.make_optimizer(
      config.optim.lr, total, warmup_ratio=config.optim.warmup_ratio,
      weight_decay=config.optim.weight_decay,
      clip_norm=config.optim.clip_norm, grad_accum=accum)
  reg = optim.reg_weight_schedule(config.reg.start, config.reg.end, total,
                                  config.reg.get("shape", "linear"))
  parts = step_lib.Parts.from_config(config)
  graphdef, state = step_lib.init_state(model.module, tx, parts)
  sh = state_shardings(state, mesh)
  state = jax.device_put(state, sh)
  compute = config.get("compute_dtype", None)
  step_fn = step_lib.make_train_step(
      graphdef, tx, reg, grad_accum=accum, remat=config.get("remat", True),
      compute_dtype=jnp.dtype(compute) if compute else None, parts=parts,
      ce_weighting=loss_lib.CEWeighting.from_config(config))
  jitted = jax.jit(step_fn, in_shardings=(sh, None, None),
                   out_shardings=(sh, None), donate_argnums=0)

  pi, pc = jax.process_index(), jax.process_count()
  peak = flops_lib.peak_flops(jax.devices()[0].device_kind)
  if make_iterator is None:
    from vselect_jax.data import make_train_iterator_from_config
    make_iterator = make_train_iterator_from_config
  data = make_iterator(config, pi, pc)
  ckpt = Checkpointer(workdir, keep=config.get("keep_checkpoints", 2),
                      async_save=config.get("async_checkpointing", True))
  latest = ckpt.latest_step()
  if latest is not None:
    state, data_state = ckpt.restore(latest, state)
    if data_state is not None and hasattr(data, "set_state"):
      data.set_state(data_state)
    log.info("resumed from step %d", latest)

  def global_array(x, batch_axis=0):
    s = shard_lib.batch_sharding(mesh, x.ndim, batch_axis)
    return jax.make_array_from_process_local_data(s, np.asarray(x))

  from vselect_jax.data import SkipMonitor
  skips = SkipMonitor(config.data.get("max_skip_fraction", 0.01))
  metrics_out = _Metrics(workdir)
  preempted = _Preempted()
  bar = None
  if progress and pi == 0:
    from tqdm import tqdm
    bar = tqdm(total=total, initial=int(state.step), desc="train")
  last = {}
  t_last = time.perf_counter()
  every = int(config.get("log_every", 1))
  try:
    while int(state.step) < total:
      raw = next(data)
      if "skipped" in raw:  # bad records, counted by the pipeline
        skips.update(raw)
      host = batch_lib.prepare_train_batch(cfg, raw)
      k_row = rows_k(host, config.budget)
      dev = {k: global_array(v, 1 if k == "position_ids" else 0)
             for k, v in host.items()}
      state, metrics = jitted(state, dev, global_array(k_row))
      step = int(state.step)
      if int(state.micro_step) % accum == 0:
        dt = time.perf_counter() - t_last
        t_last = time.perf_counter()
        last = {k: float(v) for k, v in metrics.items()}
        tokens = float(np.asarray(raw["segment_ids"] > 0).sum()) * pc * accum
        achieved = flops_lib.batch_flops(cfg, raw) * pc * accum / max(dt, 1e-9)
        last.update(tflops_per_s=achieved / 1e12)
        if peak is not None:
          last.update(mfu=achieved / (peak * jax.device_count()))
        last.update(step_time_s=dt, tokens_per_s=tokens / max(dt, 1e-9),
                    lr=float(optim.learning_rate_schedule(
                        config.optim.lr, total,
                        config.optim.warmup_ratio)(step - 1)))
        if not np.isfinite(last["loss"]):
          raise FloatingPointError(f"non-finite loss at step {step}: {last}")
        if step % every == 0 or step == total:
          metrics_out.write(step, last)
        if bar is not None:
          bar.update(1)
          bar.set_postfix(loss=f"{last['loss']:.4f}",
                          step_s=f"{dt:.2f}",
                          tok_s=f"{last['tokens_per_s']:.0f}")
        if step % int(config.checkpoint_every) == 0 or step == total:
          ckpt.save(step, state, _data_state(data))
      if preempted.flag:
        log.warning("SIGTERM: checkpointing at step %d and exiting", step)
        if ckpt.latest_step() != int(state.step):
          ckpt.save(int(state.step), state, _data_state(data), force=True)
        break
  finally:
    preempted.restore()
    ckpt.close()
    metrics_out.close()
    if bar is not None:
      bar.close()
  if int(state.step) >= total:
    _export(state, graphdef, parts, cfg, config, workdir, pi)
  return {"state": state, "metrics": last, "preempted": preempted.flag}


def _export(state, graphdef, parts, cfg, config, workdir: str, pi: int):
  """The trained scorer as ``scorer.safetensors`` (PyTorch layout), and,
  when backbone parts trained, the whole model as an HF checkpoint in
  ``<workdir>/hf``. Every process joins the gathers (parameters may be
  sharded across hosts); process 0 writes."""
  from flax import nnx
  from jax.experimental import multihost_utils
  from conversion import export_hf, export_scorer
  dtype = config.get("export_dtype", "bfloat16")
  if parts.tune_compressor:
    pure = multihost_utils.process_allgather(
        state.trainable.to_pure_dict(), tiled=True)
    if pi == 0:
      with paths.local_target(paths.join(workdir,
                                         "scorer.safetensors")) as dst:
        export_scorer.write_tensors(export_scorer.scorer_tensors(pure), dst,
                                    dtype)
  if parts.tune_mm_vision or parts.tune_mm_mlp or parts.tune_mm_llm:
    model = nnx.merge(graphdef, state.trainable, state.frozen)
    pure = multihost_utils.process_allgather(
        nnx.state(model, nnx.Param).to_pure_dict(), tiled=True)
    if pi == 0:
      export_hf.export_hf(pure, cfg, config.model_path,
                          paths.join(workdir, "hf"), dtype,
                          include_scorer=parts.tune_compressor)


def _data_state(data):
  if hasattr(data, "get_state"):
    s = data.get_state()
    return s if isinstance(s, dict) else {"state": s}
  return None

"""Training checkpoints (the only training module that imports Orbax).

A checkpoint holds what changes during training: the scorer's float32
parameters, the optimizer state, the step counters, and the data iterator's
state (JSON), so a resumed run continues on exactly the next batch, and
the run's config (JSON), so a rerun can say which settings changed. The
frozen backbone is read from the converted checkpoint and never rewritten.
Restores go straight onto the target shardings, so a different mesh works.

A step that does not restore (a file missing inside it, its ``state/``
gone) is not deleted: ``restore_latest`` falls back to the newest step that
does and moves the broken ones to ``<workdir>/checkpoints_corrupt/<step>``
(out of Orbax's reach: it would otherwise collide with or garbage-collect
them), saying so loudly.
"""
from __future__ import annotations

import logging
import time

import jax
import orbax.checkpoint as ocp

from vselect_jax import paths

log = logging.getLogger("vselect_jax.train")


class Checkpointer:
  """Orbax ``CheckpointManager`` over ``<workdir>/checkpoints``."""

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True):
    # A gs:// workdir goes to Orbax as is (tensorstore writes it natively).
    self.directory = paths.join(paths.absolute(workdir), "checkpoints")
    paths.require_gcs_api(self.directory, "Orbax's CheckpointManager")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True,
            enable_async_checkpointing=async_save))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict | None = None,
           *, force: bool = False, config: dict | None = None) -> None:
    items = {"state": ocp.args.StandardSave(_savable(state))}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    if config is not None:
      items["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, target):
    """Restores onto ``target``'s structure, dtypes and shardings; returns
    (state, data state or None, config or None)."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        _savable(target))
    items = {"state": ocp.args.StandardRestore(abstract)}
    present = self.manager.item_metadata(step) or {}
    for name in ("data", "config"):
      if name in present:
        items[name] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return (_unsavable(target, restored["state"]), restored.get("data"),
            restored.get("config"))

  def restore_latest(self, target) -> dict | None:
    """The newest step that restores, or None when there is no checkpoint.

    Returns {"step", "state", "data", "config", "corrupt": [(step, moved
    to, error)]}. Raises when no step restores (then nothing is moved: the
    target, not the checkpoints, is probably what changed).
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    failed = []
    for step in steps:
      try:
        state, data, config = self.restore(step, target)
      except Exception as e:  # noqa: BLE001 - any unreadable step
        failed.append((step, f"{type(e).__name__}: {str(e)[:300]}"))
        continue
      corrupt = [(s, self._set_aside(s), err) for s, err in failed]
      for s, where, err in corrupt:
        log.error("!!! checkpoint step %d does not restore (%s); resuming "
                  "from step %d instead. The broken step is kept at %s "
                  "(not deleted).", s, err, step, where)
      return {"step": step, "state": state, "data": data, "config": config,
              "corrupt": corrupt}
    if failed:
      raise RuntimeError(
          f"no checkpoint in {self.directory} restores (steps "
          f"{[s for s, _ in failed]}); the newest failed with: "
          f"{failed[0][1]}")
    return None

  def _set_aside(self, step: int) -> str:
    """Moves a broken step out of the manager's directory; returns where."""
    src = paths.join(self.directory, str(step))
    dst_dir = self.directory + "_corrupt"
    paths.makedirs(dst_dir)
    dst = paths.join(dst_dir, str(step))
    if paths.exists(dst):
      dst = f"{dst}.{time.strftime('%Y%m%d-%H%M%S')}"
    if jax.process_index() == 0:  # one host moves; all see the new listing
      paths.move(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
    self.manager.reload()
    return dst

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _savable(state):
  """The trained part of a ``TrainState`` as a plain pytree of arrays."""
  return {"trainable": _pure(state.trainable),
          "opt_state": state.opt_state,
          "step": state.step, "micro_step": state.micro_step}


def _pure(tree):
  return tree.to_pure_dict() if hasattr(tree, "to_pure_dict") else tree


def _unsavable(target, restored):
  trainable = target.trainable
  if hasattr(trainable, "replace_by_pure_dict"):
    trainable = jax.tree.map(lambda x: x, trainable)  # copy, then fill
    trainable.replace_by_pure_dict(restored["trainable"])
  else:
    trainable = restored["trainable"]
  opt_state = jax.tree.unflatten(jax.tree.structure(target.opt_state),
                                 jax.tree.leaves(restored["opt_state"]))
  return type(target)(trainable, target.frozen, opt_state,
                      restored["step"], restored["micro_step"])

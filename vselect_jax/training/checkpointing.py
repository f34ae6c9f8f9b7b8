"""Training checkpoints (the only training module that imports Orbax).

A checkpoint holds what changes during training: the scorer's float32
parameters, the optimizer state, the step counters, and the data iterator's
state (JSON), so a resumed run continues on exactly the next batch. The
frozen backbone is read from the converted checkpoint and never rewritten.
Restores go straight onto the target shardings, so a different mesh works.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from vselect_jax import paths


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
           *, force: bool = False) -> None:
    items = {"state": ocp.args.StandardSave(_savable(state))}
    if data_state is not None:
      items["data"] = ocp.args.JsonSave(data_state)
    self.manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int, target) -> tuple[object, dict | None]:
    """Restores onto ``target``'s structure, dtypes and shardings."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                       sharding=getattr(x, "sharding", None)),
        _savable(target))
    items = {"state": ocp.args.StandardRestore(abstract)}
    if "data" in (self.manager.item_metadata(step) or {}):
      items["data"] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return _unsavable(target, restored["state"]), restored.get("data")

  def wait(self) -> None:
    self.manager.wait_until_finished()

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

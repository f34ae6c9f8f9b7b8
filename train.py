"""Train the VisionSelector scorer on a frozen Qwen2.5-VL.

    python -m configs.smoke   # once: the smoke config's tiny model and data
    python train.py --config configs/smoke.py --workdir /tmp/vs_smoke
    python train.py --config configs/qwen25vl_7b.py --workdir gs://BUCKET/run \
        --config.model_path=ckpt/qwen25vl-7b

The config states the global batch (``global_batch_rows``, packed rows per
optimizer step, all hosts) and the run length (``epochs``, or
``total_steps``); the log's first lines say both. The run resumes from
``--workdir`` by itself; at the end the scorer is also written as
``<workdir>/scorer.safetensors`` (PyTorch layout). On a TPU pod every host
runs this same command (``tpu_scripts/launch.sh``).

Exit codes: 0 trained to the last step (or the workdir already held the
same finished run); 1 an error (bad config, bad data, ...); 3 the workdir
already holds a finished run whose settings differ from this command's
(nothing trained; they are listed); 75 preempted (SIGTERM or SIGINT): a
checkpoint was saved, rerun the same command to resume.
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

EXIT_OK = 0
EXIT_COMPLETE_WITH_CHANGES = 3
EXIT_PREEMPTED = 75  # sysexits EX_TEMPFAIL: try again (resumes)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None,
    "Call jax.distributed.initialize() (default: on TPU pods, auto).")


def run(config, workdir: str, **train_kwargs) -> int:
  """Trains (``loop.train``), says how it ended; returns the exit code."""
  import jax
  from vselect_jax import paths
  from vselect_jax.training import loop
  result = loop.train(config, workdir, **train_kwargs)
  quiet = jax.process_index() != 0  # one host speaks
  if quiet:
    pass
  elif result["preempted"]:
    print(f"preempted ({result['preempted']}) at step {result['step']} of "
          f"{result['plan'].total_steps}: checkpoint saved in "
          f"{workdir}/checkpoints; rerun the same command to resume "
          f"(exit {EXIT_PREEMPTED})")
  elif result["already_complete"]:
    print(f"the run in {workdir} is already complete at step "
          f"{result['step']}; nothing trained.")
    if result["config_changes"]:
      print("these settings differ from the checkpointed run's (checkpoint "
            "-> now); use a new --workdir to train with them:\n  " +
            "\n  ".join(result["config_changes"]))
  else:
    wd = workdir
    written = [f"metrics: {wd}/metrics.jsonl", f"tensorboard: {wd}/tensorboard"]
    for what, name in (("scorer", "scorer.safetensors"), ("HF model", "hf")):
      if paths.exists(paths.join(wd, name)):
        written.append(f"{what}: {wd}/{name}")
    print(f"trained to step {result['step']} ({result['plan'].describe()}); "
          + ", ".join(written))
  for step, where, err in [] if quiet else result["corrupt"]:
    print(f"WARNING: checkpoint step {step} did not restore ({err}); the run "
          f"resumed from an older step. The broken step is kept at {where}.")
  if result["preempted"]:
    return EXIT_PREEMPTED
  if result["already_complete"] and result["config_changes"]:
    return EXIT_COMPLETE_WITH_CHANGES
  return EXIT_OK


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(message)s")
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax is chatty
  import jax
  from vselect_jax.training import distributed
  distributed.maybe_initialize(_DISTRIBUTED.value)
  logging.info("process %d/%d, %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  return run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  sys.exit(app.run(main))

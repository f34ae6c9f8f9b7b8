"""Train the VisionSelector scorer on a frozen Qwen2.5-VL.

    python train.py --config configs/smoke.py --workdir /tmp/vs_smoke
    python train.py --config configs/qwen25vl_7b.py --workdir gs://BUCKET/run \
        --config.model_path=ckpt/qwen25vl-7b --config.total_steps=282

The run resumes from ``--workdir`` by itself; at the end the scorer is also
written as ``<workdir>/scorer.safetensors`` (PyTorch layout). On a TPU pod
every host runs this same command (``tpu_scripts/launch.sh``).
"""
from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and metrics.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", None,
    "Call jax.distributed.initialize() (default: on TPU pods, auto).")


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO,
                      format="%(asctime)s %(name)s %(message)s")
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax is chatty
  import jax
  from vselect_jax import paths
  from vselect_jax.training import distributed, loop
  distributed.maybe_initialize(_DISTRIBUTED.value)
  logging.info("process %d/%d, %d local / %d global devices (%s)",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(),
               jax.default_backend())
  config = _CONFIG.value
  if hasattr(config, "prepare"):  # configs that build local assets
    config = config.prepare()
  result = loop.train(config, _WORKDIR.value)
  if jax.process_index() == 0:
    wd = _WORKDIR.value
    written = [f"metrics: {wd}/metrics.jsonl", f"tensorboard: {wd}/tensorboard"]
    for what, name in (("scorer", "scorer.safetensors"), ("HF model", "hf")):
      if paths.exists(paths.join(wd, name)):
        written.append(f"{what}: {wd}/{name}")
    print(f"trained to step {int(result['state'].step)}; " + ", ".join(written))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  sys.exit(app.run(main))

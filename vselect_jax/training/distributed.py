"""Multi-host setup."""
from __future__ import annotations

import logging
import os


def maybe_initialize(enabled: bool | None = None, **kwargs) -> bool:
  """Calls ``jax.distributed.initialize`` on multi-host runs.

  Args:
    enabled: True / False to force; None initialises when a TPU pod (or an
      explicit coordinator via JAX_COORDINATOR_ADDRESS) is detected.
    **kwargs: passed on (coordinator_address, num_processes, process_id).

  Returns:
    Whether it initialised.
  """
  import jax
  if enabled is None:
    enabled = bool(kwargs) or "JAX_COORDINATOR_ADDRESS" in os.environ or (
        "TPU_WORKER_HOSTNAMES" in os.environ and
        "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))
  if not enabled:
    return False
  jax.distributed.initialize(**kwargs)
  logging.info("jax.distributed initialised: process %d of %d",
               jax.process_index(), jax.process_count())
  return True

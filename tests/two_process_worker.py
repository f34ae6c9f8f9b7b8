"""One of two JAX processes on localhost training a few steps (run by
tests/test_two_process.py)."""
import os
import sys

proc, port, model_dir, workdir = (int(sys.argv[1]), sys.argv[2], sys.argv[3],
                                  sys.argv[4])
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
from vselect_jax.training import distributed  # noqa: E402

distributed.maybe_initialize(coordinator_address=f"127.0.0.1:{port}",
                             num_processes=2, process_id=proc)
assert jax.process_count() == 2 and jax.device_count() == 8

from tests.test_two_process import config, host_share  # noqa: E402
from vselect_jax.training import loop  # noqa: E402

# The production path: the loop loads the model straight onto the global
# mesh (each process places its own devices' blocks).
c = config()
c.model_path = model_dir
result = loop.train(c, workdir, host_share, progress=False)
print(f"process {proc} done at step {result['step']} "
      f"loss {result['metrics']['loss']:.6f} "
      f"plan {result['plan'].describe()}", flush=True)

"""One of two JAX processes evaluating its shard of a data file (run by
tests/test_eval_batch.py)."""
import json
import os
import sys

proc, port, model_dir, data, out = (int(sys.argv[1]), sys.argv[2],
                                    sys.argv[3], sys.argv[4], sys.argv[5])
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                           num_processes=2, process_id=proc)

import vselect_jax  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from vselect_jax.eval import runner  # noqa: E402

import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from vselect_jax.sharding import MESH_AXES  # noqa: E402

# Each process holds its own copy of the model on its own device.
mesh = Mesh(np.array(jax.local_devices()[:1]).reshape(
    (1,) * len(MESH_AXES)), MESH_AXES)
settings = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                               max_new_tokens=3, batch_size=2)
summary = runner.run_one(vselect_jax.from_pretrained(model_dir, mesh=mesh),
                         AutoTokenizer.from_pretrained(model_dir), "chartqa",
                         data, 0.5, "selector", out, settings,
                         progress=False)
print("SUMMARY " + json.dumps({"metrics": summary["metrics"],
                               "n": summary["num_samples"],
                               "processes": summary["processes"]}),
      flush=True)

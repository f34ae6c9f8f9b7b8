"""Two JAX processes on localhost (CPU collectives over gloo) train a few
steps together and checkpoint, as the hosts of a pod would, and see the
same global batch as one process: each feeds half the rows, and the loss
equals the one-process run's on the same global batches."""
import os
import socket
import subprocess
import sys

from tests import hf_tiny
from tests.test_train_loop import _config
from tests.train_utils import FakeData
from vselect_jax.training import global_batch, loop


def config():
  c = _config(total=3, every=3)
  c.global_batch_rows = 8   # FakeData's 8 rows, all hosts together
  return c


class _HostShare(FakeData):
  """This host's rows of the global FakeData batch (the same stream on
  every host)."""

  def __init__(self, process_index, process_count):
    super().__init__(0, 0)
    self.rows = global_batch.host_rows(config(), process_count)
    self.lo = process_index * self.rows

  def __next__(self):
    batch = super().__next__()
    sl = slice(self.lo, self.lo + self.rows)
    return {k: (v[:, sl] if k == "position_ids" else v[sl])
            for k, v in batch.items()}


def host_share(c, process_index, process_count):
  return _HostShare(process_index, process_count)


def test_two_process_training_sees_the_one_process_global_batch(tmp_path):
  hf_tiny.make_model("tied_w56", seed=4).save_pretrained(tmp_path / "hf")
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  worker = os.path.join(os.path.dirname(__file__), "two_process_worker.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen(
      [sys.executable, worker, str(i), port, str(tmp_path / "hf"),
       str(tmp_path / "work")], stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
  # Meanwhile, one process (8 devices, the same mesh) on the same batches.
  c = config()
  c.model_path = str(tmp_path / "hf")
  one = loop.train(c, str(tmp_path / "one"), host_share, progress=False)
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append(out)
    assert p.returncode == 0, out[-3000:]
  done = [line for out in outs for line in out.splitlines()
          if "done at step 3" in line]
  assert len(done) == 2, outs
  losses = [float(line.split("loss ")[1].split()[0]) for line in done]
  assert losses[0] == losses[1]
  assert abs(losses[0] - one["metrics"]["loss"]) < 1e-5 * abs(losses[0])
  plans = [line.split("plan ")[1] for line in done]
  assert one["plan"].host_rows == 8 and one["plan"].process_count == 1
  for plan in plans:
    assert plan.startswith("global batch 8 rows/step") and (
        "x 2 host(s) x 4 rows; 3 steps" in plan), plan
  assert (tmp_path / "work" / "checkpoints" / "3").is_dir()
  assert (tmp_path / "work" / "scorer.safetensors").exists()

"""Two JAX processes on localhost (CPU collectives over gloo) train a few
steps together and checkpoint, as the hosts of a pod would."""
import os
import socket
import subprocess
import sys

from tests import hf_tiny


def test_two_process_training(tmp_path):
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
  losses = [line.split("loss ")[1] for out in outs
            for line in out.splitlines() if "done at step 3" in line]
  assert len(losses) == 2 and losses[0] == losses[1], outs
  assert (tmp_path / "work" / "checkpoints" / "3").is_dir()
  assert (tmp_path / "work" / "scorer.safetensors").exists()

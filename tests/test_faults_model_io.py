"""A converted checkpoint with an Orbax file missing fails in one clear line
naming the checkpoint and the file."""
import os
import subprocess
import sys

import numpy as np
import pytest

from vselect_jax.checkpoint import converted as model_io


@pytest.fixture
def checkpoint(tmp_path):
  model_io.save_params(str(tmp_path / "ckpt" / "params"),
                       {("visual", "w"): np.arange(6, dtype=np.float32),
                        ("model", "b"): np.ones((2, 3), np.float32)})
  return tmp_path / "ckpt"


def test_missing_data_file_is_one_line(checkpoint):
  data = checkpoint / "params" / "d"
  for name in os.listdir(data):
    os.remove(data / name)
  code = ("import sys\nfrom vselect_jax.checkpoint import converted as model_io\n"
          "try:\n  model_io.load_params(sys.argv[1])\n"
          "except FileNotFoundError as e:\n  print('error:', e, "
          "file=sys.stderr)\n  sys.exit(3)\n")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root)
  proc = subprocess.run([sys.executable, "-c", code, str(checkpoint)],
                        capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 3, proc.stderr
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f"error: {checkpoint}: converted checkpoint is "
                             "damaged: ")
  assert f"{data}{os.sep}" in lines[0] and "is missing" in lines[0]


def test_missing_orbax_metadata_is_named(checkpoint):
  os.remove(checkpoint / "params" / "_METADATA")
  with pytest.raises(FileNotFoundError,
                     match=r"incomplete: params/_METADATA is missing"):
    model_io.load_params(str(checkpoint))

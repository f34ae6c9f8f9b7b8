"""tpu_scripts/*.sh --dry-run print the gcloud commands they would run."""
import os
import shlex
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PROJECT="proj", ZONE="us-central2-b", BUCKET="gs://bk",
           ACCELERATOR="v4-64", TPU_NAME="vs", COMMIT="0123abc",
           CONFIG="configs/qwen25vl_3b.py")


def dry(script, *args):
  out = subprocess.run(
      ["bash", os.path.join(ROOT, "tpu_scripts", script), "--dry-run", *args],
      env=ENV, capture_output=True, text=True, check=True).stdout
  return [shlex.split(line) for line in out.splitlines() if line.strip()]


def _ssh_command(cmd):
  assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert "--project=proj" in cmd and "--zone=us-central2-b" in cmd
  return next(a.split("=", 1)[1] for a in cmd if a.startswith("--command="))


def test_create_and_delete():
  create, describe = dry("create.sh")
  assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources",
                        "create"]
  assert {"vs-qr", "--node-id=vs", "--accelerator-type=v4-64",
          "--project=proj"} <= set(create)
  assert describe[4] == "describe"
  (delete,) = dry("delete.sh")
  assert delete[4] == "delete" and "--force" in delete and "vs-qr" in delete


def test_setup_sync_launch_use_all_workers_and_the_commit():
  for script in ("setup.sh", "sync.sh", "launch.sh"):
    (cmd,) = dry(script)
    assert "--worker=all" in cmd
  setup = _ssh_command(dry("setup.sh")[0])
  assert "git checkout --quiet 0123abc" in setup
  assert "python3 -m venv .venv" in setup and "-e '.[tpu,gcs]'" in setup
  assert "git checkout --quiet 0123abc" in _ssh_command(dry("sync.sh")[0])
  launch = _ssh_command(dry("launch.sh", "--config.total_steps=9")[0])
  assert ("train.py --config=configs/qwen25vl_3b.py --workdir=gs://bk/runs/vs"
          " --distributed --config.total_steps=9") in launch
  assert "train-$(hostname).log" in launch and "train.pid" in launch


def test_logs_and_stop():
  (logs,) = dry("logs.sh")
  assert "--worker=0" in logs
  stop = _ssh_command(dry("stop.sh")[0])
  assert "kill -TERM" in stop


def test_help_describes_the_script():
  out = subprocess.run(["bash", os.path.join(ROOT, "tpu_scripts",
                                             "create.sh"), "--help"],
                       env=ENV, capture_output=True, text=True).stdout
  assert "queued resource" in out

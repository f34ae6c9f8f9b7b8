"""Faults and bad settings in training (issue 20): nothing lost, nothing
silent. Each exit path of train.py says what happened and has its code."""
import logging
import os
import shutil
import signal

import numpy as np
import pytest

import train
import vselect_jax
from vselect_jax.loading import load_model
from tests import hf_tiny
from tests.test_train_loop import _config, _scorer
from tests.train_utils import FakeData
from vselect_jax.training import loop


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tf") / "hf"
  hf_tiny.make_model("tied_w56", seed=4).save_pretrained(path)
  return str(path)


def _data(on_next=None):
  return lambda c, i, n: FakeData(0, i, on_next=on_next)


def _cfg(total=4):
  c = _config(total=total, every=1)
  c.keep_checkpoints = 3
  c.remat = False  # compiles 2x faster; remat is covered in test_train_loop
  return c


@pytest.mark.parametrize("steps", [0, -1])
def test_non_positive_total_steps_is_rejected(model_dir, tmp_path, steps):
  with pytest.raises(ValueError, match="total_steps must be a positive"):
    loop.train(_cfg(total=steps), str(tmp_path), _data(), progress=False)
  assert not (tmp_path / "scorer.safetensors").exists()


def test_sigint_resume_finished_rerun_and_corrupt_checkpoints(
    model_dir, tmp_path, capsys, caplog):
  """One workdir through every exit path: Ctrl-C (one save, exit 75), the
  resume (exit 0), reruns of the finished run with changed (exit 3) and
  the same settings (exit 0), and a resume past two broken newest steps
  (falls back, keeps them, reaches the same scorer)."""
  wd = str(tmp_path / "run")
  ck = os.path.join(wd, "checkpoints")

  def interrupt(index):
    if index == 2:  # Ctrl-C mid-run
      os.kill(os.getpid(), signal.SIGINT)

  def run(config, on_next=None):
    rc = train.run(config, wd, make_iterator=_data(on_next),
                   model=load_model(model_dir),
                   progress=False)
    return rc, capsys.readouterr().out

  caplog.set_level(logging.INFO, "vselect_jax.train")
  rc, out = run(_cfg(), interrupt)
  assert rc == train.EXIT_PREEMPTED == 75
  # The log says first what will run: the global batch and its epochs.
  assert ("global batch 8 rows/step = 1 micro-batch(es) x 1 host(s) x 8 "
          "rows; 4 steps = epochs unknown") in caplog.text
  assert "preempted (SIGINT) at step" in out and "trained to" not in out
  saved = sorted(int(d) for d in os.listdir(ck))
  assert saved and 1 <= saved[-1] < 4   # the one save on the way out
  assert not os.path.exists(os.path.join(wd, "scorer.safetensors"))

  rc, out = run(_cfg())
  assert rc == 0 and "trained to step 4" in out
  assert os.path.exists(os.path.join(wd, "scorer.safetensors"))
  assert sorted(os.listdir(ck)) == ["2", "3", "4"]
  finished = loop.train(_cfg(), wd, _data(), progress=False,
                        model=load_model(model_dir))
  assert finished["already_complete"]

  changed = _cfg()
  changed.budget = 0.3
  changed.optim.lr = 1e-3
  rc, out = run(changed)
  assert rc == train.EXIT_COMPLETE_WITH_CHANGES == 3
  assert "already complete at step 4" in out
  assert "budget: 0.2 -> 0.3" in out and "optim.lr: 0.03 -> 0.001" in out
  rc, out = run(_cfg())
  assert rc == 0 and "already complete at step 4" in out
  assert "differ" not in out

  # Step 4 loses its state/, step 3 a file inside state/.
  shutil.rmtree(os.path.join(ck, "4", "state"))
  # (the arrays' data file that the step's OCDBT manifest points to)
  data_dir = os.path.join(ck, "3", "state", "d")
  biggest = os.path.join(data_dir, max(
      os.listdir(data_dir),
      key=lambda f: os.path.getsize(os.path.join(data_dir, f))))
  os.remove(biggest)
  kept_4 = sorted(os.listdir(os.path.join(ck, "4")))
  again = loop.train(_cfg(), wd, _data(), progress=False,
                     model=load_model(model_dir))
  assert [s for s, _, _ in again["corrupt"]] == [4, 3]
  assert again["step"] == 4 and not again["already_complete"]
  moved = {s: where for s, where, _ in again["corrupt"]}
  assert sorted(os.listdir(moved[4])) == kept_4     # nothing deleted
  rest = os.path.relpath(biggest, os.path.join(ck, "3"))
  assert os.path.isdir(os.path.dirname(os.path.join(moved[3], rest)))
  assert sorted(os.listdir(ck)) == ["2", "3", "4"]  # retrained and saved
  a, b = _scorer(finished["state"]), _scorer(again["state"])
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)

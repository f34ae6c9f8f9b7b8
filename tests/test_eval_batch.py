"""``eval.py run --batch-size``: prompts grouped by padded shape give the
batch-1 predictions; two processes (gloo) each evaluating their shard give
the one-process summary."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vselect_jax
from vselect_jax.data import testing
from vselect_jax.eval import runner


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("evalbatch")
  model_dir = testing.tiny_hf_model(str(root / "model"))
  rng = np.random.default_rng(1)
  (root / "img").mkdir()
  with open(root / "chartqa.jsonl", "w") as f:
    # Two shapes, interleaved; questions of different lengths.
    for i, (w, h) in enumerate([(90, 60), (300, 200), (90, 60), (90, 60)]):
      Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
          root / "img" / f"{i}.png")
      f.write(json.dumps({"id": f"q{i}", "image": f"img/{i}.png",
                          "question": "How many?" + " bars" * i,
                          "answers": ["3"]}) + "\n")
  return model_dir, str(root / "chartqa.jsonl"), root


def _preds(cell):
  with open(os.path.join(cell, "predictions.jsonl")) as f:
    return {r["id"]: r for r in map(json.loads, f)}


def test_batched_run_gives_the_batch_1_predictions(setup):
  model_dir, data, root = setup
  from transformers import AutoTokenizer
  model = vselect_jax.from_pretrained(model_dir)
  tok = AutoTokenizer.from_pretrained(model_dir)
  out = {}
  for bs in (1, 3):
    s = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                            max_new_tokens=3, batch_size=bs)
    cell = str(root / f"b{bs}")
    summary = runner.run_one(model, tok, "chartqa", data, 0.5, "selector",
                             cell, s, progress=False)
    out[bs] = (_preds(cell), summary)
  one, three = out[1][0], out[3][0]
  assert sorted(one) == sorted(three) == [f"q{i}" for i in range(4)]
  assert {r["batch_size"] for r in three.values()} == {1, 3}
  for rid in one:
    for key in ("prediction", "visual_tokens_before", "visual_tokens_after",
                "kv_cache_bytes"):
      assert one[rid][key] == three[rid][key], (rid, key)
  assert out[1][1]["metrics"] == out[3][1]["metrics"]


def test_group_batches_bounds_the_waiting_examples():
  keys = [0, 1, 2, 3, 4, 5, 0, 0]
  got = list(runner.group_batches(keys, 2, key=lambda x: x))
  assert sorted(x for g in got for x in g) == sorted(keys)
  assert all(len(set(g)) == 1 and len(g) <= 2 for g in got)
  with pytest.raises(ValueError, match="batch_size"):
    runner.EvalSettings(batch_size=0)


def test_two_processes_give_the_one_process_summary(setup):
  model_dir, data, root = setup
  from transformers import AutoTokenizer
  s = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                          max_new_tokens=3)
  single = runner.run_one(vselect_jax.from_pretrained(model_dir),
                          AutoTokenizer.from_pretrained(model_dir), "chartqa",
                          data, 0.5, "selector", str(root / "one"), s,
                          progress=False)
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    port = str(sock.getsockname()[1])
  worker = os.path.join(os.path.dirname(__file__),
                        "eval_two_process_worker.py")
  out = str(root / "two")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, worker, str(i), port, model_dir,
                             data, out], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
           for i in range(2)]
  logs = [p.communicate(timeout=300)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), logs[0][-2000:] + logs[1][
      -2000:]
  got = [json.loads(l.split("SUMMARY ", 1)[1].splitlines()[0]) for l in logs]
  for g in got:  # every process holds the gathered summary
    assert g == {"metrics": single["metrics"], "n": 4, "processes": 2}
  merged = _preds(out)
  assert list(merged) == [f"q{i}" for i in range(4)]  # data order
  one = _preds(str(root / "one"))
  assert {k: v["prediction"] for k, v in merged.items()} == {
      k: v["prediction"] for k, v in one.items()}
  # Each process evaluated its own shard (every second record) only.
  for i in range(2):
    with open(os.path.join(out, f"predictions.process{i}.jsonl")) as f:
      assert [json.loads(l)["id"] for l in f] == [f"q{j}"
                                                  for j in range(i, 4, 2)]

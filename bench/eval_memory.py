"""Peak host memory of ``eval.py run`` against the number of examples.

A tiny random Qwen2.5-VL (``data.testing.tiny_hf_model``) evaluates ChartQA-
format records whose images are 1300 x 1700 noise, at the default pixel
limits (resized under the 1605632-pixel cap to 1092 x 1428: 7956 patches,
37 MB of float32 pixels per example), one budget, one new token. Each run is a fresh process;
its peak RSS (``ru_maxrss``) is what is reported. ``streamed`` is ``eval.py
run`` as it is (examples prepared ``--prefetch`` ahead of the model);
``upfront`` prepares every example before the first generate (what ``run``
did before), measured only at the small size since it grows with the data.
The rows are appended to bench/results.md with the machine.

    python bench/eval_memory.py [--sizes 8,200] [--prefetch 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

IMAGE_SIZE = (1300, 1700)  # width, height: the 8-image example
DISTINCT_IMAGES = 4        # records cycle over these files


def _build(workdir: str, n: int) -> str:
  """The tiny model (once) and a data file of ``n`` records; returns it."""
  from PIL import Image
  from vselect_jax.data import testing
  if not os.path.isdir(os.path.join(workdir, "model")):
    testing.tiny_hf_model(os.path.join(workdir, "model"))
  img = os.path.join(workdir, "img")
  if not os.path.isdir(img):
    os.makedirs(img)
    rng = np.random.default_rng(0)
    w, h = IMAGE_SIZE
    for i in range(DISTINCT_IMAGES):
      Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(
          os.path.join(img, f"{i}.png"))
  path = os.path.join(workdir, f"data_{n}.jsonl")
  with open(path, "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"q{i}",
                          "image": f"img/{i % DISTINCT_IMAGES}.png",
                          "question": "How many bars are higher than 10?",
                          "answers": ["3"]}) + "\n")
  return path


def child(workdir: str, n: int, mode: str, prefetch: int) -> dict:
  """One measured run in this process."""
  data = _build(workdir, n)
  model_dir = os.path.join(workdir, "model")
  out = os.path.join(workdir, f"out_{mode}_{n}")
  t0 = time.perf_counter()
  if mode == "streamed":
    import eval as eval_cli
    rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                        "--data", data, "--budgets", "0.5", "--out", out,
                        "--max-new-tokens", "1", "--prefetch", str(prefetch),
                        "--no-progress"])
    assert rc == 0, rc
  else:
    import vselect_jax
    from transformers import AutoTokenizer
    from vselect_jax.eval import runner, tasks
    model = vselect_jax.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    settings = runner.EvalSettings(max_new_tokens=1)
    examples = runner.prepare_examples(tok, tasks.get_task("chartqa"), data,
                                       settings)
    runner.run_one(model, tok, "chartqa", data, 0.5, "selector", out,
                   settings, progress=False, examples=examples)
  with open(os.path.join(out, "chartqa", "selector_0.5", "predictions.jsonl")
            if mode == "streamed" else os.path.join(out, "predictions.jsonl")
            ) as f:
    done = sum(1 for _ in f)
  assert done == n, (done, n)
  return {"mode": mode, "n": n, "prefetch": prefetch,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
          / 1024, "wall_s": time.perf_counter() - t0}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--sizes", default="8,200")
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--upfront-size", type=int, default=32,
                      help="examples for the prepare-all-first reference "
                      "run (0 skips it)")
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--out", default=os.path.join(ROOT, "bench",
                                                    "results.md"))
  args = parser.parse_args(argv)
  if args.child:
    workdir, n, mode = args.child.split(",")
    print("RESULT " + json.dumps(child(workdir, int(n), mode,
                                       args.prefetch)))
    return 0
  from bench.forward import append_result, machine
  runs = [("streamed", int(n)) for n in args.sizes.split(",")]
  if args.upfront_size:
    runs.append(("upfront", args.upfront_size))
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
             PYTHONPATH=ROOT, TOKENIZERS_PARALLELISM="false")
  results = []
  with tempfile.TemporaryDirectory() as workdir:
    for mode, n in runs:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), "--child",
           f"{workdir},{n},{mode}", "--prefetch", str(args.prefetch)],
          capture_output=True, text=True, env=env, cwd=ROOT)
      line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
      if proc.returncode or not line:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        return 1
      r = json.loads(line[0][len("RESULT "):])
      results.append(r)
      print(f"{mode:>8} {n:>4} examples: peak RSS {r['peak_rss_mb']:.0f} MB "
            f"({r['wall_s']:.0f} s)")
  where = machine()
  date = datetime.date.today().isoformat()
  intro = (
      "`eval.py run` on a tiny random model, ChartQA-format records with "
      f"{IMAGE_SIZE[0]} x {IMAGE_SIZE[1]} images at the default pixel limits "
      "(resized under the 1605632-pixel cap to 1092 x 1428: 7956 patches, "
      "37 MB of float32 pixels per example), budget 0.5, one new token; peak "
      "RSS of a fresh "
      "process. `streamed`: examples prepared `--prefetch` ahead of the "
      "model; `upfront`: all prepared before the first generate (the old "
      "`run`), whose peak grows by about one example's size per record.")
  for r in results:
    append_result(
        args.out, "## Eval host memory against the data set size "
        "(bench/eval_memory.py)", intro,
        "| date | machine | mode | prefetch | examples | peak RSS MB | wall s |",
        f"| {date} | {where} | {r['mode']} | "
        f"{r['prefetch'] if r['mode'] == 'streamed' else '-'} | {r['n']} | "
        f"{r['peak_rss_mb']:.0f} | {r['wall_s']:.0f} |")
  print(f"appended to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

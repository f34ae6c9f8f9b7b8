"""Evaluation throughput: samples/s of ``eval.py run`` at batch 1 vs 8.

    python bench/eval_throughput.py [--samples 32] [--model DIR]

Without ``--model`` a tiny random Qwen2.5-VL (``data.testing.tiny_hf_model``)
is built: the figure then measures the harness (host preparation, batching,
decode loop), not a real model. Each batch size runs the data twice; the
second, fully compiled pass is timed (wall time of ``runner.run_one``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--samples", type=int, default=32)
  p.add_argument("--model", default=None)
  p.add_argument("--batch-sizes", default="1,8")
  p.add_argument("--max-new-tokens", type=int, default=8)
  args = p.parse_args(argv)
  import numpy as np
  from PIL import Image
  import vselect_jax
  from transformers import AutoTokenizer
  from vselect_jax.data import testing
  from vselect_jax.eval import runner
  root = tempfile.mkdtemp(prefix="eval_throughput_")
  model_dir = args.model or testing.tiny_hf_model(os.path.join(root, "m"))
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(root, "img"))
  with open(os.path.join(root, "chartqa.jsonl"), "w") as f:
    for i in range(args.samples):
      Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)
                      ).save(os.path.join(root, "img", f"{i}.png"))
      f.write(json.dumps({"id": str(i), "image": f"img/{i}.png",
                          "question": "How many bars?", "answers": ["3"]})
              + "\n")
  model = vselect_jax.from_pretrained(model_dir)
  tok = AutoTokenizer.from_pretrained(model_dir)
  for bs in (int(b) for b in args.batch_sizes.split(",")):
    s = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                            max_new_tokens=args.max_new_tokens,
                            batch_size=bs)
    for rep in range(2):
      t0 = time.perf_counter()
      runner.run_one(model, tok, "chartqa",
                     os.path.join(root, "chartqa.jsonl"), 0.5, "selector",
                     os.path.join(root, f"out{bs}"), s, progress=False)
      dt = time.perf_counter() - t0
    print(f"batch {bs}: {args.samples / dt:.2f} samples/s "
          f"({args.samples} samples in {dt:.2f} s)", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Evaluate on the VisionSelector benchmarks.

    python eval.py score --task chartqa --data chartqa.jsonl --predictions run/predictions.jsonl
    python eval.py convert --task docvqa --out data/ DocVQA/validation-*.parquet

``score`` scores saved predictions without a model (metrics as the official
scripts; summary.json written next to the predictions or in --out).
``convert`` turns lmms-lab parquet files into the local JSONL + images
format. (``run`` and ``sweep``, with a model, are not written yet.)
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python eval.py", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  from vselect_jax.eval import lmms_convert, score
  score.add_score_args(sub.add_parser("score", help="score predictions"))
  lmms_convert.add_convert_args(sub.add_parser(
      "convert", help="lmms-lab parquet -> local JSONL + images"))
  args = parser.parse_args(argv)
  if args.command == "score":
    return score.run_score(args)
  return lmms_convert.run_convert(args)


if __name__ == "__main__":
  sys.exit(main())

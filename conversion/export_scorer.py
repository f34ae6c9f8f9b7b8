"""Export the trained VisionSelector scorer to PyTorch layout.

    python -m conversion.export_scorer --src <converted dir or checkpoint> \
        --dst scorer.safetensors [--dtype bfloat16|float32] [--overwrite]
    python -m conversion.export_scorer --src <...> \
        --merge-into <HF base dir> --dst <new HF dir> [--link] [--overwrite]

The first form writes the four tensors of the released VisionSelector
checkpoints, ``visual.importance_scorer.{k_proj,q_proj}.{weight,bias}``, with
weights as torch ``[out, in]`` (LLaVA-OneVision-1.5: ``--family llava_ov15``
or a converted OV source writes ``model.visual.importance_scorer.*``, and
``--merge-into`` an OV base does too). The second copies an HF Qwen2.5-VL checkpoint
and adds those tensors as an extra shard registered in
``model.safetensors.index.json``, which the original PyTorch VisionSelector
code and plain ``transformers`` load without re-initialising them. The base's
files are copied, so editing the new checkpoint never changes the base;
``--link`` hard-links the weight shards (``*.safetensors``, never rewritten in
place) instead of copying them, and still copies configs, index and tokenizer
files. The scorer's shapes are checked against the base's ``config.json``
before anything is written.

An existing ``--dst`` is refused unless ``--overwrite``; the new file or
directory is written beside it and moved into place, so a failed export never
leaves a half-written ``--dst``.

``--src`` is any Orbax checkpoint (a converted dir's ``params/`` or a training
checkpoint) whose tree holds an ``importance_scorer`` subtree, a converted
directory, or a ``scorer.safetensors`` (what ``train.py`` writes).
"""
from __future__ import annotations

import argparse
import sys

from vselect_jax.checkpoint.scorer_export import (DTYPES, SCORERS, export,
                                                  merge_into)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m conversion.export_scorer", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True)
  parser.add_argument("--dst", required=True)
  parser.add_argument("--merge-into", default=None,
                      help="HF base checkpoint dir to add the scorer to")
  parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
  parser.add_argument("--family", default=None,
                      choices=("qwen2_5_vl", "llava_ov15"),
                      help="key spelling of the scorer file (default: the "
                      "source's config.json, else qwen2_5_vl; --merge-into "
                      "always follows the base)")
  parser.add_argument("--overwrite", action="store_true",
                      help="replace an existing --dst")
  parser.add_argument("--link", action="store_true",
                      help="with --merge-into: hard-link the base's weight "
                      "shards instead of copying them")
  parser.add_argument("--scorer", default="importance_scorer",
                      choices=sorted(SCORERS),
                      help="block_scorer: the in-tower scorer "
                      "(train.py --config.select_at=j)")
  args = parser.parse_args(argv)
  if args.link and not args.merge_into:
    parser.error("--link needs --merge-into")
  try:
    if args.merge_into:
      merge_into(args.src, args.merge_into, args.dst, args.dtype,
                 link=args.link, overwrite=args.overwrite,
                 scorer=args.scorer)
    else:
      export(args.src, args.dst, args.dtype, overwrite=args.overwrite,
             family=args.family, scorer=args.scorer)
  except (KeyError, OSError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

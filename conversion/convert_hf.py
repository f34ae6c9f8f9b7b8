"""Convert an HF Qwen2.5-VL (or VisionSelector) checkpoint to vselect-jax.

    python -m conversion.convert_hf --src <HF dir or hub id> --dst <dir> \
        [--dtype bfloat16|float32]

Reads single-file or sharded safetensors in either key layout (hub files
``visual.* / model.* / lm_head.*`` or transformers >= 4.52 in-memory names
``model.visual.* / model.language_model.*``), streaming tensor by tensor.
Every expected parameter must be present with the right shape; otherwise
nothing is written and the error lists what is wrong. Scorer tensors
(``visual.importance_scorer.*``, the released VisionSelector checkpoints) are
kept. The output is staged next to ``--dst`` and renamed into place at the
end, so ``--dst`` is never half-written. ``--src`` and ``--dst`` may be
``gs://`` URLs: a remote source is downloaded to a temporary directory first;
a remote destination is staged locally and uploaded, the format marker last
(a partial upload is not a converted checkpoint).
"""
from __future__ import annotations

import argparse
import sys

from vselect_jax.checkpoint.convert import convert


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m conversion.convert_hf", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True, help="HF dir or hub id")
  parser.add_argument("--dst", required=True, help="output directory")
  parser.add_argument("--dtype", default="bfloat16",
                      choices=("bfloat16", "float32", "float16"))
  parser.add_argument("--overwrite", action="store_true")
  parser.add_argument("--no-progress", action="store_true")
  args = parser.parse_args(argv)
  try:
    summary = convert(args.src, args.dst, args.dtype,
                      progress=not args.no_progress, overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {summary['dst']}: {summary['tensors']} tensors, "
        f"{summary['parameters']:,} parameters, scorer "
        f"{'included' if summary['has_scorer'] else 'absent (fresh init)'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""JSONL + image folders -> ArrayRecord shards (a TFDS dataset per name).

Pods read training data from a bucket; this turns each registry entry of
JSONL + images into shards with the image bytes inside (``tfds_builder``),
and returns the registry entries that read them:

  python -m vselect_jax.data.array_record_writer \\
      --annotation chartqa_cambrian.jsonl --root datasets --out gs://b/chartqa

``annotation`` and ``root`` are read through ``vselect_jax.paths`` (local or
gs://). ``out`` may be local or gs://: TFDS writes its metadata through
epath (gcsfs, the ``gcs`` extra) and the shards through ArrayRecord's own
C++ GCS client. Small runs can skip this and read JSONL + images directly.
"""
from __future__ import annotations

import argparse
import json
import logging

from vselect_jax import paths

log = logging.getLogger(__name__)


def write_array_record(annotation: str, root: str, out_dir: str) -> dict:
  """Writes one dataset's shards under ``out_dir``.

  Args:
    annotation: the JSONL file.
    root: the folder its image paths are relative to.
    out_dir: TFDS data dir of this dataset (one per dataset).

  Returns:
    The registry entry ``{"array_record": out_dir}``.
  """
  from vselect_jax.data.tfds_builder import CambrianRecords
  builder = CambrianRecords(annotation=annotation, root=root,
                            data_dir=out_dir, file_format="array_record")
  builder.download_and_prepare()
  info = builder.info.splits["train"]
  log.info("%s -> %s: %d records in %d shards", annotation, out_dir,
           info.num_examples, info.num_shards)
  return {"array_record": out_dir}


def convert_registry(registry: dict, out_root: str,
                     names: list[str] | None = None) -> dict:
  """Shards for every JSONL entry of ``registry`` (or ``names``), written to
  ``out_root/<name>``; returns the new registry entries."""
  out = {}
  for name in names or sorted(registry):
    entry = dict(registry[name])
    if "annotation" not in entry:
      out[name] = entry  # already shards
      continue
    out[name] = write_array_record(entry["annotation"],
                                   entry.get("root", ""),
                                   paths.join(out_root, name))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--annotation", required=True, help="JSONL file")
  p.add_argument("--root", required=True, help="image folder")
  p.add_argument("--out", required=True, help="TFDS data dir to write")
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  print(json.dumps(write_array_record(args.annotation, args.root, args.out)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

"""Export the trained VisionSelector scorer to PyTorch layout.

    python -m conversion.export_scorer --src <converted dir or checkpoint> \
        --dst scorer.safetensors [--dtype bfloat16|float32]
    python -m conversion.export_scorer --src <...> \
        --merge-into <HF base dir> --dst <new HF dir>

The first form writes the four tensors of the released VisionSelector
checkpoints, ``visual.importance_scorer.{k_proj,q_proj}.{weight,bias}``, with
weights as torch ``[out, in]``. The second copies an HF Qwen2.5-VL checkpoint
and adds those tensors as an extra shard registered in
``model.safetensors.index.json``, which the original PyTorch VisionSelector
code and plain ``transformers`` load without re-initialising them.

``--src`` is any Orbax checkpoint (a converted dir's ``params/`` or a training
checkpoint) whose tree holds an ``importance_scorer`` subtree, a converted
directory, or a ``scorer.safetensors`` (what ``train.py`` writes).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import ml_dtypes
import numpy as np

from vselect_jax.checkpoint.safetensors_io import iter_tensors, save_file

PREFIX = "visual.importance_scorer."
SCORER_FILE = "model-visionselector-scorer.safetensors"
BASE_SHARD = "model-base.safetensors"
_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}


def _find_scorer(tree):
  if isinstance(tree, dict):
    if "importance_scorer" in tree:
      return tree["importance_scorer"]
    for v in tree.values():
      found = _find_scorer(v)
      if found is not None:
        return found
  return None


def load_scorer(src: str) -> dict[str, np.ndarray]:
  """Returns the scorer as HF-named torch-layout float32 arrays, from an
  Orbax checkpoint / converted dir or a ``scorer.safetensors`` written by
  ``train.py`` or this module."""
  import orbax.checkpoint as ocp
  src = os.path.abspath(src)
  if os.path.isfile(src) and src.endswith(".safetensors"):
    tensors = {n: np.asarray(load(), np.float32)
               for n, _, load in iter_tensors(src)}
    want = {f"{PREFIX}{p}.{w}" for p in ("k_proj", "q_proj")
            for w in ("weight", "bias")}
    if set(tensors) != want:
      raise KeyError(f"{src}: expected the scorer tensors {sorted(want)}, "
                     f"found {sorted(tensors)}")
    return tensors
  candidates = [os.path.join(src, "params"), src]
  tree = None
  errors = []
  for path in candidates:
    if not os.path.isdir(path):
      continue
    try:
      tree = ocp.StandardCheckpointer().restore(path)
      break
    except Exception as e:  # not an Orbax checkpoint dir
      errors.append(f"{path}: {type(e).__name__}")
  if tree is None:
    raise FileNotFoundError(
        f"{src}: no Orbax checkpoint found ({'; '.join(errors) or 'no dir'})")
  return scorer_tensors(tree, src)


def scorer_tensors(tree: dict, where: str = "the tree"
                   ) -> dict[str, np.ndarray]:
  """HF-named torch-layout float32 arrays from any nested parameter dict
  holding an ``importance_scorer`` subtree (kernel [in, out], bias)."""
  scorer = _find_scorer(tree)
  if scorer is None:
    raise KeyError(f"{where}: the checkpoint holds no importance_scorer")
  out = {}
  for proj in ("k_proj", "q_proj"):
    if proj not in scorer or not {"kernel", "bias"} <= set(scorer[proj]):
      raise KeyError(f"{where}: importance_scorer.{proj} lacks kernel/bias")
    out[f"{PREFIX}{proj}.weight"] = np.asarray(
        scorer[proj]["kernel"], np.float32).T
    out[f"{PREFIX}{proj}.bias"] = np.asarray(scorer[proj]["bias"], np.float32)
  return out


def write_tensors(tensors: dict[str, np.ndarray], dst: str,
                  dtype: str = "bfloat16") -> None:
  save_file({k: v.astype(_DTYPES[dtype]) for k, v in tensors.items()}, dst)


def export(src: str, dst: str, dtype: str = "bfloat16") -> None:
  write_tensors(load_scorer(src), dst, dtype)


def merge_into(src: str, base: str, dst: str, dtype: str = "bfloat16") -> None:
  """Writes ``dst``: the HF checkpoint ``base`` plus the scorer shard."""
  tensors = {k: v.astype(_DTYPES[dtype]) for k, v in load_scorer(src).items()}
  if os.path.exists(dst):
    raise FileExistsError(f"{dst} exists")
  index_path = os.path.join(base, "model.safetensors.index.json")
  if os.path.exists(index_path):
    with open(index_path) as f:
      index = json.load(f)
  elif os.path.exists(os.path.join(base, "model.safetensors")):
    # A single-file base becomes a shard: loaders prefer model.safetensors
    # over the index when both exist, which would hide the scorer shard.
    names = [n for n, _, _ in iter_tensors(
        os.path.join(base, "model.safetensors"))]
    index = {"metadata": {}, "weight_map": {n: BASE_SHARD for n in names}}
  else:
    raise FileNotFoundError(f"{base}: not an HF safetensors checkpoint")
  clash = [k for k in index["weight_map"] if k.startswith(PREFIX) or
           k.startswith("model." + PREFIX)]
  for k in clash:  # replacing an older scorer
    del index["weight_map"][k]
  parent = os.path.dirname(os.path.abspath(dst)) or "."
  stage = tempfile.mkdtemp(prefix=".merge-", dir=parent)
  try:
    for name in os.listdir(base):
      s = os.path.join(base, name)
      if os.path.isfile(s) and name != "model.safetensors.index.json":
        target = BASE_SHARD if name == "model.safetensors" else name
        try:
          os.link(s, os.path.join(stage, target))  # no copy of large shards
        except OSError:
          shutil.copy2(s, os.path.join(stage, target))
    save_file(tensors, os.path.join(stage, SCORER_FILE))
    for k in tensors:
      index["weight_map"][k] = SCORER_FILE
    index.setdefault("metadata", {})
    with open(os.path.join(stage, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
    os.replace(stage, dst)
  except BaseException:
    shutil.rmtree(stage, ignore_errors=True)
    raise


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m conversion.export_scorer", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--src", required=True)
  parser.add_argument("--dst", required=True)
  parser.add_argument("--merge-into", default=None,
                      help="HF base checkpoint dir to add the scorer to")
  parser.add_argument("--dtype", default="bfloat16", choices=sorted(_DTYPES))
  args = parser.parse_args(argv)
  try:
    if args.merge_into:
      merge_into(args.src, args.merge_into, args.dst, args.dtype)
    else:
      export(args.src, args.dst, args.dtype)
  except (KeyError, FileNotFoundError, FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"wrote {args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""The trained scorer in PyTorch layout (behind ``conversion.export_scorer``).

``scorer_tensors`` / ``write_tensors`` turn a scorer subtree into the four
tensors of the released VisionSelector checkpoints,
``visual.importance_scorer.{k_proj,q_proj}.{weight,bias}`` (weights as torch
``[out, in]``); ``export`` reads them from any source (an Orbax checkpoint
holding an ``importance_scorer`` subtree, a converted directory, or a
``scorer.safetensors``); ``merge_into`` copies an HF base checkpoint (or
hard-links its weight shards) and registers the scorer as an extra shard,
after checking its shapes against the base's ``config.json``. Nothing
existing is overwritten without ``overwrite``, and outputs are written
beside their destination and moved into place.
For LLaVA-OneVision-1.5 (the family from the source's or the base's
config.json, or ``family="llava_ov15"``) the tensors are named
``model.visual.importance_scorer.*``, the path of the reference's class.

``scorer="block_scorer"`` (CLI ``--scorer block_scorer``) does the same for
the in-tower scorer (``train.py --config.select_at=j``): the tensors
``visual.block_scorer.{k_proj,q_proj}.{weight,bias}``, weights [2 Dv, 4 Dv]
(Dv the vision width; input = a merge unit's 4 patch states concatenated),
in the shard ``model-visionselector-block-scorer.safetensors``. A
``scorer.safetensors`` holding either set is recognised by its names.

``scorer="image_score_predictor"`` is Dynamic-Qwen's image predictor
(``train.py`` with ``train_method="dynamic_qwen"``), in the reference's
state-dict layout: ``model.image_score_predictor.{down_mlp.{0,1},
transformer.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2},
output_mlp.{0,2,4}}.{weight,bias}`` (Linear weights torch [out, in]; the
names are ``checkpoint.key_map``'s rules), in the shard
``model-dynamic-qwen-predictor.safetensors``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import ml_dtypes
import numpy as np

from vselect_jax.checkpoint.safetensors_io import iter_tensors, save_file

PREFIX = "visual.importance_scorer."
# The spelling each family's PyTorch class loads: Qwen2.5-VL's keys as the
# released checkpoints; LLaVA-OV-1.5's in-memory path (its class also maps
# the legacy ``visual.`` spelling, but ``model.visual.`` is what it saves).
FAMILY_PREFIX = {"qwen2_5_vl": PREFIX,
                 "llava_ov15": "model." + PREFIX}
SCORER_FILE = "model-visionselector-scorer.safetensors"
# scorer module name -> (HF prefix, shard name in a merged checkpoint)
SCORERS = {"importance_scorer": (PREFIX, SCORER_FILE),
           "block_scorer": ("visual.block_scorer.",
                            "model-visionselector-block-scorer.safetensors"),
           "image_score_predictor": (
               "model.image_score_predictor.",
               "model-dynamic-qwen-predictor.safetensors")}
PREDICTOR = "image_score_predictor"
_PREDICTOR_PATH = ("model", PREDICTOR)
BASE_SHARD = "model-base.safetensors"
DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}


def _check_name(scorer: str) -> str:
  if scorer not in SCORERS:
    raise ValueError(f"scorer must be one of {sorted(SCORERS)}, got "
                     f"{scorer!r}")
  return scorer


def _find_scorer(tree, scorer: str = "importance_scorer"):
  if isinstance(tree, dict):
    if scorer in tree:
      return tree[scorer]
    for v in tree.values():
      found = _find_scorer(v, scorer)
      if found is not None:
        return found
  return None


def load_scorer(src: str, scorer: str = "importance_scorer"
                ) -> dict[str, np.ndarray]:
  """Returns the scorer as HF-named torch-layout float32 arrays, from an
  Orbax checkpoint / converted dir or a ``scorer.safetensors`` written by
  ``train.py`` or this module."""
  import orbax.checkpoint as ocp
  prefix = SCORERS[_check_name(scorer)][0]
  src = os.path.abspath(src)
  if os.path.isfile(src) and src.endswith(".safetensors"):
    # Either family's spelling reads back as the canonical one.
    tensors = {n[len("model."):] if n.startswith("model." + PREFIX) else n:
               np.asarray(load(), np.float32)
               for n, _, load in iter_tensors(src)}
    if scorer == PREDICTOR:  # the full set is checked against a base config
      want = {n for n in tensors if n.startswith(prefix)} or {prefix + "*"}
    else:
      want = {f"{prefix}{p}.{w}" for p in ("k_proj", "q_proj")
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
  return scorer_tensors(tree, src, scorer=scorer)


def scorer_tensors(tree: dict, where: str = "the tree", *,
                   scorer: str = "importance_scorer"
                   ) -> dict[str, np.ndarray]:
  """HF-named torch-layout float32 arrays from any nested parameter dict
  holding an ``importance_scorer`` (or ``block_scorer``) subtree (kernel
  [in, out], bias)."""
  prefix = SCORERS[_check_name(scorer)][0]
  found = _find_scorer(tree, scorer)
  if found is None:
    raise KeyError(f"{where}: the checkpoint holds no {scorer}")
  if scorer == PREDICTOR:
    return _predictor_tensors(found)
  out = {}
  for proj in ("k_proj", "q_proj"):
    if proj not in found or not {"kernel", "bias"} <= set(found[proj]):
      raise KeyError(f"{where}: {scorer}.{proj} lacks kernel/bias")
    out[f"{prefix}{proj}.weight"] = np.asarray(
        found[proj]["kernel"], np.float32).T
    out[f"{prefix}{proj}.bias"] = np.asarray(found[proj]["bias"], np.float32)
  return out


def _predictor_tensors(found: dict) -> dict[str, np.ndarray]:
  """The predictor subtree by ``key_map``'s rules (kernels transposed)."""
  from vselect_jax.checkpoint import hf_export, key_map
  out = {}
  for path, value in hf_export.flatten(found).items():
    path = _PREDICTOR_PATH + tuple(
        int(p) if isinstance(p, str) and p.isdigit() else p for p in path)
    out[key_map.path_to_hf_key(path)] = np.ascontiguousarray(
        key_map.to_hf(np.asarray(value, np.float32), path, None))
  return out


def write_tensors(tensors: dict[str, np.ndarray], dst: str,
                  dtype: str = "bfloat16", family: str = "qwen2_5_vl") -> None:
  save_file({k: v.astype(DTYPES[dtype])
             for k, v in spelled(tensors, family).items()}, dst)


def spelled(tensors: dict[str, np.ndarray], family: str
            ) -> dict[str, np.ndarray]:
  """Canonical scorer names (``visual.<scorer>.*``) -> the family's
  spelling (``FAMILY_PREFIX``: ``model.visual.*`` for LLaVA-OV-1.5)."""
  if family not in FAMILY_PREFIX:
    raise ValueError(f"unknown model family {family!r}; known: "
                     f"{sorted(FAMILY_PREFIX)}")
  root = FAMILY_PREFIX[family][:-len(PREFIX)] + "visual."
  return {root + k[len("visual."):] if k.startswith("visual.") else k: v
          for k, v in tensors.items()}


def source_family(src: str) -> str:
  """The family of ``src`` from its config.json (a converted dir), else
  Qwen2.5-VL (a training checkpoint or a scorer file carries none)."""
  from vselect_jax.config import read_model_config
  folder = src if os.path.isdir(src) else os.path.dirname(src)
  if os.path.exists(os.path.join(folder, "config.json")):
    return read_model_config(folder).family
  return "qwen2_5_vl"


def _check_dst(dst: str, overwrite: bool, want_dir: bool) -> None:
  """Refuses to replace ``dst`` unless ``overwrite``, and a destination of
  the wrong kind (a directory where a file goes, or the reverse) always."""
  if os.path.isdir(dst) and not want_dir:
    raise IsADirectoryError(
        f"--dst {dst} is a directory; name the file to write, e.g. "
        f"{os.path.join(dst, 'scorer.safetensors')}")
  if os.path.exists(dst) and not os.path.isdir(dst) and want_dir:
    raise FileExistsError(f"--dst {dst} is a file; --merge-into writes a "
                          "checkpoint directory")
  if os.path.exists(dst) and not overwrite:
    raise FileExistsError(f"{dst} exists; pass --overwrite to replace it")


def export(src: str, dst: str, dtype: str = "bfloat16", *,
           overwrite: bool = False, family: str | None = None,
           scorer: str = "importance_scorer") -> None:
  """Writes the scorer ``scorer`` of ``src`` to the safetensors file
  ``dst``, spelled for ``family`` (default: ``source_family(src)``)."""
  _check_dst(dst, overwrite, want_dir=False)
  family = family or source_family(src)
  spelled({}, family)  # an unknown family fails before anything is read
  tensors = load_scorer(src, scorer)
  parent = os.path.dirname(os.path.abspath(dst))
  fd, tmp = tempfile.mkstemp(prefix=".scorer-", suffix=".safetensors",
                             dir=parent)
  os.close(fd)
  try:
    write_tensors(tensors, tmp, dtype, family)
    os.replace(tmp, dst)  # an old dst survives any failure above
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def expected_scorer_shapes(base: str, scorer: str = "importance_scorer"
                           ) -> dict[str, tuple[int, ...]]:
  """HF name -> torch-layout shape of the scorer the model of ``base``
  (an HF dir with ``config.json``) builds."""
  from flax import nnx
  from vselect_jax.config import read_model_config
  from vselect_jax.selector.scorer import ImportanceScorer
  cfg = read_model_config(base)
  prefix = SCORERS[_check_name(scorer)][0]
  if scorer == PREDICTOR:
    from vselect_jax.checkpoint import key_map
    from vselect_jax.selector.predictor import VisionPredictor
    if cfg.family != "qwen2_5_vl":
      raise ValueError(f"{base}: the Dynamic-Qwen predictor is built for "
                       f"Qwen2.5-VL, not {cfg.family}")
    abstract = nnx.eval_shape(lambda: VisionPredictor(cfg.text.hidden_size,
                                                      rngs=nnx.Rngs(0)))
    return {key_map.path_to_hf_key(_PREDICTOR_PATH + tuple(path)):
            tuple(var.get_value().shape)[::-1] if path[-1] == "kernel"
            else tuple(var.get_value().shape)
            for path, var in nnx.state(abstract, nnx.Param).flat_state()}
  # The model builds the LIS at the LLM width and the in-tower scorer at
  # 4 x the vision width (modeling/vlm.py).
  dim = (cfg.text.hidden_size if scorer == "importance_scorer" else
         cfg.vision.hidden_size * cfg.vision.merge_unit)
  abstract = nnx.eval_shape(lambda: ImportanceScorer(dim, rngs=nnx.Rngs(0)))
  out = {}
  for path, var in nnx.state(abstract).flat_state():
    proj, leaf = path
    shape = tuple(var.get_value().shape)
    name = "weight" if leaf == "kernel" else leaf
    out[f"{prefix}{proj}.{name}"] = shape[::-1] if leaf == "kernel" else shape
  return out


def check_scorer_shapes(tensors: dict[str, np.ndarray], base: str,
                        scorer: str = "importance_scorer") -> None:
  """Raises ``ValueError`` naming every scorer tensor whose shape does not
  fit the base checkpoint's config."""
  want = expected_scorer_shapes(base, scorer)
  bad = [f"{k}: expected {want.get(k, 'no such tensor')}, got "
         f"{tuple(v.shape)}" for k, v in sorted(tensors.items())
         if tuple(v.shape) != want.get(k)]
  bad += [f"{k}: missing" for k in sorted(set(want) - set(tensors))]
  if bad:
    width = next(v for k, v in sorted(want.items())
                 if k.endswith(("q_proj.weight", "down_mlp.1.weight")))[1]
    raise ValueError(
        f"the {scorer} does not fit {base} (input width {width}): " +
        "; ".join(bad))


def merge_into(src: str, base: str, dst: str, dtype: str = "bfloat16", *,
               link: bool = False, overwrite: bool = False,
               scorer: str = "importance_scorer") -> None:
  """Writes ``dst``: the HF checkpoint ``base`` plus the scorer shard.

  Args:
    link: hard-link the base's weight shards (``*.safetensors``) instead of
      copying them; every other file is copied either way, so editing
      ``dst`` never edits ``base``.
    overwrite: replace an existing ``dst``.
  """
  if not os.path.isdir(base):
    raise FileNotFoundError(f"--merge-into {base}: no such directory")
  if os.path.exists(dst) and os.path.samefile(dst, base):
    raise ValueError(f"--dst {dst} is the base checkpoint; write the merged "
                     "checkpoint to a new directory")
  _check_dst(dst, overwrite, want_dir=True)
  from vselect_jax.config import read_model_config
  prefix, shard = SCORERS[_check_name(scorer)]
  found = load_scorer(src, scorer)
  check_scorer_shapes(found, base, scorer)
  family = read_model_config(base).family
  tensors = {k: v.astype(DTYPES[dtype])
             for k, v in spelled(found, family).items()}
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
  clash = [k for k in index["weight_map"] if k.startswith(prefix) or
           k.startswith("model." + prefix)]
  for k in clash:  # replacing an older scorer
    del index["weight_map"][k]
  parent = os.path.dirname(os.path.abspath(dst)) or "."
  stage = tempfile.mkdtemp(prefix=".merge-", dir=parent)
  try:
    for name in os.listdir(base):
      s = os.path.join(base, name)
      if os.path.isfile(s) and name != "model.safetensors.index.json":
        target = os.path.join(
            stage, BASE_SHARD if name == "model.safetensors" else name)
        # Only weight shards may be shared: nothing rewrites them in place,
        # while configs / tokenizer files are edited by hand.
        if link and name.endswith(".safetensors"):
          try:
            os.link(s, target)
            continue
          except OSError:  # another filesystem: copy
            pass
        shutil.copy2(s, target)
    save_file(tensors, os.path.join(stage, shard))
    for k in tensors:
      index["weight_map"][k] = shard
    index.setdefault("metadata", {})
    with open(os.path.join(stage, "model.safetensors.index.json"), "w") as f:
      json.dump(index, f, indent=2, sort_keys=True)
    if os.path.exists(dst):  # --overwrite, checked above
      shutil.rmtree(dst)
    os.replace(stage, dst)
  except BaseException:
    shutil.rmtree(stage, ignore_errors=True)
    raise

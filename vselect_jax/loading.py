"""Loading a model straight onto its device shardings.

    cfg, module = load_model(path, dtype="bfloat16", mesh=mesh)

``path`` is a converted vselect-jax directory (Orbax), an HF Qwen2.5-VL or
LLaVA-OneVision-1.5 directory (safetensors, converted on the fly) or a hub
id (downloaded; needs the network); the model family comes from
config.json's ``model_type``. The model is built abstractly (shapes only), every parameter's
``NamedSharding`` comes from its logical axes and the one rule table
(``vselect_jax.sharding``), and each device's block of each tensor is read
from the checkpoint and placed on that device: no parameter is ever whole
on one device, and each host reads only its own devices' blocks (memory-
mapped safetensors; Orbax/tensorstore reads per shard). Without a mesh the
model goes onto one device, by the same code.
"""
from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from vselect_jax import paths
from vselect_jax import sharding as shard_lib
from vselect_jax.checkpoint import converted
from vselect_jax.checkpoint.hf_reader import plan_hf_params
from vselect_jax.config import ModelConfig, read_model_config
from vselect_jax.modeling.llava_ov import LlavaOneVision15
from vselect_jax.modeling.vlm import Qwen25VL
from vselect_jax.selector.scorer import ImportanceScorer

log = logging.getLogger(__name__)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16,
           "float16": jnp.float16}
SCORER_PATH = ("visual", "importance_scorer")
# The in-tower scorer (method "tower_selector"); no released checkpoint has
# it, so it is optional like the LIS and freshly initialised when absent.
BLOCK_SCORER_PATH = ("visual", "block_scorer")
# Dynamic-Qwen's image predictor (method "dynamic_qwen"): only a trained
# Dynamic-Qwen checkpoint has it; fresh when absent, like the in-tower one.
PREDICTOR_PATH = ("model", "image_score_predictor")


def resolve_dtype(dtype) -> jnp.dtype:
  if isinstance(dtype, str):
    if dtype not in _DTYPES:
      raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return jnp.dtype(_DTYPES[dtype])
  return jnp.dtype(dtype)


def resolve_path(path: str) -> str:
  """A local dir or a gs:// one as is; anything else is an HF hub id."""
  if paths.is_remote(path):
    if not paths.isdir(path):
      raise FileNotFoundError(f"{path} is not a directory")
    return path
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    raise ValueError(f"{path!r} is a file; expected a checkpoint directory")
  try:
    from huggingface_hub import snapshot_download
    return snapshot_download(
        path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                              "*.jinja", "*.py"])
  except Exception as e:  # offline, unknown repo, no permission...
    raise FileNotFoundError(
        f"{path!r} is not a local directory and could not be fetched from the "
        f"Hugging Face Hub ({type(e).__name__}: {e}). Offline, pass the path "
        "of a downloaded or converted checkpoint.") from e


# cfg.family -> the module class of that model family.
MODULES = {"qwen2_5_vl": Qwen25VL, "llava_ov15": LlavaOneVision15}


def build_model(cfg: ModelConfig, dtype=jnp.float32, *, rngs: nnx.Rngs):
  """The module of ``cfg``'s family (random init)."""
  if cfg.family not in MODULES:
    raise ValueError(f"unknown model family {cfg.family!r}; known: "
                     f"{sorted(MODULES)}")
  return MODULES[cfg.family](cfg, dtype=dtype, rngs=rngs)


def abstract_model(cfg: ModelConfig, dtype) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph definition and shape-only state; nothing is allocated."""
  model = nnx.eval_shape(lambda: build_model(cfg, dtype, rngs=nnx.Rngs(0)))
  return nnx.split(model)


def expected_shapes(abs_state: nnx.State) -> dict[tuple, tuple[int, ...]]:
  return {tuple(p): tuple(v.get_value().shape)
          for p, v in abs_state.flat_state()}


def one_device_mesh() -> Mesh:
  """This process's first device alone, as a mesh (everything on it)."""
  return shard_lib.make_mesh({}, devices=jax.local_devices()[:1])


def _fresh_scorer(cfg: ModelConfig, dtype, seed: int,
                  where: tuple = SCORER_PATH) -> dict[tuple, np.ndarray]:
  if where == PREDICTOR_PATH:
    from vselect_jax.selector.predictor import VisionPredictor
    fresh = VisionPredictor(cfg.text.hidden_size, dtype=dtype,
                            rngs=nnx.Rngs(seed))
    return {where + tuple(p): np.asarray(v.get_value())
            for p, v in nnx.state(fresh, nnx.Param).flat_state()}
  dim = (cfg.text.hidden_size if where == SCORER_PATH else
         cfg.vision.hidden_size * cfg.vision.merge_unit)
  fresh = ImportanceScorer(dim, dtype=dtype, rngs=nnx.Rngs(seed))
  return {where + tuple(p): np.asarray(v.get_value())
          for p, v in nnx.state(fresh).flat_state()}


def load_model(path: str, dtype="float32", *, mesh: Mesh | None = None,
               rules=None, seed: int = 0, progress: bool = False,
               min_sharded_elements: int = shard_lib.MIN_SHARDED_ELEMENTS
               ) -> tuple[ModelConfig, nnx.Module]:
  """Reads a checkpoint onto ``mesh`` (default: one device).

  Args:
    path: converted dir, HF dir or hub id.
    dtype: parameter dtype ("float32", "bfloat16", "float16").
    mesh: a ("data", "fsdp", "tensor") mesh; parameters are sharded by
      their logical axes (``sharding.DEFAULT_RULES`` or ``rules``).
    seed: initialises the scorer when the checkpoint has none (a base
      Qwen checkpoint; said loudly).
    progress: a progress bar over tensors.
    min_sharded_elements: on a mesh of several devices, a parameter this
      large that the rules leave replicated, or whose rule does not divide,
      is an error (``sharding.check_coverage``).

  Returns:
    (config, the model module with parameters on the mesh).
  """
  jdtype = resolve_dtype(dtype)
  path = resolve_path(path)
  cfg = read_model_config(path)
  mesh = one_device_mesh() if mesh is None else mesh
  graphdef, abs_state = abstract_model(cfg, jdtype)
  shardings = shard_lib.state_shardings(abs_state, mesh, rules)
  if mesh.size > 1:
    shard_lib.check_coverage(abs_state, mesh, rules,
                             min_elements=min_sharded_elements)
  target = {tuple(p): (tuple(v.get_value().shape), s)
            for (p, v), (_, s) in zip(abs_state.flat_state(),
                                      shardings.flat_state())}
  scorer = {p for p in target if p[:len(SCORER_PATH)] == SCORER_PATH}
  block_scorer = {p for p in target
                  if p[:len(BLOCK_SCORER_PATH)] == BLOCK_SCORER_PATH}
  predictor = {p for p in target
               if p[:len(PREDICTOR_PATH)] == PREDICTOR_PATH}
  if converted.is_converted(path):
    marker = converted.read_marker(path)
    wanted = {p: t for p, t in target.items()
              if (marker.get("has_scorer", True) or p not in scorer) and
              (marker.get("has_block_scorer", False) or
               p not in block_scorer) and
              (marker.get("has_predictor", False) or p not in predictor)}
    arrays = converted.load_params(path, {
        p: jax.ShapeDtypeStruct(shape, jdtype, sharding=s)
        for p, (shape, s) in wanted.items()})
  else:
    if paths.is_remote(path):  # the safetensors reader memmaps local files
      raise ValueError(
          f"{path}: an HF checkpoint on a bucket is read through "
          "conversion.convert_hf first (--src may be gs://); load the "
          "converted directory (local or gs://)")
    plan = plan_hf_params(path, {p: t[0] for p, t in target.items()},
                          optional_prefixes=(SCORER_PATH,
                                             BLOCK_SCORER_PATH,
                                             PREDICTOR_PATH),
                          tied_embeddings=cfg.text.tie_word_embeddings)
    items = plan.items()
    if progress:
      from tqdm import tqdm
      items = tqdm(items, total=len(plan), desc="loading", unit="tensor")
    np_dtype = np.dtype(jdtype)
    arrays = {p: jax.make_array_from_callback(
        target[p][0], target[p][1],
        lambda index, source=source: source.read(index, np_dtype))
              for p, source in items}
  if scorer - set(arrays):
    log.warning(
        "vselect_jax: %s has no VisionSelector scorer weights "
        "(visual.importance_scorer.*); the scorer is FRESHLY INITIALISED "
        "(seed %d). Budgeted selection is meaningless until it is trained.",
        path, seed)
    for p, value in _fresh_scorer(cfg, jdtype, seed).items():
      arrays[p] = jax.device_put(value.astype(jdtype), target[p][1])
  if block_scorer - set(arrays):  # expected: only in-tower training makes it
    log.info("vselect_jax: %s has no in-tower scorer (visual.block_scorer.*);"
             " initialised fresh (seed %d)", path, seed)
    for p, value in _fresh_scorer(cfg, jdtype, seed,
                                  BLOCK_SCORER_PATH).items():
      arrays[p] = jax.device_put(value.astype(jdtype), target[p][1])
  if predictor - set(arrays):  # expected: only Dynamic-Qwen training has it
    log.info("vselect_jax: %s has no Dynamic-Qwen predictor "
             "(model.image_score_predictor.*); initialised fresh (seed %d)",
             path, seed)
    for p, value in _fresh_scorer(cfg, jdtype, seed,
                                  PREDICTOR_PATH).items():
      arrays[p] = jax.device_put(value.astype(jdtype), target[p][1])
  leaves = [(tuple(p), v.replace(arrays[tuple(p)]))
            for p, v in abs_state.flat_state()]
  return cfg, nnx.merge(graphdef, nnx.State.from_flat_path(leaves))


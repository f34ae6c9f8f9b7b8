"""Tiny LLaVA-OneVision-1.5 configs, the PyTorch oracle runner and a plain
JAX forward for parity tests.

The oracle (``tests/ov_oracle.py``) needs transformers 4.x and runs in the
``.venv-ov`` venv that ``make venv-ov`` (a prerequisite of ``make test``)
builds; set ``VSELECT_OV_PYTHON`` to use another interpreter. All cases of a
config go to one subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from flax import nnx

from vselect_jax.checkpoint import hf_reader as hf_loader
from vselect_jax.config import LlavaOV15Config
from vselect_jax.modeling.llava_ov import LlavaOneVision15
from vselect_jax.host.rice_layout import build_rice_layout
from vselect_jax.host.rope_index_1d import get_1d_position_ids
from vselect_jax.selector.scorer import ImportanceScorer

IMAGE, VIDEO, START, END = 990, 991, 992, 993
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORACLE = os.path.join(ROOT, "tests", "ov_oracle.py")
SCORER = ("visual", "importance_scorer")


def _config(text: dict, vision: dict, tie: bool) -> dict:
  return dict(
      text_config=dict(vocab_size=1000, rope_theta=10000.0,
                       tie_word_embeddings=tie, **text),
      vision_config=dict(text_hidden_size=text["hidden_size"], **vision),
      image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START,
      vision_end_token_id=END, tie_word_embeddings=tie, vocab_size=1000)


CONFIGS = {
    # Tied head, GQA 4:2.
    "ov_tied": _config(
        dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16),
        dict(depth=2, embed_dim=32, hidden_size=32, intermediate_size=48,
             num_heads=2), tie=True),
    # Untied head, multi-query attention, head_dim (24) != hidden / heads.
    "ov_untied": _config(
        dict(hidden_size=96, intermediate_size=128, num_hidden_layers=3,
             num_attention_heads=3, num_key_value_heads=1, head_dim=24),
        dict(depth=3, embed_dim=48, hidden_size=48, intermediate_size=64,
             num_heads=3), tie=False),
}


def oracle_python() -> str:
  return os.environ.get("VSELECT_OV_PYTHON",
                        os.path.join(ROOT, ".venv-ov", "bin", "python"))


def run_oracle(name: str, cases: dict[str, dict[str, np.ndarray]], out: str,
               seed: int = 0, load: str | None = None,
               selector: str | None = None) -> dict[str, np.ndarray]:
  """Builds config ``name`` in the oracle, saves it to ``out/hf`` and runs
  every case; returns the oracle's outputs (see ``ov_oracle.py``). With
  ``load`` (an earlier run's ``hf`` dir) it runs that model instead; with
  ``selector`` it also loads that dir into the reference's selector class
  (``out/selector_loading.json``, ``out/selector_scorer.npz``)."""
  py = oracle_python()
  if not os.path.exists(py):
    raise RuntimeError(
        f"the LLaVA-OV-1.5 oracle interpreter {py} does not exist: run "
        "`make venv-ov` (or set VSELECT_OV_PYTHON)")
  os.makedirs(out, exist_ok=True)
  np.savez(os.path.join(out, "inputs.npz"),
           **{f"{c}.{k}": v for c, arrays in cases.items()
              for k, v in arrays.items()})
  spec = os.path.join(out, "spec.json")
  with open(spec, "w") as f:
    json.dump({"config": CONFIGS[name], "seed": seed, "load": load,
               "selector": selector, "cases": sorted(cases)}, f)
  env = dict(os.environ, PYTHONPATH="", TRANSFORMERS_VERBOSITY="error",
             HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
  done = subprocess.run([py, ORACLE, spec, out], capture_output=True,
                        text=True, env=env, timeout=300)
  if done.returncode:
    sys.stderr.write(done.stdout + done.stderr)
    raise RuntimeError(f"the oracle failed (exit {done.returncode}): "
                       f"{done.stderr[-2000:]}")
  with np.load(os.path.join(out, "outputs.npz")) as o:
    return dict(o)


def load_jax(hf_dir: str) -> LlavaOneVision15:
  """The oracle's checkpoint in our model (float32), through the shared
  HF loader; the scorer (absent from the base checkpoint) is fresh."""
  cfg = LlavaOV15Config.from_pretrained(hf_dir)
  graphdef, abs_state = nnx.split(nnx.eval_shape(
      lambda: LlavaOneVision15(cfg, rngs=nnx.Rngs(0))))
  flat = [(tuple(p), v) for p, v in abs_state.flat_state()]
  expected = {p: tuple(v.get_value().shape) for p, v in flat}
  params = hf_loader.read_hf_params(
      hf_dir, expected, np.float32, optional_prefixes=(SCORER,),
      tied_embeddings=cfg.text.tie_word_embeddings)
  fresh = ImportanceScorer(cfg.text.hidden_size, rngs=nnx.Rngs(0))
  for p, v in nnx.state(fresh).flat_state():
    params.setdefault(SCORER + tuple(p), np.asarray(v.get_value()))
  leaves = [(p, v.replace(params[p])) for p, v in flat]
  return nnx.merge(graphdef, nnx.State.from_flat_path(leaves))


@nnx.jit
def _vision(model, pixel_values, layout):
  return model.visual(pixel_values, layout)


def _place(model, ids, index, merged):
  """Token embeddings with the batch's merged tokens at their pads."""
  x = model.model.embed_tokens(ids)
  if merged is None:  # text only
    return x
  vis = jnp.take(merged.astype(x.dtype), jnp.maximum(index, 0), axis=0)
  return jnp.where((index >= 0)[..., None], vis, x)


@nnx.jit
def _text(model, ids, index, merged, pos, mask):
  x = _place(model, ids, index, merged)
  return model.head(model.model(x, pos, mask))


@nnx.jit
def _embed(model, ids, index, merged):
  return _place(model, ids, index, merged)


@nnx.jit
def _run(model, x, pos, mask):
  return model.head(model.model(x, pos, mask))


# One patch / sequence capacity for every test case: one compile each.
PATCH_CAPACITY, SEQ_CAPACITY = 192, 64


def _pad_rows(pixel_values) -> np.ndarray:
  """Pixel rows padded to PATCH_CAPACITY (padding rows are never read)."""
  x = np.asarray(pixel_values, np.float32)
  return np.pad(x, ((0, PATCH_CAPACITY - x.shape[0]), (0, 0)))


def vision(model: LlavaOneVision15, pixel_values, grid) -> np.ndarray:
  """float32[num_merged, E] from our tower (padded layout, padding cut)."""
  layout = build_rice_layout(grid, model.config.vision, PATCH_CAPACITY)
  merged = _vision(model, _pad_rows(pixel_values), layout.arrays())
  return np.asarray(merged)[:layout.num_merged]


def logits(model: LlavaOneVision15, input_ids, attention_mask=None,
           pixel_values=None, image_grid_thw=None, keep=None,
           positions: str = "original") -> np.ndarray:
  """float32[B, T, V]: vision tower, visual tokens at their pads (row-major
  over the batch, as HF scatters them), 1-D positions, LLM, head.

  ``keep`` int[B, K]: run only those tokens (a compressed prompt), with
  their original positions, or with ``positions="renumbered"`` 0..K-1 (what
  the reference does not do); returns float32[B, K, V].
  """
  ids = np.asarray(input_ids)
  mask = (np.ones_like(ids) if attention_mask is None
          else np.asarray(attention_mask))
  length = ids.shape[1]
  pad = ((0, 0), (0, SEQ_CAPACITY - length))  # trailing padding (segment 0)
  ids, mask = np.pad(ids, pad), np.pad(mask, pad)
  pos, _ = get_1d_position_ids(ids, mask)
  merged, index = None, np.full(ids.shape, -1, np.int32)
  if pixel_values is not None:
    layout = build_rice_layout(image_grid_thw, model.config.vision,
                               PATCH_CAPACITY)
    merged = _vision(model, _pad_rows(pixel_values), layout.arrays())
    where = (ids == model.config.image_token_id) & (mask == 1)
    index[where] = np.arange(int(where.sum()))
  if keep is None:
    return np.asarray(_text(model, ids.astype(np.int32), index, merged, pos,
                            mask.astype(np.int32)))[:, :length]
  # Compressed prompt: embeddings and positions gathered at the kept tokens.
  keep = np.asarray(keep)
  x = _embed(model, ids.astype(np.int32), index, merged)
  rows = np.arange(keep.shape[0])[:, None]
  x = np.asarray(x)[rows, keep]
  pos = pos[:, rows, keep] if positions == "original" else np.broadcast_to(
      np.arange(keep.shape[1], dtype=np.int32), (3,) + keep.shape)
  k = keep.shape[1]
  pad = ((0, 0), (0, SEQ_CAPACITY - k))
  out = _run(model, np.pad(x, pad + ((0, 0),)),
             np.pad(pos, ((0, 0),) + pad),
             np.pad(np.ones(keep.shape, np.int32), pad))
  return np.asarray(out)[:, :k]


def block(grid) -> list[int]:
  t, h, w = grid
  return [START] + [IMAGE] * (t * h * w // 4) + [END]


def pixels(rng, grid) -> np.ndarray:
  return rng.standard_normal((int(np.prod(grid)), 588)).astype(np.float32)

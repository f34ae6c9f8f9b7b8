"""LLaVA-OneVision-1.5 parity with lmms-engine's PyTorch implementation.

For each tiny config the oracle (``tests/ov_oracle.py``, in ``.venv-ov``)
builds a random model, saves it, and runs every case in one subprocess; the
checkpoint is loaded into ``LlavaOneVision15`` and compared in float32.
Tolerance: max |difference| <= 1e-4 for the vision tower and the logits.

Several images are compared against the oracle run one image at a time: the
oracle's joint run unpacks every image after the first off by one row.
"""
import json

import numpy as np
import pytest

from vselect_jax.checkpoint import key_map as key_map_ov
from safetensors.numpy import load_file
from tests import ov_tiny
from tests.ov_tiny import IMAGE
from vselect_jax.config import LlavaOV15Config

TOL = 1e-4
G1, G2 = [1, 6, 10], [1, 14, 8]   # odd merged grids: 3x5 and 7x4


def _cases():
  rng = np.random.default_rng(0)
  p1, p2 = ov_tiny.pixels(rng, G1), ov_tiny.pixels(rng, G2)
  ids1 = [1, 2] + ov_tiny.block(G1) + [3, 4, 5]
  ids2 = [6] + ov_tiny.block(G2) + [7, 8]
  two = [7] + ov_tiny.block(G1) + [8, 9] + ov_tiny.block(G2) + [10, 11]
  text = rng.integers(0, 900, (1, 11))
  # Right-padded batch: an image row and a shorter text row.
  pad_ids = np.zeros((2, len(ids1)), np.int64)
  pad_mask = np.zeros_like(pad_ids)
  pad_ids[0], pad_mask[0] = ids1, 1
  pad_ids[1, :6], pad_mask[1, :6] = rng.integers(0, 900, 6), 1
  grid = lambda *g: np.array(g, np.int64)
  # A compressed prompt: the text and every third visual token of image 2.
  vis = np.flatnonzero(np.array(ids2) == IMAGE)
  keep = np.sort(np.concatenate([np.flatnonzero(np.array(ids2) != IMAGE),
                                 vis[::3]]))[None]
  return {
      "kept_tokens": dict(input_ids=np.array([ids2]), pixel_values=p2,
                          image_grid_thw=grid(G2), keep=keep),
      "grid_6x10": dict(input_ids=np.array([ids1]), pixel_values=p1,
                        image_grid_thw=grid(G1)),
      "grid_14x8": dict(input_ids=np.array([ids2]), pixel_values=p2,
                        image_grid_thw=grid(G2)),
      "two_images": dict(input_ids=np.array([two]),
                         pixel_values=np.concatenate([p1, p2]),
                         image_grid_thw=grid(G1, G2)),
      "text_only": dict(input_ids=text),
      "padded_batch": dict(input_ids=pad_ids, attention_mask=pad_mask,
                           pixel_values=p1, image_grid_thw=grid(G1)),
  }


@pytest.fixture(scope="module", params=sorted(ov_tiny.CONFIGS))
def run(request, tmp_path_factory):
  out = tmp_path_factory.mktemp(request.param)
  cases = _cases()
  ref = ov_tiny.run_oracle(request.param, cases, str(out))
  model = ov_tiny.load_jax(str(out / "hf"))
  return request.param, cases, ref, model, out


def _err(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max())


def test_config_family_and_head(run):
  name, _, _, model, out = run
  cfg = model.config
  assert cfg.family == "llava_ov15"
  tied = ov_tiny.CONFIGS[name]["text_config"]["tie_word_embeddings"]
  assert cfg.text.tie_word_embeddings == tied
  assert (model.lm_head is None) == tied
  assert cfg.text.head_dim == ov_tiny.CONFIGS[name]["text_config"]["head_dim"]
  keys = load_file(str(out / "hf" / "model.safetensors")).keys()
  assert ("lm_head.weight" in keys) == (not tied)


@pytest.mark.parametrize("case", ["grid_6x10", "grid_14x8", "two_images"])
def test_vision_tower(run, case):
  _, cases, ref, model, _ = run
  c = cases[case]
  ours = ov_tiny.vision(model, c["pixel_values"], c["image_grid_thw"])
  assert _err(ours, ref[f"{case}.vision"]) <= TOL


def test_two_images_do_not_copy_the_oracle_shift(run):
  """The oracle's joint run differs from its per-image run (its unpacking
  bug) only in the second image; ours equals the per-image run, and the
  gap is far above the tolerance, so the comparison can tell them apart."""
  _, cases, ref, model, _ = run
  c = cases["two_images"]
  n1 = int(np.prod(G1)) // 4
  joint, per_item = ref["two_images.vision_joint"], ref["two_images.vision"]
  assert _err(joint[:n1], per_item[:n1]) <= TOL
  assert _err(joint[n1:], per_item[n1:]) > 100 * TOL
  ours = ov_tiny.vision(model, c["pixel_values"], c["image_grid_thw"])
  assert _err(ours[n1:], joint[n1:]) > 100 * TOL


@pytest.mark.parametrize("case", ["grid_6x10", "grid_14x8", "two_images",
                                  "text_only"])
def test_logits(run, case):
  _, cases, ref, model, _ = run
  ours = ov_tiny.logits(model, **cases[case])
  assert _err(ours, ref[f"{case}.logits"]) <= TOL
  if case != "two_images":  # one image: the oracle's own forward agrees
    assert _err(ours, ref[f"{case}.logits_native"]) <= TOL


def test_kept_tokens_keep_their_positions(run):
  """The budgeted forward's LLM input: kept tokens only, at their original
  1-D positions (gaps), as the reference's selector forward. Renumbering
  them 0..K-1 is measurably different."""
  _, cases, ref, model, _ = run
  c = cases["kept_tokens"]
  ours = ov_tiny.logits(model, **c)
  assert _err(ours, ref["kept_tokens.logits"]) <= TOL
  renumbered = ov_tiny.logits(model, **c, positions="renumbered")
  assert _err(renumbered, ref["kept_tokens.logits"]) > 100 * TOL


def test_padded_batch(run):
  _, cases, ref, model, _ = run
  c = cases["padded_batch"]
  ours = ov_tiny.logits(model, **c)
  valid = c["attention_mask"] == 1
  assert _err(ours[valid], ref["padded_batch.logits"][valid]) <= TOL
  assert _err(ours[valid], ref["padded_batch.logits_native"][valid]) <= TOL


def test_key_map_covers_the_checkpoint(run):
  """Every saved tensor maps to one of our parameters with its shape and
  back; both scorer spellings map to the scorer."""
  _, _, _, model, out = run
  from flax import nnx
  ours = {tuple(p): v.get_value().shape
          for p, v in nnx.state(model).flat_state()}
  tensors = load_file(str(out / "hf" / "model.safetensors"))
  seen = set()
  for name, value in tensors.items():
    key = key_map_ov.normalize_hf_key(name)
    module, leaf = key_map_ov.hf_key_to_path(key)
    path = module + ("kernel",) if (leaf == "weight" and module + (
        "kernel",) in ours) else module + (leaf,)
    assert path in ours, name
    assert key_map_ov.to_jax(value, leaf, path[-1], ours[path]).shape == \
        ours[path], name
    assert key_map_ov.path_to_hf_key(path) == key
    seen.add(path)
  missing = {p for p in ours if p not in seen and p[:2] != ov_tiny.SCORER}
  assert not missing
  for spelling in ("model.visual.importance_scorer.q_proj.weight",
                   "visual.importance_scorer.q_proj.weight"):
    module, _ = key_map_ov.hf_key_to_path(
        key_map_ov.normalize_hf_key(spelling))
    assert module + ("kernel",) in ours
  for spelling in ("model.language_model.layers.0.self_attn.q_norm.weight",
                   "model.visual.class_pos_emb"):
    module, leaf = key_map_ov.hf_key_to_path(
        key_map_ov.normalize_hf_key(spelling))
    assert module + (leaf,) in ours


def test_config_refusals():
  base = json.loads(json.dumps(ov_tiny.CONFIGS["ov_tied"]))
  base["model_type"] = "llavaonevision1_5"
  LlavaOV15Config.from_hf_dict(base)
  for edit, needle in (
      (lambda d: d.update(model_type="qwen2_5_vl"), "llavaonevision1_5"),
      (lambda d: d["vision_config"].update(text_hidden_size=32),
       "text_hidden_size"),
      (lambda d: d["vision_config"].update(temporal_patch_size=2),
       "temporal_patch_size"),
      (lambda d: d["text_config"].update(use_sliding_window=True),
       "use_sliding_window"),
      (lambda d: d["text_config"].update(
          rope_scaling={"rope_type": "yarn", "factor": 2.0}), "rope_scaling")):
    d = json.loads(json.dumps(base))
    edit(d)
    with pytest.raises(ValueError, match=needle):
      LlavaOV15Config.from_hf_dict(d)

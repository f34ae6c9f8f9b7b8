"""LLaVA-OneVision-1.5 end to end through the public API, against the oracle.

One tiny checkpoint (``ov_untied``: 3 LLM layers, MQA, head_dim 24) built by
the oracle; a batch of two rows (an image row and a shorter video row whose
two frames are encoded as images: each its own class token); every method
at a budget through ``model.forward`` / ``generate``. The oracle runs twice
on the same weights: first the full prompts (logits, greedy generation,
layer attention, the class token's attention), then each row's kept tokens
at their original 1-D positions for the budget our methods chose.
"""
import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import vselect_jax
from tests import ov_tiny
from tests.ov_tiny import END, IMAGE, START, VIDEO
from vselect_jax.checkpoint import scorer_export
from vselect_jax.checkpoint.convert import convert
from vselect_jax.config import (LlavaOV15Config, VLMConfig,
                                config_from_hf_dict, read_model_config)

NAME = "ov_untied"
TOL = 1e-4
BUDGET = 0.3
NEW = 5
G_IMAGE, G_VIDEO = [1, 6, 10], [2, 4, 6]   # 15 and 2 x 6 merged tokens
PRE_LLM = ("selector", "random", "uniform", "divprune")


def _inputs():
  rng = np.random.default_rng(3)
  pix_a = ov_tiny.pixels(rng, G_IMAGE)
  pix_v = ov_tiny.pixels(rng, G_VIDEO)
  row_a = [1, 2] + ov_tiny.block(G_IMAGE) + [3, 4, 5]
  n_v = int(np.prod(G_VIDEO)) // 4
  row_v = [6, START] + [VIDEO] * n_v + [END, 7, 8]
  ids = np.zeros((2, len(row_a)), np.int64)
  mask = np.zeros_like(ids)
  ids[0], mask[0] = row_a, 1
  ids[1, :len(row_v)], mask[1, :len(row_v)] = row_v, 1
  batch = dict(input_ids=ids, attention_mask=mask, pixel_values=pix_a,
               image_grid_thw=np.array([G_IMAGE]), pixel_values_videos=pix_v,
               video_grid_thw=np.array([G_VIDEO]))
  # The oracle: each row alone; the video's frames as two images.
  frame = [1] + G_VIDEO[1:]
  as_images = [t if t != VIDEO else IMAGE for t in row_v]
  cases = {
      "a": dict(input_ids=np.array([row_a]), pixel_values=pix_a,
                image_grid_thw=np.array([G_IMAGE]),
                generate=np.array([NEW]), attn_layer=np.array([1])),
      "v": dict(input_ids=np.array([as_images]), pixel_values=pix_v,
                image_grid_thw=np.array([frame, frame]),
                generate=np.array([NEW])),
  }
  return batch, cases, [len(row_a), len(row_v)]


@pytest.fixture(scope="module")
def ov(tmp_path_factory):
  out = tmp_path_factory.mktemp("ov_e2e")
  batch, cases, lengths = _inputs()
  ref = ov_tiny.run_oracle(NAME, cases, str(out / "full"))
  hf = str(out / "full" / "hf")
  model = vselect_jax.from_pretrained(hf)
  kept = {m: model.forward(**batch, budget=BUDGET, method=m)
          for m in PRE_LLM}
  # The second oracle run: every row's kept tokens, original positions.
  second = {}
  for m, o in kept.items():
    for r, name in enumerate(("a", "v")):
      keep = o.keep_index[r][o.keep_index[r] >= 0]
      second[f"{m}_{name}"] = dict(cases[name], keep=keep[None])
      second[f"{m}_{name}"].pop("attn_layer", None)
      if m != "selector":
        second[f"{m}_{name}"].pop("generate")
  # A VisionSelector checkpoint (legacy scorer spelling), converted, its
  # scorer exported and merged into the base; the reference's class loads
  # the merged dir in the second oracle run.
  scorer = _with_scorer(hf, str(out / "hf_vs"))
  convert(str(out / "hf_vs"), str(out / "conv_vs"), "float32",
          progress=False)
  scorer_export.merge_into(str(out / "conv_vs"), hf, str(out / "merged"),
                           "float32")
  kept_ref = ov_tiny.run_oracle(NAME, second, str(out / "kept"), load=hf,
                                selector=str(out / "merged"))
  return dict(out=out, hf=hf, model=model, batch=batch, lengths=lengths,
              ref=ref, kept=kept, kept_ref=kept_ref, scorer=scorer)


def _with_scorer(src: str, dst: str) -> dict[str, np.ndarray]:
  """Copies the HF dir ``src`` to ``dst`` with a random scorer under the
  legacy ``visual.importance_scorer.*`` names; returns those tensors."""
  os.makedirs(dst)
  for f in os.listdir(src):
    if f.endswith(".json"):
      shutil.copy(os.path.join(src, f), dst)
  tensors = load_file(os.path.join(src, "model.safetensors"))
  d = tensors["model.embed_tokens.weight"].shape[1] if \
      "model.embed_tokens.weight" in tensors else \
      tensors["model.language_model.embed_tokens.weight"].shape[1]
  rng = np.random.default_rng(1)
  scorer = {f"visual.importance_scorer.{p}.{w}": rng.standard_normal(
      (d // 2, d) if w == "weight" else (d // 2,)).astype(np.float32)
            for p in ("q_proj", "k_proj") for w in ("weight", "bias")}
  save_file({**tensors, **scorer}, os.path.join(dst, "model.safetensors"))
  return scorer


def _err(a, b):
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.abs(a - b).max())


def test_family_from_config_json(ov):
  cfg = read_model_config(ov["hf"])
  assert isinstance(cfg, LlavaOV15Config) and cfg.family == "llava_ov15"
  assert ov["model"].config == cfg
  assert type(ov["model"].module).__name__ == "LlavaOneVision15"
  qwen = {"model_type": "qwen2_5_vl", "vocab_size": 10, "hidden_size": 8,
          "intermediate_size": 8, "num_hidden_layers": 1,
          "num_attention_heads": 1,
          "rope_scaling": {"mrope_section": [1, 1, 2]}}
  assert isinstance(config_from_hf_dict(qwen), VLMConfig)
  with pytest.raises(ValueError, match="unsupported model_type 'llava'"):
    config_from_hf_dict({"model_type": "llava"})


def test_full_forward_hf_and_converted_dirs(ov, tmp_path):
  """No budget: the batch of two rows (image; video frames as images)
  equals the oracle row by row, from the HF dir and from a converted dir."""
  dst = str(tmp_path / "conv")
  summary = convert(ov["hf"], dst, "float32", progress=False)
  assert not summary["has_scorer"]
  outs = [ov["model"].forward(**ov["batch"]),
          vselect_jax.from_pretrained(dst).forward(**ov["batch"])]
  for out in outs:
    for r, name in enumerate(("a", "v")):
      n = ov["lengths"][r]
      assert _err(out.logits[r, :n], ov["ref"][f"{name}.logits"][0]) <= TOL
    assert (out.rope_deltas == 0).all()


def test_conversion_refusals(ov, tmp_path):
  bad = tmp_path / "bad"
  bad.mkdir()
  for f in os.listdir(ov["hf"]):
    if f.endswith(".json"):
      with open(os.path.join(ov["hf"], f)) as a, open(bad / f, "w") as b:
        b.write(a.read())
  tensors = load_file(os.path.join(ov["hf"], "model.safetensors"))
  dropped = "model.language_model.layers.0.self_attn.q_norm.weight"
  if dropped not in tensors:
    dropped = "model.layers.0.self_attn.q_norm.weight"
  del tensors[dropped]
  save_file(tensors, str(bad / "model.safetensors"))
  with pytest.raises(ValueError, match="q_norm"):
    convert(str(bad), str(tmp_path / "out"), "float32", progress=False)
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("method", PRE_LLM)
def test_budgeted_forward_equals_oracle_on_kept_tokens(ov, method):
  out = ov["kept"][method]
  batch = ov["batch"]
  for r, name in enumerate(("a", "v")):
    keep = out.keep_index[r][out.keep_index[r] >= 0]
    n_vis = int(np.isin(batch["input_ids"][r], (IMAGE, VIDEO)).sum())
    kept_vis = np.isin(batch["input_ids"][r][keep], (IMAGE, VIDEO)).sum()
    assert kept_vis == max(1, int(n_vis * BUDGET))
    ref = ov["kept_ref"][f"{method}_{name}.logits"][0]
    assert _err(out.logits[r, :len(keep)], ref) <= TOL


def test_greedy_generation_token_for_token(ov):
  model, batch, ref = ov["model"], ov["batch"], ov["ref"]
  full = model.generate(**batch, max_new_tokens=NEW)
  assert (ref["a.generated"] == ref["a.generated_native"]).all()
  np.testing.assert_array_equal(full[0], ref["a.generated"][0])
  np.testing.assert_array_equal(full[1], ref["v.generated"][0])
  # Budgeted: the oracle prefilled the selector's kept tokens at their
  # positions and decoded at the uncompressed length + step.
  cut = model.generate(**batch, max_new_tokens=NEW, budget=BUDGET)
  for r, name in enumerate(("a", "v")):
    np.testing.assert_array_equal(
        cut[r], ov["kept_ref"][f"selector_{name}.generated"][0])


def test_fastv_reads_layer_attention_with_qk_norm(ov):
  """FastV's signal on OV (q/k norm, 1-D RoPE) equals the oracle's layer-1
  attention received; DART keeps exactly k per row."""
  model, batch = ov["model"], ov["batch"]
  visual = np.isin(batch["input_ids"], (IMAGE, VIDEO))
  fastv = model.forward(**batch, budget=BUDGET, method="fastv")
  n = ov["lengths"][0]
  ours = fastv.scores[0, :n][visual[0, :n]]
  ref = ov["ref"]["a.attn_received"][0][visual[0, :n]]
  assert _err(ours, ref) <= TOL
  for out in (fastv, model.forward(**batch, budget=BUDGET, method="dart")):
    for r in range(2):
      keep = out.keep_index[r][out.keep_index[r] >= 0]
      assert visual[r][keep].sum() == max(1, int(visual[r].sum() * BUDGET))


def test_visionzip_reads_the_class_token_attention(ov):
  """VisionZip on OV: dominance = the last block's class-token attention
  per merged token (the oracle's, per image / frame)."""
  model, batch = ov["model"], ov["batch"]
  out = model.forward(**batch, budget=BUDGET, method="visionzip")
  visual = np.isin(batch["input_ids"], (IMAGE, VIDEO))
  for r, name in enumerate(("a", "v")):
    n = ov["lengths"][r]
    ours = out.scores[r, :n][visual[r, :n]]
    ref = ov["ref"][f"{name}.cls_attn"]
    # The tiny tower's class attention is nearly uniform: compare far below
    # the spread between tokens.
    assert _err(ours, ref) <= 1e-3 * float(ref.std())
    keep = out.keep_index[r][out.keep_index[r] >= 0]
    assert visual[r][keep].sum() == max(1, int(visual[r].sum() * BUDGET))


def test_scorer_export_loads_in_the_reference_class(ov, tmp_path):
  """The exported scorer is spelled ``model.visual.importance_scorer.*``
  for OV; merged into the base, the reference's class (lmms-engine's with
  the selector's scorer at ``model.visual.importance_scorer``) loads it
  with no missing or unexpected keys and the same values."""
  file = str(tmp_path / "scorer.safetensors")
  scorer_export.export(str(ov["out"] / "conv_vs"), file, "float32")
  names = sorted(load_file(file))
  assert names == sorted("model." + k for k in ov["scorer"])
  with open(ov["out"] / "kept" / "selector_loading.json") as f:
    info = json.load(f)
  assert info["missing_keys"] == [] and info["unexpected_keys"] == []
  with np.load(ov["out"] / "kept" / "selector_scorer.npz") as loaded:
    assert sorted(loaded) == sorted(k[len("visual.importance_scorer."):]
                                    for k in ov["scorer"])
    for k, v in ov["scorer"].items():
      np.testing.assert_array_equal(
          loaded[k[len("visual.importance_scorer."):]], v)
  with open(ov["out"] / "merged" / "model.safetensors.index.json") as f:
    weight_map = json.load(f)["weight_map"]
  assert sorted(k for k in weight_map if "importance_scorer" in k) == names


def _ov_packed_batch(seed: int, rows: int = 8, length: int = 64,
                     patches: int = 128) -> dict:
  """Packed OV training rows of two samples each (image + question +
  supervised answer), 1-D positions counted per sample."""
  rng = np.random.default_rng(seed)
  grids = ([1, 4, 6], [1, 6, 10], [1, 4, 4])
  out = dict(input_ids=np.zeros((rows, length), np.int32),
             labels=np.full((rows, length), -100, np.int32),
             segment_ids=np.zeros((rows, length), np.int32),
             position_ids=np.ones((3, rows, length), np.int32),
             pixel_values=np.zeros((rows, patches, 588), np.float32),
             image_grid_thw=np.zeros((rows, 2, 3), np.int32),
             num_images=np.full(rows, 2, np.int32))
  for r in range(rows):
    t = p = 0
    for s in range(2):
      g = grids[rng.integers(len(grids))]
      answer = list(rng.integers(3, 900, 4))
      sample = [1, 2] + ov_tiny.block(g) + [5, 6] + answer
      n = len(sample)
      out["input_ids"][r, t:t + n] = sample
      out["labels"][r, t + n - 4:t + n] = answer
      out["segment_ids"][r, t:t + n] = s + 1
      out["position_ids"][:, r, t:t + n] = np.arange(n)
      out["pixel_values"][r, p:p + int(np.prod(g))] = ov_tiny.pixels(rng, g)
      out["image_grid_thw"][r, s] = g
      t, p = t + n, p + int(np.prod(g))
  return out


class _OVData:
  def __init__(self):
    self.index = 0

  def __iter__(self):
    return self

  def __next__(self):
    self.index += 1
    return _ov_packed_batch(self.index)

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def test_train_per_sample_pooling_then_export_and_reload(ov, tmp_path):
  """The tiny OV recipe (configs/llava_ov15_tiny.py, per-sample pooling)
  trains the scorer of the converted checkpoint a few steps; the exported
  scorer is spelled for OV, merges into the base, and the merged dir runs
  at a budget with exactly the trained scorer."""
  from configs import llava_ov15_tiny
  from vselect_jax.loading import load_model
  from vselect_jax.training import loop
  config = llava_ov15_tiny.get_config()
  config.model_path = str(ov["out"] / "conv_vs")
  out = loop.train(config, str(tmp_path / "run"), lambda c, i, n: _OVData(),
                   model=load_model(config.model_path), progress=False)
  assert out["step"] == config.total_steps
  assert np.isfinite(out["metrics"]["loss"])
  file = str(tmp_path / "run" / "scorer.safetensors")
  trained = load_file(file)
  assert sorted(trained) == sorted("model." + k for k in ov["scorer"])
  assert any(np.abs(trained["model." + k] - v).max() > 1e-3
             for k, v in ov["scorer"].items())
  scorer_export.merge_into(file, ov["hf"], str(tmp_path / "merged"),
                           "float32")
  merged = vselect_jax.from_pretrained(str(tmp_path / "merged"))
  w = np.asarray(merged.module.visual.importance_scorer.q_proj.kernel
                 .get_value())
  np.testing.assert_array_equal(
      w.T, trained["model.visual.importance_scorer.q_proj.weight"])
  res = merged.forward(**ov["batch"], budget=BUDGET)
  assert res.keep_index.shape[0] == 2

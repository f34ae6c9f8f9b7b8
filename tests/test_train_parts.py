"""The reference's trainable-part switches: which parameters train, a
backbone step lowers CE, frozen parts stay put, and a backbone run is
written back as an HF checkpoint that transformers loads with our logits."""
import jax
import numpy as np
import pytest
import torch
from flax import nnx

import vselect_jax
from tests import hf_tiny
from tests.test_train_loop import _config
from tests.train_utils import FakeData, packed_batch
from vselect_jax.host import train_batch as batch_lib
from vselect_jax.loading import load_model
from vselect_jax.training import loop, optim
from vselect_jax.training import step as step_lib


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("parts") / "hf"
  hf_tiny.make_model("tied_w56", seed=5).save_pretrained(path)
  return str(path)


def _names(state):
  return {"/".join(map(str, p)) for p, _ in state.flat_state()}


def test_filters_follow_the_flags(model_dir):
  m = vselect_jax.from_pretrained(model_dir).module
  cases = {
      step_lib.Parts(): lambda n: "importance_scorer" in n,
      step_lib.Parts(tune_mm_llm=True, tune_compressor=False):
          lambda n: n.startswith("model/") or n.startswith("lm_head"),
      step_lib.Parts(tune_mm_mlp=True, tune_compressor=False):
          lambda n: "/merger/" in n,
      step_lib.Parts(tune_mm_vision=True, tune_compressor=False):
          lambda n: n.startswith("visual/") and "/merger/" not in n
          and "importance_scorer" not in n and "block_scorer" not in n,
      step_lib.Parts(scorer="block_scorer"): lambda n: "block_scorer" in n,
  }
  everything = _names(nnx.state(m, nnx.Param))
  for parts, expect in cases.items():
    _, trainable, _ = step_lib.split_model(m, parts)
    names = _names(trainable)
    assert names == {n for n in everything if expect(n)}, parts
  with pytest.raises(ValueError, match="nothing to train"):
    step_lib.Parts(tune_compressor=False).filter()
  with pytest.raises(ValueError, match="unknown train_parts"):
    step_lib.Parts.from_config({"train_parts": {"tune_llm": True}})


def test_packed_rows_match_hf_sample_by_sample(model_dir):
  """The backbone-training forward on packed rows (several samples and
  images per row, grids that do and don't divide the window) gives each
  sample the logits HF gives it alone."""
  from transformers import Qwen2_5_VLForConditionalGeneration

  from vselect_jax.forward import forward
  model = vselect_jax.from_pretrained(model_dir)
  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(
      model_dir, torch_dtype=torch.float32).eval()
  raw = packed_batch(7, rows=2)
  batch = batch_lib.prepare_train_batch(model.config, raw)
  ours = np.asarray(model.module.head(forward(model.module, batch).hidden))
  for r in range(2):
    offset = 0
    for s in range(int(raw["num_images"][r])):
      grid = raw["image_grid_thw"][r, s]
      n = int(np.prod(grid))
      tokens = raw["segment_ids"][r] == s + 1
      ref = hf_tiny.hf_logits(
          hf, input_ids=raw["input_ids"][r][tokens][None].astype(np.int64),
          pixel_values=raw["pixel_values"][r, offset:offset + n],
          image_grid_thw=grid[None].astype(np.int64))[0]
      offset += n
      np.testing.assert_allclose(ours[r][tokens], ref, atol=2e-5,
                                 err_msg=f"row {r} sample {s}")


def test_backbone_step_lowers_ce_and_keeps_the_rest(model_dir):
  model = vselect_jax.from_pretrained(model_dir)
  parts = step_lib.Parts(tune_mm_llm=True, tune_mm_mlp=True,
                         tune_compressor=False)
  tx = optim.make_optimizer(3e-3, 20, warmup_ratio=0.0)
  graphdef, state = step_lib.init_state(model.module, tx, parts)
  frozen_before = {n: np.asarray(v.get_value())
                   for n, v in state.frozen.flat_state()}
  fn = jax.jit(step_lib.make_train_step(
      graphdef, tx, optim.reg_weight_schedule(0.1, 2.0, 20), parts=parts))
  host = batch_lib.prepare_train_batch(model.config, packed_batch(3))
  k = loop.rows_k(host, 0.2)
  losses = []
  for _ in range(8):
    state, m = fn(state, host, k)
    losses.append(float(m["ce"]))
  assert losses[-1] < losses[0] - 0.05, losses
  for n, v in state.frozen.flat_state():
    np.testing.assert_array_equal(np.asarray(v.get_value()),
                                  frozen_before[n], err_msg=str(n))
  assert not any("importance_scorer" in "/".join(map(str, p))
                 for p, _ in state.trainable.flat_state())


def test_backbone_run_exports_an_hf_checkpoint(model_dir, tmp_path):
  c = _config(total=2, every=2, mesh={"data": 1, "fsdp": -1, "tensor": 1})
  c.model_path = model_dir
  c.train_parts = {"tune_mm_llm": True, "tune_mm_vision": True,
                   "tune_mm_mlp": True, "tune_compressor": False}
  out = loop.train(c, str(tmp_path / "w"), lambda c_, i, n: FakeData(1, i),
                   model=load_model(model_dir),
                   progress=False)
  hf_dir = tmp_path / "w" / "hf"
  assert not (tmp_path / "w" / "scorer.safetensors").exists()
  from transformers import Qwen2_5_VLForConditionalGeneration
  hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(
      hf_dir, torch_dtype=torch.float32).eval()
  trained = nnx.merge(*_graph_and_states(out["state"], model_dir))
  ours = vselect_jax.VisionLanguageModel(
      vselect_jax.from_pretrained(model_dir).config, trained)
  rng = np.random.default_rng(0)
  grid = [1, 6, 10]
  ids = np.array([[1, 2] + hf_tiny.block(hf_tiny.IMAGE, grid) + [3, 4]])
  pix = hf_tiny.pixels(rng, grid)
  ref = hf_tiny.hf_logits(hf, input_ids=ids, pixel_values=pix,
                          image_grid_thw=[grid])
  np.testing.assert_allclose(
      ours.forward(ids, pixel_values=pix, image_grid_thw=[grid]).logits, ref,
      atol=1e-4)
  # ... and the trained weights differ from the start.
  start = vselect_jax.from_pretrained(model_dir).forward(
      ids, pixel_values=pix, image_grid_thw=[grid]).logits
  assert np.abs(start - ref).max() > 1e-3


def _graph_and_states(state, model_dir):
  parts = step_lib.Parts(tune_mm_llm=True, tune_mm_vision=True,
                         tune_mm_mlp=True, tune_compressor=False)
  graphdef, _, _ = step_lib.split_model(
      vselect_jax.from_pretrained(model_dir).module, parts)
  return graphdef, state.trainable, state.frozen

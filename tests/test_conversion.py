"""Conversion CLI: sharded files, both key layouts, refusals, atomic output,
scorer tensors kept; plus bucketing (one compile per bucket) and bf16."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vselect_jax
from conversion import convert_hf
from vselect_jax.checkpoint.safetensors_io import checkpoint_files, iter_tensors
from tests import hf_tiny
from tests.hf_tiny import IMAGE


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  model = hf_tiny.make_model("tied_w56", seed=7)
  path = tmp_path_factory.mktemp("conv") / "hf"
  model.save_pretrained(path)
  return model, path


def _tensors(path):
  return {n: load() for f in checkpoint_files(str(path))
          for n, _, load in iter_tensors(f)}


def _write_variant(src, dst, rename=None, drop=(), add=None, shard=False):
  """Copies an HF dir with edited tensors (optionally sharded in two)."""
  os.makedirs(dst)
  for f in os.listdir(src):
    if f.endswith(".json") and "index" not in f:
      with open(os.path.join(src, f)) as a, open(os.path.join(dst, f), "w") as b:
        b.write(a.read())
  tensors = {}
  for name, value in _tensors(src).items():
    if name in drop:
      continue
    tensors[rename(name) if rename else name] = torch.from_numpy(value.copy())
  tensors.update(add or {})
  if not shard:
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    return
  names = sorted(tensors)
  halves = {"model-00001-of-00002.safetensors": names[::2],
            "model-00002-of-00002.safetensors": names[1::2]}
  weight_map = {}
  for file, part in halves.items():
    save_file({n: tensors[n] for n in part}, os.path.join(dst, file))
    weight_map.update({n: file for n in part})
  with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)


def _logits(model, seed=0):
  rng = np.random.default_rng(seed)
  grid = [1, 6, 10]
  ids = np.array([[1] + hf_tiny.block(IMAGE, grid) + [2]])
  return model.forward(ids, pixel_values=hf_tiny.pixels(rng, grid),
                       image_grid_thw=[grid]).logits


def test_sharded_new_layout_equals_hub_layout(hf_dir, tmp_path):
  _, src = hf_dir

  def new_names(n):
    if n.startswith("visual."):
      return "model." + n
    if n.startswith("model."):
      return "model.language_model." + n[len("model."):]
    return n

  _write_variant(src, tmp_path / "v5_hf", rename=new_names, shard=True)
  for name, s in (("hub", src), ("v5", tmp_path / "v5_hf")):
    assert convert_hf.main(["--src", str(s), "--dst", str(tmp_path / name),
                            "--dtype", "float32", "--no-progress"]) == 0
  a = _logits(vselect_jax.from_pretrained(str(tmp_path / "hub")))
  b = _logits(vselect_jax.from_pretrained(str(tmp_path / "v5")))
  np.testing.assert_array_equal(a, b)
  for f in ("tokenizer_config.json", "generation_config.json"):
    if os.path.exists(src / f):
      assert os.path.exists(tmp_path / "hub" / f)


@pytest.mark.parametrize("edit,message", [
    (dict(drop=("model.layers.1.mlp.up_proj.weight",)),
     "missing \\(1\\): model.layers.1.mlp.up_proj.weight"),
    (dict(add={"model.layers.9.extra.weight": torch.zeros(3)}),
     "unexpected \\(1\\): model.layers.9.extra.weight"),
    (dict(rename=lambda n: n, add={
        "visual.merger.mlp.2.bias": torch.zeros(5)}),
     "wrong shape \\(1\\): visual.merger.mlp.2.bias"),
])
def test_bad_checkpoints_are_refused_and_nothing_is_written(
    hf_dir, tmp_path, edit, message, capsys):
  _, src = hf_dir
  _write_variant(src, tmp_path / "bad", **edit)
  dst = tmp_path / "out"
  assert convert_hf.main(["--src", str(tmp_path / "bad"), "--dst", str(dst),
                          "--no-progress"]) == 1
  err = capsys.readouterr().err
  assert "does not match" in err
  import re
  assert re.search(message, err), err
  assert not dst.exists()
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".convert")]


def test_missing_file_and_unknown_hub_id_fail_clearly(tmp_path, capsys):
  os.makedirs(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text("{}")
  assert convert_hf.main(["--src", str(tmp_path / "empty"), "--dst",
                          str(tmp_path / "o")]) == 1
  assert "vocab_size" in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):
    vselect_jax.from_pretrained("no-such-org/no-such-model-xyz")


def test_scorer_tensors_are_kept(hf_dir, tmp_path):
  _, src = hf_dir
  d = 64  # text hidden size of tied_w56
  g = torch.Generator().manual_seed(0)
  scorer = {f"visual.importance_scorer.{p}.{w}":
            torch.randn(*( (d // 2, d) if w == "weight" else (d // 2,)),
                        generator=g)
            for p in ("q_proj", "k_proj") for w in ("weight", "bias")}
  _write_variant(src, tmp_path / "vs", add=scorer)
  convert_hf.main(["--src", str(tmp_path / "vs"), "--dst",
                   str(tmp_path / "vsj"), "--dtype", "float32",
                   "--no-progress"])
  marker = json.loads((tmp_path / "vsj" / "vselect_jax.json").read_text())
  assert marker["has_scorer"]
  m = vselect_jax.from_pretrained(str(tmp_path / "vsj"))
  kernel = np.asarray(m.module.visual.importance_scorer.q_proj.kernel.get_value())
  np.testing.assert_array_equal(
      kernel, scorer["visual.importance_scorer.q_proj.weight"].numpy().T)


def test_one_compile_per_bucket(hf_dir):
  _, src = hf_dir
  m = vselect_jax.from_pretrained(str(src))
  rng = np.random.default_rng(0)
  for grid in ([1, 6, 10], [1, 8, 6], [1, 4, 12]):  # 60, 48, 48 patches
    ids = np.array([[1, 2] + hf_tiny.block(IMAGE, grid) + [3]])
    m.forward(ids, pixel_values=hf_tiny.pixels(rng, grid),
              image_grid_thw=[grid])
  assert m.num_compiles == 1
  m.forward(np.array([[1, 2, 3]]))  # text only: its own program
  assert m.num_compiles == 2


def test_bfloat16_error_is_within_hfs_own_bf16_error(hf_dir, tmp_path):
  """Tolerance: our bf16 logits may deviate from the float32 truth at most
  twice as much as HF's own bf16 model does (plus a small floor)."""
  model, src = hf_dir
  rng = np.random.default_rng(1)
  grid = [1, 10, 14]
  ids = np.array([[1] + hf_tiny.block(IMAGE, grid) + [2, 3]])
  pix = hf_tiny.pixels(rng, grid)
  inputs = dict(input_ids=ids, pixel_values=pix, image_grid_thw=[grid])
  truth = hf_tiny.hf_logits(model, **inputs)
  hf_bf16 = hf_tiny.hf_logits(model.to(torch.bfloat16), **inputs)
  model.float()
  ours = vselect_jax.from_pretrained(str(src), dtype="bfloat16").forward(
      **inputs).logits
  hf_err = np.abs(hf_bf16 - truth).max()
  our_err = np.abs(ours - truth).max()
  assert our_err <= 2 * hf_err + 1e-2, (our_err, hf_err)


@pytest.mark.parametrize("kwargs,message", [
    (dict(input_ids=[[1, IMAGE, 2]]), "no image pixels"),
    (dict(input_ids=[[1, 2]], attention_mask=[[1]]), "does not match"),
    (dict(input_ids=[[1] + [IMAGE] * 15 + [2]], image_grid_thw=[[1, 6, 10]],
          pixel_values=np.zeros((59, 1176))), "implies 60"),
    (dict(input_ids=[[1] + [IMAGE] * 14 + [2]], image_grid_thw=[[1, 6, 10]],
          pixel_values=np.zeros((60, 1176))), "15 merged tokens"),
    (dict(input_ids=[[1] + [IMAGE] * 15 + [2]], image_grid_thw=[[1, 6, 10]],
          pixel_values=np.zeros((60, 100))), "1176"),
    (dict(input_ids=[[0, 0]], attention_mask=[[0, 0]]), "all padding"),
])
def test_bad_inputs_are_named(hf_dir, kwargs, message):
  _, src = hf_dir
  m = vselect_jax.from_pretrained(str(src))
  with pytest.raises(ValueError, match=message):
    m.forward(**kwargs)

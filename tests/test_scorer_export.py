"""Scorer export to PyTorch layout, import back, and merge into an HF
checkpoint that PyTorch loads."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vselect_jax
from vselect_jax.checkpoint import scorer_export
from conversion import convert_hf, export_scorer
from tests import hf_tiny
from tests.test_conversion import _write_variant

D = 64  # text width of the tied_w56 tiny config


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """``hf``: a base checkpoint; ``jax``: the converted checkpoint of that
  base plus a random scorer (as a released VisionSelector checkpoint)."""
  root = tmp_path_factory.mktemp("exp")
  hf_tiny.make_model("tied_w56", seed=5).save_pretrained(root / "hf")
  g = torch.Generator().manual_seed(0)
  scorer = {f"visual.importance_scorer.{p}.{w}":
            torch.randn(*((D // 2, D) if w == "weight" else (D // 2,)),
                        generator=g)
            for p in ("q_proj", "k_proj") for w in ("weight", "bias")}
  _write_variant(root / "hf", root / "hf_vs", add=scorer)
  convert_hf.main(["--src", str(root / "hf_vs"), "--dst", str(root / "jax"),
                   "--dtype", "float32", "--no-progress"])
  return root


def test_export_import_export_is_byte_identical(converted, tmp_path):
  a = tmp_path / "a.safetensors"
  assert export_scorer.main(["--src", str(converted / "jax"), "--dst",
                             str(a), "--dtype", "float32"]) == 0
  t = load_file(a)
  assert sorted(t) == [f"visual.importance_scorer.{p}.{w}"
                       for p in ("k_proj", "q_proj") for w in ("bias",
                                                                "weight")]
  assert t["visual.importance_scorer.q_proj.weight"].shape == (D // 2, D)
  # Import: merge into the HF dir, convert, export again.
  export_scorer.main(["--src", str(converted / "jax"), "--merge-into",
                      str(converted / "hf"), "--dst", str(tmp_path / "m"),
                      "--dtype", "float32"])
  convert_hf.main(["--src", str(tmp_path / "m"), "--dst", str(tmp_path / "j"),
                   "--dtype", "float32", "--no-progress"])
  b = tmp_path / "b.safetensors"
  export_scorer.main(["--src", str(tmp_path / "j"), "--dst", str(b),
                      "--dtype", "float32"])
  assert a.read_bytes() == b.read_bytes()


def test_default_dtype_is_bfloat16(converted, tmp_path):
  export_scorer.main(["--src", str(converted / "jax"), "--dst",
                      str(tmp_path / "s.safetensors")])
  t = load_file(tmp_path / "s.safetensors")
  assert all(v.dtype == torch.bfloat16 for v in t.values())


def test_torch_linears_give_the_same_scores(converted, tmp_path):
  model = vselect_jax.from_pretrained(str(converted / "jax"))
  path = tmp_path / "s.safetensors"
  export_scorer.main(["--src", str(converted / "jax"), "--dst", str(path),
                      "--dtype", "float32"])
  t = load_file(path)
  q, k = torch.nn.Linear(D, D // 2), torch.nn.Linear(D, D // 2)
  for name, lin in (("q_proj", q), ("k_proj", k)):
    lin.weight.data = t[f"visual.importance_scorer.{name}.weight"]
    lin.bias.data = t[f"visual.importance_scorer.{name}.bias"]
  h = np.random.default_rng(0).standard_normal((1, 37, D)).astype(np.float32)
  with torch.no_grad():
    hq, hk = q(torch.tensor(h)), k(torch.tensor(h))
    # The reference formula: mean over keys of q k^T / sqrt(d).
    ref = (hq @ hk.transpose(1, 2) / np.sqrt(D // 2)).mean(-1).numpy()
  ours = np.asarray(model.module.visual.importance_scorer(
      h, np.ones((1, 37), bool)))
  np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_merged_checkpoint_loads_in_pytorch(converted, tmp_path):
  dst = tmp_path / "merged"
  export_scorer.main(["--src", str(converted / "jax"), "--merge-into",
                      str(converted / "hf"), "--dst", str(dst)])
  from transformers import Qwen2_5_VLForConditionalGeneration
  # Plain transformers: the backbone loads completely.
  _, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
      dst, output_loading_info=True)
  assert not info["missing_keys"]

  # The VisionSelector model class: the visual tower owns an
  # `importance_scorer` with q_proj / k_proj (as the original code does).
  class Scorer(torch.nn.Module):
    def __init__(self):
      super().__init__()
      self.q_proj = torch.nn.Linear(D, D // 2)
      self.k_proj = torch.nn.Linear(D, D // 2)

  class Selector(Qwen2_5_VLForConditionalGeneration):
    def __init__(self, config):
      super().__init__(config)
      self.model.visual.importance_scorer = Scorer()

  # The original code pins transformers 4.50, whose module names are the hub
  # names. Under 5.x a user-defined subclass is "custom code" and must opt in
  # to the hub-name renaming the base class gets.
  from transformers import conversion_mapping as cm
  if cm.get_checkpoint_conversion_mapping("Selector") is None:
    cm.register_checkpoint_conversion_mapping(
        "Selector", cm.get_checkpoint_conversion_mapping(
            "Qwen2_5_VLForConditionalGeneration"))
  model, info = Selector.from_pretrained(dst, output_loading_info=True)
  assert not info["missing_keys"], info["missing_keys"]
  assert not [k for k in info["unexpected_keys"] if "importance" in k]
  exported = load_file(os.path.join(dst, scorer_export.SCORER_FILE))
  torch.testing.assert_close(
      model.model.visual.importance_scorer.q_proj.weight.detach(),
      exported["visual.importance_scorer.q_proj.weight"].float())


def test_export_errors(tmp_path, capsys):
  assert export_scorer.main(["--src", str(tmp_path / "nope"), "--dst",
                             str(tmp_path / "x.safetensors")]) == 1
  assert "no Orbax checkpoint" in capsys.readouterr().err


def test_merge_from_the_scorer_file_train_py_writes(converted, tmp_path):
  a = tmp_path / "scorer.safetensors"
  export_scorer.main(["--src", str(converted / "jax"), "--dst", str(a),
                      "--dtype", "float32"])
  assert export_scorer.main(["--src", str(a), "--merge-into",
                             str(converted / "hf"), "--dst",
                             str(tmp_path / "m"), "--dtype", "float32"]) == 0
  want = scorer_export.load_scorer(str(converted / "jax"))
  got = vselect_jax.from_pretrained(str(tmp_path / "m"))
  scorer = got.module.visual.importance_scorer
  np.testing.assert_array_equal(
      np.asarray(scorer.q_proj.kernel.get_value()).T,
      want["visual.importance_scorer.q_proj.weight"])
  np.testing.assert_array_equal(
      np.asarray(scorer.k_proj.bias.get_value()),
      want["visual.importance_scorer.k_proj.bias"])
  # A safetensors file that is not a scorer is refused by name.
  from vselect_jax.checkpoint.safetensors_io import save_file
  bad = tmp_path / "bad.safetensors"
  save_file({"visual.importance_scorer.q_proj.weight":
             np.zeros((2, 2), np.float32)}, str(bad))
  with pytest.raises(KeyError, match="expected the scorer tensors"):
    scorer_export.load_scorer(str(bad))


def test_existing_dst_is_never_replaced_silently(converted, tmp_path, capsys):
  dst = tmp_path / "model.safetensors"
  dst.write_bytes(b"the base model's weights")
  args = ["--src", str(converted / "jax"), "--dst", str(dst)]
  assert export_scorer.main(args) == 1
  assert "pass --overwrite" in capsys.readouterr().err
  assert dst.read_bytes() == b"the base model's weights"
  assert export_scorer.main(args + ["--overwrite"]) == 0
  assert sorted(load_file(dst)) == sorted(
      scorer_export.load_scorer(str(converted / "jax")))
  # A directory is no file destination, --overwrite or not: a clear error.
  for extra in ([], ["--overwrite"]):
    assert export_scorer.main(["--src", str(converted / "jax"), "--dst",
                               str(tmp_path)] + extra) == 1
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err
  assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_merge_copies_the_base_unless_link(converted, tmp_path):
  base = converted / "hf"
  copy, linked = tmp_path / "copy", tmp_path / "linked"
  for dst, extra in ((copy, []), (linked, ["--link"])):
    assert export_scorer.main(["--src", str(converted / "jax"),
                               "--merge-into", str(base), "--dst", str(dst)]
                              + extra) == 0
  for name in os.listdir(base):
    target = scorer_export.BASE_SHARD if name == "model.safetensors" else name
    assert not os.path.samefile(base / name, copy / target), name
    # --link shares only the weight shards, never configs or tokenizer.
    assert os.path.samefile(base / name, linked / target) == (
        name.endswith(".safetensors")), name
  before = (base / "config.json").read_text()
  with open(linked / "config.json", "a") as f:
    f.write("\n")
  assert (base / "config.json").read_text() == before
  # The merged directory exists now: refused, then replaced on request.
  args = ["--src", str(converted / "jax"), "--merge-into", str(base),
          "--dst", str(copy)]
  assert export_scorer.main(args) == 1
  assert export_scorer.main(args + ["--overwrite"]) == 0
  assert export_scorer.main(["--src", str(converted / "jax"), "--merge-into",
                             str(base), "--dst", str(base),
                             "--overwrite"]) == 1


def test_merge_checks_the_scorer_width_first(converted, tmp_path, capsys):
  from vselect_jax.checkpoint.safetensors_io import save_file
  narrow = tmp_path / "narrow.safetensors"
  save_file({f"{scorer_export.PREFIX}{p}.{w}": np.zeros(
      (16, 32) if w == "weight" else (16,), np.float32)
      for p in ("q_proj", "k_proj") for w in ("weight", "bias")}, str(narrow))
  dst = tmp_path / "m"
  assert export_scorer.main(["--src", str(narrow), "--merge-into",
                             str(converted / "hf"), "--dst", str(dst)]) == 1
  err = capsys.readouterr().err
  assert f"q_proj.weight: expected ({D // 2}, {D}), got (16, 32)" in err
  assert not dst.exists() and os.listdir(tmp_path) == ["narrow.safetensors"]

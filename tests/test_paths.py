"""The path layer on a non-local filesystem: a fake ``gs://`` bucket (fsspec's
in-memory filesystem behind epath's gs:// backend), with plain ``open`` /
``os.makedirs`` / ... on a ``gs:`` path turned into test failures. Covers the
layer itself, a training run's metrics, TensorBoard events and exports into a
bucket workdir, ``convert_hf --dst gs://`` read back, and data registries
(JSONL + images) read from a bucket, also into ArrayRecord shards.

Not covered offline: Orbax checkpoints and ArrayRecord shard bytes on gs://
(tensorstore and riegeli talk to GCS with their own C++ clients, which this
fake cannot stand in for); those get the URL as given.
"""
import builtins
import importlib
import io
import json
import os

import fsspec
import numpy as np
import pytest
from etils.epath import backend as epath_backend
from etils.epath import gpath
from fsspec.implementations.memory import MemoryFileSystem

from vselect_jax import paths
from vselect_jax.loading import load_model


class FakeBucket(MemoryFileSystem):
  """``gs://bucket/x`` kept in memory (its own store, not memory://'s)."""
  protocol = ("gs", "gcs")
  store: dict = {}
  pseudo_dirs = [""]

  @classmethod
  def _strip_protocol(cls, path):
    path = fsspec.utils.stringify_path(path)
    for p in ("gs://", "gcs://"):
      if path.startswith(p):
        path = path[len(p):]
    path = path.strip("/")
    return "/" + path if path else ""


def _refuse_gs(fn, name):
  def guarded(path, *args, **kwargs):
    if isinstance(path, (str, os.PathLike)) and "gs:" in str(
        os.fspath(path)):
      raise AssertionError(f"plain {name}({os.fspath(path)!r}) on a bucket "
                           "path: it must go through vselect_jax.paths")
    return fn(path, *args, **kwargs)
  return guarded


@pytest.fixture
def bucket(monkeypatch, tmp_path):
  """A fresh fake gs:// bucket; local IO on ``gs:`` strings fails."""
  FakeBucket.store.clear()
  FakeBucket.pseudo_dirs[:] = [""]
  registered = importlib.import_module("fsspec.registry")._registry
  for protocol in ("gs", "gcs"):
    monkeypatch.setitem(registered, protocol, FakeBucket)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  paths._require_backend.cache_clear()
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)
  monkeypatch.chdir(tmp_path)  # a local "gs:" folder would appear here
  for mod, name in ((builtins, "open"), (io, "open"), (os, "open"),
                    (os, "makedirs"), (os, "mkdir"), (os, "listdir"),
                    (os, "replace"), (os, "rename"), (os, "stat")):
    monkeypatch.setattr(mod, name, _refuse_gs(getattr(mod, name), name))
  yield FakeBucket.store
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  paths._require_backend.cache_clear()
  assert not [p for p in os.listdir(tmp_path) if p.startswith("gs")]


def test_layer_on_a_bucket(bucket, monkeypatch):
  root = "gs://bucket/run"
  assert paths.join(root, "x", "y.txt") == "gs://bucket/run/x/y.txt"
  assert paths.absolute(root) == root and paths.dirname(root) == "gs://bucket"
  assert paths.resolve("gs://bucket/run/a/../c") == "gs://bucket/run/c"
  paths.makedirs(paths.join(root, "sub"))
  paths.write_text(paths.join(root, "a.txt"), "héllo\n")
  paths.write_bytes(paths.join(root, "sub", "b.bin"), b"\x00\x01")
  assert "/bucket/run/a.txt" in bucket
  assert paths.read_text(paths.join(root, "a.txt")) == "héllo\n"
  assert paths.listdir(root) == ["a.txt", "sub"]
  assert paths.isdir(paths.join(root, "sub"))
  assert paths.isfile(paths.join(root, "a.txt"))
  assert not paths.isfile(paths.join(root, "sub"))
  assert not paths.exists(paths.join(root, "nope"))
  # Appends survive a reopen (a resumed run) although the store rewrites.
  for line in ("1", "2"):
    with paths.open_append(paths.join(root, "log.jsonl")) as f:
      f.write(line + "\n")
      f.flush()
      assert paths.read_text(paths.join(root, "log.jsonl")).endswith(
          line + "\n")  # durable at flush, before close
  assert paths.read_text(paths.join(root, "log.jsonl")) == "1\n2\n"
  # Round trip down and up; marker files go last.
  with paths.local_copy(root) as local:
    assert open(os.path.join(local, "sub", "b.bin"), "rb").read() == b"\x00\x01"
    order = []
    real_copy = paths.copy
    monkeypatch.setattr(paths, "copy", lambda s, d: (
        order.append(os.path.basename(d)), real_copy(s, d)))
    paths.copytree(local, "gs://bucket/copy", last=("a.txt",))
  assert order[-1] == "a.txt" and set(order) == {"a.txt", "b.bin",
                                                  "log.jsonl"}
  assert paths.read_bytes("gs://bucket/copy/sub/b.bin") == b"\x00\x01"
  with paths.local_target("gs://bucket/out.bin") as tmp:
    with open(tmp, "wb") as f:
      f.write(b"up")
  assert paths.read_bytes("gs://bucket/out.bin") == b"up"


def test_checkpoint_directory_stays_on_the_bucket(bucket, monkeypatch):
  from orbax.checkpoint._src.path import gcs_utils
  from vselect_jax.training.checkpointing import Checkpointer
  # Orbax asks the real GCS API (google-cloud-storage) whether the bucket
  # has a hierarchical namespace before listing steps.
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled",
                      lambda path: False)
  monkeypatch.setattr(paths, "_has_module", lambda name: False)
  with pytest.raises(ImportError, match=r"google-cloud-storage.*\[gcs\]"):
    Checkpointer("gs://bucket/run")
  monkeypatch.setattr(paths, "_has_module", lambda name: True)
  ckpt = Checkpointer("gs://bucket/run", async_save=False)
  assert ckpt.directory == "gs://bucket/run/checkpoints"
  assert paths.isdir(ckpt.directory) and ckpt.latest_step() is None
  ckpt.manager.close()


def test_missing_filesystem_and_unknown_scheme_are_named(monkeypatch):
  def no_gcsfs(protocol):
    raise ImportError("Install gcsfs to access Google Storage")
  monkeypatch.setattr(fsspec, "get_filesystem_class", no_gcsfs)
  monkeypatch.setattr(paths, "_epath_uses_tf", lambda: False)
  paths._require_backend.cache_clear()  # forget earlier tests' fake bucket
  with pytest.raises(ImportError, match=r"gcsfs.*vselect-jax\[gcs\]"):
    paths.exists("gs://bucket/x")
  with pytest.raises(ValueError, match="unsupported path scheme memory://"):
    paths.open("memory://x")


def test_training_writes_metrics_and_exports_into_a_bucket(
    bucket, tmp_path_factory, monkeypatch):
  import vselect_jax
  from vselect_jax.checkpoint import hf_export
  from vselect_jax.checkpoint.safetensors_io import iter_tensors
  from flax import nnx
  from tests import hf_tiny
  from tests.test_train_loop import _config
  from tests.train_utils import packed_batch
  from vselect_jax.training import checkpointing, loop
  model_dir = str(tmp_path_factory.mktemp("pm") / "hf")
  hf_tiny.make_model("tied_w56", seed=4).save_pretrained(model_dir)
  ckpt_dirs = []
  local_ckpt = str(tmp_path_factory.mktemp("ckpt"))

  class LocalCheckpointer(checkpointing.Checkpointer):
    # Orbax writes through tensorstore's own GCS client, which the fake
    # bucket cannot serve: checkpoints go to a local folder here.
    def __init__(self, workdir, **kw):
      ckpt_dirs.append(workdir)
      super().__init__(local_ckpt, **kw)

  monkeypatch.setattr(loop, "Checkpointer", LocalCheckpointer)
  wd = "gs://bucket/runs/one"
  out = loop.train(_config(total=1, every=1,
                           mesh={"data": 1, "fsdp": -1, "tensor": 1}),
                   wd, lambda c, i, n: iter([packed_batch(0, rows=8)]),
                   model=load_model(model_dir),
                   progress=False)
  assert ckpt_dirs == [wd]
  lines = paths.read_text(paths.join(wd, "metrics.jsonl")).splitlines()
  assert [json.loads(l)["step"] for l in lines] == [1]
  events = paths.listdir(paths.join(wd, "tensorboard"))
  assert len(events) == 1 and events[0].startswith("events.out.tfevents")
  assert len(paths.read_bytes(paths.join(wd, "tensorboard", events[0]))) > 100
  with paths.local_copy(paths.join(wd, "scorer.safetensors")) as f:
    got = {n: load() for n, _, load in iter_tensors(f)}
  scorer = out["state"].trainable.to_pure_dict()["visual"]["importance_scorer"]
  np.testing.assert_array_equal(got["visual.importance_scorer.q_proj.weight"],
                                np.asarray(scorer["q_proj"]["kernel"]).T)
  # The backbone export (what a train_parts run writes to <workdir>/hf).
  model = vselect_jax.from_pretrained(model_dir)
  params = nnx.state(model.module, nnx.Param).to_pure_dict()
  hf = hf_export.export_hf(params, model.config, model_dir,
                           paths.join(wd, "hf"), "float32")
  assert {"config.json", "model.safetensors"} <= set(paths.listdir(hf))
  with paths.local_copy(paths.join(hf, "model.safetensors")) as f:
    names = {n for n, _, _ in iter_tensors(f)}
  assert names == set(hf_export.hf_tensors(params, model.config, "float32"))
  # A backbone export (include_scorer=False) leaves out every selection
  # module: the post-tower scorer and Dynamic-Qwen's predictor.
  backbone = set(hf_export.hf_tensors(params, model.config, "float32",
                                      include_scorer=False))
  for module in ("visual.importance_scorer.", "model.image_score_predictor."):
    assert any(n.startswith(module) for n in names), module
    assert not any(n.startswith(module) for n in backbone), module


def test_convert_to_a_bucket_and_read_it_back(bucket, tmp_path_factory):
  from conversion import convert_hf
  from tests import hf_tiny
  from vselect_jax.checkpoint import converted as model_io
  from vselect_jax.data import testing_tokenizer
  src = str(tmp_path_factory.mktemp("cv") / "hf")
  hf_tiny.make_model("tied_w56", seed=2).save_pretrained(src)
  testing_tokenizer(src)
  dst = "gs://bucket/models/tiny"
  assert convert_hf.main(["--src", src, "--dst", dst, "--dtype", "float32",
                          "--no-progress"]) == 0
  assert model_io.is_converted(dst)
  assert model_io.read_marker(dst)["dtype"] == "float32"
  assert {"config.json", "tokenizer_config.json", "params",
          model_io.MARKER} <= set(paths.listdir(dst))
  assert convert_hf.main(["--src", src, "--dst", dst, "--no-progress"]) == 1
  local = str(tmp_path_factory.mktemp("cv") / "local")
  convert_hf.main(["--src", src, "--dst", local, "--dtype", "float32",
                   "--no-progress"])
  with paths.local_copy(dst) as down:
    got = model_io.load_params(down)
  want = model_io.load_params(local)
  assert got.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(got[k], want[k], err_msg=str(k))


def _bucket_dataset():
  """Three records on the bucket: a good image, a missing one, an escape."""
  from PIL import Image
  png = io.BytesIO()
  Image.new("RGB", (30, 30), (200, 10, 10)).save(png, format="PNG")
  paths.write_bytes("gs://bucket/data/images/red.png", png.getvalue())
  paths.write_bytes("gs://bucket/secret.png", b"outside the root")
  turns = [{"from": "human", "value": "<image>\nwhat?"},
           {"from": "gpt", "value": "red"}]
  recs = [{"id": i, "image": img, "conversations": turns}
          for i, img in enumerate(["red.png", "nope.png", "../../secret.png"])]
  paths.write_text("gs://bucket/data/d.jsonl",
                   "".join(json.dumps(r) + "\n" for r in recs))
  return {"d": {"annotation": "gs://bucket/data/d.jsonl",
                "root": "gs://bucket/data/images"}}, png.getvalue()


def test_registry_and_shards_from_a_bucket(bucket, tmp_path):
  from vselect_jax.data.array_record_writer import convert_registry
  from vselect_jax.data.errors import RecordError
  from vselect_jax.data.records import build_mixture
  registry, png = _bucket_dataset()
  for reg in (registry, convert_registry(registry, str(tmp_path / "ar"))):
    mix = build_mixture("d", reg, seed=0)
    by_id = {json.loads(mix[i].text)["id"]: mix[i] for i in range(len(mix))}
    assert sorted(by_id) == [0, 1, 2]
    assert by_id[0].read_media("red.png") == png
    for i, rel, kind in ((1, "nope.png", "missing_file"),
                         (2, "../../secret.png", "bad_path")):
      with pytest.raises(RecordError) as e:
        by_id[i].read_media(rel)
      assert e.value.kind == kind

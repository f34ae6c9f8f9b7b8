"""Pod-scale loading and inference on 8 simulated CPU devices: parameters go
straight onto their shardings (never whole on one device), sharded forward
and generate equal the unsharded ones, and the coverage check refuses rules
that leave large parameters replicated or silently undivided."""
import jax
import numpy as np
import pytest
from flax import nnx

import vselect_jax
from conversion import convert_hf
from tests import hf_tiny
from tests.hf_tiny import IMAGE
from vselect_jax import sharding as shard_lib
from vselect_jax.checkpoint import hf_reader
from vselect_jax.loading import load_model
from vselect_jax.modeling.layers import Linear


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharded")
  hf_tiny.make_model("tied_w56", seed=6).save_pretrained(root / "hf")
  convert_hf.convert(str(root / "hf"), str(root / "jx"), "float32",
                     progress=False)
  return str(root / "hf"), str(root / "jx")


@pytest.fixture(scope="module")
def mesh():
  return shard_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def _is_sharded(array) -> bool:
  return any(s is not None for s in array.sharding.spec)


def test_hf_dir_loads_block_by_block(dirs, mesh, monkeypatch):
  reads = []
  read = hf_reader.TensorSource.read

  def spy(self, index=(), dtype=None):
    out = read(self, index, dtype)
    reads.append((self.name, self.shape, out.shape))
    return out

  monkeypatch.setattr(hf_reader.TensorSource, "read", spy)
  model = vselect_jax.from_pretrained(dirs[0], mesh=mesh)
  params = nnx.state(model.module, nnx.Param).flat_state()
  sharded = {p for p, v in params if _is_sharded(v.get_value())}
  assert len(sharded) > 20          # the rules do shard this model
  whole = {name for name, full, got in reads if tuple(got) == tuple(full)}
  # Every sharded parameter was only ever read (and placed) block by block.
  from vselect_jax.checkpoint import key_map
  for path in sharded:
    if path[:2] == ("visual", "importance_scorer"):
      continue  # freshly initialised (the HF checkpoint has no scorer)
    assert key_map.path_to_hf_key(path) not in whole, path
  for _, v in params:
    arr = v.get_value()
    if _is_sharded(arr):
      assert all(s.data.size < arr.size for s in arr.addressable_shards)


def test_converted_dir_restores_onto_the_mesh(dirs, mesh):
  one = vselect_jax.from_pretrained(dirs[1])
  many = vselect_jax.from_pretrained(dirs[1], mesh=mesh)
  a = nnx.state(one.module, nnx.Param).flat_state()
  b = dict(nnx.state(many.module, nnx.Param).flat_state())
  n_sharded = 0
  for path, v in a:
    got = b[path].get_value()
    np.testing.assert_array_equal(np.asarray(got), np.asarray(v.get_value()))
    if _is_sharded(got):
      n_sharded += 1
      assert all(s.data.size < got.size for s in got.addressable_shards)
  assert n_sharded > 20


def _batch(rng):
  grids = [[1, 6, 10], [1, 4, 4], [1, 8, 6], [1, 4, 6]]
  rows = [[1, 2] + hf_tiny.block(IMAGE, g) + [5, 6, 7][:1 + i % 3]
          for i, g in enumerate(grids)]
  ids, mask = hf_tiny.left_padded(rows)
  pix = np.concatenate([hf_tiny.pixels(rng, g) for g in grids])
  return dict(input_ids=ids, attention_mask=mask, pixel_values=pix,
              image_grid_thw=np.array(grids))


@pytest.mark.parametrize("method", ["selector", "fastv"])
def test_sharded_forward_and_generate_equal_unsharded(dirs, mesh, method):
  one = vselect_jax.from_pretrained(dirs[1])
  many = vselect_jax.from_pretrained(dirs[1], mesh=mesh)
  inputs = _batch(np.random.default_rng(0))   # 4 rows: split over data
  for budget in (None, 0.3):
    a = one.forward(**inputs, budget=budget, method=method)
    b = many.forward(**inputs, budget=budget, method=method)
    np.testing.assert_allclose(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    if budget is not None:
      np.testing.assert_array_equal(b.keep_index, a.keep_index)
  np.testing.assert_array_equal(
      many.generate(**inputs, budget=0.3, method=method, max_new_tokens=5),
      one.generate(**inputs, budget=0.3, method=method, max_new_tokens=5))


class _Two(nnx.Module):

  def __init__(self, rngs):
    self.good = Linear(64, 128, use_bias=False, axes=("embed", "mlp"),
                       rngs=rngs)
    self.odd = Linear(6, 128, use_bias=False, axes=("embed", None),
                      rngs=rngs)
    self.flat = Linear(64, 64, use_bias=False, axes=(None, None), rngs=rngs)


def test_coverage_check_names_undivided_and_replicated_parameters():
  mesh = shard_lib.make_mesh({"fsdp": 4, "tensor": 2})
  state = nnx.state(nnx.eval_shape(lambda: _Two(nnx.Rngs(0))))
  with pytest.raises(ValueError) as e:
    shard_lib.check_coverage(state, mesh, min_elements=256)
  msg = str(e.value)
  assert "odd/kernel" in msg and "does not divide mesh axis 'fsdp'" in msg
  assert "flat/kernel" in msg and "replicated" in msg
  assert "good/kernel" not in msg
  # Below the size threshold nothing is required.
  shard_lib.check_coverage(state, mesh, min_elements=1 << 20)
  # A rule table that replicates the MLP axis leaves 'good' replicated.
  rules = dict(shard_lib.DEFAULT_RULES, embed=None, mlp=None)
  with pytest.raises(ValueError, match="good/kernel"):
    shard_lib.check_coverage(state, mesh, rules, min_elements=256)


def test_loading_refuses_a_mesh_the_model_does_not_fill(dirs):
  mesh = shard_lib.make_mesh({"fsdp": 8})
  with pytest.raises(ValueError, match="not sharded on mesh"):
    load_model(dirs[1], mesh=mesh, min_sharded_elements=1)

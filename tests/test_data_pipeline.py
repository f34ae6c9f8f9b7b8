"""The grain pipeline on synthetic data: static shapes, bad-data accounting,
determinism, exact resume, host sharding; mixtures; path confinement."""
import json
import os

import numpy as np
import pytest

from vselect_jax.data import testing as data_testing
from vselect_jax.data.pipeline import (DataConfig, SkipMonitor,
                                       make_dataset)
from vselect_jax.data.records import (confined_path, load_records,
                                      parse_mixture)
from vselect_jax.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("world")
  reg = write_synthetic_dataset(str(root), 30, seed=0,
                                sizes=((224, 224), (196, 252)))
  tok_dir = str(root / "tok")
  data_testing.testing_tokenizer(tok_dir)
  # Append one bad record of each kind.
  bad = [
      '{"id": 1, "image": "images/nope.png", "conversations": '
      '[{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]}',
      '{"id": 2, "image": "images/broken.png", "conversations": '
      '[{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]}',
      '{this is not json',
      '{"id": 4, "image": "images/synthetic_000000.png", "conversations": '
      '[{"from": "human", "value": "<image> q"}]}',
      '{"id": 5, "image": "images/synthetic_000000.png", "conversations": '
      '[{"from": "human", "value": "<image> <image> q"}, '
      '{"from": "gpt", "value": "a"}]}',
      '{"id": 6, "image": "../../etc/passwd", "conversations": '
      '[{"from": "human", "value": "<image> q"}, {"from": "gpt", "value": "a"}]}',
  ]
  with open(root / "images" / "broken.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
  with open(reg["synthetic"]["annotation"], "a") as f:
    f.write("\n".join(bad) + "\n")
  return reg, tok_dir


def _cfg(reg, **kw):
  base = dict(mixture="synthetic", registry=reg, seed=1, row_length=256,
              patches_per_row=1024, max_images_per_row=4, rows_per_batch=2,
              samples_per_row=3)
  base.update(kw)
  return DataConfig(**base)


def test_batches_have_static_shapes_and_count_skips(world):
  reg, tok = world
  it = iter(make_dataset(_cfg(reg), tok, repeat=False))
  batches = list(it)
  assert len(batches) == 36 // 6
  for b in batches:
    assert b["input_ids"].shape == (2, 256)
    assert b["position_ids"].shape == (3, 2, 256)
    assert b["pixel_values"].shape == (2, 1024, 1176)
    assert b["image_grid_thw"].shape == (2, 4, 3)
  skipped = {k: sum(int(b["skipped"][k]) for b in batches)
             for k in batches[0]["skipped"]}
  assert skipped["missing_file"] == 1 and skipped["corrupt_image"] == 1
  assert skipped["malformed"] == 1 and skipped["no_assistant"] == 1
  assert skipped["image_count"] == 1 and skipped["bad_path"] == 1
  monitor = SkipMonitor(max_fraction=0.05, min_seen=10)
  with pytest.raises(RuntimeError, match="skipped"):
    for b in batches:
      monitor.update(b)


def test_determinism_and_exact_resume(world):
  reg, tok = world
  a = iter(make_dataset(_cfg(reg), tok))
  first = [next(a) for _ in range(3)]
  state = a.get_state()
  expected = next(a)
  b = iter(make_dataset(_cfg(reg), tok))
  for x, y in zip(first, [next(b) for _ in range(3)]):
    np.testing.assert_array_equal(x["input_ids"], y["input_ids"])
  c = iter(make_dataset(_cfg(reg), tok))
  c.set_state(json.loads(json.dumps(state)) if isinstance(state, dict)
              else state)
  resumed = next(c)
  for k in ("input_ids", "labels", "pixel_values"):
    np.testing.assert_array_equal(resumed[k], expected[k])


def test_two_hosts_cover_every_record_once(world):
  reg, tok = world
  cfg = _cfg(reg, rows_per_batch=1, samples_per_row=1)
  seen = sum(int(b["samples_seen"]) for pi in range(2)
             for b in make_dataset(cfg, tok, process_index=pi,
                                   process_count=2, repeat=False))
  assert seen == 36
  recs = load_records("synthetic", reg, 1)
  shards = [set(r.line for r in recs[pi::2]) for pi in range(2)]
  assert not shards[0] & shards[1] and len(shards[0] | shards[1]) == 36


def test_mixture_syntax_and_rates(tmp_path):
  assert parse_mixture("chartqa,coco%10,ocr_vqa") == [
      ("chartqa", 1.0), ("coco", 0.1), ("ocr_vqa", 1.0)]
  reg = {}
  for name, n in (("a", 50), ("b", 200)):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(f'{{"id": {i}}}\n' for i in range(n)))
    reg[name] = {"annotation": str(path), "root": str(tmp_path)}
  recs = load_records("a,b%10", reg, seed=3)
  assert sum(r.dataset == "a" for r in recs) == 50
  assert sum(r.dataset == "b" for r in recs) == 20
  again = load_records("a,b%10", reg, seed=3)
  assert [r.raw for r in recs] == [r.raw for r in again]
  with pytest.raises(KeyError, match="registry"):
    load_records("zzz", reg, 0)


def test_paths_stay_inside_the_root(tmp_path):
  assert confined_path(str(tmp_path), "a/b.png") == os.path.realpath(
      tmp_path / "a" / "b.png")
  for bad in ("../x.png", "/etc/passwd", "a/../../x"):
    with pytest.raises(PermissionError, match="escapes"):
      confined_path(str(tmp_path), bad)

"""JSONL + images -> ArrayRecord shards (TFDS) -> the same training stream."""
import json

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vselect_jax.data import DataConfig, make_train_iterator
from vselect_jax.data import testing_tokenizer as make_tokenizer
from vselect_jax.data.array_record_writer import (convert_registry,
                                                  write_array_record)
from vselect_jax.data.errors import RecordError
from vselect_jax.data.records import TFDS_NAME, build_mixture
from vselect_jax.data.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  root = tmp_path_factory.mktemp("ar")
  reg = write_synthetic_dataset(str(root / "src"), 24, seed=3)
  extra = [
      {"id": "missing", "image": "images/nope.png",
       "conversations": [{"from": "human", "value": "<image> q"},
                         {"from": "gpt", "value": "a"}]},
      {"id": "escape", "image": "../outside.png",
       "conversations": [{"from": "human", "value": "<image> q"},
                         {"from": "gpt", "value": "a"}]},
  ]
  (root / "outside.png").write_bytes(b"not for the shards")
  with open(reg["synthetic"]["annotation"], "a") as f:
    for rec in extra:
      f.write(json.dumps(rec) + "\n")
    f.write("{broken json\n")
  entry = reg["synthetic"]
  ar = write_array_record(entry["annotation"], entry["root"],
                          str(root / "shards"))
  tok = str(root / "tok")
  make_tokenizer(tok)
  return reg, {"synthetic": ar}, tok


def test_shards_hold_every_record_and_its_image_bytes(shards):
  jsonl, ar, _ = shards
  a = build_mixture("synthetic", jsonl, seed=0)
  b = build_mixture("synthetic", ar, seed=0)
  assert len(a) == len(b) == 27
  for i in range(len(a)):
    ra, rb = a[i], b[i]
    assert (ra.dataset, ra.index, ra.text) == (rb.dataset, rb.index, rb.text)
    try:
      obj = json.loads(ra.text)
    except json.JSONDecodeError:
      continue
    paths = obj["image"] if isinstance(obj["image"], list) else [obj["image"]]
    for rel in paths:
      try:
        want = ra.read_media(rel)
      except RecordError as e:   # the shard records the same failure
        with pytest.raises(RecordError) as got:
          rb.read_media(rel)
        assert got.value.kind == e.kind
        continue
      assert rb.read_media(rel) == want
  # Nothing outside the dataset root was copied into the shards.
  src = tfds.data_source(TFDS_NAME, data_dir=ar["synthetic"]["array_record"],
                         split="train")
  assert all(b"not for the shards" not in blob
             for i in range(len(src)) for blob in src[i]["media_bytes"])


def test_grain_reads_the_tfds_source(shards):
  _, ar, _ = shards
  src = tfds.data_source(TFDS_NAME, data_dir=ar["synthetic"]["array_record"],
                         split="train")
  idx = list(grain.MapDataset.source(src).map(lambda ex: int(ex["index"])))
  assert idx == list(range(27))


def test_the_same_batches_from_shards_as_from_jsonl(shards):
  jsonl, ar, tok = shards
  kw = dict(mixture="synthetic", seed=5, row_length=512, patches_per_row=1024,
            max_images_per_row=6, rows_per_batch=2, max_skip_fraction=1.0)
  a = list(make_train_iterator(DataConfig(registry=jsonl, **kw), tok,
                               process_index=0, process_count=1,
                               repeat=False))
  b = list(make_train_iterator(DataConfig(registry=ar, **kw), tok,
                               process_index=0, process_count=1,
                               repeat=False))
  assert len(a) == len(b) > 1
  for x, y in zip(a, b):
    for k in x:
      if k == "skipped":
        assert {n: int(v) for n, v in x[k].items()} == {
            n: int(v) for n, v in y[k].items()}
      else:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  skipped = {k: sum(int(x["skipped"][k]) for x in a) for k in a[0]["skipped"]}
  assert skipped["missing_file"] == 1 and skipped["bad_path"] == 1
  assert skipped["malformed"] == 1


def test_convert_registry_keeps_shard_entries(shards, tmp_path):
  jsonl, ar, _ = shards
  out = convert_registry({"s": jsonl["synthetic"], "t": ar["synthetic"]},
                         str(tmp_path))
  assert out["t"] == ar["synthetic"]
  assert out["s"] == {"array_record": str(tmp_path / "s")}
  assert len(build_mixture("s", out, 0)) == 27

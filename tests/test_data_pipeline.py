"""The grain pipeline on synthetic data: sample content, static shapes,
bad-data accounting, determinism, exact resume (threads and worker
processes), host sharding; mixtures; path confinement; the synthetic set."""
import collections
import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from vselect_jax.data import (DataConfig, make_train_iterator,
                              make_train_iterator_from_config,
                              preprocess_image)
from vselect_jax.data import testing_tokenizer as make_tokenizer
from vselect_jax.data.chat import normalize_turns, tokenize_conversation
from vselect_jax.data.pipeline import make_sample_dataset
from vselect_jax.data.records import (build_mixture, confined_path,
                                      parse_mixture)
from vselect_jax.data.sample import SampleBuilder
from vselect_jax.data.synthetic import write_synthetic_dataset
from vselect_jax.host.rope_index import get_rope_index

GOOD = 40


def _conv(q="<image> q", a="a"):
  return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


# Bad records appended to the synthetic set, with the kind each is counted as.
BAD = [
    ({"image": "images/nope.png", "conversations": _conv()}, "missing_file"),
    ({"image": "images/broken.png", "conversations": _conv()},
     "corrupt_image"),
    ({"image": "images/truncated.png", "conversations": _conv()},
     "corrupt_image"),
    ({"image": "images/needle.png", "conversations": _conv()},
     "corrupt_image"),                        # aspect ratio > 200
    ("{this is not json", "malformed"),
    ("[1, 2]", "malformed"),
    ({"image": "images/ok.png", "conversations": _conv()[:1]},
     "no_assistant"),
    ({"image": "images/ok.png", "conversations": _conv("<image> <image> q")},
     "image_count"),
    ({"image": ["images/ok.png", "images/ok.png"], "conversations": _conv()},
     "image_count"),
    ({"image": "../../etc/passwd", "conversations": _conv()}, "bad_path"),
    ({"image": "/etc/passwd", "conversations": _conv()}, "bad_path"),
    ({"video": "clip.mp4", "conversations": _conv("<video> q")},
     "video_unsupported"),
    ({"image": "images/ok.png", "conversations": _conv(a="word " * 400)},
     "too_long"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp("world")
  reg = write_synthetic_dataset(str(root), GOOD, seed=0,
                                sizes=((224, 224), (196, 252), (300, 170)))
  rng = np.random.default_rng(0)
  img = lambda h, w, c=3: Image.fromarray(
      rng.integers(0, 256, (h, w, c) if c > 1 else (h, w), dtype=np.uint8))
  img(100, 80).save(root / "images" / "ok.png")
  img(2, 600).save(root / "images" / "needle.png")
  img(90, 120, 4).save(root / "images" / "rgba.png")
  (root / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" +
                                               b"garbage" * 10)
  whole = (root / "images" / "ok.png").read_bytes()
  (root / "images" / "truncated.png").write_bytes(whole[:len(whole) // 2])
  rgba = {"id": "rgba", "image": "images/rgba.png",
          "conversations": _conv("<image>\nWhat is here?", "noise")}
  with open(reg["synthetic"]["annotation"], "a") as f:
    f.write(json.dumps(rgba) + "\n")
    for rec, _ in BAD:
      f.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")
  tok_dir = str(root / "tok")
  make_tokenizer(tok_dir)
  return reg, tok_dir, root


N_RECORDS = GOOD + 1 + len(BAD)


def _cfg(reg, **kw):
  base = dict(mixture="synthetic", registry=reg, seed=1, row_length=384,
              patches_per_row=768, max_images_per_row=4, rows_per_batch=2,
              max_skip_fraction=1.0, skip_check_min_records=1)
  base.update(kw)
  return DataConfig(**base)


def _iter(cfg, tok, **kw):
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  return make_train_iterator(cfg, tok, **kw)


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if k == "skipped":
      assert {x: int(y) for x, y in a[k].items()} == {
          x: int(y) for x, y in b[k].items()}
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_sample_content_is_the_reference_recipe(world):
  reg, tok_dir, root = world
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(tok_dir)
  mix = build_mixture("synthetic", reg, seed=0)
  rec = next(mix[i] for i in range(len(mix))
             if json.loads(mix[i].text).get("id") == "rgba")
  s = SampleBuilder(tok_dir)(rec)
  # Opened and .convert("RGB")-ed as the reference does: alpha dropped.
  want_pix, grid = preprocess_image(
      Image.open(root / "images" / "rgba.png").convert("RGB"), 784, 50176)
  np.testing.assert_array_equal(s["pixel_values"], want_pix)
  np.testing.assert_array_equal(s["image_grid_thw"], [grid])
  ids, labels = tokenize_conversation(
      tok, normalize_turns(json.loads(rec.text)["conversations"]),
      [int(np.prod(grid)) // 4])
  np.testing.assert_array_equal(s["input_ids"], ids)
  np.testing.assert_array_equal(s["labels"], labels)
  pad = tok.convert_tokens_to_ids("<|image_pad|>")
  assert (ids == pad).sum() == np.prod(grid) // 4
  pos, _ = get_rope_index(ids[None], image_grid_thw=[grid],
                          image_token_id=pad,
                          video_token_id=tok.convert_tokens_to_ids(
                              "<|video_pad|>"))
  np.testing.assert_array_equal(s["position_ids"], pos[:, 0])


def test_batches_have_static_shapes_and_count_skips(world):
  reg, tok, _ = world
  batches = list(_iter(_cfg(reg), tok, repeat=False))
  for b in batches:
    assert b["input_ids"].shape == b["labels"].shape == (2, 384)
    assert b["segment_ids"].shape == (2, 384)
    assert b["position_ids"].shape == (3, 2, 384)
    assert b["pixel_values"].shape == (2, 768, 1176)
    assert b["pixel_values"].dtype == np.float32
    assert b["image_grid_thw"].shape == (2, 4, 3)
    assert b["num_images"].shape == (2,) and b["image_segment"].shape == (2, 4)
    for k in ("input_ids", "labels", "segment_ids", "position_ids",
              "image_grid_thw", "num_images", "image_segment"):
      assert b[k].dtype == np.int32, k
  skipped = collections.Counter()
  for b in batches:
    skipped.update({k: int(v) for k, v in b["skipped"].items()})
  want = collections.Counter(kind for _, kind in BAD)
  assert +skipped == want
  assert sum(int(b["samples_seen"]) for b in batches) == N_RECORDS
  segments = sum(int(b["segment_ids"].max(1).sum()) for b in batches)
  assert segments == N_RECORDS - len(BAD)
  # Every segment starts at position 0 and holds as many image pads as its
  # images have merged tokens.
  from transformers import AutoTokenizer
  pad = AutoTokenizer.from_pretrained(tok).convert_tokens_to_ids(
      "<|image_pad|>")
  for b in batches:
    for r in range(2):
      seg = b["segment_ids"][r]
      for s in range(1, seg.max() + 1):
        where = np.flatnonzero(seg == s)
        assert (b["position_ids"][:, r, where[0]] == 0).all()
        mine = b["image_segment"][r] == s
        merged = b["image_grid_thw"][r][mine].prod(1).sum() // 4
        assert mine.any() and merged == (b["input_ids"][r, where] == pad).sum()


def test_too_many_skips_stop_the_run_and_say_why(world):
  reg, tok, _ = world
  it = _iter(_cfg(reg, max_skip_fraction=0.05, skip_check_min_records=20),
             tok, repeat=False)
  with pytest.raises(RuntimeError, match=r"bad data: \d+ of \d+ records "
                     r"skipped .*max_skip_fraction.*by kind: .*bad_path=2"):
    list(it)


def test_a_stream_of_only_bad_records_stops(world, tmp_path):
  reg, tok, root = world
  path = tmp_path / "bad.jsonl"
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                          for r, _ in BAD[:5]))
  bad = {"bad": {"annotation": str(path), "root": str(root)}}
  it = _iter(_cfg(bad, mixture="bad", max_skip_fraction=0.5,
                  skip_check_min_records=10), tok)   # repeats forever
  with pytest.raises(RuntimeError, match="bad data"):
    next(it)


def test_determinism_and_exact_resume(world):
  reg, tok, _ = world
  cfg = _cfg(reg)   # 54 records, ~4 samples a batch: epochs turn over
  a = _iter(cfg, tok)
  states, batches = [], []
  for _ in range(20):
    states.append(json.loads(json.dumps(a.get_state())))
    batches.append(next(a))
  b = _iter(cfg, tok)
  for x in batches[:5]:
    _assert_same(x, next(b))
  # Resume from states with and without samples carried over.
  carried = [i for i, s in enumerate(states) if s["carry"]]
  empty = [i for i, s in enumerate(states) if not s["carry"]]
  assert carried and empty
  for i in (carried[0], empty[-1], 17):
    c = _iter(cfg, tok)
    c.set_state(states[i])
    assert json.loads(json.dumps(c.get_state())) == states[i]
    for want in batches[i:i + 2]:
      _assert_same(next(c), want)
  # A different seed gives a different stream.
  d = _iter(_cfg(reg, seed=2), tok)
  assert not all(np.array_equal(next(d)["input_ids"], x["input_ids"])
                 for x in batches[:3])


def test_worker_processes_give_the_same_batches_and_resume(world):
  reg, tok, _ = world
  ref = _iter(_cfg(reg), tok)
  want = [next(ref) for _ in range(5)]
  it = _iter(_cfg(reg, num_workers=2, read_threads=1, prefetch=2), tok)
  try:
    for x in want[:3]:
      _assert_same(next(it), x)
    state = json.loads(json.dumps(it.get_state()))
    for x in want[3:]:
      _assert_same(next(it), x)
    # Back to the saved point (one start-up of the workers is slow enough).
    it.set_state(state)
    for x in want[3:]:
      _assert_same(next(it), x)
  finally:
    it.close()


def test_video_sample_from_a_folder_of_frames(world, tmp_path):
  _, tok_dir, _ = world
  from transformers import AutoTokenizer
  from vselect_jax.data.records import RawRecord
  rng = np.random.default_rng(7)
  (tmp_path / "clip").mkdir()
  for i in range(20):   # 10 s at 2 fps -> round(10 / 2) = 5 frames
    Image.fromarray(rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)).save(
        tmp_path / "clip" / f"{i:03d}.png")
  rec = RawRecord("v", 0, json.dumps({
      "video": "clip", "conversations": _conv("<video>\nWhat happens?")}),
      root=str(tmp_path))
  with pytest.raises(Exception) as e:   # training takes images only
    SampleBuilder(tok_dir)(rec)
  assert e.value.kind == "video_unsupported"
  s = SampleBuilder(tok_dir, allow_video=True, tokens_per_second=3)(rec)
  np.testing.assert_array_equal(s["video_grid_thw"], [[3, 4, 6]])
  assert s["second_per_grid_ts"][0] == pytest.approx(2 / (5 / 10))
  assert s["pixel_values_videos"].shape == (3 * 4 * 6, 1176)
  tok = AutoTokenizer.from_pretrained(tok_dir)
  vpad = tok.convert_tokens_to_ids("<|video_pad|>")
  assert (s["input_ids"] == vpad).sum() == 3 * 4 * 6 // 4
  pos, _ = get_rope_index(
      s["input_ids"][None], video_grid_thw=[[3, 4, 6]],
      second_per_grid_ts=[4.0], tokens_per_second=3,
      image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
      video_token_id=vpad)
  np.testing.assert_array_equal(s["position_ids"], pos[:, 0])
  # Temporal ids step by second_per_grid_t * tokens_per_second = 12.
  t_ids = np.unique(s["position_ids"][0][s["input_ids"] == vpad])
  np.testing.assert_array_equal(np.diff(t_ids), [12, 12])


def test_two_hosts_cover_every_record_once(world):
  reg, tok, _ = world
  cfg = _cfg(reg)
  seen = []
  for pi in range(2):
    for el in make_sample_dataset(cfg, tok, process_index=pi,
                                  process_count=2, repeat=False):
      seen.append(el.get("where") or el["message"].split(":")[0])
  assert len(seen) == N_RECORDS
  assert sorted(seen) == sorted(f"synthetic[{i}]" for i in range(N_RECORDS))
  # The packed streams account for every record too.
  total = sum(int(b["samples_seen"]) for pi in range(2)
              for b in _iter(cfg, tok, process_index=pi, process_count=2,
                             repeat=False))
  assert total == N_RECORDS


def test_config_dict_and_default_process(world):
  reg, tok, _ = world
  c = ml_collections.ConfigDict()
  c.model_path = "unused"
  c.global_batch_rows = 4   # 2 hosts x 2 rows
  c.data = ml_collections.ConfigDict(dict(
      mixture="synthetic", registry=ml_collections.ConfigDict(reg), seed=1,
      row_length=384, patches_per_row=768, max_images_per_row=4,
      tokenizer_path=tok, max_skip_fraction=1.0))
  a = make_train_iterator_from_config(c, 1, 2)
  b = make_train_iterator(_cfg(reg, skip_check_min_records=200), tok,
                          process_index=1, process_count=2)
  # One epoch is the whole mixture, whatever this host's share.
  assert a.num_records == b.num_records == len(
      build_mixture("synthetic", reg, 1))
  _assert_same(next(a), next(b))


def test_mixture_syntax_and_rates(tmp_path):
  assert parse_mixture("chartqa,coco%10,ocr_vqa") == [
      ("chartqa", 1.0), ("coco", 0.1), ("ocr_vqa", 1.0)]
  assert parse_mixture("a%100, b%250") == [("a", 1.0), ("b", 2.5)]
  reg = {}
  for name, n in (("a", 50), ("b", 200), ("c", 30)):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(f'{{"id": "{name}{i}"}}\n' for i in range(n)))
    reg[name] = {"annotation": str(path), "root": str(tmp_path)}
  mix = build_mixture("a,b%10,c%250", reg, seed=3)
  assert mix.counts() == {"a": 50, "b": 20, "c": 30}   # no up-sampling
  ids = [json.loads(mix[i].text)["id"] for i in range(len(mix))]
  assert len(set(ids)) == len(ids)                     # without replacement
  assert ids != sorted(ids)                            # shuffled once
  again = build_mixture("a,b%10,c%250", reg, seed=3)
  assert ids == [json.loads(again[i].text)["id"] for i in range(len(again))]
  other = build_mixture("a,b%10,c%250", reg, seed=4)
  picked = lambda m: {json.loads(m[i].text)["id"] for i in range(len(m))
                      if m[i].dataset == "b"}
  assert picked(mix) != picked(other)
  with pytest.raises(KeyError, match="registry"):
    build_mixture("zzz", reg, 0)
  with pytest.raises(ValueError, match="empty"):
    parse_mixture(" , ")


def test_paths_stay_inside_the_root(tmp_path):
  (tmp_path / "a").mkdir()
  assert confined_path(str(tmp_path), "a/b.png") == os.path.realpath(
      tmp_path / "a" / "b.png")
  inside = str(tmp_path / "a" / "c.png")
  assert confined_path(str(tmp_path), inside) == os.path.realpath(inside)
  os.symlink("/etc", tmp_path / "a" / "link")
  for bad in ("../x.png", "/etc/passwd", "a/../../x", "a/link/passwd"):
    with pytest.raises(PermissionError, match="escapes"):
      confined_path(str(tmp_path), bad)
  with pytest.raises(ValueError):
    confined_path(str(tmp_path), "")


def test_synthetic_dataset(tmp_path, world):
  _, tok, _ = world
  reg = write_synthetic_dataset(str(tmp_path / "a"), 30, seed=5)
  again = write_synthetic_dataset(str(tmp_path / "b"), 30, seed=5)
  lines = open(reg["synthetic"]["annotation"]).read().splitlines()
  assert [json.loads(x)["conversations"] for x in lines] == [
      json.loads(x)["conversations"] for x in
      open(again["synthetic"]["annotation"]).read().splitlines()]
  recs = [json.loads(x) for x in lines]
  assert any(isinstance(r["image"], list) for r in recs)      # two images
  assert any(len(r["conversations"]) == 4 for r in recs)      # two turns
  mix = build_mixture("synthetic", reg, 0)
  builder = SampleBuilder(tok)
  for i in range(len(mix)):                                   # all usable
    s = builder(mix[i])
    assert (s["labels"] != -100).any()

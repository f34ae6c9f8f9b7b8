"""Chat template / label masking on hand-checked examples, and packing."""
import collections

import numpy as np
import pytest

from vselect_jax.data import testing_tokenizer as make_tokenizer
from vselect_jax.data.chat import normalize_turns, tokenize_conversation
from vselect_jax.data.errors import RecordError
from vselect_jax.data.packing import RowSpec, pack
from vselect_jax.data.synthetic import training_mix_lengths


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return make_tokenizer(str(tmp_path_factory.mktemp("tok")))


def _render(tok, ids):
  toks = tok.convert_ids_to_tokens([int(i) for i in ids])
  return "".join(toks).replace("Ġ", " ").replace("Ċ", "\n")


def test_template_and_labels(tok):
  turns = normalize_turns([
      {"from": "human", "value": "<image>\nWhat color?"},
      {"from": "gpt", "value": "red"},
      {"from": "human", "value": "And now?"},
      {"from": "gpt", "value": "blue"}])
  ids, labels = tokenize_conversation(tok, turns, [3])
  assert _render(tok, ids) == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>"
      "\n<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 3 +
      "<|vision_end|>\nWhat color?<|im_end|>\n<|im_start|>"
      "assistant\nred<|im_end|>\n<|im_start|>user\nAnd now?"
      "<|im_end|>\n<|im_start|>assistant\nblue<|im_end|>\n")
  # Answer, <|im_end|> and the newline of each assistant turn, nothing else.
  assert _render(tok, ids[labels != -100]) == "red<|im_end|>\nblue<|im_end|>\n"
  np.testing.assert_array_equal(labels[labels != -100], ids[labels != -100])
  # The masked assistant prefix is exactly "<|im_start|>assistant\n".
  im_start = tok.convert_tokens_to_ids("<|im_start|>")
  starts = np.flatnonzero(ids == im_start)
  first_answer = np.flatnonzero(labels != -100)[0]
  assert _render(tok, ids[starts[2]:first_answer]) == (
      "<|im_start|>assistant\n")


def test_two_images_and_a_video(tok):
  turns = normalize_turns([
      {"role": "user", "content": "<image> and <image>, then <video>?"},
      {"role": "assistant", "content": "ok"}])
  ids, labels = tokenize_conversation(tok, turns, [2, 1], [4])
  assert _render(tok, ids).count("<|image_pad|>") == 3
  assert _render(tok, ids).count("<|video_pad|>") == 4
  text = _render(tok, ids)
  assert ("<|vision_start|><|image_pad|><|image_pad|><|vision_end|> and "
          "<|vision_start|><|image_pad|><|vision_end|>, then "
          "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>?") in text
  assert _render(tok, ids[labels != -100]) == "ok<|im_end|>\n"


def test_role_content_schema_and_leading_turn_dropped():
  turns = normalize_turns([
      {"role": "system", "content": "be terse"},
      {"role": "user", "content": "hi"},
      {"role": "assistant", "content": "ok"}])
  assert turns == [("user", "hi"), ("assistant", "ok")]
  turns = normalize_turns([{"from": "gpt", "value": "hello"},
                           {"from": "human", "value": "q"},
                           {"from": "gpt", "value": "a"}])
  assert turns == [("user", "q"), ("assistant", "a")]


@pytest.mark.parametrize("conv,kind", [
    ([{"from": "human", "value": "hi"}], "no_assistant"),
    ([{"from": "gpt", "value": "only an answer"}], "no_assistant"),
    ([{"from": "robot", "value": "x"}], "malformed"),
    ([{"from": "human", "value": 3}], "malformed"),
    ("not a list", "malformed"),
    ([], "malformed"),
])
def test_bad_conversations(conv, kind):
  with pytest.raises(RecordError) as e:
    normalize_turns(conv)
  assert e.value.kind == kind


def test_image_count_mismatch(tok):
  turns = normalize_turns([{"from": "human", "value": "<image> <image> q"},
                           {"from": "gpt", "value": "a"}])
  with pytest.raises(RecordError) as e:
    tokenize_conversation(tok, turns, [4])
  assert e.value.kind == "image_count"


def _sample(rng, n, images, tokens_per_image=None, dim=4):
  """A fake sample: n tokens, ``images`` images with per-image merged-token
  counts, labels on ~30% of tokens, positions 0..n-1, distinct pixels."""
  per = tokens_per_image or [int(rng.integers(1, 9)) for _ in range(images)]
  grids = np.array([[1, 2, 2 * t] for t in per], np.int32).reshape(-1, 3)
  p = int(grids.prod(1).sum())
  ids = rng.integers(10, 1000, n).astype(np.int32)
  labels = np.where(rng.random(n) < 0.3, ids, -100).astype(np.int32)
  pos = np.tile(np.arange(n, dtype=np.int32), (3, 1))
  pos[1] += rng.integers(0, 3)  # rows differ, as with images
  return dict(input_ids=ids, labels=labels, position_ids=pos,
              pixel_values=rng.standard_normal((p, dim)).astype(np.float32),
              image_grid_thw=grids)


def _unpack(batch):
  """Per (row, segment): tokens, labels, positions, pixels, grids."""
  out = []
  for r in range(batch["input_ids"].shape[0]):
    seg = batch["segment_ids"][r]
    k = int(batch["num_images"][r])
    grids = batch["image_grid_thw"][r, :k]
    owner = batch["image_segment"][r, :k]
    sizes = grids.prod(1)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for s in range(1, int(seg.max()) + 1):
      where = np.flatnonzero(seg == s)
      assert (np.diff(where) == 1).all()       # contiguous
      mine = np.flatnonzero(owner == s)
      pix = np.concatenate([batch["pixel_values"][r, starts[i]:starts[i + 1]]
                            for i in mine]) if len(mine) else None
      out.append(dict(ids=batch["input_ids"][r, where],
                      labels=batch["labels"][r, where],
                      pos=batch["position_ids"][:, r, where],
                      grids=grids[mine], pix=pix))
    # Images are laid out in segment order, so token order is kept.
    assert (np.diff(owner) >= 0).all()
    assert (batch["labels"][r][seg == 0] == -100).all()
    assert (batch["image_grid_thw"][r, k:] == 0).all()
    assert (batch["pixel_values"][r, starts[-1]:] == 0).all()
  return out


def test_packing_keeps_every_sample_intact_and_never_mixes():
  rng = np.random.default_rng(0)
  samples = [_sample(rng, int(rng.integers(5, 60)), int(rng.integers(0, 3)))
             for _ in range(300)]
  too_long = [_sample(rng, 100, 1),                     # tokens
              _sample(rng, 10, 1, [40]),                # patches (160)
              _sample(rng, 10, 5, [1] * 5)]             # images
  stream = samples[:100] + too_long + samples[100:]
  spec = RowSpec(rows=3, row_length=64, patch_capacity=96, max_images=4,
                 patch_dim=4)
  stats = collections.Counter()
  batches = list(pack(stream, spec, lookahead=3, stats=stats))
  assert stats["too_long"] == 3 and stats["samples"] == 300
  got = [seg for b in batches for seg in _unpack(b)]
  assert len(got) == 300
  # Every sample appears once, whole: tokens, labels, positions, pixels.
  by_key = collections.defaultdict(list)
  for s in samples:
    by_key[s["input_ids"].tobytes()].append(s)
  for g in got:
    s = by_key[g["ids"].tobytes()].pop()
    np.testing.assert_array_equal(g["labels"], s["labels"])
    np.testing.assert_array_equal(g["pos"], s["position_ids"])
    np.testing.assert_array_equal(g["grids"], s["image_grid_thw"])
    if len(s["image_grid_thw"]):
      np.testing.assert_array_equal(g["pix"], s["pixel_values"])
  assert not any(by_key.values())
  supervised = sum(int((b["labels"] != -100).sum()) for b in batches)
  assert supervised == sum(int((s["labels"] != -100).sum()) for s in samples)


def test_samples_per_row_cap_and_order():
  rng = np.random.default_rng(1)
  samples = [_sample(rng, 8, 1, [1]) for _ in range(40)]
  spec = RowSpec(rows=2, row_length=1000, patch_capacity=1000, max_images=50,
                 max_samples=3, patch_dim=4)
  batches = list(pack(samples, spec, lookahead=2))
  assert all(b["segment_ids"].max() <= 3 for b in batches)
  # Nothing is short of space here, so the stream order is kept.
  flat = [g["ids"] for b in batches for g in _unpack(b)]
  order = sorted(range(40), key=lambda i: [
      j for j, f in enumerate(flat)
      if (f == samples[i]["input_ids"]).all()][0])
  assert order == list(range(40))


def realistic_samples(rng, n, dim=4):
  """Fake samples with the training mix's sizes (``training_mix_lengths``)."""
  tokens, merged = training_mix_lengths(rng, n)
  return [_sample(rng, int(t), 1, [int(m)], dim)
          for t, m in zip(tokens, merged)]


def _waste(samples, spec, lookahead):
  """Token padding, leaving out the stream's last (partial) batch."""
  stats = collections.Counter()
  batches = list(pack(samples, spec, lookahead=lookahead, stats=stats))
  assert stats["samples"] == len(samples) and stats["too_long"] == 0
  tail = int((batches[-1]["segment_ids"] > 0).sum())
  return 1 - (stats["tokens"] - tail) / (
      stats["token_slots"] - spec.rows * spec.row_length)


def test_padding_waste_on_a_realistic_mix_is_low():
  rng = np.random.default_rng(2)
  samples = realistic_samples(rng, 6000, dim=1)
  spec = RowSpec(rows=8, row_length=2048, patch_capacity=2048, max_images=32,
                 patch_dim=1)
  waste = _waste(samples, spec, lookahead=8)
  assert waste < 0.03, waste
  # Closing a batch at its first miss wastes more.
  assert _waste(samples, spec, lookahead=1) > waste

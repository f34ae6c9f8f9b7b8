"""Chat template / label masking on hand-checked examples, and packing."""
import collections

import numpy as np
import pytest

from vselect_jax.data.chat import (RecordError, normalize_turns,
                                   tokenize_conversation)
from vselect_jax.data.packing import pack
from vselect_jax.data import testing as data_testing


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return data_testing.testing_tokenizer(str(tmp_path_factory.mktemp("tok")))


def test_template_and_labels(tok):
  turns = normalize_turns([
      {"from": "human", "value": "<image>\nWhat color?"},
      {"from": "gpt", "value": "red"},
      {"from": "human", "value": "And now?"},
      {"from": "gpt", "value": "blue"}])
  ids, labels = tokenize_conversation(tok, turns, [3])
  toks = tok.convert_ids_to_tokens(ids.tolist())
  text = "".join(toks).replace("Ġ", " ").replace("Ċ", "\n")
  assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>"
                  "\n<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 3
                  + "<|vision_end|>\nWhat color?<|im_end|>\n<|im_start|>"
                  "assistant\nred<|im_end|>\n<|im_start|>user\nAnd now?"
                  "<|im_end|>\n<|im_start|>assistant\nblue<|im_end|>\n")
  supervised = "".join(t for t, l in zip(toks, labels) if l != -100)
  # Answer, <|im_end|> and the newline of each assistant turn, nothing else.
  assert supervised == "red<|im_end|>Ċblue<|im_end|>Ċ"
  np.testing.assert_array_equal(labels[labels != -100],
                                ids[labels != -100])


def test_role_content_schema_and_leading_assistant_dropped(tok):
  turns = normalize_turns([
      {"role": "assistant", "content": "hello"},
      {"role": "user", "content": "hi"},
      {"role": "assistant", "content": "ok"}])
  assert turns == [("user", "hi"), ("assistant", "ok")]


@pytest.mark.parametrize("conv,kind", [
    ([{"from": "human", "value": "hi"}], "no_assistant"),
    ([{"from": "robot", "value": "x"}], "malformed"),
    ("not a list", "malformed"),
])
def test_bad_records(conv, kind):
  with pytest.raises(RecordError) as e:
    normalize_turns(conv)
  assert e.value.kind == kind


def test_image_count_mismatch(tok):
  turns = normalize_turns([{"from": "human", "value": "<image> <image> q"},
                           {"from": "gpt", "value": "a"}])
  with pytest.raises(RecordError) as e:
    tokenize_conversation(tok, turns, [4])
  assert e.value.kind == "image_count"


def _sample(rng, n, patches, images=1):
  ids = rng.integers(10, 100, n).astype(np.int32)
  labels = np.where(rng.random(n) < 0.3, ids, -100).astype(np.int32)
  return dict(input_ids=ids, labels=labels,
              position_ids=np.tile(np.arange(n, dtype=np.int32), (3, 1)),
              pixel_values=rng.standard_normal((patches, 4)).astype(
                  np.float32),
              image_grid_thw=np.tile([[1, 2, patches // 2]], (images, 1)))


def test_packing_keeps_every_supervised_token_and_never_mixes():
  rng = np.random.default_rng(0)
  samples = [_sample(rng, int(rng.integers(5, 60)), 2 * int(rng.integers(1, 9)))
             for _ in range(200)]
  samples.append(_sample(rng, 100, 4))        # too many tokens
  samples.append(_sample(rng, 10, 40))        # too many patches
  stats = collections.Counter()
  rows = list(pack(samples, 64, 32, 4, patch_dim=4, stats=stats))
  assert stats["too_long"] == 2 and stats["samples"] == 200
  kept = [s for s in samples[:200]]
  # Every sample appears intact, in one segment, with its own positions.
  found = 0
  for row in rows:
    for seg in range(1, row["segment_ids"].max() + 1):
      where = np.flatnonzero(row["segment_ids"] == seg)
      assert (np.diff(where) == 1).all()      # contiguous
      match = [s for s in kept if len(s["input_ids"]) == len(where) and
               (s["input_ids"] == row["input_ids"][where]).all()]
      assert match
      np.testing.assert_array_equal(row["labels"][where], match[0]["labels"])
      np.testing.assert_array_equal(row["position_ids"][:, where],
                                    match[0]["position_ids"])
      found += 1
    assert row["num_images"] <= 4
    assert (row["labels"][row["segment_ids"] == 0] == -100).all()
  assert found == 200
  assert sum(int((r["labels"] != -100).sum()) for r in rows) == sum(
      int((s["labels"] != -100).sum()) for s in kept)
  waste = 1 - stats["tokens"] / stats["token_slots"]
  assert waste < 0.2, waste

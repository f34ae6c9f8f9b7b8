"""Greedy generation with a KV cache against HF ``generate`` and, with a
budget, against a step-by-step HF reference fed the kept tokens."""
import numpy as np
import pytest
import torch

import vselect_jax
from tests import hf_tiny
from tests.hf_tiny import IMAGE, VIDEO
from vselect_jax.host.rope_index import get_rope_index

NEW = 10


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  hf = hf_tiny.make_model("tied_w56", seed=1)
  with torch.no_grad():  # sharper logits: varied, tie-free greedy tokens
    for n, p in hf.named_parameters():
      if p.ndim == 2 and "visual" not in n:
        p.mul_(8.0)
  path = tmp_path_factory.mktemp("gen") / "hf"
  hf.save_pretrained(path)
  return hf, vselect_jax.from_pretrained(str(path))


def _hf_generate(hf, eos=None, **inputs):
  ids = np.asarray(inputs["input_ids"])
  kw = {k: torch.as_tensor(np.asarray(v)) for k, v in inputs.items()
        if v is not None}
  kw["mm_token_type_ids"] = torch.as_tensor(
      np.where(ids == IMAGE, 1, np.where(ids == VIDEO, 2, 0)))
  extra = dict(eos_token_id=eos, pad_token_id=0) if eos is not None else dict(
      min_new_tokens=NEW)
  with torch.no_grad():
    out = hf.generate(**kw, max_new_tokens=NEW, do_sample=False, **extra)
  return out[:, ids.shape[1]:].numpy()


def _cases(rng):
  g1, g2, gv = [1, 6, 10], [1, 8, 8], [2, 4, 6]
  p1, p2, pv = (hf_tiny.pixels(rng, g) for g in (g1, g2, gv))
  yield "image", dict(input_ids=np.array([[1, 2] + hf_tiny.block(IMAGE, g1) +
                                          [3, 4]]),
                      pixel_values=p1, image_grid_thw=np.array([g1]))
  yield "two images", dict(
      input_ids=np.array([hf_tiny.block(IMAGE, g1) + [5] +
                          hf_tiny.block(IMAGE, g2) + [6]]),
      pixel_values=np.concatenate([p1, p2]), image_grid_thw=np.array([g1, g2]))
  yield "video", dict(input_ids=np.array([[7] + hf_tiny.block(VIDEO, gv) +
                                          [8]]),
                      pixel_values_videos=pv, video_grid_thw=np.array([gv]),
                      second_per_grid_ts=np.array([0.5]))
  yield "text", dict(input_ids=np.array([[11, 12, 13, 14, 15]]))


@pytest.mark.parametrize("budget", [None, 1.0])
def test_matches_hf_generate(pair, budget):
  hf, jx = pair
  for name, inputs in _cases(np.random.default_rng(0)):
    ours = jx.generate(**inputs, max_new_tokens=NEW, budget=budget)
    np.testing.assert_array_equal(ours, _hf_generate(hf, **inputs),
                                  err_msg=name)


def test_batch_with_left_padding_and_eos(pair):
  hf, jx = pair
  rng = np.random.default_rng(1)
  (r1, r2), (g1, g2) = hf_tiny.two_image_rows()
  ids, mask = hf_tiny.left_padded([r1, r2])
  n = ids.shape[1]
  inputs = dict(input_ids=ids, attention_mask=mask,
                pixel_values=np.concatenate([hf_tiny.pixels(rng, g1),
                                             hf_tiny.pixels(rng, g2)]),
                image_grid_thw=np.array([g1, g2]))
  free = jx.generate(**inputs, max_new_tokens=NEW)
  np.testing.assert_array_equal(free, _hf_generate(hf, **inputs))
  eos = int(free[0, 3])  # row 0 stops after 4 tokens
  ours = jx.generate(**inputs, max_new_tokens=NEW, eos_token_id=eos)
  ref = _hf_generate(hf, eos=eos, **inputs)
  np.testing.assert_array_equal(ours, ref)
  assert (ours[0, 4:] == 0).all()


def _hf_step_by_step(hf, inputs, keep, steps):
  """HF prefill on the kept tokens (inputs_embeds + gathered M-RoPE ids),
  then greedy decode at positions max + 1 + step."""
  ids = torch.tensor(inputs["input_ids"])
  pos, _ = get_rope_index(inputs["input_ids"],
                          image_grid_thw=inputs["image_grid_thw"],
                          image_token_id=IMAGE, video_token_id=VIDEO)
  with torch.no_grad():
    emb = hf.model.get_input_embeddings()(ids)
    feats = torch.cat(hf.model.get_image_features(
        torch.tensor(inputs["pixel_values"]),
        torch.tensor(inputs["image_grid_thw"])).pooler_output)
    emb[ids == IMAGE] = feats
    out = hf(inputs_embeds=emb[:, torch.tensor(keep)], use_cache=True,
             position_ids=torch.tensor(np.array(pos[:, :, keep]),
                                          dtype=torch.long))
    cache, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
    tokens = [int(tok)]
    nxt = int(pos.max()) + 1
    for step in range(steps - 1):
      p = torch.full((3, 1, 1), nxt + step, dtype=torch.long)
      out = hf(input_ids=tok[:, None], past_key_values=cache, use_cache=True,
               position_ids=p)
      cache, tok = out.past_key_values, out.logits[:, -1].argmax(-1)
      tokens.append(int(tok))
  return np.array([tokens])


@pytest.mark.parametrize("budget", [0.5, 0.2])
def test_budget_matches_step_by_step_hf(pair, budget):
  hf, jx = pair
  rng = np.random.default_rng(2)
  g1, g2 = [1, 6, 10], [1, 8, 8]
  inputs = dict(
      input_ids=np.array([[1] + hf_tiny.block(IMAGE, g1) + [5] +
                          hf_tiny.block(IMAGE, g2) + [6, 7]]),
      pixel_values=np.concatenate([hf_tiny.pixels(rng, g1),
                                   hf_tiny.pixels(rng, g2)]),
      image_grid_thw=np.array([g1, g2]))
  keep = jx.forward(**inputs, budget=budget).keep_index[0]
  ours = jx.generate(**inputs, budget=budget, max_new_tokens=NEW)
  np.testing.assert_array_equal(ours, _hf_step_by_step(hf, inputs, keep, NEW))


def test_bad_max_new_tokens(pair):
  _, jx = pair
  with pytest.raises(ValueError, match="max_new_tokens"):
    jx.generate(np.array([[1, 2]]), max_new_tokens=0)

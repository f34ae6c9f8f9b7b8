"""PyTorch oracle for LLaVA-OneVision-1.5, run in the oracle venv (.venv-ov).

lmms-engine's implementation needs transformers 4.x (the main venv has 5.x),
so the tests run this script in a subprocess (see ``tests/ov_tiny.py``):

  .venv-ov/bin/python tests/ov_oracle.py SPEC.json OUT_DIR

SPEC.json: ``{"config": <Llavaonevision1_5Config kwargs>, "seed": int,
"cases": [names]}``; the case arrays are in ``OUT_DIR/inputs.npz`` as
``<case>.input_ids`` int[B, T], optional ``<case>.attention_mask`` int[B, T],
``<case>.pixel_values`` float[P, 588] and ``<case>.image_grid_thw`` int[I, 3].

Writes a tiny random-init model with ``save_pretrained`` to ``OUT_DIR/hf``
and, in ``OUT_DIR/outputs.npz`` per case:
* ``<case>.logits`` float32[B, T, V]: the forward with each image encoded
  on its own (the copy unpacks several images off by one, see
  README, LLaVA-OneVision-1.5) and scattered into the embeddings, positions =
  cache positions as in the reference;
* with images, ``<case>.vision`` float32[M, E]: the tower run one image at a
  time and concatenated, and ``<case>.vision_joint``: the tower run on all
  images at once (the copy's own multi-image result, shifted by one row);
* ``<case>.logits_native``: the unmodified forward with pixel values.

A case with ``<case>.keep`` int[B, K] (indices into the sequence) is a
compressed prompt, as the reference's budgeted forward builds it: only the
kept tokens' embeddings go in, with their original cache positions as
``position_ids`` (gaps); ``<case>.logits`` is then float32[B, K, V].

Optional per case (B = 1):
* ``<case>.generate`` int[1] = n: ``<case>.generated`` int[1, n], a greedy
  loop with the KV cache over the (kept) embeddings, decoding at position
  L_orig + step as the reference's selector forward; without ``keep`` also
  ``<case>.generated_native``: the model's own ``generate`` from the ids.
* ``<case>.attn_layer`` int[1] = l: ``<case>.attn_received`` float32[B, T],
  layer l's attention (eager) received per key, mean over heads, summed
  over queries (FastV's signal).
* with pixels, ``<case>.cls_attn`` float32[M] and ``<case>.cls_keys``
  float32[M, H]: per image, the last vision block's attention from the
  class token to each patch (mean over heads) and its post-RoPE keys (mean
  over heads), both averaged over the 2x2 merge unit (VisionZip on OV).

SPEC.json may give ``"load": dir`` to load that saved model instead of
building a random one (a second run on the same weights), and
``"selector": dir``: that checkpoint is loaded into the lmms-engine class
with the reference selector's scorer at ``model.visual.importance_scorer``
(``TransformerScorer``: ``q_proj``, ``k_proj`` Linear with bias), with
``output_loading_info``; ``OUT_DIR/selector_loading.json`` gets the missing
and unexpected keys and ``OUT_DIR/selector_scorer.npz`` the loaded scorer.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
import types

import numpy as np
import torch


def _import_ov_modules():
  """Loads lmms-engine's two model files without its package ``__init__``
  (which imports a training-only registry and liger kernels)."""
  spec = importlib.util.find_spec("lmms_engine")
  if spec is None or not spec.submodule_search_locations:
    raise SystemExit("lmms_engine is not installed in this interpreter "
                     f"({sys.executable}); run `make venv-ov`")
  folder = os.path.join(list(spec.submodule_search_locations)[0], "models",
                        "llava_onevision1_5")
  pkg = types.ModuleType("ov_oracle_pkg")
  pkg.__path__ = [folder]
  sys.modules["ov_oracle_pkg"] = pkg
  cfg = importlib.import_module("ov_oracle_pkg.configuration_llavaonevision1_5")
  mod = importlib.import_module("ov_oracle_pkg.modeling_llavaonevision1_5")
  return cfg, mod


def _randomise(model: torch.nn.Module) -> None:
  """Random norms, biases and class token: a swapped or dropped parameter
  must show up in the outputs (HF's init leaves norms at 1, biases at 0)."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias"):
        p.copy_(torch.randn_like(p) * 0.1)
      elif "norm" in name or "ln_q" in name:
        p.copy_(torch.randn_like(p) * 0.1 + 1.0)
      elif "class_embedding" in name:
        p.copy_(torch.randn_like(p))


class _LastBlockProbe:
  """Records, for one image run alone (its class token is row 0), the last
  block's class-token attention to the patches and the patches' keys, both
  post-RoPE, mean over heads, averaged over the 2x2 merge unit."""

  def __init__(self, visual, mod):
    self.attn_module, self.mod = visual.blocks[-1].attn, mod

  def __enter__(self):
    self.handle = self.attn_module.register_forward_pre_hook(
        self._hook, with_kwargs=True)
    return self

  def __exit__(self, *exc):
    self.handle.remove()

  def _hook(self, module, args, kwargs):
    x = kwargs.get("hidden_states", args[0] if args else None)
    cos, sin = kwargs["position_embeddings"]
    n = x.shape[0]
    q, k, _ = module.qkv(x).reshape(n, 3, module.num_heads, -1).permute(
        1, 0, 2, 3).unbind(0)
    q, k = self.mod.apply_rotary_pos_emb_vision(q, k, cos, sin)
    w = torch.softmax((q.transpose(0, 1) @ k.transpose(0, 1).transpose(1, 2))
                      / math.sqrt(q.shape[-1]), dim=-1)   # [N, L, L]
    self.cls_attn = w.mean(0)[0, 1:].reshape(-1, 4).mean(1)
    self.keys = k[1:].mean(1).reshape(-1, 4, k.shape[-1]).mean(1)


def _greedy(model, embeds, positions, length: int, n: int) -> np.ndarray:
  """Greedy tokens int[1, n]: prefill the given embeddings at their
  positions, then one token per step at position length + step."""
  out = model(inputs_embeds=embeds, position_ids=positions,
              attention_mask=torch.ones(positions.shape, dtype=torch.long),
              use_cache=True)
  past, tokens = out.past_key_values, [out.logits[:, -1].argmax(-1)]
  seen = positions.shape[1]
  for step in range(n - 1):
    seen += 1
    out = model(input_ids=tokens[-1][:, None],
                position_ids=torch.tensor([[length + step]]),
                attention_mask=torch.ones((1, seen), dtype=torch.long),
                past_key_values=past, use_cache=True)
    past = out.past_key_values
    tokens.append(out.logits[:, -1].argmax(-1))
  return torch.stack(tokens, 1).numpy()


def _check_selector(mod, path: str, out: str) -> None:
  """Loads ``path`` into the generation class plus the reference's scorer
  (the VisionSelector class: the scorer on ``model.visual``)."""

  class Scorer(torch.nn.Module):
    def __init__(self, d):
      super().__init__()
      self.q_proj = torch.nn.Linear(d, d // 2)
      self.k_proj = torch.nn.Linear(d, d // 2)

  class Selector(mod.LLaVAOneVision1_5_ForConditionalGeneration):
    def __init__(self, config):
      super().__init__(config)
      self.model.visual.importance_scorer = Scorer(
          config.text_config.hidden_size)

  model, info = Selector.from_pretrained(path, output_loading_info=True,
                                         torch_dtype=torch.float32)
  with open(os.path.join(out, "selector_loading.json"), "w") as f:
    json.dump({k: sorted(v) if not isinstance(v, list) else
               sorted(map(str, v)) for k, v in info.items()}, f)
  np.savez(os.path.join(out, "selector_scorer.npz"), **{
      n: p.detach().float().numpy() for n, p in
      model.model.visual.importance_scorer.named_parameters()})


def main(argv) -> int:
  spec_file, out = argv
  with open(spec_file) as f:
    spec = json.load(f)
  cfg_mod, mod = _import_ov_modules()
  if spec.get("selector"):
    _check_selector(mod, spec["selector"], out)
  torch.manual_seed(int(spec.get("seed", 0)))
  if spec.get("load"):
    model = mod.LLaVAOneVision1_5_ForConditionalGeneration.from_pretrained(
        spec["load"], attn_implementation="eager", torch_dtype=torch.float32)
    config = model.config
    for c in (config, config.vision_config, config.text_config):
      c._attn_implementation = "eager"
    model = model.float().eval()
  else:
    config = cfg_mod.Llavaonevision1_5Config(**spec["config"])
    config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    model = mod.LLaVAOneVision1_5_ForConditionalGeneration(config)
    _randomise(model)
    model = model.float().eval()
    if config.tie_word_embeddings:
      model.tie_weights()
    model.save_pretrained(os.path.join(out, "hf"))

  inputs = np.load(os.path.join(out, "inputs.npz"))
  visual = model.model.visual
  image_token = config.image_token_id
  results = {}
  with torch.no_grad():
    for case in spec["cases"]:
      get = lambda k: (torch.from_numpy(inputs[f"{case}.{k}"])
                       if f"{case}.{k}" in inputs else None)
      ids = get("input_ids").long()
      mask = get("attention_mask")
      mask = None if mask is None else mask.long()
      pix, grid = get("pixel_values"), get("image_grid_thw")
      embeds = model.model.get_input_embeddings()(ids)
      if pix is not None:
        pix, grid = pix.float(), grid.long()
        sizes = (grid.prod(-1)).tolist()
        per_item, attn, keys = [], [], []
        for p, g in zip(torch.split(pix, sizes), grid):
          with _LastBlockProbe(visual, mod) as probe:
            per_item.append(visual(p, grid_thw=g[None]))
          attn.append(probe.cls_attn)
          keys.append(probe.keys)
        per_item = torch.cat(per_item)
        results[f"{case}.cls_attn"] = torch.cat(attn).numpy()
        results[f"{case}.cls_keys"] = torch.cat(keys).numpy()
        results[f"{case}.vision"] = per_item.numpy()
        results[f"{case}.vision_joint"] = visual(pix, grid_thw=grid).numpy()
        where = (ids == image_token)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(where, per_item)
        results[f"{case}.logits_native"] = model(
            input_ids=ids, attention_mask=mask, pixel_values=pix,
            image_grid_thw=grid, use_cache=False).logits.numpy()
      else:
        results[f"{case}.logits_native"] = model(
            input_ids=ids, attention_mask=mask, use_cache=False).logits.numpy()
      layer = get("attn_layer")
      if layer is not None:
        att = model(inputs_embeds=embeds, attention_mask=mask,
                    output_attentions=True, use_cache=False
                    ).attentions[int(layer[0])]
        results[f"{case}.attn_received"] = att.float().mean(1).sum(1).numpy()
      n_new = get("generate")
      keep = get("keep")
      if n_new is not None:
        length = ids.shape[1]
        pos = keep.long() if keep is not None else torch.arange(length)[None]
        kept = (embeds if keep is None else
                torch.stack([e[k] for e, k in zip(embeds, keep.long())]))
        results[f"{case}.generated"] = _greedy(model, kept, pos, length,
                                               int(n_new[0]))
        if keep is None:
          results[f"{case}.generated_native"] = model.generate(
              input_ids=ids, attention_mask=torch.ones_like(ids),
              pixel_values=pix, image_grid_thw=grid, do_sample=False,
              max_new_tokens=int(n_new[0]), min_new_tokens=int(n_new[0])
          )[:, length:].numpy()
      if keep is not None:  # a compressed prompt: kept tokens, own positions
        keep = keep.long()
        embeds = torch.stack([e[k] for e, k in zip(embeds, keep)])
        # With the mask given (as the reference's selector forward gathers
        # it), transformers does not read position gaps as packed sequences.
        results[f"{case}.logits"] = model(
            inputs_embeds=embeds, position_ids=keep,
            attention_mask=torch.ones_like(keep), use_cache=False
        ).logits.numpy()
        continue
      results[f"{case}.logits"] = model(
          inputs_embeds=embeds, attention_mask=mask,
          use_cache=False).logits.numpy()
  np.savez(os.path.join(out, "outputs.npz"), **results)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))

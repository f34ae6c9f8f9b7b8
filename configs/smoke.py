"""A few-minute CPU run: a tiny random Qwen2.5-VL on the synthetic data.

Works from a fresh clone with no other step: the first load builds and
caches (under ``$VSELECT_CACHE``, default ``.cache/smoke``) a tiny HF
checkpoint with a small offline tokenizer, and a synthetic dataset.

  python train.py --config configs/smoke.py --workdir /tmp/vs_smoke
"""
import os

from configs.common import base_config

CACHE = os.environ.get("VSELECT_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
    "smoke"))


def build_assets(cache: str = CACHE) -> dict:
  """Tiny model (HF format, tokenizer inside) and synthetic data, cached."""
  model_dir = os.path.join(cache, "model")
  data_dir = os.path.join(cache, "data")
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    import torch
    from transformers import (Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration)
    from vselect_jax.data import testing
    tok = testing.testing_tokenizer(model_dir)
    ids = {t: tok.convert_tokens_to_ids(t) for t in testing.SPECIAL}
    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         rope_parameters={"rope_type": "default",
                                          "mrope_section": [2, 3, 3],
                                          "rope_theta": 1e6},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"]),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128,
                           num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], tokens_per_second=2),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(model_dir)
  if not os.path.exists(os.path.join(data_dir, "synthetic.jsonl")):
    from vselect_jax.data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(data_dir, 200, seed=0,
                            sizes=((224, 224), (168, 280), (252, 196)))
  return {"model": model_dir,
          "registry": {"synthetic": {
              "annotation": os.path.join(data_dir, "synthetic.jsonl"),
              "root": data_dir}}}


def get_config():
  assets = build_assets()
  c = base_config()
  c.model_path = assets["model"]
  c.param_dtype = "float32"
  c.compute_dtype = None
  c.total_steps = 20
  c.checkpoint_every = 10
  c.async_checkpointing = False
  c.export_dtype = "float32"
  c.optim.lr = 5e-2
  c.optim.grad_accum = 1
  # Any device count: the batch stays whole, weights split where they divide.
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, -1
  c.data.mixture = "synthetic"
  c.data.registry = assets["registry"]
  c.data.row_length = 512
  c.data.patches_per_row = 1024
  c.data.max_images_per_row = 4
  c.data.rows_per_batch = 2
  c.data.samples_per_row = 4
  c.data.max_pixels = 50176
  c.data.num_workers = 0
  return c

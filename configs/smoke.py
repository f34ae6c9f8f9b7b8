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
    from vselect_jax.data import testing
    testing.tiny_hf_model(model_dir)
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

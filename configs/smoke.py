"""A few-minute CPU run: a tiny random Qwen2.5-VL on the synthetic data.

The config only names its assets (under ``$VSELECT_CACHE``, default
``.cache/smoke``): a tiny HF checkpoint with a small offline tokenizer, and
a synthetic dataset. Building them is an explicit step (cached; the
pipeline demo runs it too):

  python -m configs.smoke          # build the assets
  python train.py --config configs/smoke.py --workdir /tmp/vs_smoke
"""
import os

from configs.common import base_config

CACHE = os.environ.get("VSELECT_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache",
    "smoke"))


def asset_paths(cache: str = CACHE) -> dict:
  """Where ``build_assets`` puts the model and the data (nothing written)."""
  data_dir = os.path.join(cache, "data")
  return {"model": os.path.join(cache, "model"),
          "registry": {"synthetic": {
              "annotation": os.path.join(data_dir, "synthetic.jsonl"),
              "root": data_dir}}}


def build_assets(cache: str = CACHE) -> dict:
  """Tiny model (HF format, tokenizer inside) and synthetic data, cached."""
  paths = asset_paths(cache)
  model_dir = paths["model"]
  data_dir = paths["registry"]["synthetic"]["root"]
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    from vselect_jax.data import testing
    testing.tiny_hf_model(model_dir)
  if not os.path.exists(os.path.join(data_dir, "synthetic.jsonl")):
    from vselect_jax.data.synthetic import write_synthetic_dataset
    write_synthetic_dataset(data_dir, 200, seed=0,
                            sizes=((224, 224), (168, 280), (252, 196)))
  return paths


def get_config():
  assets = asset_paths()
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
  c.global_batch_rows = 2         # one process; pools over 4 samples/row
  c.data.samples_per_row = 4
  c.data.mean_samples_per_row = 4   # short synthetic QAs fill the cap
  c.data.max_pixels = 50176
  c.data.num_workers = 0
  return c


if __name__ == "__main__":
  print(build_assets())

"""VisionSelector on Qwen2.5-VL-7B-Instruct, the reference recipe.

Reference: global batch 512 samples (8 GPUs x 16 x 4 accumulation), lr 5e-5
cosine with 3% warmup, budget 0.2, BCE weight 0.1 -> 2.0, one epoch of
chartqa,coco%10,ocr_vqa, max_pixels 50176.

Here: 32 packed rows of 4096 tokens per step (~498 samples at 15.6 per
row), 2 micro-batches of 16 rows (one row per chip on a v4-32), one epoch
(the step count is derived: ~290 steps). Pooling: the scorer's mean key and
the top-k run over one row of 4096 tokens and 4096 patches, ~15.6 samples
and at most 16 full-size images (1024 visual tokens), as the 7B reference
pools over its per-device micro-batch of 16 samples.

  python train.py --config configs/qwen25vl_7b.py --workdir gs://B/run \\
      --config.model_path=gs://B/ckpt/qwen25vl-7b
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.global_batch_rows = 32
  c.optim.grad_accum = 2
  c.data.row_length = 4096
  c.data.patches_per_row = 4096
  c.data.mean_samples_per_row = 15.6  # bench/data.py at 4096 / 4096
  c.mesh.tensor = 1
  return c

"""VisionSelector on Qwen2.5-VL-3B-Instruct, the reference recipe.

Reference: global batch 256 samples (8 GPUs x 8 x 4 accumulation), lr 5e-5
cosine with 3% warmup, budget 0.2, BCE weight 0.1 -> 2.0, one epoch of
chartqa,coco%10,ocr_vqa (~144K samples), max_pixels 50176.

Here: 32 packed rows of 2048 tokens per step (~246 samples at 7.7 per row),
2 micro-batches of 16 rows (one row per chip on a v4-32), one epoch (the
step count is derived: ~585 steps). Pooling: the scorer's mean key and the
top-k run over one row, ~7.7 samples and at most 8 full-size images (512
visual tokens), as the 3B reference pools over its micro-batch of 8.

  python train.py --config configs/qwen25vl_3b.py --workdir gs://B/run \\
      --config.model_path=gs://B/ckpt/qwen25vl-3b
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.global_batch_rows = 32
  c.optim.grad_accum = 2
  return c

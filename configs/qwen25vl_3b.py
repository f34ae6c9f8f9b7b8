"""VisionSelector on Qwen2.5-VL-3B-Instruct, the reference recipe.

Global batch 256 samples (reference: 8 GPUs x 8 x 4 accumulation), lr 5e-5
cosine with 3% warmup, budget 0.2, BCE weight 0.1 -> 2.0, one epoch of
chartqa,coco%10,ocr_vqa (~144K samples, ~563 steps), max_pixels 50176.

  python train.py --config configs/qwen25vl_3b.py --workdir gs://B/run \
      --config.model_path=gs://B/ckpt/qwen25vl-3b
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.total_steps = 563
  # Packed rows of ~8 samples each (<= 64 visual tokens per image), 8 rows
  # per micro-batch and 4 micro-batches per step: ~256 samples per step.
  c.data.rows_per_batch = 8
  c.optim.grad_accum = 4
  return c

"""VisionSelector on Qwen2.5-VL-7B-Instruct, the reference recipe.

Global batch 512 samples (reference: 8 GPUs x 16 x 4 accumulation), lr 5e-5
cosine with 3% warmup, budget 0.2, BCE weight 0.1 -> 2.0, one epoch of
chartqa,coco%10,ocr_vqa (~282 steps), max_pixels 50176.

  python train.py --config configs/qwen25vl_7b.py --workdir gs://B/run \
      --config.model_path=gs://B/ckpt/qwen25vl-7b
"""
from configs.common import base_config


def get_config():
  c = base_config()
  c.total_steps = 282
  c.data.rows_per_batch = 16
  c.optim.grad_accum = 4
  c.mesh.tensor = 1
  return c

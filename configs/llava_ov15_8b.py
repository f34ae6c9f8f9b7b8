"""VisionSelector on LLaVA-OneVision-1.5-8B-Instruct, the reference recipe.

Reference (``llava-ov-15/scripts/finetune_selector_8b.sh``): TextVQA +
OCR-VQA (``textvqa_ocrvqa_cambrian.jsonl``, ~101K samples), 8 GPUs x batch 1
x 16 accumulation = 128 samples per step, lr 5e-5 cosine with 3% warmup,
weight decay 0, one epoch, budget 0.2, BCE weight 0.1 -> 3.0, image pixels
in [20 * 28^2, 1280 * 28^2] (<= 1280 visual tokens), only the scorer trains.
With one sample per device, its top-k (and the scorer's mean key) pools
the visual tokens of one sample.

Here: one sample per packed row (``data.samples_per_row = 1``), so the
global batch of 128 samples is ``global_batch_rows = 128`` rows
(``training/global_batch.py``: rows are exact, samples = rows x 1), and
``selection_pool = "sample"`` pools each sample on its own (also if rows
are later packed denser). A row holds one full-size image (1280 tokens,
5120 patches of 588 values) and its text. 4 micro-batches of 32 rows (two
rows per chip on a v4-32); one epoch of the ~101K records is ~790 steps.

  python train.py --config configs/llava_ov15_8b.py --workdir gs://B/run \\
      --config.model_path=gs://B/ckpt/llava-ov15-8b \\
      --config.data.registry.textvqa_ocrvqa_cambrian.annotation=... \\
      --config.data.registry.textvqa_ocrvqa_cambrian.root=...
"""
import ml_collections

from configs.common import base_config


def get_config():
  c = base_config()
  c.budget = 0.2
  c.selection_pool = "sample"
  c.global_batch_rows = 128
  c.optim.grad_accum = 4
  c.optim.lr = 5e-5
  c.optim.warmup_ratio = 0.03
  c.optim.weight_decay = 0.0
  c.reg.start, c.reg.end, c.reg.shape = 0.1, 3.0, "linear"
  c.epochs = 1.0
  c.data.family = "llava_ov15"
  c.data.mixture = "textvqa_ocrvqa_cambrian"
  c.data.registry = ml_collections.ConfigDict({
      "textvqa_ocrvqa_cambrian": {"annotation": "", "root": ""}})
  c.data.min_pixels = 20 * 28 * 28
  c.data.max_pixels = 1280 * 28 * 28
  c.data.samples_per_row = 1
  c.data.mean_samples_per_row = 1
  c.data.max_images_per_row = 1
  c.data.row_length = 2048        # 1280 visual tokens + the QA text
  c.data.patches_per_row = 5120   # one 1280-token image
  c.mesh.tensor = 1
  return c

"""Dynamic-Qwen on Qwen2.5-VL-7B-Instruct: the reference's baseline recipe.

Reference (``qwen-vl-finetune/scripts/sft_7b_dynamic.sh``): only the image
predictor trains (``model.image_score_predictor``, at LLM layer 2), lr 2e-4
cosine with 3% warmup, weight decay 0, clip 1.0, one epoch of
chartqa,coco%10,ocr_vqa at max_pixels 50176, global batch 8 x 4 x 8 = 256
samples, budget (keep target) 0.2, loss CE + 100 * (mean keep - 0.2)^2,
hard Gumbel-softmax with tau = 1.0 * (0.1 / 1.0) ** (step / total).

Here: the 7B scorer config's batch layout (32 rows of 4096 tokens per step,
~498 samples: twice the reference's 256, which its 8 x 8 layout would give
with 16 rows); the predictor's keep policy masks attention in layers 2..27
through the policy-masked softmax (dense [T, T] per layer, as the
reference's sdpa-with-policy).

  python train.py --config configs/dynamic_qwen_7b.py --workdir gs://B/dq \\
      --config.model_path=gs://B/ckpt/qwen25vl-7b
"""
from configs import qwen25vl_7b


def recipe(c):
  """Turns a scorer training config into Dynamic-Qwen's (in place)."""
  c.train_method = "dynamic_qwen"
  c.budget = 0.2                 # the keep ratio the sparsity term targets
  c.optim.lr = 2e-4
  c.optim.warmup_ratio = 0.03
  c.optim.weight_decay = 0.0
  # The sparsity weight: 100, constant (reg_weight_schedule's w(step)).
  c.reg.start, c.reg.end, c.reg.shape = 100.0, 100.0, "constant_start"
  c.gumbel = dict(start=1.0, end=0.1)
  c.soft_mask = "scale"          # in-LLM: the policy-masked softmax
  return c


def get_config():
  return recipe(qwen25vl_7b.get_config())

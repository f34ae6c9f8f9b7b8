"""Dynamic-Qwen's recipe on the smoke config's tiny model (CPU, seconds):

  python -m configs.smoke          # build the assets
  python train.py --config configs/dynamic_qwen_tiny.py --workdir /tmp/dq
"""
from configs import smoke
from configs.dynamic_qwen_7b import recipe


def get_config():
  c = recipe(smoke.get_config())
  c.optim.lr = 5e-3   # the tiny run's 20 steps move the keep ratio visibly
  return c

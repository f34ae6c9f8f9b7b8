"""The synthetic world (``vselect_jax.data.world``) in two stages, on CPU:

  # stage 1: a small Qwen2.5-VL-architecture model from scratch, all tokens
  python train.py --config configs/world.py:backbone --workdir runs/world_backbone
  # stage 2: freeze it (converted from runs/world_backbone/hf), train the scorer
  python train.py --config configs/world.py:selector --workdir runs/world_selector \
      --config.model_path=runs/world_backbone/hf
  # the Dynamic-Qwen baseline on the same frozen backbone
  python train.py --config configs/world.py:dynamic_qwen --workdir runs/world_dq \
      --config.model_path=runs/world_backbone/hf

``python -m vselect_jax.world_demo`` (``make demo-world1``) runs both, then the
sweep. The configs only name their assets (a random-init model with the
offline test tokenizer, the world's train/test splits, cached under
``$VSELECT_CACHE/world``, default ``.cache/world``); building them is an
explicit step, ``python -m configs.world`` (the demo runs it too).

The world asks for the colour of a circle, half the time among grey
distractors (``color``) and half the time among brightly coloured ones in
other hues (``busy``, where the evidence is not the most salient thing). In
our CPU budget (~7 minutes of stage 1) the from-scratch backbone learns
colour but shape only to 50% (chance 33%) and higher/count not at all
(README, "The synthetic world").
"""
import os

from configs.common import base_config

CACHE = os.path.join(os.environ.get("VSELECT_CACHE", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache")),
                     "world")
TRAIN, TEST = 4000, 400
KINDS = ("color", "busy")
# 36 to 64 merged tokens per image: at 0.2 about 7 to 13 are kept.
SIZES = ((168, 168), (196, 168), (168, 196), (224, 224))
MIN_PIXELS, MAX_PIXELS = 168 * 168, 224 * 224   # images are used as drawn
# HF's 0.02 init std suits wide models; at width 128 attention learns to
# find the one coloured token several times sooner from ~1/sqrt(width).
MODEL = dict(hidden=128, layers=3, vision_depth=2, initializer_range=0.06)


def _model_dir(cache: str, model: dict) -> str:
  return os.path.join(
      cache, "init_model_" + "_".join(f"{k}{v}" for k, v in model.items()))


def asset_paths(cache: str = CACHE, model=None) -> dict:
  """Where ``build_assets`` puts the model and the splits (nothing
  written): {"model", "registry", "test"}."""
  data = os.path.abspath(os.path.join(cache, "data"))
  return {"model": _model_dir(cache, model or MODEL),
          "registry": {"world": {
              "annotation": os.path.join(data, "train.jsonl"),
              "root": data}},
          "test": os.path.join(data, "test.jsonl")}


def build_assets(cache: str = CACHE, num_train: int = TRAIN,
                 num_test: int = TEST, sizes=SIZES, model=None,
                 kinds=KINDS) -> dict:
  """The random-init model and the world's splits (cached in ``cache``)."""
  from vselect_jax.data import testing
  from vselect_jax.data.world import write_world
  model = model or MODEL
  model_dir = _model_dir(cache, model)
  if not os.path.exists(os.path.join(model_dir, "config.json")):
    testing.tiny_hf_model(model_dir, **model)
  world = write_world(os.path.join(cache, "data"), num_train, num_test,
                      seed=0, sizes=sizes, kinds=kinds)
  return {"model": model_dir, "registry": {"world": world["train"]},
          "test": world["test"]}


STAGES = ("backbone", "selector", "dynamic_qwen")


def make_config(stage: str, cache: str = CACHE, model=None):
  """The stage's config over the assets in ``cache`` (built with
  ``build_assets(cache, model=model, ...)``; tests use a smaller world and
  model)."""
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
  assets = asset_paths(cache, model)
  c = base_config()
  c.model_path = assets["model"]
  c.param_dtype = "float32"
  c.compute_dtype = None
  c.async_checkpointing = False
  c.export_dtype = "float32"
  c.checkpoint_every = 100
  c.log_every = 10
  c.optim.grad_accum = 1
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 1, -1
  c.data.mixture = "world"
  c.data.registry = assets["registry"]
  c.data.min_pixels = MIN_PIXELS
  c.data.max_pixels = MAX_PIXELS
  # The top-k pools over one row: ~6 samples, <= 12 images.
  c.data.row_length = 512          # ~6 samples per row, ~24 per step
  c.data.patches_per_row = 1536
  c.data.max_images_per_row = 12
  c.global_batch_rows = 4          # one process
  c.data.mean_samples_per_row = 6
  c.data.num_workers = 0
  c.optim.lr = 2e-3
  c.optim.weight_decay = 0.0
  if stage == "backbone":
    c.train_parts.tune_mm_vision = True
    c.train_parts.tune_mm_mlp = True
    c.train_parts.tune_mm_llm = True
    c.train_parts.tune_compressor = False
    c.total_steps = 500
  else:
    c.total_steps = 300
    c.budget = 0.2
  if stage == "dynamic_qwen":
    # The reference's Dynamic-Qwen recipe (lr 2e-4, 100 x (keep - 0.2)^2,
    # tau 1.0 -> 0.1) at layer 2 of the world's 3-layer LLM; the lr is the
    # world's (2e-3, as the scorer's) and the run shorter: the predictor
    # only has to find the one coloured circle.
    from configs.dynamic_qwen_7b import recipe
    recipe(c)
    c.optim.lr = 2e-3
    c.total_steps = 150
  return c


def get_config(stage: str = "backbone"):
  return make_config(stage)


if __name__ == "__main__":
  print(build_assets())

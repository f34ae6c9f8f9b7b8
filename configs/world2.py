"""The second synthetic world (``vselect_jax.data.world2``) in two stages, on
CPU, as ``configs/world.py`` for the first; stage 1 is a curriculum of three
phases, each starting from the previous phase's ``hf/`` export:

  python -m configs.world2                        # builds the assets
  python train.py --config configs/world2.py:backbone_easy --workdir runs/w2_easy
  python train.py --config configs/world2.py:backbone_ramp --workdir runs/w2_ramp \
      --config.model_path=runs/w2_easy/hf
  python train.py --config configs/world2.py:backbone --workdir runs/w2_backbone \
      --config.model_path=runs/w2_ramp/hf
  python train.py --config configs/world2.py:selector --workdir runs/w2_selector \
      --config.model_path=runs/w2_backbone/hf

``python -m vselect_jax.world2_demo`` runs them all, the sweep and the
annealing grid. Images are 448-504 px (256-288 merged tokens) against a
~40-token prompt; the backbone has 4 LLM layers, so FastV and DART prune at
layer 2 of 4 (``methods/fastv.py:prune_layer``).

Why a curriculum: trained on world2 itself from random init, the backbone
stays at the answer prior (CE ~ln 4 per answer) in every recipe tried
(docs/world2.md), even with a vision tower that already tells the faint
circle's hue per token. What made it learn is a world where the evidence
also shows in the mean of the visual tokens (full hue, big circles, small
images: ``PHASES["easy"]``), so the answer can be read before attention has
found the circle; then contrast and size ramp down to the evaluation's.
"""
import os

from configs import world as world_cfg
from vselect_jax.data.world2 import EVAL, SIZES, Difficulty

CACHE = os.path.join(os.path.dirname(world_cfg.CACHE), "world2")
TRAIN, TEST = 4000, 400
# The floor the issue names: the colour kinds (``code`` and ``next_to`` are
# in the world; see docs/world2.md for what stage 1 made of them).
KINDS = ("color", "busy")
MIN_PIXELS, MAX_PIXELS = 448 * 448, 504 * 448   # images are used as drawn
# As world 1's (width 128, init std 0.06: see configs/world.py), one LLM
# layer deeper.
MODEL = dict(hidden=128, layers=4, vision_depth=2, initializer_range=0.06)


# Stage 1's phases, easiest first: (difficulty, image sizes, steps, lr,
# samples per row). "eval" is the world the methods are evaluated on.
SMALL = ((112, 112), (140, 140), (168, 168))
PHASES = {
    "easy": (Difficulty(evidence_mix=(1.0, 1.0), circle=(28, 43)), SMALL,
             150, 2e-3, 18),
    "ramp": (Difficulty(evidence_mix=(0.35, 1.0), circle=(16, 43)),
             ((112, 112), (168, 168), (224, 224), (336, 336)) + SIZES,
             150, 1e-3, 18),
    "eval": (EVAL, SIZES, 200, 1e-3, 4),
}


def asset_paths(cache: str = CACHE, model=None, kinds=KINDS,
                phase: str = "eval") -> dict:
  """Where ``build_assets`` puts the model and the splits (nothing
  written): {"model", "registry", "test"}; one data dir per kind set and
  phase (the test split used is the "eval" phase's)."""
  if phase not in PHASES:
    raise ValueError(f"phase must be one of {list(PHASES)}, got {phase!r}")
  name = "data_" + "_".join(kinds) + ("" if phase == "eval" else "_" + phase)
  data = os.path.abspath(os.path.join(cache, name))
  model_dir = world_cfg.asset_paths(cache, model or MODEL)["model"]
  return {"model": model_dir,
          "registry": {"world2": {
              "annotation": os.path.join(data, "train.jsonl"),
              "root": data}},
          "test": os.path.join(data, "test.jsonl")}


def build_assets(cache: str = CACHE, num_train: int = TRAIN,
                 num_test: int = TEST, model=None, kinds=KINDS) -> dict:
  """The random-init model and every phase's splits (cached in ``cache``);
  returns the "eval" phase's ``asset_paths``."""
  from vselect_jax.data import testing
  from vselect_jax.data.world2 import write_world2
  a = asset_paths(cache, model, kinds)
  if not os.path.exists(os.path.join(a["model"], "config.json")):
    testing.tiny_hf_model(a["model"], **(model or MODEL))
  for phase, (difficulty, sizes, *_) in PHASES.items():
    root = asset_paths(cache, model, kinds, phase)["registry"]["world2"]
    # Seeds differ per phase: the easier worlds are other images.
    write_world2(root["root"], num_train, num_test if phase == "eval" else 8,
                 seed=list(PHASES).index(phase), sizes=sizes, kinds=kinds,
                 difficulty=difficulty)
  return a


STAGES = ("backbone_easy", "backbone_ramp", "backbone", "selector",
          "dynamic_qwen")


def make_config(stage: str, cache: str = CACHE, model=None, kinds=KINDS):
  """World 1's stage config (``configs/world.py:make_config``) over this
  world's assets, with rows sized for 256-288-token images.
  ``backbone_easy`` and ``backbone_ramp`` are stage 1's first phases (their
  ``model_path`` is the previous phase's export: set it), ``backbone`` its
  last, on the evaluation's world."""
  if stage not in STAGES:
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
  phase = stage[len("backbone_"):] if stage.startswith("backbone_") else \
      "eval"
  c = world_cfg.make_config("backbone" if stage.startswith("backbone")
                            else stage, cache, model or MODEL)
  a = asset_paths(cache, model, kinds, phase)
  c.model_path = a["model"]
  c.data.mixture = "world2"
  c.data.registry = a["registry"]
  c.data.min_pixels = MIN_PIXELS
  c.data.max_pixels = MAX_PIXELS
  # 4 samples of <= 288 visual + ~40 text tokens per row, 8 per step (a
  # step of 16 took ~20 s on the shared 2-core CPU); the top-k pools over
  # one row's ~1100 visual tokens.
  c.data.row_length = 1408
  c.data.patches_per_row = 4 * 1152
  c.data.max_images_per_row = 4
  c.data.mean_samples_per_row = 4
  c.global_batch_rows = 2
  c.remat = False                  # small activations; saves the recompute
  c.optim.warmup_ratio = 0.1
  if stage.startswith("backbone"):
    _, sizes, c.total_steps, c.optim.lr, per_row = PHASES[phase]
    c.data.min_pixels = min(w * h for w, h in sizes)
    c.data.max_images_per_row = per_row + per_row // 3
    c.data.mean_samples_per_row = per_row
  else:
    c.optim.lr = 2e-3
    # Dynamic-Qwen's predictor is at its keep target with CE ~1e-3 by step
    # 100 of 200 (its metrics.jsonl); half the steps keep make demo under
    # 30 minutes.
    c.total_steps = 200 if stage == "selector" else 100
  return c


def get_config(stage: str = "backbone"):
  return make_config(stage)


if __name__ == "__main__":
  print(build_assets())

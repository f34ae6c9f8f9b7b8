"""A small procedurally drawn visual world where the answer lives in a small
region: the stand-in for real VQA data when no pretrained Qwen weights are
at hand (a backbone is trained on it from scratch, then a scorer).

Every image (sides multiples of 28 between 224 and 448 px, so 64 to 256
merged tokens) has a lightly textured background, grey distractor shapes
and the few pixels the question is about:

  color   "What color is the circle?"   one coloured circle among grey
          squares and triangles; answer red/green/blue/yellow.
  shape   "What shape is the colored object?"   one coloured object among
          grey ones; answer circle/square/triangle.
  higher  "Which mark is higher, red or blue?"   two small marks; answer
          red/blue.
  count   "How many red dots are there?"   one to four small red dots among
          grey ones; answer one/two/three/four.
  busy    "What color is the circle?"   as ``color``, but two to four of the
          distractors are brightly coloured in other hues (purple, cyan,
          pink, orange): the evidence is no longer the most salient thing
          in the image, so saliency and diversity heuristics can miss it.

Objects are 28-42 px, so the evidence sits in a handful of tokens and
dropping the wrong 80% of tokens loses it. ``write_world`` writes a train
split in the LLaVA/Cambrian training schema and a held-out test split in the
evaluation schema (``eval.py --task world``), deterministically from a seed.

  python -m vselect_jax.data.world --out world/ --train 4000 --test 400
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

FORMAT_VERSION = 3
KINDS = ("color", "shape", "higher", "count", "busy")
SIZES = ((224, 224), (280, 224), (224, 336), (336, 336), (448, 280),
         (280, 448))
COLORS = {"red": (215, 35, 35), "green": (30, 160, 50),
          "blue": (35, 70, 215), "yellow": (225, 190, 20)}
# Hues of the busy kind's distractors, never an answer.
DISTRACTOR_COLORS = ((140, 60, 170), (40, 190, 200), (240, 120, 180),
                     (240, 130, 30))
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("one", "two", "three", "four")
POST = "\nAnswer the question using a single word or phrase."


def draw_shape(d: ImageDraw.ImageDraw, shape: str, box, color) -> None:
  x0, y0, x1, y1 = box
  if shape == "circle":
    d.ellipse(box, fill=color)
  elif shape == "square":
    d.rectangle(box, fill=color)
  else:
    d.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=color)


def place_box(rng, size, s: int, taken: list) -> tuple[int, int, int, int]:
  """A box of side ``s`` not overlapping ``taken`` (best effort)."""
  w, h = size
  for _ in range(50):
    x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
    box = (x, y, x + s, y + s)
    if all(box[2] + 4 < b[0] or b[2] + 4 < box[0] or box[3] + 4 < b[1] or
           b[3] + 4 < box[1] for b in taken):
      break
  taken.append(box)
  return box


def _grey(rng) -> tuple[int, int, int]:
  g = int(rng.integers(110, 170))
  return (g, g, g)


def make_world_sample(rng: np.random.Generator, kind: str,
                      size: tuple[int, int]):
  """One image with its question.

  Returns:
    (PIL image, question, answer, target box (x0, y0, x1, y1) covering the
    pixels the answer depends on).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown world kind {kind!r}; one of {KINDS}")
  w, h = size
  base = rng.integers(228, 246, (h, w, 1)) + rng.integers(-4, 5, (h, w, 3))
  img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
  d = ImageDraw.Draw(img)
  taken: list = []
  side = lambda: int(rng.integers(28, 43))
  targets = []
  evidence = []       # (shape, box, colour), drawn last so never covered
  busy = 0
  if kind in ("color", "busy"):
    answer = list(COLORS)[rng.integers(len(COLORS))]
    targets.append(place_box(rng, size, side(), taken))
    evidence.append(("circle", targets[0], COLORS[answer]))
    question = "What color is the circle?"
    distract = ("square", "triangle")
    busy = int(rng.integers(2, 5)) if kind == "busy" else 0
  elif kind == "shape":
    answer = SHAPES[rng.integers(len(SHAPES))]
    color = list(COLORS)[rng.integers(len(COLORS))]
    targets.append(place_box(rng, size, side(), taken))
    evidence.append((answer, targets[0], COLORS[color]))
    question = "What shape is the colored object?"
    distract = SHAPES
  elif kind == "higher":
    answer = ("red", "blue")[rng.integers(2)]
    a, b = place_box(rng, size, 22, taken), place_box(rng, size, 22, taken)
    if a[1] == b[1]:
      b = (b[0], min(h - 23, b[1] + 12), b[2], min(h - 1, b[3] + 12))
    hi, lo = (a, b) if a[1] < b[1] else (b, a)
    other = "blue" if answer == "red" else "red"
    evidence += [("circle", hi, COLORS[answer]),
                 ("circle", lo, COLORS[other])]
    targets += [hi, lo]
    question = "Which mark is higher, red or blue?"
    distract = ("square", "triangle")
  else:
    n = int(rng.integers(1, 5))
    answer = NUMBERS[n - 1]
    for _ in range(n):
      targets.append(place_box(rng, size, 20, taken))
      evidence.append(("circle", targets[-1], COLORS["red"]))
    question = "How many red dots are there?"
    distract = ("circle",)
  for _ in range(busy):
    hue = DISTRACTOR_COLORS[rng.integers(len(DISTRACTOR_COLORS))]
    draw_shape(d, distract[rng.integers(len(distract))],
               place_box(rng, size, side(), taken), hue)
  for _ in range(int(rng.integers(2, 6)) - busy // 2):
    draw_shape(d, distract[rng.integers(len(distract))],
               place_box(rng, size, side(), taken), _grey(rng))
  for shape, box, color in evidence:
    draw_shape(d, shape, box, color)
  box = (min(t[0] for t in targets), min(t[1] for t in targets),
         max(t[2] for t in targets), max(t[3] for t in targets))
  return img, question, answer, box


def training_record(rid: str, image: str, question: str,
                    answer: str) -> dict:
  """One sample in the LLaVA/Cambrian training schema."""
  # No newline after <image>: the evaluation prompt puts the question right
  # after <|vision_end|>, and a model trained from scratch on this world
  # alone is not robust to the gap.
  return {"id": rid, "image": image, "conversations": [
      {"from": "human", "value": "<image>" + question + POST},
      {"from": "gpt", "value": answer}]}


def _manifest(seed, num_train, num_test, sizes, kinds, sample, tag) -> dict:
  fn = getattr(sample, "func", sample)          # a functools.partial's
  version = sys.modules[fn.__module__].FORMAT_VERSION
  return {"generator": f"{fn.__module__}.{fn.__qualname__}",
          "format_version": version, "seed": seed,
          "num_train": num_train, "num_test": num_test,
          "sizes": [list(s) for s in sizes], "kinds": list(kinds),
          **(tag or {})}


def write_world(out_dir: str, num_train: int, num_test: int, seed: int = 0,
                sizes=SIZES, kinds=KINDS, sample=None, tag=None) -> dict:
  """Writes the world (skipped when ``world.json`` says it is already
  there with these settings).

  Files: ``images/{split}_{i:06d}.png``; ``train.jsonl`` (training schema:
  id, image, conversations); ``test.jsonl`` (evaluation schema: id, image,
  question, answers, category = kind, target_box).

  ``sample(rng, kind, size) -> (image, question, answer, box)`` draws one
  record (default ``make_world_sample``; ``data.world2`` passes its own);
  its module's ``FORMAT_VERSION`` is part of the cache key, and so is
  ``tag`` (a JSON-able dict: what else ``sample`` depends on).

  Returns:
    ``{"train": {"annotation": path, "root": out_dir}, "test": path}``.
  """
  sample = sample or make_world_sample
  out_dir = os.path.abspath(out_dir)
  # As it reads back from world.json (tuples become lists).
  want = json.loads(json.dumps(
      _manifest(seed, num_train, num_test, sizes, kinds, sample, tag)))
  result = {"train": {"annotation": os.path.join(out_dir, "train.jsonl"),
                      "root": out_dir},
            "test": os.path.join(out_dir, "test.jsonl")}
  manifest = os.path.join(out_dir, "world.json")
  if os.path.exists(manifest):
    with open(manifest) as f:
      if json.load(f) == want:
        return result
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  for split, count, offset in (("train", num_train, 0), ("test", num_test, 1)):
    rng = np.random.default_rng([seed, offset])
    with open(os.path.join(out_dir, f"{split}.jsonl"), "w") as f:
      for i in range(count):
        kind = kinds[i % len(kinds)]
        size = tuple(sizes[rng.integers(len(sizes))])
        img, q, a, box = sample(rng, kind, size)
        rel = f"images/{split}_{i:06d}.png"
        img.save(os.path.join(out_dir, rel))
        rid = f"world_{split}_{i:06d}"
        if split == "train":
          rec = training_record(rid, rel, q, a)
        else:
          rec = {"id": rid, "image": rel, "question": q, "answers": [a],
                 "category": kind, "target_box": list(box)}
        f.write(json.dumps(rec) + "\n")
  with open(manifest, "w") as f:
    json.dump(want, f)
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--train", type=int, default=4000)
  p.add_argument("--test", type=int, default=400)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  print(json.dumps(write_world(args.out, args.train, args.test, args.seed)))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

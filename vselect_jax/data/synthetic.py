"""A synthetic visual-QA dataset in the Cambrian schema, drawn with PIL.

Three kinds of image, each with questions whose answers depend on a small
region, so a token selector has something to learn:
  shapes  one coloured shape among grey distractors ("What color is the
          circle?", "How many grey shapes are there?");
  charts  a labelled bar chart ("Which bar is the tallest?", "What is the
          value of bar B?");
  text    a short word somewhere on the page ("What word is written?").
Some records are multi-turn (a second question on the same image) and some
show two images. For tests, benchmarks and ``make pipeline-demo``.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (230, 200, 30)}
SHAPES = ("square", "circle", "triangle")
WORDS = ("cat", "sun", "map", "box", "tree", "lamp", "road", "fish")
BARS = ("A", "B", "C", "D")


def _shape(draw, kind, box, color):
  if kind == "square":
    draw.rectangle(box, fill=color)
  elif kind == "circle":
    draw.ellipse(box, fill=color)
  else:
    x0, y0, x1, y1 = box
    draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=color)


def _shapes(rng, img):
  w, h = img.size
  d = ImageDraw.Draw(img)
  target = SHAPES[rng.integers(len(SHAPES))]
  color = list(COLORS)[rng.integers(len(COLORS))]
  s = max(12, min(w, h) // 8)
  x, y = rng.integers(0, w - s), rng.integers(0, h - s)
  _shape(d, target, (x, y, x + s, y + s), COLORS[color])
  n_grey = int(rng.integers(1, 5))
  for _ in range(n_grey):
    other = [k for k in SHAPES if k != target][rng.integers(2)]
    x, y = rng.integers(0, w - s), rng.integers(0, h - s)
    _shape(d, other, (x, y, x + s, y + s), (150, 150, 150))
  return [(f"What color is the {target}?", color),
          ("How many grey shapes are there? Answer with a number.",
           str(n_grey))]


def _chart(rng, img):
  w, h = img.size
  d = ImageDraw.Draw(img)
  values = rng.permutation(np.arange(2, 10))[:len(BARS)]
  top = max(values)
  for i, v in enumerate(values):
    bh = int((h - 30) * v / top)
    x = 10 + i * (w - 20) // len(BARS)
    d.rectangle([x, h - bh, x + (w - 20) // len(BARS) - 8, h - 1],
                fill=(60, 90, 200))
    d.text((x + 2, max(0, h - bh - 12)), f"{BARS[i]}={v}", fill=(0, 0, 0))
  j = int(rng.integers(len(BARS)))
  return [("Which bar is the tallest?", BARS[int(np.argmax(values))]),
          (f"What is the value of bar {BARS[j]}?", str(values[j]))]


def _text(rng, img):
  w, h = img.size
  d = ImageDraw.Draw(img)
  word = WORDS[rng.integers(len(WORDS))]
  d.text((rng.integers(0, max(1, w - 40)), rng.integers(0, max(1, h - 15))),
         word, fill=(0, 0, 0))
  return [("What word is written in the image?", word),
          ("How many letters does the word have?", str(len(word)))]


def make_example(rng: np.random.Generator, size: tuple[int, int]):
  """(image, [(question, answer), ...]) for one drawn image."""
  img = Image.new("RGB", size, (245, 245, 240))
  task = (_shapes, _chart, _text)[rng.integers(3)]
  return img, task(rng, img)


def write_synthetic_dataset(out_dir: str, num_samples: int, seed: int = 0,
                            sizes=((224, 224), (336, 224), (280, 392)),
                            name: str = "synthetic",
                            multi_turn_fraction: float = 0.2,
                            two_image_fraction: float = 0.1,
                            image_format: str = "png") -> dict:
  """Writes ``out_dir/<name>.jsonl`` and PNGs under ``out_dir/images``.

  Args:
    out_dir: destination (also the image root of the registry entry).
    num_samples: records to write.
    seed: all randomness.
    sizes: (width, height) choices for the images.
    name: dataset name (file names and registry key).
    multi_turn_fraction: records with a second question on the image.
    two_image_fraction: records showing two images ("<image>\\n<image>\\n"),
      the question about the second.
    image_format: "png" or "jpeg" (quality 90, like photo datasets).

  Returns:
    ``{name: {"annotation": jsonl path, "root": out_dir}}`` for a registry.
  """
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  path = os.path.join(out_dir, f"{name}.jsonl")
  with open(path, "w") as f:
    for i in range(num_samples):
      n_images = 2 if rng.random() < two_image_fraction else 1
      rels = []
      for j in range(n_images):
        img, qa = make_example(rng, sizes[rng.integers(len(sizes))])
        ext = {"png": "png", "jpeg": "jpg"}[image_format]
        rels.append(f"images/{name}_{i:06d}_{j}.{ext}")
        img.save(os.path.join(out_dir, rels[-1]), quality=90)
      turns = qa[:2] if rng.random() < multi_turn_fraction else qa[:1]
      prefix = "<image>\n" * n_images
      if n_images == 2:
        prefix += "Look at the second image. "
      conv = []
      for k, (q, a) in enumerate(turns):
        conv += [{"from": "human", "value": (prefix if k == 0 else "") + q},
                 {"from": "gpt", "value": a}]
      f.write(json.dumps({"id": f"{name}-{i}",
                          "image": rels[0] if n_images == 1 else rels,
                          "conversations": conv}) + "\n")
  return {name: {"annotation": path, "root": out_dir}}


def training_mix_lengths(rng: np.random.Generator, n: int
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Sample sizes like the reference's mix (chartqa 28K : coco%10 36K :
  ocr_vqa 80K) at training resolution, to judge packing without the data.

  One image of at most 8 x 8 merged tokens (max_pixels 50176); chartqa has
  one short QA, coco 2-7 turns with sentence answers, ocr_vqa 3-10 turns with
  short answers; 20 system tokens, 10 template tokens per turn.

  Returns:
    (tokens int64[n], merged visual tokens int64[n]); patches are 4x the
    merged tokens.
  """
  kind = rng.choice(3, size=n, p=[0.2, 0.25, 0.55])
  merged = rng.integers(4, 9, n) * rng.integers(6, 9, n)
  tokens = np.empty(n, np.int64)
  for i, k in enumerate(kind):
    turns = (1, int(rng.integers(2, 8)), int(rng.integers(3, 11)))[k]
    q, a = ((25, 6), (15, 60), (12, 4))[k]
    text = int(rng.poisson(q, turns).sum() + rng.poisson(a, turns).sum())
    tokens[i] = 20 + 10 * turns + text + merged[i] + 2
  return tokens, merged

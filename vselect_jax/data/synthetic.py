"""A synthetic visual-QA dataset in the Cambrian schema, drawn with PIL:
coloured shapes among distractors, bar charts and short words, with
questions whose answers depend on a small region. For tests and the demo."""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
          "yellow": (230, 200, 30)}
SHAPES = ("square", "circle", "triangle")


def _shape(draw, kind, box, color):
  if kind == "square":
    draw.rectangle(box, fill=color)
  elif kind == "circle":
    draw.ellipse(box, fill=color)
  else:
    x0, y0, x1, y1 = box
    draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=color)


def make_example(rng: np.random.Generator, size: tuple[int, int]):
  """(image, question, answer)."""
  w, h = size
  img = Image.new("RGB", (w, h), (245, 245, 240))
  d = ImageDraw.Draw(img)
  task = rng.integers(3)
  if task == 0:  # colour of the one shape of a kind
    target = SHAPES[rng.integers(len(SHAPES))]
    color = list(COLORS)[rng.integers(len(COLORS))]
    s = max(12, min(w, h) // 8)
    x, y = rng.integers(0, w - s), rng.integers(0, h - s)
    _shape(d, target, (x, y, x + s, y + s), COLORS[color])
    for _ in range(3):  # distractors of other kinds, grey
      other = [k for k in SHAPES if k != target][rng.integers(2)]
      x, y = rng.integers(0, w - s), rng.integers(0, h - s)
      _shape(d, other, (x, y, x + s, y + s), (150, 150, 150))
    return img, f"<image>\nWhat color is the {target}?", color
  if task == 1:  # tallest bar
    n = 4
    heights = rng.permutation(np.linspace(h // 5, h - 20, n).astype(int))
    names = ["A", "B", "C", "D"]
    for i, bh in enumerate(heights):
      x = 10 + i * (w - 20) // n
      d.rectangle([x, h - bh, x + (w - 20) // n - 8, h - 1], fill=(60, 90, 200))
      d.text((x + 2, h - bh - 12), names[i], fill=(0, 0, 0))
    return img, "<image>\nWhich bar is the tallest?", names[int(np.argmax(
        heights))]
  word = ["cat", "sun", "map", "box"][rng.integers(4)]
  d.text((rng.integers(0, max(1, w - 40)), rng.integers(0, max(1, h - 15))),
         word, fill=(0, 0, 0))
  return img, "<image>\nWhat word is written?", word


def write_synthetic_dataset(out_dir: str, num_samples: int, seed: int = 0,
                            sizes=((224, 224), (336, 224), (280, 392)),
                            name: str = "synthetic") -> dict:
  """Writes ``out_dir/<name>.jsonl`` and images; returns a registry entry
  ``{name: {"annotation": ..., "root": ...}}``."""
  rng = np.random.default_rng(seed)
  img_dir = os.path.join(out_dir, "images")
  os.makedirs(img_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}.jsonl")
  with open(path, "w") as f:
    for i in range(num_samples):
      size = sizes[rng.integers(len(sizes))]
      img, q, a = make_example(rng, size)
      rel = f"images/{name}_{i:06d}.png"
      img.save(os.path.join(out_dir, rel))
      f.write(json.dumps({"id": f"{name}-{i}", "image": rel,
                          "conversations": [{"from": "human", "value": q},
                                            {"from": "gpt", "value": a}]})
              + "\n")
  return {name: {"annotation": path, "root": out_dir}}

"""A second synthetic world with the conditions under which token-selection
heuristics fail on real benchmarks (issue 19); ``data.world`` stays as the
suite's world.

  * Eval-like token ratios: images of 448-504 px (256-288 merged tokens)
    against a short question.
  * Small, non-salient evidence: the answer sits in 1-4 merged tokens
    (<= 2% of the image), drawn in colours mixed towards the background
    (lower contrast than every distractor), while the distractors are
    larger, saturated, and varied in hue and shape, so saliency, diversity
    and attention-received signals prefer them.
  * Several question kinds on one backbone:

  color    "What color is the circle?"   one faint circle (16-24 px, so
           1-4 merged tokens) among 4-7 salient distractors in other hues;
           answer red/green/blue/yellow.
  busy     "What color is the circle?"   as ``color`` among 10-16 salient
           distractors and 2-4 faint grey circles (the faint circle is not
           unique in being faint; only its hue answers).
  code     "What is the code?"   2-3 faint digit glyphs (1-4) in adjacent
           merged tokens of one row, read left to right; answer e.g. "314"
           (the evidence spans several tokens, OCR-like).
  next_to  "What color is the dot next to the cross?"   a faint cross with
           a faint dot in the merged token to its right, and two faint dots
           in the other answer colours elsewhere; answer the first dot's
           colour (a relation: the colour alone does not answer).

Evidence of ``code`` and ``next_to`` sits in whole merged-token cells (28 px,
Qwen2.5-VL's 2x2 merge of 14-px patches), one glyph / object per cell.
Written by ``data.world.write_world`` (same schemas: train split in the
LLaVA/Cambrian training schema, test split in the evaluation schema scored by
``eval.py --task world`` with accuracy per kind), deterministic from a seed:

  python -m vselect_jax.data.world2 --out world2/ --train 4000 --test 400
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json

import numpy as np
from PIL import Image, ImageDraw

from vselect_jax.data import world

FORMAT_VERSION = 1
KINDS = ("color", "busy", "code", "next_to")
CELL = 28                     # one merged token: 2x2 patches of 14 px
SIZES = ((448, 448), (504, 448), (448, 504))
COLORS = world.COLORS         # the answer hues
# Distractor hues, never an answer; each is >= 200 (RGB distance) from any
# background level, twice the evidence's contrast at most.
PALETTE = ((140, 60, 170), (40, 190, 200), (210, 40, 190), (240, 120, 20),
           (40, 40, 40), (120, 70, 30), (20, 120, 120), (30, 30, 110),
           (90, 90, 90))
DISTRACTOR_SHAPES = ("square", "triangle", "diamond", "bar")


@dataclasses.dataclass(frozen=True)
class Difficulty:
  """How faint and how small the evidence is drawn (every faint object and
  every circle). The evaluation's is ``EVAL``; ``configs/world2.py:PHASES``
  holds the easier worlds stage 1 starts from.

  evidence_mix: [lo, hi) of how far the evidence colour is pulled from the
    background towards its hue (EVAL: ~100-130 of RGB distance, against
    >= 200 for the distractors; 1.0 = the full hue).
  circle: [lo, hi) px of a circle's side.
  """
  evidence_mix: tuple[float, float] = (0.35, 0.45)
  circle: tuple[int, int] = (16, 25)


EVAL = Difficulty()
GLYPHS = {  # 3x5 bitmaps of the code's digits
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("##.", "..#", ".#.", "#..", "###"),
    "3": ("##.", "..#", ".#.", "..#", "##."),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
}
QUESTIONS = {"color": "What color is the circle?",
             "busy": "What color is the circle?",
             "code": "What is the code?",
             "next_to": "What color is the dot next to the cross?"}
# What a merged token can show (``Scene.token_labels``): the background, a
# salient distractor, a faint grey circle, a faint circle in each answer
# hue, a glyph of each digit, the cross.
LABELS = (("background", "distractor", "grey") + tuple(COLORS)
          + tuple("glyph:" + g for g in GLYPHS) + ("cross",))


@dataclasses.dataclass
class Scene:
  """One drawn sample; boxes are inclusive pixel extents (x0, y0, x1, y1).

  evidence / distractors: (box, RGB colour) of what the answer depends on
  and of the salient shapes; background: the mean background level.
  """
  image: Image.Image
  question: str
  answer: str
  box: tuple[int, int, int, int]     # union of the evidence boxes
  evidence: list
  distractors: list
  background: float
  objects: list = dataclasses.field(default_factory=list)

  def token_labels(self, min_pixels: int = 12) -> np.ndarray:
    """int32[rows, cols]: what each merged token (28-px cell) shows, as a
    ``LABELS`` index (the object with the most pixels in the cell; 0 =
    background when no object has ``min_pixels``): what a method's kept
    tokens were (evidence, distractor, background)."""
    w, h = self.image.size
    canvas = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(canvas)
    for shape, box, _, label in self.objects:
      _paint(d, shape, box, LABELS.index(label))
    ids = np.asarray(canvas).reshape(h // CELL, CELL, w // CELL, CELL)
    ids = ids.transpose(0, 2, 1, 3).reshape(h // CELL, w // CELL, -1)
    counts = (ids[..., None] == np.arange(len(LABELS))).sum(2)
    counts[..., 0] = 0
    best = counts.argmax(-1)
    return np.where(counts.max(-1) >= min_pixels, best, 0).astype(np.int32)


def contrast(color, background: float) -> float:
  """RGB distance of ``color`` from a grey background level."""
  return float(np.linalg.norm(np.asarray(color, float) - background))


def cells(box) -> set[tuple[int, int]]:
  """The merged-token cells (column, row) an inclusive box touches."""
  x0, y0, x1, y1 = box
  return {(cx, cy) for cx in range(x0 // CELL, x1 // CELL + 1)
          for cy in range(y0 // CELL, y1 // CELL + 1)}


def _faint(rng, color, background: float,
           difficulty: Difficulty) -> tuple[int, int, int]:
  a = float(rng.uniform(*difficulty.evidence_mix))
  return tuple(int(round(background + a * (c - background))) for c in color)


def _draw(d: ImageDraw.ImageDraw, shape: str, box, color) -> None:
  x0, y0, x1, y1 = box
  if shape == "diamond":
    mx, my = (x0 + x1) // 2, (y0 + y1) // 2
    d.polygon([(mx, y0), (x1, my), (mx, y1), (x0, my)], fill=color)
  elif shape == "bar":             # a 2:1 bar across the box's middle
    q = (y1 - y0) // 4
    d.rectangle((x0, y0 + q, x1, y1 - q), fill=color)
  else:
    world.draw_shape(d, shape, box, color)


def _cell_box(cx: int, cy: int, s: int, rng) -> tuple[int, int, int, int]:
  """A box of side ``s`` (< CELL) inside cell (cx, cy)."""
  ox, oy = (int(rng.integers(1, CELL - s)) for _ in range(2))
  x0, y0 = cx * CELL + ox, cy * CELL + oy
  return (x0, y0, x0 + s - 1, y0 + s - 1)


def _reserve(cell_set, taken: list) -> None:
  """Keeps later shapes out of ``cell_set`` (for ``world.place_box``)."""
  for cx, cy in cell_set:
    taken.append((cx * CELL, cy * CELL, cx * CELL + CELL - 1,
                  cy * CELL + CELL - 1))


def _circle(rng, size, bg, color, taken, difficulty: Difficulty) -> tuple:
  s = int(rng.integers(*difficulty.circle))
  box = world.place_box(rng, size, s - 1, taken)
  return box, _faint(rng, color, bg, difficulty)


def draw_scene(rng: np.random.Generator, kind: str, size: tuple[int, int],
               difficulty: Difficulty = EVAL) -> Scene:
  """One image of ``kind`` at ``size`` (w, h; multiples of 28)."""
  if kind not in KINDS:
    raise ValueError(f"unknown world2 kind {kind!r}; one of {KINDS}")
  w, h = size
  if w % CELL or h % CELL:
    raise ValueError(f"world2 image size {size} is not a multiple of {CELL}")
  bg = float(rng.integers(228, 246))
  # A light texture in 4-px blocks: per-pixel noise would make each PNG
  # ~300 KB and the world slow to write and read.
  base = bg + rng.integers(-4, 5, (h // 4, w // 4, 3)).repeat(4, 0).repeat(
      4, 1)
  img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
  d = ImageDraw.Draw(img)
  taken: list = []
  evidence = []                  # (shape, box, colour, label), drawn last
  faint_decoys = []
  names = list(COLORS)
  cols, rows = w // CELL, h // CELL
  n_distract = int(rng.integers(4, 8))
  if kind in ("color", "busy"):
    answer = names[rng.integers(len(names))]
    box, col = _circle(rng, size, bg, COLORS[answer], taken, difficulty)
    evidence.append(("circle", box, col, answer))
    if kind == "busy":
      n_distract = int(rng.integers(10, 17))
      for _ in range(int(rng.integers(2, 5))):
        box_, col_ = _circle(rng, size, bg, (60, 60, 60), taken, difficulty)
        faint_decoys.append(("circle", box_, col_, "grey"))
  elif kind == "code":
    n = int(rng.integers(2, 4))
    digits = [list(GLYPHS)[rng.integers(len(GLYPHS))] for _ in range(n)]
    answer = "".join(digits)
    cx0, cy = int(rng.integers(0, cols - n + 1)), int(rng.integers(0, rows))
    ink = _faint(rng, (20, 20, 20), bg, difficulty)
    for i, g in enumerate(digits):
      box = _cell_box(cx0 + i, cy, 20, rng)
      evidence.append(("glyph:" + g, box, ink, "glyph:" + g))
    _reserve({(cx0 + i, cy) for i in range(n)}, taken)
  else:
    answer = names[rng.integers(len(names))]
    cx, cy = int(rng.integers(0, cols - 1)), int(rng.integers(0, rows))
    evidence.append(("cross", _cell_box(cx, cy, 20, rng),
                     _faint(rng, (20, 20, 20), bg, difficulty), "cross"))
    evidence.append(("circle", _cell_box(cx + 1, cy, int(rng.integers(16, 25)),
                                         rng),
                     _faint(rng, COLORS[answer], bg, difficulty), answer))
    # Nothing else lands next to the cross, so "next to" is unambiguous.
    _reserve({(x, y) for x in range(cx - 1, cx + 3)
              for y in range(cy - 1, cy + 2)}, taken)
    for other in rng.permutation([c for c in names if c != answer])[:2]:
      box_, col_ = _circle(rng, size, bg, COLORS[other], taken, difficulty)
      faint_decoys.append(("circle", box_, col_, str(other)))
  objects = []                   # (shape, box, colour, label), drawn in order
  distractors = []
  for _ in range(n_distract):
    s = int(rng.integers(28, 57))
    box = world.place_box(rng, size, s, taken)
    color = PALETTE[rng.integers(len(PALETTE))]
    shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
    objects.append((shape, box, color, "distractor"))
    distractors.append((box, color))
  objects += faint_decoys + evidence
  for shape, box, color, _ in objects:
    _paint(d, shape, box, color)
  boxes = [b for _, b, _, _ in evidence]
  union = (min(b[0] for b in boxes), min(b[1] for b in boxes),
           max(b[2] for b in boxes), max(b[3] for b in boxes))
  return Scene(img, QUESTIONS[kind], answer, union,
               [(b, c) for _, b, c, _ in evidence], distractors, bg, objects)


def _paint(d: ImageDraw.ImageDraw, shape: str, box, color) -> None:
  """One object; ``color`` an RGB triple, or a label index on an "L"
  canvas."""
  if shape.startswith("glyph:"):
    _draw_glyph(d, shape[6:], box, color)
  elif shape == "cross":
    x0, y0, x1, y1 = box
    mx, my, t = (x0 + x1) // 2, (y0 + y1) // 2, 2
    d.rectangle((x0, my - t, x1, my + t), fill=color)
    d.rectangle((mx - t, y0, mx + t, y1), fill=color)
  else:
    _draw(d, shape, box, color)


def _draw_glyph(d: ImageDraw.ImageDraw, digit: str, box, color) -> None:
  """The 3x5 bitmap of ``digit`` scaled into ``box`` (20 px: 4-px bits,
  centred)."""
  x0, y0, x1, _ = box
  bit = (x1 - x0 + 1) // 5
  left = x0 + (x1 - x0 + 1 - 3 * bit) // 2
  for r, line in enumerate(GLYPHS[digit]):
    for c, ch in enumerate(line):
      if ch == "#":
        d.rectangle((left + c * bit, y0 + r * bit, left + (c + 1) * bit - 1,
                     y0 + (r + 1) * bit - 1), fill=color)


def make_world2_sample(rng: np.random.Generator, kind: str,
                       size: tuple[int, int], difficulty: Difficulty = EVAL):
  """``draw_scene`` as ``world.write_world`` takes it: (PIL image, question,
  answer, evidence box)."""
  s = draw_scene(rng, kind, size, difficulty)
  return s.image, s.question, s.answer, s.box


def write_world2(out_dir: str, num_train: int, num_test: int, seed: int = 0,
                 sizes=SIZES, kinds=KINDS,
                 difficulty: Difficulty = EVAL) -> dict:
  """``world.write_world`` with this world's samples (same files, schemas
  and caching; kinds cycle through ``kinds``); ``difficulty`` is part of
  the cache key."""
  return world.write_world(
      out_dir, num_train, num_test, seed, sizes, kinds,
      sample=functools.partial(make_world2_sample, difficulty=difficulty),
      tag={"difficulty": dataclasses.asdict(difficulty)})


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--train", type=int, default=4000)
  p.add_argument("--test", type=int, default=400)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--kinds", default=",".join(KINDS))
  args = p.parse_args(argv)
  print(json.dumps(write_world2(args.out, args.train, args.test, args.seed,
                                kinds=tuple(args.kinds.split(",")))))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())

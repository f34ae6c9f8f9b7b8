"""Did a method keep the evidence? Selection recall on records that say
where their answer is drawn.

The synthetic worlds' held-out records carry ``target_box`` (x0, y0, x1,
y1 in pixels of the original image: the evidence the question is about).
An *evidence token* is a merged token whose cell (28 px of the resized
image) overlaps that box. For each (method, budget) and
question: was at least one evidence token kept ("hit"), and what fraction
of the evidence tokens was kept. A method that answers right without
keeping the evidence has read it before it dropped it: for in-LLM methods
(FastV, DART, Dynamic-Qwen) "kept" is what survives their pruning layer,
and the layers below it saw every token.

  evidence.recall(model, tok, "world", "world2/test.jsonl",
                  ("selector", "divprune"), (0.2, 0.05), settings)
  -> {"selector": {"0.2": {"hit": {"all": .99, "color": 1.0, ...},
                           "kept": {"all": .71, ...}, "questions": 400}}}
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def box_tokens(box, image_size, grid_hw) -> np.ndarray:
  """bool[gh * gw]: the merged tokens (raster order) whose cell overlaps
  ``box``.

  Args:
    box: (x0, y0, x1, y1), pixels of the original image, x1 > x0, y1 > y0.
    image_size: (width, height) of the original image.
    grid_hw: (gh, gw) merged-token grid of the resized image (the patch
      grid's h and w divided by the merge size).

  Raises:
    ValueError: a box that is not four numbers inside the image with
      positive area, or a bad image size or grid.
  """
  w, h = (int(v) for v in image_size)
  gh, gw = (int(v) for v in grid_hw)
  if w <= 0 or h <= 0 or gh <= 0 or gw <= 0:
    raise ValueError(f"bad image size {image_size} or grid {grid_hw}")
  try:
    x0, y0, x1, y1 = (float(v) for v in box)
  except (TypeError, ValueError):
    raise ValueError(f"target_box must be 4 numbers (x0, y0, x1, y1), got "
                     f"{box!r}") from None
  if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
    raise ValueError(f"target_box {list(box)} is empty or outside the "
                     f"{w}x{h} image")
  # Cells per original pixel, per axis (the processor rounds each side to
  # a multiple of the cell separately); x * gw / w keeps exact borders
  # exact in float.
  c0, c1 = math.floor(x0 * gw / w), math.ceil(x1 * gw / w)
  r0, r1 = math.floor(y0 * gh / h), math.ceil(y1 * gh / h)
  mask = np.zeros((gh, gw), bool)
  mask[r0:min(r1, gh), c0:min(c1, gw)] = True
  return mask.reshape(-1)


def _mean_by_kind(values: list, kinds: list) -> dict:
  out = {"all": float(np.mean(values))}
  for kind in sorted(set(k for k in kinds if k is not None)):
    out[kind] = float(np.mean([v for v, k in zip(values, kinds) if k == kind]))
  return out


def recall(model, tokenizer, task: str, data_path: str,
           methods: Sequence[str], budgets: Sequence[float], settings
           ) -> dict:
  """Evidence recall of each (method, budget) on the first
  ``settings.limit`` records of ``data_path`` (one image each, with
  ``target_box``).

  Returns:
    {method: {str(budget): {"hit": {"all": p, kind: p, ...},
                            "kept": {...}, "questions": n,
                            "missed": [id, ...]}}}: "hit" the fraction of
    questions with an evidence token kept, "kept" the mean fraction of
    evidence tokens kept, "missed" the questions with none kept.

  Raises:
    ValueError: a record without one image or without a valid
      ``target_box`` (named by its id), before any model call.
  """
  from vselect_jax.eval import runner, tasks as tasks_lib
  settings = runner.for_model(settings, model)
  spec = tasks_lib.get_task(task)
  examples = runner.prepare_examples(tokenizer, spec, data_path, settings)
  merge = int(model.config.vision.spatial_merge_size)
  targets = []
  for ex in examples:
    rec = ex.record
    if ex.image_grid_thw is None or len(ex.image_grid_thw) != 1 or \
        ex.video_grid_thw is not None:
      raise ValueError(f"record {rec.id!r}: evidence recall needs exactly "
                       "one image")
    if "target_box" not in rec.extra:
      raise ValueError(f"record {rec.id!r} has no target_box")
    _, gh, gw = (int(v) for v in ex.image_grid_thw[0])
    try:
      targets.append(box_tokens(rec.extra["target_box"], ex.images[0].size,
                                (gh // merge, gw // merge)))
    except ValueError as e:
      raise ValueError(f"record {rec.id!r}: {e}") from None
  kinds = [ex.record.category for ex in examples]
  out = {}
  for method in methods:
    out[method] = {}
    for budget in budgets:
      hits, kept = [], []
      for ex, target in zip(examples, targets):
        (_, keep), = runner.token_maps(model, ex, budget, method, settings)
        hits.append(float((keep & target).any()))
        kept.append(float((keep & target).sum() / target.sum()))
      out[method][f"{budget:g}"] = {
          "hit": _mean_by_kind(hits, kinds),
          "kept": _mean_by_kind(kept, kinds), "questions": len(examples),
          "missed": [ex.record.id for ex, h in zip(examples, hits) if not h]}
  return out


def accuracy_on(predictions_path: str, data_path: str, ids) -> tuple:
  """(exact-match accuracy or None, n) of a run's ``predictions.jsonl``
  over the questions ``ids`` (e.g. those whose evidence a method dropped:
  right answers there were read from elsewhere)."""
  import json
  from vselect_jax.eval import records as records_lib, tasks as tasks_lib
  records = {r.id: r for r in records_lib.load_records(data_path)}
  ids = set(ids)
  scores = []
  with open(predictions_path) as f:
    for line in f:
      p = json.loads(line)
      if p["id"] in ids:
        scores.append(tasks_lib.exact_match(p["prediction"], records[p["id"]]))
  return (float(np.mean(scores)) if scores else None), len(scores)

"""OCRBench: case-insensitive substring match, scored as a count out of 1000.

A sample is right when any gold answer occurs inside the prediction (after
lower-casing and turning newlines into spaces). Handwritten mathematical
expressions (the HME100k subset) compare with all spaces removed instead.

As in lmms-eval (which produced the published numbers) the prediction is
lower-cased up front but HME gold answers are not, so an HME gold answer with
a capital letter can never match; we keep that so scores stay comparable.
lmms-eval keys the HME rule on the sample's source dataset ``HME100k``; that
subset is exactly the "Handwritten Mathematical Expression Recognition"
category, which is what our records carry.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

HME_CATEGORY = "Handwritten Mathematical Expression Recognition"
RECOGNITION_CATEGORIES = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)
CATEGORIES = RECOGNITION_CATEGORIES + (
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    HME_CATEGORY,
)


def ocrbench_match(prediction: str, answers: Sequence[str],
                   category: str) -> int:
  """1 if a gold answer is contained in the prediction, else 0."""
  if not answers:
    raise ValueError("ocrbench_match needs at least one gold answer")
  pred = prediction.lower().strip()
  if category == HME_CATEGORY:
    pred = pred.replace("\n", " ").replace(" ", "")
    return int(any(a.strip().replace("\n", " ").replace(" ", "") in pred
                   for a in answers))
  pred = pred.replace("\n", " ")
  return int(any(a.lower().strip().replace("\n", " ") in pred
                 for a in answers))


def ocrbench_totals(results: Iterable[tuple[str, int]]) -> dict[str, int]:
  """Per-category counts and the totals.

  Args:
    results: ``(category, 0 or 1)`` per sample.

  Returns:
    ``{"score": total, "text_recognition": sum of the six recognition
    categories, <category>: count, ...}``. Every official category is listed
    (0 when absent); unknown categories are counted in the total too.
  """
  per_cat = {c: 0 for c in CATEGORIES}
  for category, hit in results:
    per_cat[category] = per_cat.get(category, 0) + int(hit)
  out = {"score": sum(per_cat.values()),
         "text_recognition": sum(per_cat[c] for c in RECOGNITION_CATEGORIES)}
  out.update(per_cat)
  return out

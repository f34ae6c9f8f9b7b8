"""MME: yes/no answers, scored per category as acc + acc+ (0..200).

Each MME image has two questions (one "yes", one "no"). Per category,
``acc`` is the percentage of questions answered right and ``acc+`` the
percentage of images with both questions right; the category score is their
sum. Perception and cognition totals add up their categories' scores (out of
2000 and 800 for the full benchmark).

``acc`` is computed as lmms-eval does, the mean over images of each image's
fraction right, which equals the per-question accuracy when every image has
two questions.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable

PERCEPTION = ("existence", "count", "position", "color", "posters",
              "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation",
             "text_translation", "code_reasoning")


def parse_yes_no(text: str) -> str:
  """``"yes"``, ``"no"`` or ``"other"`` (the Otter / lmms-eval MME parser).

  Periods are removed and case ignored; a lone ``y``/``n`` counts; otherwise
  "yes" or "no" must appear within the first four characters.
  """
  text = text.lower().strip().replace(".", "")
  if text in ("yes", "no"):
    return text
  if len(text) == 1:
    return {"y": "yes", "n": "no"}.get(text, "other")
  head = text[:4]
  if "yes" in head:
    return "yes"
  if "no" in head:
    return "no"
  return "other"


def mme_scores(results: Iterable[tuple[str, str, bool]]
               ) -> dict[str, dict[str, float]]:
  """Per-category acc, acc+ and score.

  Args:
    results: ``(category, image_group, correct)`` per question; questions of
      the same image share ``image_group``.

  Returns:
    ``{category: {"acc": %, "acc_plus": %, "score": acc + acc_plus,
    "num_images": n}}`` for every category present.
  """
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for category, group, correct in results:
    groups[category][group].append(bool(correct))
  out = {}
  for category, per_image in groups.items():
    n = len(per_image)
    acc = 100.0 * sum(sum(v) / len(v) for v in per_image.values()) / n
    acc_plus = 100.0 * sum(all(v) for v in per_image.values()) / n
    out[category] = {"acc": acc, "acc_plus": acc_plus,
                     "score": acc + acc_plus, "num_images": n}
  return out


def mme_totals(per_category: dict[str, dict[str, float]]
               ) -> dict[str, float]:
  """``{"perception": sum, "cognition": sum}`` of the category scores.

  Raises:
    ValueError: on a category that is in neither list (a misspelt category
      would otherwise drop silently out of both totals).
  """
  unknown = sorted(set(per_category) - set(PERCEPTION) - set(COGNITION))
  if unknown:
    raise ValueError(f"unknown MME categories {unknown}; expected one of "
                     f"{PERCEPTION + COGNITION}")
  return {
      "perception": float(sum(v["score"] for c, v in per_category.items()
                              if c in PERCEPTION)),
      "cognition": float(sum(v["score"] for c, v in per_category.items()
                             if c in COGNITION)),
  }

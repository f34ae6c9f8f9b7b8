"""The local evaluation JSONL format and the predictions format.

Data file, one JSON object per line (blank lines are skipped)::

  {"id": "q1", "image": "images/ab12.png", "question": "...",
   "answers": ["gold", ...],
   # where the task needs them:
   "options": ["cat", "dog"], "category": "...", "question_type": "...",
   # optional:
   "hint": "...",      # ScienceQA context, printed before the question
   "group": "..."}     # MME: questions about the same image (default: image)

``image`` is a path relative to the data file (absolute paths work too) or a
list of them, possibly empty. Other keys are kept in ``extra`` and ignored.

Predictions file, one JSON object per line: ``id`` and ``prediction`` (the
decoded answer, stop strings already cut off), optionally ``prefill_ms``,
``latency_ms``, ``visual_tokens_before``, ``visual_tokens_after`` and
``peak_memory_bytes`` for the efficiency summary.

Every problem is reported as an ``EvalDataError`` naming the file and line
(and the id where there is one).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Collection, Iterator, Sequence

# Optional numeric fields of a prediction line, summarised by ``score``.
EFFICIENCY_FIELDS = ("prefill_ms", "latency_ms", "visual_tokens_before",
                     "visual_tokens_after", "peak_memory_bytes")
_RECORD_FIELDS = ("id", "image", "question", "answers", "options", "category",
                  "question_type", "hint", "group")


class EvalDataError(ValueError):
  """A malformed data or predictions file."""


@dataclasses.dataclass(frozen=True)
class EvalRecord:
  """One benchmark question.

  Attributes:
    id: unique within the file.
    images: absolute image paths, in prompt order (may be empty).
    question: the raw question text (prompts are built by ``tasks``).
    answers: gold answers.
    options: option texts for multiple choice, else None.
    category: benchmark category / subject, else None.
    question_type: e.g. MMMU ``"multiple-choice"`` / ``"open"``, else None.
    hint: ScienceQA context, else None.
    group: MME pairing key (defaults to the first image path).
    line: 1-based line number in the data file.
    extra: any other keys of the line.
  """
  id: str
  images: tuple[str, ...]
  question: str
  answers: tuple[str, ...]
  options: tuple[str, ...] | None = None
  category: str | None = None
  question_type: str | None = None
  hint: str | None = None
  group: str | None = None
  line: int = 0
  extra: dict = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One prediction line; efficiency fields are None when absent."""
  id: str
  prediction: str
  line: int
  prefill_ms: float | None = None
  latency_ms: float | None = None
  visual_tokens_before: float | None = None
  visual_tokens_after: float | None = None
  peak_memory_bytes: float | None = None


def _json_lines(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, object) for every non-blank line."""
  if not os.path.isfile(path):
    raise EvalDataError(f"{path}: no such file")
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise EvalDataError(f"{path}:{lineno}: not valid JSON ({e.msg} at "
                            f"column {e.colno})") from None
      if not isinstance(obj, dict):
        raise EvalDataError(f"{path}:{lineno}: expected a JSON object, got "
                            f"{type(obj).__name__}")
      yield lineno, obj


def _where(path: str, lineno: int, obj: dict) -> str:
  rid = obj.get("id")
  return f"{path}:{lineno}" + (f" (id {rid!r})" if isinstance(rid, str) else "")


def _str_list(value, where: str, key: str, allow_empty: bool) -> tuple:
  if (not isinstance(value, list)
      or not all(isinstance(v, str) for v in value)):
    raise EvalDataError(f"{where}: {key!r} must be a list of strings, got "
                        f"{value!r}")
  if not value and not allow_empty:
    raise EvalDataError(f"{where}: {key!r} must not be empty")
  return tuple(value)


def _opt_str(obj: dict, key: str, where: str) -> str | None:
  value = obj.get(key)
  if value is not None and not isinstance(value, str):
    raise EvalDataError(f"{where}: {key!r} must be a string, got {value!r}")
  return value


def load_records(path: str, required: Sequence[str] = ()) -> list[EvalRecord]:
  """Reads and validates a data file.

  Args:
    path: the JSONL file.
    required: keys beyond id/image/question/answers that every line must
      have (a task's ``required_fields``).

  Returns:
    The records in file order.

  Raises:
    EvalDataError: on malformed lines, missing or mistyped keys, or
      duplicate ids.
  """
  root = os.path.dirname(os.path.abspath(path))
  records, seen = [], {}
  for lineno, obj in _json_lines(path):
    where = _where(path, lineno, obj)
    for key in ("id", "image", "question", "answers", *required):
      if key not in obj or obj[key] is None:
        raise EvalDataError(f"{where}: missing key {key!r}")
    rid = obj["id"]
    if not isinstance(rid, str) or not rid:
      raise EvalDataError(f"{where}: 'id' must be a non-empty string, got "
                          f"{rid!r}")
    if rid in seen:
      raise EvalDataError(f"{where}: duplicate id {rid!r} (first on line "
                          f"{seen[rid]})")
    seen[rid] = lineno
    image = obj["image"]
    images = ((image,) if isinstance(image, str)
              else _str_list(image, where, "image", allow_empty=True))
    if any(not p for p in images):
      raise EvalDataError(f"{where}: empty image path")
    if not isinstance(obj["question"], str):
      raise EvalDataError(f"{where}: 'question' must be a string")
    answers = _str_list(obj["answers"], where, "answers", allow_empty=False)
    options = obj.get("options")
    if options is not None:
      options = _str_list(options, where, "options", allow_empty=False)
    images = tuple(os.path.join(root, p) for p in images)
    group = _opt_str(obj, "group", where)
    records.append(EvalRecord(
        id=rid, images=images, question=obj["question"], answers=answers,
        options=options, category=_opt_str(obj, "category", where),
        question_type=_opt_str(obj, "question_type", where),
        hint=_opt_str(obj, "hint", where),
        group=group if group is not None else (images[0] if images else rid),
        line=lineno,
        extra={k: v for k, v in obj.items() if k not in _RECORD_FIELDS}))
  if not records:
    raise EvalDataError(f"{path}: no records")
  return records


def load_predictions(path: str, known_ids: Collection[str]
                     ) -> dict[str, Prediction]:
  """Reads and validates a predictions file.

  Args:
    path: the JSONL file.
    known_ids: ids of the data file; any other id is an error.

  Returns:
    id -> Prediction.

  Raises:
    EvalDataError: on malformed lines, missing or mistyped keys, unknown or
      duplicate ids.
  """
  known = set(known_ids)
  preds = {}
  for lineno, obj in _json_lines(path):
    where = _where(path, lineno, obj)
    for key in ("id", "prediction"):
      if key not in obj:
        raise EvalDataError(f"{where}: missing key {key!r}")
    rid, text = obj["id"], obj["prediction"]
    if not isinstance(rid, str):
      raise EvalDataError(f"{where}: 'id' must be a string, got {rid!r}")
    if rid not in known:
      raise EvalDataError(f"{where}: id {rid!r} is not in the data file")
    if rid in preds:
      raise EvalDataError(f"{where}: duplicate id {rid!r} (first on line "
                          f"{preds[rid].line})")
    if not isinstance(text, str):
      raise EvalDataError(f"{where}: 'prediction' must be a string, got "
                          f"{text!r}")
    numbers = {}
    for key in EFFICIENCY_FIELDS:
      value = obj.get(key)
      if value is None:
        continue
      if (isinstance(value, bool) or not isinstance(value, (int, float))
          or not math.isfinite(value)):
        raise EvalDataError(f"{where}: {key!r} must be a finite number, got "
                            f"{value!r}")
      numbers[key] = float(value)
    preds[rid] = Prediction(id=rid, prediction=text, line=lineno, **numbers)
  return preds

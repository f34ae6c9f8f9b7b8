"""The local evaluation JSONL format and the predictions format.

Data file, one JSON object per line (blank lines are skipped)::

  {"id": "q1", "image": "images/ab12.png", "question": "...",
   "answers": ["gold", ...],
   # a video task has "video" (a path or a list) instead of / beside "image"
   "video": "videos/x.mp4",
   # where the task needs them:
   "options": ["cat", "dog"], "category": "...", "question_type": "...",
   # optional:
   "hint": "...",      # ScienceQA context, printed before the question
   "group": "..."}     # MME: questions about the same image (default: image)

``image`` / ``video`` is a path relative to the data file (absolute paths
work too) or a list of them, possibly empty; a record has at least one of
the two keys. Other keys are kept in ``extra`` (MMBench's ``rotation`` and
``l2_category``, Video-MME's ``duration`` and ``subtitles``).

Predictions file, one JSON object per line: ``id`` and ``prediction`` (the
decoded answer, stop strings already cut off), optionally ``prefill_ms``,
``latency_ms``, ``visual_tokens_before``, ``visual_tokens_after`` and
``peak_memory_bytes`` for the efficiency summary.

Every problem is reported as an ``EvalDataError`` naming the file and line
(and the id where there is one). ``read_data`` also checks that every image
exists and opens as an image, so a run can validate its whole data file
before loading a model; with ``skip_bad`` it skips bad records instead and
counts them by kind (``BAD_KINDS``, the names of training's skip accounting
in ``data/errors.py``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Collection, Iterator, Sequence

# Optional numeric fields of a prediction line, summarised by ``score``.
EFFICIENCY_FIELDS = ("prefill_ms", "latency_ms", "visual_tokens_before",
                     "visual_tokens_after", "peak_memory_bytes",
                     "kv_cache_bytes")
_RECORD_FIELDS = ("id", "image", "video", "question", "answers", "options", "category",
                  "question_type", "hint", "group")


# Why a data record is bad, in report order (training's
# ``data.errors.SKIP_KINDS`` names, and "corrupt_video": training skips all
# videos as "video_unsupported", evaluation decodes them).
BAD_KINDS = ("malformed", "missing_file", "corrupt_image", "corrupt_video")


class EvalDataError(ValueError):
  """A malformed data or predictions file."""


class BadRecordError(EvalDataError):
  """One data record that cannot be evaluated.

  Attributes:
    kind: one of ``BAD_KINDS``.
  """

  def __init__(self, kind: str, message: str):
    if kind not in BAD_KINDS:
      raise ValueError(f"unknown bad-record kind {kind!r}")
    super().__init__(message)
    self.kind = kind


@dataclasses.dataclass(frozen=True)
class EvalRecord:
  """One benchmark question.

  Attributes:
    id: unique within the file.
    images: absolute image paths, in prompt order (may be empty).
    videos: absolute video paths (after the images in the prompt).
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
  videos: tuple[str, ...] = ()


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
  kv_cache_bytes: float | None = None


def _json_lines(path: str, strict: bool = True
                ) -> Iterator[tuple[int, dict | BadRecordError]]:
  """Yields (line number, object) for every non-blank line; a line that is
  not a JSON object raises, or with ``strict=False`` is yielded as its
  ``BadRecordError``."""
  if not os.path.isfile(path):
    raise EvalDataError(f"{path}: no such file")
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
        if not isinstance(obj, dict):
          raise BadRecordError(
              "malformed", f"{path}:{lineno}: expected a JSON object, got "
              f"{type(obj).__name__}")
      except json.JSONDecodeError as e:
        obj = BadRecordError("malformed", f"{path}:{lineno}: not valid JSON "
                             f"({e.msg} at column {e.colno})")
      except BadRecordError as e:
        obj = e
      if strict and isinstance(obj, BadRecordError):
        raise obj
      yield lineno, obj


def _where(path: str, lineno: int, obj: dict) -> str:
  rid = obj.get("id")
  return f"{path}:{lineno}" + (f" (id {rid!r})" if isinstance(rid, str) else "")


def _str_list(value, where: str, key: str, allow_empty: bool) -> tuple:
  if (not isinstance(value, list)
      or not all(isinstance(v, str) for v in value)):
    raise BadRecordError("malformed", f"{where}: {key!r} must be a list of "
                         f"strings, got {value!r}")
  if not value and not allow_empty:
    raise BadRecordError("malformed", f"{where}: {key!r} must not be empty")
  return tuple(value)


def _opt_str(obj: dict, key: str, where: str) -> str | None:
  value = obj.get(key)
  if value is not None and not isinstance(value, str):
    raise BadRecordError("malformed", f"{where}: {key!r} must be a string, "
                         f"got {value!r}")
  return value


def _parse_record(obj: dict, where: str, lineno: int, root: str,
                  required: Sequence[str]) -> EvalRecord:
  """One line's record; raises ``BadRecordError`` ("malformed")."""
  media = ("video",) if obj.get("video") is not None and (
      obj.get("image") is None) else ("image",)
  for key in ("id", *media, "question", "answers", *required):
    if key not in obj or obj[key] is None:
      raise BadRecordError("malformed", f"{where}: missing key {key!r}")
  rid = obj["id"]
  if not isinstance(rid, str) or not rid:
    raise BadRecordError("malformed", f"{where}: 'id' must be a non-empty "
                         f"string, got {rid!r}")
  def paths(key):
    value = obj.get(key)
    if value is None:
      return ()
    out = ((value,) if isinstance(value, str)
           else _str_list(value, where, key, allow_empty=True))
    if any(not p for p in out):
      raise BadRecordError("malformed", f"{where}: empty {key} path")
    return tuple(os.path.join(root, p) for p in out)
  images, videos = paths("image"), paths("video")
  if not isinstance(obj["question"], str):
    raise BadRecordError("malformed", f"{where}: 'question' must be a string")
  answers = _str_list(obj["answers"], where, "answers", allow_empty=False)
  options = obj.get("options")
  if options is not None:
    options = _str_list(options, where, "options", allow_empty=False)
  group = _opt_str(obj, "group", where)
  return EvalRecord(
      id=rid, images=images, question=obj["question"], answers=answers,
      options=options, category=_opt_str(obj, "category", where),
      question_type=_opt_str(obj, "question_type", where),
      hint=_opt_str(obj, "hint", where),
      group=group if group is not None else (images[0] if images else rid),
      line=lineno, videos=videos,
      extra={k: v for k, v in obj.items() if k not in _RECORD_FIELDS})


def check_image(path: str) -> None:
  """Raises ``BadRecordError`` when ``path`` is absent or not an image.

  Reads only the header (cheap for a whole benchmark); a file damaged past
  its header fails later, when the image is decoded.
  """
  if not os.path.isfile(path):
    raise BadRecordError("missing_file", f"image {path}: no such file")
  from PIL import Image
  try:
    with Image.open(path):
      pass
  except (OSError, ValueError) as e:  # PIL.UnidentifiedImageError included
    raise BadRecordError("corrupt_image", f"image {path} is not a readable "
                         f"image ({e})") from None


def check_video(path: str) -> None:
  """Raises ``BadRecordError`` when ``path`` is absent or its container
  header does not open as a video (frames are decoded only in the run)."""
  if not os.path.isfile(path):
    raise BadRecordError("missing_file", f"video {path}: no such file")
  from vselect_jax.eval import video
  video.probe(path)


@dataclasses.dataclass
class Skipped:
  """A bad record left out of the run."""
  kind: str      # one of BAD_KINDS
  line: int
  id: str | None
  error: str

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class EvalData:
  """A validated data file.

  Attributes:
    path: the JSONL file.
    records: the usable records, in file order.
    skipped: the bad records left out (only with ``skip_bad``).
  """
  path: str
  records: list[EvalRecord]
  skipped: list[Skipped] = dataclasses.field(default_factory=list)

  def skip_counts(self) -> dict[str, int]:
    """{kind: count} over ``BAD_KINDS`` (zeros included)."""
    return count_skipped(self.skipped)


def count_skipped(skipped: Sequence[Skipped]) -> dict[str, int]:
  """{kind: count} over ``BAD_KINDS`` (zeros included)."""
  return {k: sum(s.kind == k for s in skipped) for k in BAD_KINDS}


def read_data(path: str, required: Sequence[str] = (), *,
              check_images: bool = True, skip_bad: bool = False) -> EvalData:
  """Reads and validates a data file, optionally skipping bad records.

  Args:
    path: the JSONL file.
    required: keys beyond id/image/question/answers that every line must
      have (a task's ``required_fields``).
    check_images: also check that every image exists and is an image
      (``check_image``), and every video opens (``check_video``).
    skip_bad: leave bad records out and list them in ``skipped`` instead of
      raising at the first one.

  Raises:
    EvalDataError: the first bad record (file, line, id and problem) unless
      ``skip_bad``; a missing file, or no usable record, always.
  """
  root = os.path.dirname(os.path.abspath(path))
  records, skipped, seen = [], [], {}
  checked: dict[str, BadRecordError | None] = {}  # an image shared by lines
  for lineno, obj in _json_lines(path, strict=not skip_bad):
    rid = None
    try:
      if isinstance(obj, BadRecordError):
        raise obj
      where = _where(path, lineno, obj)
      rid = obj.get("id") if isinstance(obj.get("id"), str) else None
      record = _parse_record(obj, where, lineno, root, required)
      if record.id in seen:
        raise BadRecordError("malformed", f"{where}: duplicate id "
                             f"{record.id!r} (first on line "
                             f"{seen[record.id]})")
      if check_images:
        media = ([(p, check_image) for p in record.images]
                 + [(p, check_video) for p in record.videos])
        for image, check in media:
          if image not in checked:
            try:
              check(image)
              checked[image] = None
            except BadRecordError as e:
              checked[image] = e
          if checked[image] is not None:
            bad = checked[image]
            raise BadRecordError(bad.kind, f"{where}: {bad}")
    except BadRecordError as e:
      if not skip_bad:
        raise
      skipped.append(Skipped(e.kind, lineno, rid, str(e)))
      continue
    seen[record.id] = lineno
    records.append(record)
  if not records:
    counts = ", ".join(f"{k}={n}" for k, n in count_skipped(skipped).items()
                       if n)
    raise EvalDataError(f"{path}: no records" + (
        f" left after skipping {len(skipped)} bad ones ({counts})"
        if skipped else ""))
  return EvalData(path, records, skipped)


def load_records(path: str, required: Sequence[str] = ()) -> list[EvalRecord]:
  """Reads and validates a data file (images are not opened).

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
  return read_data(path, required, check_images=False).records


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

"""Converts the lmms-lab benchmark parquet files to our JSONL + image files.

Download a task's parquet shards from the hub yourself (e.g. ``hf download
lmms-lab/DocVQA --repo-type dataset --include "DocVQA/validation-*"``), then

  python -m vselect_jax.eval.lmms_convert --task docvqa --out data/eval \
      path/to/DocVQA/validation-*.parquet

writes ``data/eval/docvqa.jsonl`` and the images under
``data/eval/images/docvqa/``. Images are written byte for byte as stored
(lmms-lab columns hold ``{"bytes": ..., "path": ...}``), named by a hash of
their content, so a page or picture that several questions share (DocVQA,
MME) is stored once. Which dataset and split each task expects is in
``tasks.TASKS`` (``dataset``, ``split``).

Ids: the dataset's own question id where it has a unique one (DocVQA,
TextVQA, MMMU), otherwise the row number over all files in the order given.
MMBench keeps its ``index``: the published dev files hold every circular
rotation of a question as a row (index + k * 1e6, grouped by index % 1e6 for
CircularEval); a file of original questions only (no index >= 1e6) gets the
rotations generated here, so a converted MMBench file always holds them.
"""
from __future__ import annotations

import argparse
import ast
import glob
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence

from vselect_jax.eval.metrics import circular as circular_lib
from vselect_jax.eval.metrics import mmmu as mmmu_lib
from vselect_jax.eval.metrics.choice import option_letters
from vselect_jax.eval.tasks import get_task

_EXT_BY_FORMAT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp",
                  "WEBP": ".webp", "TIFF": ".tif"}


class ConvertError(ValueError):
  """A parquet file that does not look like the task's dataset."""


def _parquet_files(paths: Sequence[str]) -> list[str]:
  files = []
  for p in paths:
    if os.path.isdir(p):
      found = sorted(glob.glob(os.path.join(p, "**", "*.parquet"),
                               recursive=True))
      if not found:
        raise ConvertError(f"{p}: no .parquet files in this directory")
      files.extend(found)
    elif os.path.isfile(p):
      files.append(p)
    else:
      raise ConvertError(f"{p}: no such file or directory")
  return files


def _rows(files: Sequence[str]) -> Iterator[tuple[str, dict]]:
  try:
    import pyarrow.parquet as pq
  except ImportError as e:
    raise ImportError("converting parquet files needs pyarrow "
                      "(pip install pyarrow)") from e
  for path in files:
    # Batches keep memory bounded: image columns make row groups large.
    for batch in pq.ParquetFile(path).iter_batches(batch_size=32):
      for row in batch.to_pylist():
        yield path, row


class _ImageWriter:
  """Writes image cells under ``root/subdir``, deduplicated by content."""

  def __init__(self, root: str, subdir: str):
    self.root = root
    self.subdir = subdir
    os.makedirs(os.path.join(root, subdir), exist_ok=True)

  def __call__(self, cell, where: str) -> str:
    if isinstance(cell, dict):
      data, src = cell.get("bytes"), cell.get("path")
    elif isinstance(cell, (bytes, bytearray)):
      data, src = bytes(cell), None
    else:
      raise ConvertError(f"{where}: expected an image cell "
                         f"{{'bytes', 'path'}}, got {type(cell).__name__}")
    if not data:
      raise ConvertError(f"{where}: image cell has no embedded bytes "
                         f"(path {src!r}); re-download the parquet files")
    ext = self._extension(data, src)
    name = hashlib.sha1(data).hexdigest()[:20] + ext
    rel = os.path.join(self.subdir, name)
    full = os.path.join(self.root, rel)
    if not os.path.exists(full):
      tmp = full + ".tmp"
      with open(tmp, "wb") as f:
        f.write(data)
      os.replace(tmp, full)
    return rel.replace(os.sep, "/")

  @staticmethod
  def _extension(data: bytes, src: str | None) -> str:
    from PIL import Image
    try:
      with Image.open(io.BytesIO(data)) as im:
        fmt = im.format
    except Exception:  # not an image PIL knows: keep the stored name's
      fmt = None
    if fmt in _EXT_BY_FORMAT:
      return _EXT_BY_FORMAT[fmt]
    ext = os.path.splitext(src or "")[1].lower()
    return ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ".img"


def _col(row: dict, key: str, where: str):
  if key not in row:
    raise ConvertError(f"{where}: no column {key!r} (columns: "
                       f"{sorted(row)}); is this the right dataset?")
  return row[key]


def _letter(index, n: int, where: str) -> str:
  try:
    return option_letters(n)[int(index)]
  except (ValueError, IndexError, TypeError):
    raise ConvertError(f"{where}: answer index {index!r} is not one of "
                       f"{n} options") from None


def _as_list(value) -> list[str]:
  if isinstance(value, (list, tuple)):
    return [str(v) for v in value]
  return [str(value)]


# Each returns (record without "image", list of image cells).


def _docvqa(row, i, where):
  return ({"id": str(_col(row, "questionId", where)),
           "question": _col(row, "question", where),
           "answers": _as_list(_col(row, "answers", where))},
          [_col(row, "image", where)])


def _chartqa(row, i, where):
  rec = {"id": str(i), "question": _col(row, "question", where),
         "answers": _as_list(_col(row, "answer", where))}
  if row.get("type") is not None:
    rec["question_type"] = row["type"]
  return rec, [_col(row, "image", where)]


def _textvqa(row, i, where):
  return ({"id": str(_col(row, "question_id", where)),
           "question": _col(row, "question", where),
           "answers": _as_list(_col(row, "answers", where))},
          [_col(row, "image", where)])


def _ocrbench(row, i, where):
  return ({"id": str(i), "question": _col(row, "question", where),
           "answers": _as_list(_col(row, "answer", where)),
           "category": _col(row, "question_type", where),
           "dataset": row.get("dataset")},
          [_col(row, "image", where)])


def _scienceqa(row, i, where):
  choices = _as_list(_col(row, "choices", where))
  rec = {"id": str(i), "question": _col(row, "question", where),
         "options": choices,
         "answers": [_letter(_col(row, "answer", where), len(choices), where)]}
  if row.get("hint"):
    rec["hint"] = row["hint"]
  if row.get("subject"):
    rec["category"] = row["subject"]
  image = row.get("image")
  return rec, ([image] if image else [])


def _ai2d(row, i, where):
  options = _as_list(_col(row, "options", where))
  return ({"id": str(i), "question": _col(row, "question", where),
           "options": options,
           "answers": [_letter(_col(row, "answer", where), len(options),
                               where)]},
          [_col(row, "image", where)])


def _mmmu(row, i, where):
  qid = str(_col(row, "id", where))
  qtype = _col(row, "question_type", where)
  raw = _col(row, "options", where)
  options = ast.literal_eval(raw) if isinstance(raw, str) else list(raw or [])
  question = _col(row, "question", where)
  rec = {"id": qid, "question": question, "question_type": qtype,
         # The gold answer is kept as the raw string, as lmms-eval scores it.
         "answers": [str(_col(row, "answer", where))]}
  if qtype == "multiple-choice":
    rec["options"] = [str(o) for o in options]
  subject = mmmu_lib.subject_from_id(qid)
  if subject:
    rec["category"] = subject
  # lmms-eval feeds the images the prompt (question and options) refers to,
  # once each, ordered by name.
  text = question + "\n" + "\n".join(str(o) for o in options)
  names = sorted({t.strip("<>").replace(" ", "_")
                  for t in re.findall(r"<image \d+>", text)})
  cells = []
  for name in names:
    cell = row.get(name)
    if cell is None:
      raise ConvertError(f"{where}: the question refers to {name} but that "
                         "column is empty")
    cells.append(cell)
  return rec, cells


def _mme(row, i, where):
  return ({"id": str(i), "question": _col(row, "question", where),
           "answers": [_col(row, "answer", where)],
           "category": _col(row, "category", where),
           # question_id names the image; its two questions share it.
           "group": str(_col(row, "question_id", where))},
          [_col(row, "image", where)])


def _pope(row, i, where):
  rec = {"id": str(i), "question": _col(row, "question", where),
         "answers": [_col(row, "answer", where)]}
  if row.get("category") is not None:
    rec["category"] = row["category"]
  return rec, [_col(row, "image", where)]


def _absent(value) -> bool:
  """MMBench's empty cells: None, NaN, "nan" or blank."""
  return (value is None or (isinstance(value, float) and value != value)
          or (isinstance(value, str) and value.strip().lower() in ("", "nan")))


def _mmbench(row, i, where):
  index = int(_col(row, "index", where))
  options = []
  for letter in "ABCDE":
    value = row.get(letter)
    if _absent(value):
      continue
    if len(options) != "ABCDE".index(letter):
      raise ConvertError(f"{where}: option {letter} follows an empty option")
    options.append(str(value))
  if len(options) < 2:
    raise ConvertError(f"{where}: fewer than two options")
  answer = str(_col(row, "answer", where)).strip().upper()
  if answer not in option_letters(len(options)):
    raise ConvertError(f"{where}: answer {answer!r} is not one of "
                       f"{option_letters(len(options))}")
  rec = {"id": str(index), "question": _col(row, "question", where),
         "options": options, "answers": [answer],
         # CircularEval groups the rotations of a question by this key.
         "group": str(index % circular_lib.ROTATION_STRIDE),
         "rotation": index // circular_lib.ROTATION_STRIDE}
  if not _absent(row.get("hint")):
    rec["hint"] = str(row["hint"])
  if not _absent(row.get("category")):
    rec["category"] = str(row["category"])
  if not _absent(row.get("L2-category")):
    rec["l2_category"] = str(row["L2-category"])
  return rec, [_col(row, "image", where)]


def _mmbench_rotations(recs: list[dict]) -> list[dict]:
  """The published dev files hold every rotation (indices >= 1e6); a file
  of original questions only gets them generated here, with MMBench's
  index convention (rotation k: index + k * 1e6)."""
  if any(r["rotation"] for r in recs):
    return recs
  out = []
  for r in recs:
    letters = option_letters(len(r["options"]))
    for k, (opts, ans) in enumerate(circular_lib.rotations(
        r["options"], letters.index(r["answers"][0]))):
      out.append({**r, "id": str(int(r["id"])
                                 + k * circular_lib.ROTATION_STRIDE),
                  "options": opts, "answers": [letters[ans]],
                  "rotation": k})
  return out


_CONVERTERS = {"docvqa": _docvqa, "chartqa": _chartqa, "textvqa": _textvqa,
               "ocrbench": _ocrbench, "scienceqa": _scienceqa, "ai2d": _ai2d,
               "mmmu": _mmmu, "mme": _mme, "pope": _pope,
               "mmbench_en_dev": _mmbench, "mmbench_cn_dev": _mmbench}
# Tasks whose records are completed over the whole file before writing.
_EXPAND = {"mmbench_en_dev": _mmbench_rotations,
           "mmbench_cn_dev": _mmbench_rotations}


def convert(task: str, parquet_paths: Sequence[str], out_dir: str,
            limit: int | None = None) -> str:
  """Converts parquet shards of ``task``'s dataset.

  Args:
    task: a name from ``tasks.TASKS``.
    parquet_paths: files or directories (searched for ``*.parquet``), read
      in the order given.
    out_dir: where ``<task>.jsonl`` and ``images/<task>/`` go.
    limit: stop after this many records (a quick subset).

  Returns:
    The path of the JSONL file.

  Raises:
    ConvertError: on missing columns, bad answers, images without bytes or
      duplicate question ids.
  """
  get_task(task)  # validates the name
  fn = _CONVERTERS[task]
  files = _parquet_files(parquet_paths)
  os.makedirs(out_dir, exist_ok=True)
  write_image = _ImageWriter(out_dir, f"images/{task}")
  out_path = os.path.join(out_dir, f"{task}.jsonl")
  seen = set()
  tmp = out_path + ".tmp"
  expand = _EXPAND.get(task)
  held = []  # records of an expanded task, written at the end
  with open(tmp, "w", encoding="utf-8") as f:
    for i, (path, row) in enumerate(_rows(files)):
      if limit is not None and i >= limit:
        break
      where = f"{path}: row {i}"
      rec, cells = fn(row, i, where)
      images = [write_image(c, where) for c in cells]
      rec["image"] = images[0] if len(images) == 1 else images
      rec = {k: v for k, v in rec.items() if v is not None}
      for r in ([rec] if expand is None else []):
        _write_new(f, r, seen, where)
      if expand is not None:
        held.append((rec, where))
    if expand is not None:
      wheres = {r["id"]: w for r, w in held}
      for r in expand([r for r, _ in held]):
        _write_new(f, r, seen, wheres.get(r["id"], f"{files}"))
  if not seen:
    os.remove(tmp)
    raise ConvertError(f"no rows in {files}")
  os.replace(tmp, out_path)
  return out_path


def _write_new(f, rec: dict, seen: set, where: str) -> None:
  if rec["id"] in seen:
    raise ConvertError(f"{where}: duplicate question id {rec['id']!r}")
  seen.add(rec["id"])
  f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def add_convert_args(parser: argparse.ArgumentParser) -> None:
  """Adds the converter's arguments to ``parser``."""
  from vselect_jax.eval import video_convert
  parser.add_argument("--task", required=True, choices=sorted(
      list(_CONVERTERS) + list(video_convert.CONVERTERS)))
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--limit", type=int, default=None,
                      help="convert only the first N rows")
  parser.add_argument("--video-dir", default=None,
                      help="video tasks: where the videos are")
  parser.add_argument("--subtitle-dir", default=None,
                      help="videomme_w_subtitle: where the .srt files are")
  parser.add_argument("parquet", nargs="+", metavar="SOURCE",
                      help="parquet files or directories holding them "
                      "(video tasks: their parquet / json / jsonl files)")


def run_convert(args: argparse.Namespace) -> int:
  """Runs the converter from parsed arguments; returns the exit status."""
  from vselect_jax.eval import video_convert
  try:
    if args.task in video_convert.CONVERTERS:
      if not args.video_dir:
        raise ConvertError(f"{args.task} needs --video-dir")
      path, missing = video_convert.convert(
          args.task, args.parquet, args.out, args.video_dir,
          subtitle_dir=getattr(args, "subtitle_dir", None), limit=args.limit)
      if missing:
        print(f"warning: {missing} records name a missing video (eval.py "
              "run --skip-bad counts them as missing_file)", file=sys.stderr)
    else:
      path = convert(args.task, args.parquet, args.out, limit=args.limit)
  except ConvertError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with open(path, encoding="utf-8") as f:
    n = sum(1 for _ in f)
  print(f"wrote {n} records to {path}")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_convert_args(parser)
  return run_convert(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())

"""Converts the video benchmarks' published layouts to our JSONL format.

Download a benchmark's annotation files (parquet, json or jsonl) and its
videos yourself, then

  python eval.py convert --task videomme --out data/eval \\
      --video-dir Video-MME/data --subtitle-dir Video-MME/subtitle \\
      Video-MME/videomme/test-00000-of-00001.parquet

writes ``data/eval/videomme.jsonl`` whose ``video`` paths point at the
videos where they are (relative to the JSONL file; videos are not copied).
Layouts (the columns each dataset publishes):

* ``videomme`` / ``videomme_w_subtitle`` (lmms-lab/Video-MME parquet):
  ``videoID``, ``question_id``, ``duration``, ``domain``, ``sub_category``,
  ``task_type``, ``question``, ``options`` ("A. ..."), ``answer``; videos
  ``<video-dir>/<videoID>.mp4`` (or .MP4 / .mkv). With ``--subtitle-dir``
  the record gets ``subtitles``: the lines of ``<videoID>.srt`` showing at
  32 uniformly spaced frames (lmms-eval's ``frame_num: 32``), text inside
  ``<font ...>`` tags where present.
* ``mlvu_dev`` (MLVU dev json / lmms-eval parquet): ``video_name``,
  ``question``, ``answer`` (a letter, or an option text with
  ``candidates``), ``task_type``; videos ``<video-dir>/<video_name>``.
* ``mvbench`` (OpenGVLab/MVBench ``json/<subtask>.json``): ``video``,
  ``question``, ``candidates``, ``answer`` (an option text); the subtask is
  the file's name; videos ``<video-dir>/<its folder>/<video>`` (the
  dataset's folder per subtask, ``MVBENCH_FOLDERS``).
* ``longvideobench_val_v`` (``lvb_val.json``): ``id``, ``video_path``,
  ``question``, ``candidates`` or ``option0..4`` ("N/A" = none),
  ``correct_choice``, ``duration_group``, ``question_category``.
* ``egoschema_subset`` (lmms-lab/egoschema Subset parquet):
  ``question_idx``, ``video_idx``, ``question``, ``option`` ("A. ..."),
  ``answer`` (the option's index); videos ``<video-dir>/<video_idx>.mp4``.

A record whose video is missing is still written (``eval.py run
--skip-bad`` counts it as ``missing_file``); the converter prints how many.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence

import numpy as np

from vselect_jax.eval.lmms_convert import ConvertError, _col, _rows
from vselect_jax.eval.metrics.choice import option_letters

# MVBench's video folder per subtask (its dataset card's layout).
MVBENCH_FOLDERS = {
    "object_interaction": "star/Charades_segment",
    "action_sequence": "star/Charades_segment",
    "action_prediction": "star/Charades_segment",
    "action_localization": "sta/sta_video_segment",
    "moving_count": "clevrer/video_validation",
    "fine_grained_pose": "nturgbd_convert",
    "character_order": "perception/videos",
    "object_shuffle": "perception/videos",
    "egocentric_navigation": "vlnqa",
    "moving_direction": "clevrer/video_validation",
    "episodic_reasoning": "tvqa/video_fps3_hq_segment",
    "fine_grained_action": "Moments_in_Time_Raw/videos",
    "scene_transition": "scene_qa/video",
    "state_change": "perception/videos",
    "moving_attribute": "clevrer/video_validation",
    "action_antonym": "ssv2_video_mp4",
    "unexpected_action": "FunQA_test/test",
    "counterfactual_inference": "clevrer/video_validation",
    "object_existence": "clevrer/video_validation",
    "action_count": "perception/videos",
}
_LETTER_PREFIX = re.compile(r"^\s*\(?([A-Z])[.)]\s*")
_FONT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')


def _source_rows(paths: Sequence[str]) -> Iterator[tuple[str, dict]]:
  """(file, row) over parquet, json (a list of rows) and jsonl files."""
  for path in paths:
    if not os.path.isfile(path):
      raise ConvertError(f"{path}: no such file")
    if path.endswith(".parquet"):
      yield from _rows([path])
    elif path.endswith(".jsonl"):
      with open(path, encoding="utf-8") as f:
        for line in f:
          if line.strip():
            yield path, json.loads(line)
    elif path.endswith(".json"):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      if not isinstance(data, list):
        raise ConvertError(f"{path}: expected a list of rows")
      for row in data:
        yield path, row
    else:
      raise ConvertError(f"{path}: expected .parquet, .json or .jsonl")


def _strip_letters(options, where: str) -> list[str]:
  """Option texts without their "A. " labels, which must run A, B, ..."""
  out = []
  for i, o in enumerate(options):
    o = str(o)
    m = _LETTER_PREFIX.match(o)
    if m:
      if m.group(1) != option_letters(26)[i]:
        raise ConvertError(f"{where}: option {i} is labelled {m.group(1)}")
      o = o[m.end():]
    out.append(o.strip())
  return out


def _letter_of(answer, options, where: str) -> str:
  """The gold letter from an option text, a letter or an index."""
  letters = option_letters(len(options))
  text = str(answer).strip()
  if text in options:
    return letters[options.index(text)]
  if text.upper() in letters and len(text) == 1:
    return text.upper()
  if text.isdigit() and int(text) < len(options):
    return letters[int(text)]
  raise ConvertError(f"{where}: answer {answer!r} is none of the "
                     f"{len(options)} options")


def _video(video_dir: str, name: str, exts=("",)) -> str:
  base = os.path.join(video_dir, name)
  for ext in exts:
    if os.path.isfile(base + ext):
      return base + ext
  return base + exts[0]


def _srt_time(text: str) -> float:
  h, m, rest = text.strip().split(":")
  sec, _, ms = rest.partition(",")
  return int(h) * 3600 + int(m) * 60 + int(sec) + int(ms or 0) / 1000


def videomme_subtitles(srt_path: str, total_frames: int, fps: float,
                       frame_num: int = 32) -> str:
  """The subtitle lines showing at ``frame_num`` uniformly spaced frames,
  in time order, one per line (lmms-eval's ``videomme_w_subtitle``)."""
  with open(srt_path, encoding="utf-8") as f:
    sections = f.read().split("\n\n")
  spans = []
  for section in sections:
    lines = section.strip().split("\n")
    if len(lines) >= 3 and " --> " in lines[1]:
      start, end = (_srt_time(t) for t in lines[1].split(" --> "))
      spans.append((int(start * fps), int(end * fps), " ".join(lines[2:])))
  frames = np.linspace(0, total_frames - 1, frame_num, dtype=int)
  texts = []
  for start, end, text in spans:
    if any(start <= fr < end for fr in frames):
      m = _FONT.findall(text)
      texts.append(m[0] if m else text)
  return "\n".join(texts)


def _videomme(row, i, where, src, a):
  vid = str(_col(row, "videoID", where))
  video = _video(a.video_dir, vid, (".mp4", ".MP4", ".mkv"))
  options = _strip_letters(_col(row, "options", where), where)
  rec = {"id": str(_col(row, "question_id", where)),
         "question": _col(row, "question", where), "options": options,
         "answers": [_letter_of(_col(row, "answer", where), options, where)],
         "duration": row.get("duration"), "domain": row.get("domain"),
         "sub_category": row.get("sub_category"),
         "category": row.get("task_type"), "video_id": vid}
  if a.task == "videomme_w_subtitle" and a.subtitle_dir:
    srt = os.path.join(a.subtitle_dir, vid + ".srt")
    if os.path.isfile(srt) and os.path.isfile(video):
      from vselect_jax.eval import records as records_lib
      from vselect_jax.eval import video as video_lib
      try:
        total, fps = video_lib.probe(video)
        rec["subtitles"] = videomme_subtitles(srt, total, fps)
      except records_lib.BadRecordError:
        pass  # a corrupt video: the run skips (and counts) the record
  return rec, video


def _mlvu(row, i, where, src, a):
  question = _col(row, "question", where)
  rec = {"id": str(row.get("question_id", i)),
         "category": str(_col(row, "task_type", where))}
  answer = _col(row, "answer", where)
  if row.get("candidates"):
    options = [str(c) for c in row["candidates"]]
    letters = option_letters(len(options))
    question = question + "\n" + "\n".join(
        f"({l}) {o}" for l, o in zip(letters, options))
    answer = _letter_of(answer, options, where)
  rec.update({"question": question, "answers": [str(answer).strip()]})
  return rec, os.path.join(a.video_dir, str(_col(row, "video_name", where)))


def _mvbench(row, i, where, src, a):
  subtask = row.get("sub_task") or os.path.splitext(os.path.basename(src))[0]
  if subtask not in MVBENCH_FOLDERS:
    raise ConvertError(f"{where}: unknown MVBench subtask {subtask!r} (from "
                       f"the file name; expected one of "
                       f"{sorted(MVBENCH_FOLDERS)})")
  options = [str(c) for c in _col(row, "candidates", where)]
  rec = {"id": f"{subtask}_{i}", "question": _col(row, "question", where),
         "options": options, "category": subtask,
         "answers": [_letter_of(_col(row, "answer", where), options, where)]}
  return rec, os.path.join(a.video_dir, MVBENCH_FOLDERS[subtask],
                           str(_col(row, "video", where)))


def _longvideobench(row, i, where, src, a):
  if row.get("candidates"):
    options = [str(c) for c in row["candidates"]]
  else:
    options = [str(row[f"option{k}"]) for k in range(5)
               if row.get(f"option{k}") not in (None, "N/A")]
  answer = int(_col(row, "correct_choice", where))
  if not 0 <= answer < len(options):
    raise ConvertError(f"{where}: correct_choice {answer} is not one of "
                       f"{len(options)} options")
  rec = {"id": str(_col(row, "id", where)),
         "question": _col(row, "question", where), "options": options,
         "answers": [option_letters(len(options))[answer]],
         "duration_group": row.get("duration_group"),
         "category": row.get("question_category")}
  return rec, os.path.join(a.video_dir, str(_col(row, "video_path", where)))


def _egoschema(row, i, where, src, a):
  options = _strip_letters(_col(row, "option", where), where)
  rec = {"id": str(row.get("question_idx", i)),
         "question": _col(row, "question", where), "options": options,
         "answers": [_letter_of(_col(row, "answer", where), options, where)]}
  return rec, _video(a.video_dir, str(_col(row, "video_idx", where)),
                     (".mp4", ".MP4"))


CONVERTERS = {"videomme": _videomme, "videomme_w_subtitle": _videomme,
              "mlvu_dev": _mlvu, "mvbench": _mvbench,
              "longvideobench_val_v": _longvideobench,
              "egoschema_subset": _egoschema}


def convert(task: str, sources: Sequence[str], out_dir: str, video_dir: str,
            *, subtitle_dir: str | None = None, limit: int | None = None
            ) -> tuple[str, int]:
  """Converts ``task``'s annotation files.

  Returns:
    (the JSONL path, how many records name a missing video).

  Raises:
    ConvertError: missing columns, bad answers, duplicate ids, no rows.
  """
  import argparse
  if task not in CONVERTERS:
    raise ConvertError(f"no video converter for {task!r}")
  if not os.path.isdir(video_dir):
    raise ConvertError(f"--video-dir {video_dir}: no such directory")
  a = argparse.Namespace(task=task, video_dir=video_dir,
                         subtitle_dir=subtitle_dir)
  os.makedirs(out_dir, exist_ok=True)
  out_path = os.path.join(out_dir, f"{task}.jsonl")
  tmp, seen, missing = out_path + ".tmp", set(), 0
  counters: dict[str, int] = {}
  with open(tmp, "w", encoding="utf-8") as f:
    n = 0
    for src, row in _source_rows(sources):
      if limit is not None and n >= limit:
        break
      i = counters[src] = counters.get(src, -1) + 1
      where = f"{src}: row {i}"
      rec, video = CONVERTERS[task](row, i, where, src, a)
      if rec["id"] in seen:
        raise ConvertError(f"{where}: duplicate question id {rec['id']!r}")
      seen.add(rec["id"])
      missing += not os.path.isfile(video)
      rec["video"] = os.path.relpath(os.path.abspath(video),
                                     os.path.abspath(out_dir))
      rec = {k: v for k, v in rec.items() if v is not None}
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
      n += 1
  if not seen:
    os.remove(tmp)
    raise ConvertError(f"no rows in {list(sources)}")
  os.replace(tmp, out_path)
  return out_path, missing

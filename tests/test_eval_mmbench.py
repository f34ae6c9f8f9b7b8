"""MMBench: the parquet converter (rotations, hints, fewer options), the
lmms-eval prompt and CircularEval scoring with deterministic matching."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
import io

import eval as eval_cli
from vselect_jax.eval import lmms_convert, records, tasks


def _png():
  buf = io.BytesIO()
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
  return {"bytes": buf.getvalue(), "path": "x.png"}


def _parquet(path, rows):
  pq.write_table(pa.Table.from_pylist(rows), path)


ROWS = [
    # Four options, a hint, answer B.
    {"index": 7, "question": "What is shown?", "hint": "A farm.",
     "A": "cat", "B": "dog", "C": "cow", "D": "hen", "answer": "B",
     "category": "object", "L2-category": "perception", "image": _png()},
    # Two options (C/D empty as the published files store them), no hint.
    {"index": 9, "question": "Is it day?", "hint": "nan",
     "A": "yes", "B": "no", "C": None, "D": "nan", "answer": "A",
     "category": "scene", "L2-category": "perception", "image": _png()},
]


def _convert(tmp_path, rows, task="mmbench_en_dev"):
  src = tmp_path / "dev.parquet"
  _parquet(src, rows)
  out = lmms_convert.convert(task, [str(src)], str(tmp_path / "out"))
  return out, [json.loads(l) for l in open(out)]


def test_converter_generates_every_rotation_grouped_by_index(tmp_path):
  path, recs = _convert(tmp_path, ROWS)
  assert [r["id"] for r in recs] == ["7", "1000007", "2000007", "3000007",
                                     "9", "1000009"]
  assert {r["group"] for r in recs[:4]} == {"7"}
  assert [r["options"] for r in recs[:2]] == [["cat", "dog", "cow", "hen"],
                                              ["dog", "cow", "hen", "cat"]]
  # The answer follows its option round the rotations.
  assert [r["answers"][0] for r in recs[:4]] == ["B", "A", "D", "C"]
  assert [r["options"]["ABCD".index(r["answers"][0])] for r in recs[:4]] \
      == ["dog"] * 4
  assert recs[0]["hint"] == "A farm." and "hint" not in recs[4]
  assert recs[4]["options"] == ["yes", "no"]
  assert recs[0]["l2_category"] == "perception"


def test_published_rotations_are_kept_as_they_are(tmp_path):
  rows = [dict(ROWS[1]), dict(ROWS[1], index=1000009, A="no", B="yes",
                                answer="B")]
  _, recs = _convert(tmp_path, rows)
  assert [r["id"] for r in recs] == ["9", "1000009"]
  assert [r["rotation"] for r in recs] == [0, 1]


def test_converter_names_a_bad_answer(tmp_path):
  with pytest.raises(lmms_convert.ConvertError, match=r"row 0: answer 'C'"):
    _convert(tmp_path, [dict(ROWS[1], answer="C")])


def test_prompt_is_lmms_evals(tmp_path):
  path, _ = _convert(tmp_path, ROWS)
  recs = records.load_records(path, ("options",))
  assert tasks.build_prompt("mmbench_en_dev", recs[0]) == (
      "A farm. What is shown? There are several options:\nA. cat\nB. dog\n"
      "C. cow\nD. hen\n\nAnswer with the option's letter from the given "
      "choices directly.")
  assert tasks.build_prompt("mmbench_cn_dev", recs[4]) == (
      "Is it day? There are several options:\nA. yes\nB. no\n\n"
      "请直接使用所提供的选项字母作为答案回答。")


def test_circular_eval_needs_every_rotation_right(tmp_path):
  path, recs = _convert(tmp_path, ROWS)
  recs = records.load_records(path, ("options",))
  # Question 7: right in 3 of its 4 rotations (one answer unparsable);
  # question 9: right in both (rotation 1 is "A. no / B. yes", gold B).
  preds = ["B", "The answer is A", "D", "I am not sure", "A", "B. yes"]
  res = tasks.score_task("mmbench_en_dev", recs, preds)
  assert res.metrics["circular_accuracy"] == 0.5
  assert res.metrics["accuracy"] == pytest.approx(5 / 6)
  assert res.metrics["vanilla_accuracy"] == 1.0
  assert res.details["unparsed"] == 1
  assert res.details["circular_accuracy_by_category"] == {"object": 0.0,
                                                          "scene": 1.0}
  assert res.details["accuracy_by_category"]["object"] == 0.75
  assert res.details["circular_accuracy_by_l2_category"] == {
      "perception": 0.5}


def test_eval_py_convert_and_score(tmp_path, capsys):
  src = tmp_path / "dev.parquet"
  _parquet(src, ROWS)
  out = tmp_path / "conv"
  assert eval_cli.main(["convert", "--task", "mmbench_cn_dev", "--out",
                        str(out), str(src)]) == 0
  data = out / "mmbench_cn_dev.jsonl"
  preds = tmp_path / "p.jsonl"
  with open(preds, "w") as f:
    for r in (json.loads(l) for l in open(data)):
      f.write(json.dumps({"id": r["id"], "prediction": r["answers"][0]})
              + "\n")
  assert eval_cli.main(["score", "--task", "mmbench_cn_dev", "--data",
                        str(data), "--predictions", str(preds)]) == 0
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["metrics"]["circular_accuracy"] == 1.0

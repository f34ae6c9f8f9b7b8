"""Tests of the model-free evaluation plumbing: the JSONL formats and their
validation, the task table and prompts, the lmms-lab parquet converter and
``score`` end to end (summary keys, efficiency statistics, CLI)."""
import hashlib
import io
import json
import os

import pytest
from PIL import Image

from vselect_jax.eval import lmms_convert, score, tasks
from vselect_jax.eval.records import (EvalDataError, EvalRecord,
                                      load_predictions, load_records)


def _write_jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
  return str(path)


def _rec(**kw):
  base = dict(id="1", images=("x.png",), question="Q?", answers=("a",))
  base.update(kw)
  return EvalRecord(**base)


# ---------------------------------------------------------------- records


def test_load_records_resolves_images_and_fields(tmp_path):
  path = _write_jsonl(tmp_path / "d.jsonl", [
      {"id": "a", "image": "img/1.png", "question": "Q", "answers": ["x"],
       "options": ["p", "q"], "category": "c", "hint": "h", "extra": 1},
      "",   # blank lines are skipped
      {"id": "b", "image": ["1.png", "2.png"], "question": "Q",
       "answers": ["y", "z"]},
  ])
  a, b = load_records(path)
  assert a.images == (str(tmp_path / "img" / "1.png"),)
  assert a.options == ("p", "q") and a.category == "c" and a.hint == "h"
  assert a.extra == {"extra": 1}
  assert a.group == a.images[0]        # default MME pairing key
  assert b.images == (str(tmp_path / "1.png"), str(tmp_path / "2.png"))
  assert b.answers == ("y", "z") and b.line == 3


@pytest.mark.parametrize("lines,message", [
    (['{"id": "a", "image": "x", "question": "q", "answers": ["x"]',],
     r"d.jsonl:1: not valid JSON"),
    (['[1, 2]'], r"d.jsonl:1: expected a JSON object"),
    ([{"id": "a", "image": "x", "question": "q"}],
     r"d.jsonl:1 \(id 'a'\): missing key 'answers'"),
    ([{"id": 7, "image": "x", "question": "q", "answers": ["x"]}],
     r"d.jsonl:1: 'id' must be a non-empty string"),
    ([{"id": "a", "image": "x", "question": "q", "answers": "x"}],
     r"'answers' must be a list of strings"),
    ([{"id": "a", "image": "x", "question": "q", "answers": []}],
     r"'answers' must not be empty"),
    ([{"id": "a", "image": "x", "question": "q", "answers": ["x"]},
      {"id": "a", "image": "y", "question": "q", "answers": ["x"]}],
     r"d.jsonl:2 \(id 'a'\): duplicate id 'a' \(first on line 1\)"),
])
def test_load_records_errors(tmp_path, lines, message):
  path = _write_jsonl(tmp_path / "d.jsonl", lines)
  with pytest.raises(EvalDataError, match=message):
    load_records(path)


def test_load_records_task_required_fields(tmp_path):
  path = _write_jsonl(tmp_path / "d.jsonl", [
      {"id": "a", "image": "x", "question": "q", "answers": ["A"]}])
  with pytest.raises(EvalDataError, match="missing key 'options'"):
    load_records(path, tasks.get_task("ai2d").required_fields)


@pytest.mark.parametrize("lines,message", [
    (["{bad"], r"p.jsonl:1: not valid JSON"),
    ([{"prediction": "x"}], r"p.jsonl:1: missing key 'id'"),
    ([{"id": "a"}], r"p.jsonl:1 \(id 'a'\): missing key 'prediction'"),
    ([{"id": "zz", "prediction": "x"}], r"id 'zz' is not in the data file"),
    ([{"id": "a", "prediction": "x"}, {"id": "a", "prediction": "y"}],
     r"p.jsonl:2 \(id 'a'\): duplicate id 'a' \(first on line 1\)"),
    ([{"id": "a", "prediction": None}], r"'prediction' must be a string"),
    ([{"id": "a", "prediction": "x", "latency_ms": "fast"}],
     r"'latency_ms' must be a finite number"),
])
def test_load_predictions_errors(tmp_path, lines, message):
  path = _write_jsonl(tmp_path / "p.jsonl", lines)
  with pytest.raises(EvalDataError, match=message):
    load_predictions(path, ["a", "b"])


# ------------------------------------------------------------ task table


def test_task_table_generation_settings():
  got = {n: (t.lmms_task, t.max_new_tokens) for n, t in tasks.TASKS.items()}
  assert got == {
      "docvqa": ("docvqa_val", 32), "chartqa": ("chartqa", 16),
      "textvqa": ("textvqa_val", 128), "ocrbench": ("ocrbench", 128),
      "scienceqa": ("scienceqa_img", 16), "ai2d": ("ai2d_no_mask", 16),
      "mmmu": ("mmmu_val", 16), "mme": ("mme", 16), "pope": ("pope", 128),
      # Ours, not the reference's: the synthetic world has no lmms-eval name.
      "world": ("", 4),
      "mmbench_en_dev": ("mmbench_en_dev", 1024),
      "mmbench_cn_dev": ("mmbench_cn_dev", 256),
      "videomme": ("videomme", 16),
      "videomme_w_subtitle": ("videomme_w_subtitle", 16),
      "mlvu_dev": ("mlvu_dev", 16), "mvbench": ("mvbench", 16),
      "longvideobench_val_v": ("longvideobench_val_v", 32),
      "egoschema_subset": ("egoschema_subset", 16)}
  assert tasks.TASKS["textvqa"].stop == ("ASSISTANT:",)
  assert tasks.TASKS["mmbench_en_dev"].stop == ("ASSISTANT:",)
  assert all(t.stop == () for n, t in tasks.TASKS.items()
             if n not in ("textvqa", "mmbench_en_dev"))
  with pytest.raises(KeyError, match="unknown task 'vqa'"):
    tasks.get_task("vqa")


SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


@pytest.mark.parametrize("task,record,prompt", [
    ("docvqa", _rec(question="What is the date?"),
     "What is the date?" + SHORT),
    ("chartqa", _rec(question="Max value?"),
     "Max value?\nAnswer the question with a single word."),
    # lmms-eval capitalises TextVQA questions (lower-casing the rest).
    ("textvqa", _rec(question="what is THE brand?"),
     "What is the brand?" + SHORT),
    ("ocrbench", _rec(question="  what is written?\n",
                      category="Doc-oriented VQA"), "what is written?"),
    ("scienceqa", _rec(question="Which animal?", options=("cat", "dog"),
                       hint="It is cold."),
     "Context: It is cold.\nWhich animal?\nA. cat\nB. dog" + LETTER),
    ("scienceqa", _rec(question="Which?", options=("x", "y", "z")),
     "Which?\nA. x\nB. y\nC. z" + LETTER),
    ("ai2d", _rec(question="What eats grass?", options=("cow", "fox")),
     "What eats grass?\nA. cow\nB. fox" + LETTER),
    ("mmmu", _rec(question="Look at <image 1>.", options=("1", "2"),
                  question_type="multiple-choice"),
     "Look at <image 1>.\nA. 1\nB. 2\n\nAnswer with the option's letter "
     "from the given choices directly."),
    ("mmmu", _rec(question="How many?", question_type="open"),
     "How many?\n\nAnswer the question using a single word or phrase."),
    ("mme", _rec(question="Is there a dog? Please answer yes or no.",
                 category="existence"),
     "Is there a dog?" + SHORT),
    ("pope", _rec(question=" Is there a car in the image? "),
     "Is there a car in the image?" + SHORT),
    # Literal "<image>" is removed, as the lmms-eval Qwen wrapper does.
    ("docvqa", _rec(question="<image>What is this?"), "What is this?" + SHORT),
])
def test_build_prompt(task, record, prompt):
  assert tasks.build_prompt(task, record) == prompt


def test_build_prompt_checks_required_fields():
  with pytest.raises(ValueError, match="needs 'options'"):
    tasks.build_prompt("scienceqa", _rec())
  with pytest.raises(ValueError, match="question_type must be"):
    tasks.build_prompt("mmmu", _rec(question_type="mc"))


def test_cut_at_stop():
  assert tasks.cut_at_stop("cat ASSISTANT: dog", ("ASSISTANT:",)) == "cat "
  assert tasks.cut_at_stop("cat", ("ASSISTANT:",)) == "cat"


# ------------------------------------------------------------------ score


def _score(tmp_path, task, records, preds, **kw):
  data = _write_jsonl(tmp_path / "data.jsonl", records)
  pred = _write_jsonl(tmp_path / "pred.jsonl", preds)
  return score.score_predictions(task, data, pred, **kw)


def _r(i, answers, **kw):
  return dict(id=str(i), image="x.png", question="q", answers=answers, **kw)


def test_score_docvqa_with_efficiency(tmp_path):
  summary = _score(tmp_path, "docvqa",
                   [_r(1, ["abcd"]), _r(2, ["abcd"]), _r(3, ["abcd"])],
                   [{"id": "1", "prediction": "ABCD", "prefill_ms": 10,
                     "latency_ms": 100, "visual_tokens_before": 1000,
                     "visual_tokens_after": 200},
                    {"id": "2", "prediction": "abef", "prefill_ms": 20,
                     "latency_ms": 300, "visual_tokens_before": 3000,
                     "visual_tokens_after": 600},
                    {"id": "3", "prediction": "zzzz", "prefill_ms": 40,
                     "latency_ms": 200, "visual_tokens_before": 2000,
                     "visual_tokens_after": 400}])
  # ANLS 1, 0.5 (distance 2/4) and 0 -> mean 0.5.
  assert summary["metrics"] == {"anls": pytest.approx(0.5)}
  assert summary["num_samples"] == 3
  eff = summary["efficiency"]
  # prefill 10, 20, 40: mean 70/3; p50 20; p90 at rank 0.9*2 = 1.8 ->
  # 20 + 0.8 * (40 - 20) = 36.
  assert eff["prefill_ms"]["mean"] == pytest.approx(70 / 3)
  assert eff["prefill_ms"]["p50"] == pytest.approx(20)
  assert eff["prefill_ms"]["p90"] == pytest.approx(36)
  # latency 100, 300, 200 (unsorted): p50 200, p90 200 + 0.8*100 = 280.
  assert eff["latency_ms"]["p90"] == pytest.approx(280)
  assert eff["visual_tokens_before"]["mean"] == pytest.approx(2000)
  assert eff["visual_tokens_after"]["mean"] == pytest.approx(400)
  assert "peak_memory_bytes" not in eff


def test_score_without_efficiency_fields(tmp_path):
  summary = _score(tmp_path, "textvqa", [_r(1, ["yes"] * 10)],
                   [{"id": "1", "prediction": "Yes."}])
  assert summary["metrics"] == {"accuracy": 1.0}
  assert summary["efficiency"] == {}


def test_score_missing_predictions(tmp_path):
  records = [_r(1, ["a"]), _r(2, ["b"])]
  with pytest.raises(EvalDataError, match=r"no prediction for 1 of 2.*'2'"):
    _score(tmp_path, "chartqa", records, [{"id": "1", "prediction": "a"}])
  summary = _score(tmp_path, "chartqa", records,
                   [{"id": "1", "prediction": "a"}], allow_missing=True)
  assert summary["num_samples"] == 1 and summary["num_missing"] == 1
  assert summary["metrics"] == {"relaxed_accuracy": 1.0}


def _yes_no(i, gold, group=None, **kw):
  rec = _r(i, [gold], **kw)
  if group:
    rec["group"] = group
  return rec


# Per task: records, predictions and the expected metrics (hand-computed).
CASES = {
    "chartqa": (
        [_r(1, ["12.5"], question_type="human_test"),
         _r(2, ["Red"], question_type="augmented_test")],
        ["12", "blue"],
        {"relaxed_accuracy": 0.5}),          # 0.04 off -> right; blue wrong
    "ocrbench": (
        [_r(1, ["hello"], category="Regular Text Recognition"),
         _r(2, ["x^2"], category="Handwritten Mathematical Expression "
            "Recognition"),
         _r(3, ["42"], category="Key Information Extraction")],
        ["It says Hello", "x ^ 2", "41"],
        {"score": 2, "Regular Text Recognition": 1,
         "Handwritten Mathematical Expression Recognition": 1,
         "Key Information Extraction": 0}),
    "scienceqa": (
        [_r(1, ["B"], options=["a", "b"]), _r(2, ["A"], options=["a", "b"]),
         _r(3, ["C"], options=["a", "b", "c"]),
         _r(4, ["A"], options=["a", "b"])],
        ["B", "(A) a", "The answer is C", "no idea"],
        {"accuracy": 0.75}),
    "ai2d": (
        [_r(1, ["A"], options=["x", "y"]), _r(2, ["B"], options=["x", "y"])],
        ["A.", "A"],
        {"accuracy": 0.5}),
    "mmmu": (
        [_r("validation_Math_1", ["B"], options=["1", "2"],
            question_type="multiple-choice"),
         _r("validation_Math_2", ["7"], question_type="open"),
         _r("validation_Art_1", ["blue"], question_type="open")],
        ["(B)", "The result is 7", "red"],
        {"accuracy": pytest.approx(2 / 3)}),
    "mme": (
        [_yes_no(1, "Yes", "e1", category="existence"),
         _yes_no(2, "No", "e1", category="existence"),
         _yes_no(3, "Yes", "e2", category="existence"),
         _yes_no(4, "No", "e2", category="existence"),
         _yes_no(5, "Yes", "t1", category="text_translation"),
         _yes_no(6, "No", "t1", category="text_translation")],
        # existence: e1 both right, e2 one right -> 75 + 50 = 125;
        # text_translation: both right -> 200.
        ["Yes", "No.", "yes", "yes", "Yes", "no"],
        {"perception": 125.0, "cognition": 200.0, "existence": 125.0,
         "text_translation": 200.0}),
    "pope": (
        [_r(1, ["yes"]), _r(2, ["no"]), _r(3, ["yes"]), _r(4, ["no"])],
        # parsed yes, yes, no, no: TP 1, FP 1, FN 1, TN 1.
        ["Yes", "Yes.", "No", "No"],
        {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5,
         "yes_ratio": 0.5}),
}


@pytest.mark.parametrize("task", sorted(CASES))
def test_score_tasks_metric_keys_and_values(tmp_path, task):
  records, preds, expected = CASES[task]
  summary = _score(tmp_path, task, records,
                   [{"id": r["id"], "prediction": p}
                    for r, p in zip(records, preds)])
  for key, value in expected.items():
    assert summary["metrics"][key] == value, key
  assert set(tasks.TASKS[task].metric_keys) <= set(summary["metrics"])


def test_score_mme_groups_by_image_when_no_group(tmp_path):
  # Same image for both questions, no "group": paired through the image.
  records = [dict(id="1", image="a.png", question="q", answers=["Yes"],
                  category="color"),
             dict(id="2", image="a.png", question="q", answers=["No"],
                  category="color")]
  summary = _score(tmp_path, "mme", records,
                   [{"id": "1", "prediction": "Yes"},
                    {"id": "2", "prediction": "Yes"}])
  assert summary["metrics"]["color"] == 50.0   # acc 50 + acc+ 0


def test_score_cli_writes_summary(tmp_path, capsys):
  data = _write_jsonl(tmp_path / "data.jsonl", [_r(1, ["yes"]), _r(2, ["no"])])
  run_dir = tmp_path / "run"
  run_dir.mkdir()
  pred = _write_jsonl(run_dir / "pred.jsonl",
                      [{"id": "1", "prediction": "Yes"},
                       {"id": "2", "prediction": "Yes"}])
  assert score.main(["--task", "pope", "--data", data,
                     "--predictions", pred]) == 0
  with open(run_dir / "summary.json") as f:
    summary = json.load(f)
  assert summary["metrics"]["accuracy"] == 0.5
  assert summary["metrics"]["yes_ratio"] == 1.0
  out = capsys.readouterr().out
  assert "accuracy" in out and "0.5000" in out
  # --out redirects; --samples adds the per-sample file.
  assert score.main(["--task", "pope", "--data", data, "--predictions", pred,
                     "--out", str(tmp_path / "o"), "--samples"]) == 0
  assert (tmp_path / "o" / "summary.json").exists()
  with open(tmp_path / "o" / "scored_samples.jsonl") as f:
    rows = [json.loads(l) for l in f]
  assert [r["score"] for r in rows] == [1.0, 0.0]
  # Bad input: exit status 2 and the error on stderr.
  bad = _write_jsonl(run_dir / "bad.jsonl", [{"id": "9", "prediction": "x"}])
  assert score.main(["--task", "pope", "--data", data,
                     "--predictions", bad]) == 2
  assert "id '9' is not in the data file" in capsys.readouterr().err


# -------------------------------------------------------------- converter


def _png(color, size=(8, 6)):
  buf = io.BytesIO()
  Image.new("RGB", size, color).save(buf, format="PNG")
  return buf.getvalue()


def _jpeg(color):
  buf = io.BytesIO()
  Image.new("RGB", (5, 5), color).save(buf, format="JPEG")
  return buf.getvalue()


def _image_struct():
  import pyarrow as pa
  return pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _write_parquet(path, columns, schema):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table(columns, schema=schema), str(path))
  return str(path)


def test_convert_docvqa(tmp_path):
  import pyarrow as pa
  page, other = _png("red"), _jpeg("blue")
  schema = pa.schema([("questionId", pa.string()), ("question", pa.string()),
                      ("answers", pa.list_(pa.string())),
                      ("image", _image_struct())])
  # Two shards; the first two questions are about the same page.
  f1 = _write_parquet(tmp_path / "v-0.parquet", {
      "questionId": ["11", "12"], "question": ["Date?", "Name?"],
      "answers": [["1 May", "May 1"], ["Ann"]],
      "image": [{"bytes": page, "path": "a.png"},
                {"bytes": page, "path": "a.png"}]}, schema)
  f2 = _write_parquet(tmp_path / "v-1.parquet", {
      "questionId": ["13"], "question": ["Total?"], "answers": [["$5"]],
      "image": [{"bytes": other, "path": "b.jpg"}]}, schema)
  out = tmp_path / "out"
  path = lmms_convert.convert("docvqa", [f1, f2], str(out))
  assert path == str(out / "docvqa.jsonl")
  recs = load_records(path)
  assert [r.id for r in recs] == ["11", "12", "13"]
  assert recs[0].answers == ("1 May", "May 1")
  assert recs[0].images == recs[1].images          # stored once
  assert recs[0].images[0].endswith(".png")
  assert recs[2].images[0].endswith(".jpg")
  with open(recs[0].images[0], "rb") as f:
    assert f.read() == page                      # byte for byte
  assert recs[0].images[0] == str(
      out / "images" / "docvqa" / (hashlib.sha1(page).hexdigest()[:20]
                                   + ".png"))
  assert len(os.listdir(out / "images" / "docvqa")) == 2
  # --limit and the CLI entry point.
  assert lmms_convert.main(["--task", "docvqa", "--out", str(tmp_path / "l"),
                            "--limit", "1", str(tmp_path)]) == 0
  assert [r.id for r in load_records(str(tmp_path / "l" / "docvqa.jsonl"))] \
      == ["11"]


def test_convert_mmmu_images_options_answers(tmp_path):
  import pyarrow as pa
  im1, im2 = _png("red"), _png("green")
  schema = pa.schema([("id", pa.string()), ("question", pa.string()),
                      ("options", pa.string()), ("answer", pa.string()),
                      ("question_type", pa.string()),
                      ("image_1", _image_struct()),
                      ("image_2", _image_struct()),
                      ("image_3", _image_struct())])
  f = _write_parquet(tmp_path / "mmmu.parquet", {
      "id": ["validation_Math_1", "validation_Art_Theory_2"],
      # Row 0 names image 2 in an option and image 1 twice; image 3 unused.
      "question": ["Compare <image 1> with <image 1>.", "How old?"],
      "options": ["['<image 2>', 'neither']", "[]"],
      "answer": ["A", "12"],
      "question_type": ["multiple-choice", "open"],
      "image_1": [{"bytes": im1, "path": None}, {"bytes": im1, "path": None}],
      "image_2": [{"bytes": im2, "path": None}, None],
      "image_3": [None, None]}, schema)
  recs = load_records(lmms_convert.convert("mmmu", [f], str(tmp_path / "o")))
  q0, q1 = recs
  assert q0.options == ("<image 2>", "neither")
  assert q0.question_type == "multiple-choice" and q0.answers == ("A",)
  assert q0.category == "Math" and q1.category == "Art_Theory"
  with open(q0.images[0], "rb") as a, open(q0.images[1], "rb") as b:
    assert (a.read(), b.read()) == (im1, im2)   # image_1 then image_2
  # The open question refers to no image: none is attached.
  assert q1.images == () and q1.options is None and q1.answers == ("12",)


def test_convert_scienceqa_and_mme(tmp_path):
  import pyarrow as pa
  img = _png("white")
  sqa = _write_parquet(tmp_path / "sqa.parquet", {
      "question": ["Which is a mammal?"], "choices": [["frog", "cat"]],
      "answer": [1], "hint": [""], "image": [{"bytes": img, "path": None}]},
      pa.schema([("question", pa.string()), ("choices", pa.list_(pa.string())),
                 ("answer", pa.int64()), ("hint", pa.string()),
                 ("image", _image_struct())]))
  (rec,) = load_records(lmms_convert.convert("scienceqa", [sqa],
                                             str(tmp_path / "s")))
  assert rec.id == "0" and rec.answers == ("B",)
  assert rec.options == ("frog", "cat") and rec.hint is None
  mme = _write_parquet(tmp_path / "mme.parquet", {
      "question_id": ["color/1.png", "color/1.png"],
      "question": ["Red? Please answer yes or no.", "Blue?"],
      "answer": ["Yes", "No"], "category": ["color", "color"],
      "image": [{"bytes": img, "path": None}] * 2},
      pa.schema([("question_id", pa.string()), ("question", pa.string()),
                 ("answer", pa.string()), ("category", pa.string()),
                 ("image", _image_struct())]))
  a, b = load_records(lmms_convert.convert("mme", [mme], str(tmp_path / "m")))
  assert (a.id, b.id) == ("0", "1")
  assert a.group == b.group == "color/1.png"


def test_convert_errors(tmp_path):
  import pyarrow as pa
  f = _write_parquet(tmp_path / "x.parquet", {"question": ["q"]},
                     pa.schema([("question", pa.string())]))
  with pytest.raises(lmms_convert.ConvertError, match="no column 'answer'"):
    lmms_convert.convert("pope", [f], str(tmp_path / "o"))
  g = _write_parquet(tmp_path / "y.parquet", {
      "question": ["q"], "answer": ["yes"],
      "image": [{"bytes": None, "path": "far/away.jpg"}]},
      pa.schema([("question", pa.string()), ("answer", pa.string()),
                 ("image", _image_struct())]))
  with pytest.raises(lmms_convert.ConvertError, match="no embedded bytes"):
    lmms_convert.convert("pope", [g], str(tmp_path / "o"))
  with pytest.raises(lmms_convert.ConvertError, match="no such file"):
    lmms_convert.convert("pope", [str(tmp_path / "nope.parquet")],
                         str(tmp_path / "o"))

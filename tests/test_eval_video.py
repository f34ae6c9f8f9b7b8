"""Video benchmarks: the reference's frame sampling, PyAV decoding, bad
videos as counted skips, the converters, the prompts and scores, and
``eval.py run --task videomme`` end to end on a tiny model."""
import json
import os

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import eval as eval_cli
from vselect_jax.data import testing
from vselect_jax.eval import records, runner, tasks, video, video_convert

SMALL = ["--min-pixels", "3136", "--max-pixels", "50176",
         "--video-min-pixels", "3136", "--video-max-pixels", "12544",
         "--max-num-frames", "4"]


def write_mp4(path, n=24, fps=8, size=(56, 84)):
  """Frame i is flat grey 8 * i (so decoding can be checked)."""
  h, w = size
  with av.open(str(path), "w") as c:
    s = c.add_stream("mpeg4", rate=fps)
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for i in range(n):
      frame = av.VideoFrame.from_ndarray(
          np.full((h, w, 3), (8 * i) % 256, np.uint8), format="rgb24")
      for p in s.encode(frame):
        c.mux(p)
    for p in s.encode():
      c.mux(p)
  return str(path)


def test_frame_plan_follows_qwen_vl_utils_then_the_wrapper():
  s = video.VideoSampling()
  # 10 s at 30 fps: 20 frames at 2 fps; the wrapper's 32 uniform picks of
  # them repeat some (as it does); the last is there.
  idx, lo, hi = video.frame_plan(300, 30.0, s)
  first = np.round(np.linspace(0, 299, 20)).astype(int)
  assert idx.tolist() == first[np.linspace(0, 19, 32, dtype=int)].tolist()
  assert (lo, hi) == (128 * 784, 768 * 784)
  # An hour: 768 sampled frames, so the total-pixel budget lowers the cap
  # to its floor 1.05 * min_pixels.
  idx, _, hi = video.frame_plan(108000, 30.0, s)
  assert len(idx) == 32 and idx[-1] == 107999
  assert hi == int(128 * 784 * 1.05)
  # Fewer sampled frames than the minimum: min_frames (4), even.
  assert video.sampled_frame_count(9, 30.0, s) == 4
  with pytest.raises(ValueError, match="max_num_frames"):
    video.VideoSampling(max_num_frames=0)


def test_clip_decodes_the_planned_frames(tmp_path):
  path = write_mp4(tmp_path / "v.mp4")
  s = video.VideoSampling(max_num_frames=4)
  clip = video.load_clip(path, s)
  want, _, _ = video.frame_plan(24, 8.0, s)
  assert clip.indices.tolist() == want.tolist()
  assert (clip.total_frames, clip.video_fps) == (24, 8.0)
  means = [f.mean() for f in clip.frames]
  assert np.allclose(means, 8 * want, atol=6)
  assert clip.frames[0].shape == (56, 84, 3)


def _data(tmp_path, rows):
  path = tmp_path / "d.jsonl"
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def test_bad_videos_are_named_or_counted(tmp_path):
  write_mp4(tmp_path / "ok.mp4")
  (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
  base = {"question": "q", "answers": ["A"], "options": ["x", "y"]}
  rows = [dict(base, id="ok", video="ok.mp4"),
          dict(base, id="bad", video="bad.mp4"),
          dict(base, id="gone", video="gone.mp4")]
  path = _data(tmp_path, rows)
  with pytest.raises(records.EvalDataError,
                     match=r"d.jsonl:2 \(id 'bad'\): cannot read video"):
    records.read_data(path, ("options",))
  data = records.read_data(path, ("options",), skip_bad=True)
  assert [r.id for r in data.records] == ["ok"]
  assert data.skip_counts() == {"malformed": 0, "missing_file": 1,
                                "corrupt_image": 0, "corrupt_video": 1}
  # A file whose header opens but whose frames do not decode is found when
  # the example is prepared: a named error, or a counted skip.
  cut = tmp_path / "cut.mp4"
  cut.write_bytes((tmp_path / "ok.mp4").read_bytes()[:600])
  rec = records.read_data(_data(tmp_path, [dict(base, id="cut",
                                                video="cut.mp4")]),
                          check_images=False).records[0]
  with pytest.raises(records.BadRecordError, match="cut.mp4") as e:
    runner.prepare_example(testing.testing_tokenizer(str(tmp_path / "tok")),
                           tasks.get_task("egoschema_subset"), rec,
                           runner.EvalSettings())
  assert e.value.kind == "corrupt_video"


def test_prompts_are_lmms_evals():
  r = records.EvalRecord("1", (), "What happens?", ("B",),
                         options=("run", "walk"), category="action_count",
                         extra={"subtitles": "hello"}, videos=("v",))
  assert tasks.build_prompt("videomme", r) == (
      tasks.VIDEOMME_PROMPT + "\nWhat happens?\nA. run\nB. walk\n"
      "The best answer is:")
  assert tasks.build_prompt("videomme_w_subtitle", r).startswith(
      "This video's subtitles are listed below: \nhello\n"
      + tasks.VIDEOMME_SUB_PROMPT)
  assert tasks.build_prompt("mvbench", r) == (
      "Question:What happens?\nOption:\n(A) run\n(B) walk\nAnswer with the "
      "option's letter from the given choices directly.")
  assert tasks.build_prompt("longvideobench_val_v", r) == (
      "What happens?\nA. run\nB. walk\nAnswer with the option's letter from "
      "the given choices directly.\n")
  assert tasks.build_prompt("mlvu_dev", r) == (
      "\nWhat happens?\nOnly give the best option.\n\nBest option: (")


def test_scores_by_duration_and_subtask_mean():
  def rec(i, dur, cat):
    return records.EvalRecord(str(i), (), "q", ("A",), options=("x", "y"),
                              category=cat, extra={"duration": dur})
  recs = [rec(0, "short", "t1"), rec(1, "short", "t1"), rec(2, "long", "t2")]
  # lmms-eval's first-letter rule reads "Answer: A" as A (of "Answer").
  res = tasks.score_task("videomme", recs,
                         ["The best answer is A", "Answer: B", "B"])
  assert res.metrics["accuracy"] == pytest.approx(2 / 3)
  assert res.details["accuracy_by_duration"] == {"long": 0.0, "short": 1.0}
  res = tasks.score_task("mvbench", recs, ["A", "(B) y", "A."])
  assert res.metrics["mean_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
  assert res.metrics["accuracy"] == pytest.approx(2 / 3)
  res = tasks.score_task("egoschema_subset", recs, ["no idea", "A", "A"])
  assert res.details["unparsed"] == 1


def test_converters_read_the_published_layouts(tmp_path):
  vids = tmp_path / "videos"
  (vids / "clevrer" / "video_validation").mkdir(parents=True)
  src = tmp_path / "clips.json"  # not an MVBench subtask name
  src.write_text(json.dumps([{"video": "a.mp4", "question": "q",
                              "candidates": ["1", "2"], "answer": "2"}]))
  with pytest.raises(video_convert.ConvertError, match="unknown MVBench"):
    video_convert.convert("mvbench", [str(src)], str(tmp_path), str(vids))
  src = tmp_path / "moving_count.json"
  src.write_text(json.dumps([{"video": "a.mp4", "question": "q",
                              "candidates": ["1", "2"], "answer": "2"}]))
  out, missing = video_convert.convert("mvbench", [str(src)],
                                       str(tmp_path / "o"), str(vids))
  rec = json.loads(open(out).readline())
  assert rec["answers"] == ["B"] and rec["category"] == "moving_count"
  assert rec["video"].endswith("clevrer/video_validation/a.mp4")
  assert missing == 1
  lvb = tmp_path / "lvb_val.json"
  lvb.write_text(json.dumps([{"id": "x1", "video_path": "x.mp4",
                              "question": "q", "option0": "a",
                              "option1": "b", "option2": "N/A",
                              "correct_choice": 1,
                              "duration_group": 15,
                              "question_category": "T3O"}]))
  out, _ = video_convert.convert("longvideobench_val_v", [str(lvb)],
                                 str(tmp_path / "o"), str(vids))
  rec = json.loads(open(out).readline())
  assert rec["options"] == ["a", "b"] and rec["answers"] == ["B"]
  ego = tmp_path / "ego.parquet"
  pq.write_table(pa.Table.from_pylist([{
      "question_idx": "e1", "video_idx": "e1", "question": "q",
      "option": ["A. one", "B. two", "C. three"], "answer": "2"}]), ego)
  out, _ = video_convert.convert("egoschema_subset", [str(ego)],
                                 str(tmp_path / "o"), str(vids))
  rec = json.loads(open(out).readline())
  assert rec["options"] == ["one", "two", "three"]
  assert rec["answers"] == ["C"]


def test_videomme_subtitles_at_the_sampled_frames(tmp_path):
  srt = tmp_path / "v.srt"
  srt.write_text("1\n00:00:00,000 --> 00:00:01,000\n"
                 '<font color="white" size=".72c">first</font>\n\n'
                 "2\n00:00:01,500 --> 00:00:01,600\nmissed\n\n"
                 "3\n00:00:02,000 --> 00:00:03,000\nlast\n")
  # 3 s at 10 fps, 4 sampled frames: 0, 9, 19, 29.
  assert video_convert.videomme_subtitles(str(srt), 30, 10.0, 4) == (
      "first\nlast")


@pytest.fixture(scope="module")
def videomme(tmp_path_factory):
  root = tmp_path_factory.mktemp("vmme")
  model_dir = testing.tiny_hf_model(str(root / "model"))
  vids = root / "data"
  vids.mkdir()
  write_mp4(vids / "v1.mp4", n=24)
  write_mp4(vids / "v2.mp4", n=40)
  (vids / "v3.mp4").write_bytes(b"\x00" * 100)
  rows = [{"videoID": v, "question_id": f"{v}-1", "duration": d,
           "domain": "Knowledge", "sub_category": "Astronomy",
           "task_type": "Counting Problem", "question": "How many?",
           "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "B"}
          for v, d in (("v1", "short"), ("v2", "long"), ("v3", "medium"))]
  src = root / "test.parquet"
  pq.write_table(pa.Table.from_pylist(rows), src)
  out = root / "conv"
  assert eval_cli.main(["convert", "--task", "videomme", "--out", str(out),
                        "--video-dir", str(vids), str(src)]) == 0
  return model_dir, str(out / "videomme.jsonl"), root


def test_eval_run_videomme_end_to_end(videomme, capsys):
  model_dir, data, root = videomme
  out = str(root / "out")
  # v3 is corrupt: without --skip-bad the run stops before loading.
  assert eval_cli.main(["run", "--model", model_dir, "--task", "videomme",
                        "--data", data, "--out", out, "--no-progress",
                        "--budgets", "0.5"] + SMALL) == 2
  assert "v3.mp4" in capsys.readouterr().err
  assert eval_cli.main(["run", "--model", model_dir, "--task", "videomme",
                        "--data", data, "--out", out, "--no-progress",
                        "--budgets", "0.5", "--max-new-tokens", "3",
                        "--skip-bad", "--visualize", "1"] + SMALL) == 0
  cell = os.path.join(out, "videomme", "selector_0.5")
  summary = json.load(open(os.path.join(cell, "summary.json")))
  assert summary["skipped"]["corrupt_video"] == 1
  assert summary["num_samples"] == 2
  assert set(summary["details"]["accuracy_by_duration"]) == {"short", "long"}
  preds = [json.loads(l) for l in open(os.path.join(cell,
                                                    "predictions.jsonl"))]
  # The prediction is what generate() gives for the same video inputs.
  import vselect_jax
  from transformers import AutoTokenizer
  model = vselect_jax.from_pretrained(model_dir)
  tok = AutoTokenizer.from_pretrained(model_dir)
  settings = eval_cli._settings(eval_cli.main.__globals__["argparse"]
                                .Namespace(**_flags(SMALL)))
  rec = records.read_data(data, ("options",), skip_bad=True).records[0]
  ex = runner.prepare_example(tok, tasks.get_task("videomme"), rec, settings)
  t, h, w = ex.video_grid_thw[0]
  assert t == 2 and ex.second_per_grid_ts.tolist() == [1.0]  # 4 frames
  assert preds[0]["visual_tokens_before"] == t * h * w // 4
  assert preds[0]["visual_tokens_after"] == t * h * w // 8
  toks = model.generate(ex.input_ids, **ex.media(), budget=0.5,
                        max_new_tokens=3,
                        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"))
  assert preds[0]["prediction"] == tok.decode(
      toks[0], skip_special_tokens=True).strip()
  pics = os.listdir(os.path.join(cell, "visualize"))
  assert len(pics) == 1 and pics[0].startswith("videomme_v1-1_selector")


def _flags(extra):
  """The run flags' defaults with ``extra`` applied."""
  import argparse
  p = argparse.ArgumentParser()
  eval_cli._add_model_args(p, False)
  return vars(p.parse_args(["--model", "m", "--task", "videomme", "--data",
                            "d", "--out", "o"] + extra))


def test_per_image_budgets_split_a_video_per_frame_slot(videomme):
  from vselect_jax.host.frame_groups import frame_items
  # One row: an image of 4 tokens, then a video of 2 slots x 6 tokens.
  item = np.array([[-1, 0, 0, 0, 0, -1] + [1] * 12 + [-1]])
  is_video = np.zeros_like(item, bool)
  is_video[0, 6:18] = True
  got = frame_items(item, is_video, [[1, 4, 4]], [[2, 4, 6]], 4)
  assert got[0].tolist() == [-1, 0, 0, 0, 0, -1] + [1] * 6 + [2] * 6 + [-1]
  # End to end: the run keeps k per slot (the counts say so) and generate
  # agrees with the per-slot grouping.
  model_dir, data, root = videomme
  out = str(root / "per")
  assert eval_cli.main(["run", "--model", model_dir, "--task", "videomme",
                        "--data", data, "--out", out, "--no-progress",
                        "--budgets", "0.3", "--max-new-tokens", "2",
                        "--skip-bad", "--per-image", "--limit", "1"]
                       + SMALL) == 0
  pred = json.loads(open(os.path.join(out, "videomme", "selector_0.3",
                                      "predictions.jsonl")).readline())
  n = pred["visual_tokens_before"]
  assert pred["visual_tokens_after"] == 2 * max(1, int(n // 2 * 0.3))
  # The engine's plan keeps that many: one group per slot.
  import vselect_jax
  from transformers import AutoTokenizer
  model = vselect_jax.from_pretrained(model_dir)
  settings = eval_cli._settings(eval_cli.main.__globals__["argparse"]
                                .Namespace(**_flags(SMALL)))
  rec = records.read_data(data, ("options",), skip_bad=True).records[0]
  ex = runner.prepare_example(AutoTokenizer.from_pretrained(model_dir),
                              tasks.get_task("videomme"), rec, settings)
  prep = model.prepare(ex.input_ids, None, *[ex.media()[k] for k in (
      "pixel_values", "image_grid_thw", "pixel_values_videos",
      "video_grid_thw", "second_per_grid_ts")])
  model._per_frame(prep, None, ex.video_grid_thw)
  plan = model._plan(prep, 0.3, "selector", True, None, None)
  assert int(plan.k_row[0]) == pred["visual_tokens_after"]

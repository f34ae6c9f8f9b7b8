"""``eval.py run`` end to end on a tiny model: prompts, files, token counts,
timings, and agreement with ``model.generate``."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import eval as eval_cli
import vselect_jax
from vselect_jax.data import testing
from vselect_jax.eval import runner, tasks

SMALL = ["--min-pixels", "3136", "--max-pixels", "50176"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("evalrun")
  model_dir = testing.tiny_hf_model(str(root / "model"))
  rng = np.random.default_rng(0)
  data = root / "data"
  (data / "img").mkdir(parents=True)
  lines = []
  # Two images of one size (the second is timed), one of another shape.
  for i, (w, h) in enumerate([(90, 60), (90, 60), (300, 200)]):
    arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(data / "img" / f"{i}.png")
    lines.append({"id": f"q{i}", "image": f"img/{i}.png",
                  "question": "How many bars are higher than 10?",
                  "answers": ["3"]})
  with open(data / "chartqa.jsonl", "w") as f:
    for line in lines:
      f.write(json.dumps(line) + "\n")
  return model_dir, str(data / "chartqa.jsonl"), root


def _read(path):
  with open(path) as f:
    return [json.loads(l) for l in f]


def test_run_writes_predictions_and_summaries(setup):
  model_dir, data, root = setup
  out = str(root / "out")
  rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                      "--data", data, "--budgets", "none,0.5", "--out", out,
                      "--max-new-tokens", "4", "--no-progress"] + SMALL)
  assert rc == 0
  model = vselect_jax.from_pretrained(model_dir)
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(model_dir)
  settings = runner.EvalSettings(min_pixels=3136, max_pixels=50176,
                                 max_new_tokens=4)
  examples = runner.prepare_examples(tok, tasks.get_task("chartqa"), data,
                                     settings)
  for budget, name in ((None, "none"), (0.5, "0.5")):
    cell = os.path.join(out, "chartqa", f"selector_{name}")
    preds = _read(os.path.join(cell, "predictions.jsonl"))
    assert [p["id"] for p in preds] == ["q0", "q1", "q2"]
    for p, ex in zip(preds, examples):
      n = int(np.prod(ex.image_grid_thw[0])) // 4
      assert p["visual_tokens_before"] == n
      assert p["visual_tokens_after"] == (n if budget is None
                                          else max(1, int(n * budget)))
      assert p["answers"] == ["3"]
      # The prediction is what generate() decodes for the same prompt.
      toks = model.generate(ex.input_ids, pixel_values=ex.pixel_values,
                            image_grid_thw=ex.image_grid_thw, budget=budget,
                            max_new_tokens=4,
                            eos_token_id=tok.convert_tokens_to_ids(
                                "<|im_end|>"))
      text = tok.decode(toks[0], skip_special_tokens=True).strip()
      assert p["prediction"] == text
    # First call of each shape compiles: not timed; the repeat is.
    assert preds[0]["prefill_ms"] is None and preds[2]["prefill_ms"] is None
    assert 0 < preds[1]["prefill_ms"] <= preds[1]["latency_ms"]
    summary = json.load(open(os.path.join(cell, "summary.json")))
    assert 0.0 <= summary["metrics"]["relaxed_accuracy"] <= 1.0
    assert summary["num_samples"] == 3 and summary["warmup_excluded"] == 2
    assert summary["efficiency"]["prefill_ms"]["count"] == 1
    assert summary["budget"] == budget and summary["method"] == "selector"


def test_prompt_is_the_qwen_chat_template(setup):
  model_dir, data, _ = setup
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(model_dir)
  ex = runner.prepare_examples(
      tok, tasks.get_task("chartqa"), data,
      runner.EvalSettings(min_pixels=3136, max_pixels=50176))[2]
  text = tok.decode(ex.input_ids[0])
  n = int(np.prod(ex.image_grid_thw[0])) // 4
  assert text == (
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
      "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n +
      "<|vision_end|>How many bars are higher than 10?\nAnswer the question "
      "with a single word.<|im_end|>\n<|im_start|>assistant\n")
  # 300 x 200 px (60000 > max_pixels): scaled down, floored to 28s.
  assert list(ex.image_grid_thw[0]) == [1, 12, 18]


def test_jpeg_round_trip_is_lossy_and_optional(setup):
  _, data, _ = setup
  path = os.path.join(os.path.dirname(data), "img", "2.png")
  orig = np.asarray(Image.open(path).convert("RGB"))
  jpeg = np.asarray(runner.load_image(path, runner.EvalSettings()))
  plain = np.asarray(runner.load_image(path, runner.EvalSettings(
      jpeg_quality=None)))
  np.testing.assert_array_equal(plain, orig)
  assert jpeg.shape == orig.shape and np.abs(
      jpeg.astype(int) - orig).mean() > 1


def test_missing_image_is_named(setup, tmp_path, capsys):
  model_dir, _, _ = setup
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"id": "x", "image": "nope.png", "question": "q",
                             "answers": ["a"]}) + "\n")
  rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                      "--data", str(bad), "--budgets", "0.5", "--out",
                      str(tmp_path / "o"), "--no-progress"] + SMALL)
  assert rc == 2
  assert "nope.png" in capsys.readouterr().err


def test_bad_budget_is_refused(setup, capsys):
  model_dir, data, root = setup
  with pytest.raises(SystemExit):
    eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                   "--data", data, "--budgets", "0.5,1.5", "--out",
                   str(root / "o2")])
  assert "1.5" in capsys.readouterr().err


def test_sweep_every_method_and_pictures(setup):
  model_dir, data, root = setup
  out = str(root / "sweep")
  methods = "selector,random,uniform,divprune,visionzip,fastv,dart"
  rc = eval_cli.main(["sweep", "--model", model_dir, "--task", "chartqa",
                      "--data", data, "--methods", methods, "--budgets",
                      "1.0,0.5", "--out", out, "--max-new-tokens", "2",
                      "--no-progress"] + SMALL)
  assert rc == 0
  task_dir = os.path.join(out, "chartqa")
  lines = open(os.path.join(task_dir, "sweep.md")).read().splitlines()
  assert len(lines) == 2 + 7 * 2
  assert os.path.getsize(os.path.join(task_dir, "sweep.png")) > 0
  for m in methods.split(","):
    preds = _read(os.path.join(task_dir, f"{m}_0.5", "predictions.jsonl"))
    assert [p["visual_tokens_after"] for p in preds] == [
        max(1, int(p["visual_tokens_before"] * 0.5)) for p in preds]
  # Pictures for any method, one per image of the first N samples.
  for m in ("selector", "visionzip", "fastv"):
    rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                        "--data", data, "--budgets", "0.5", "--method", m,
                        "--visualize", "2", "--out", str(root / "vis"),
                        "--max-new-tokens", "1", "--no-progress"] + SMALL)
    assert rc == 0
    pngs = os.listdir(root / "vis" / "chartqa" / f"{m}_0.5" / "visualize")
    assert sorted(pngs) == [f"chartqa_q{i}_{m}_0.5_0.png" for i in (0, 1)]


def test_run_on_a_mesh_gives_the_same_predictions(setup):
  model_dir, data, root = setup
  preds = {}
  for name, extra in (("one", []), ("mesh", ["--mesh",
                                             "data=2,fsdp=2,tensor=2"])):
    out = str(root / f"mesh_{name}")
    rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                        "--data", data, "--budgets", "0.5", "--method",
                        "fastv", "--out", out, "--max-new-tokens", "4",
                        "--no-progress"] + SMALL + extra)
    assert rc == 0
    preds[name] = [p["prediction"] for p in _read(os.path.join(
        out, "chartqa", "fastv_0.5", "predictions.jsonl"))]
  assert preds["mesh"] == preds["one"] and len(preds["one"]) == 3
  with pytest.raises(SystemExit):
    eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                   "--data", data, "--out", str(root / "bad"),
                   "--mesh", "dta=2"])


def test_method_options_reach_the_model_and_are_checked(setup, capsys):
  model_dir, data, root = setup
  out = str(root / "opts")
  rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                      "--data", data, "--budgets", "0.5", "--method",
                      "fastv", "--options", '{"faithful_span": true}',
                      "--out", out, "--max-new-tokens", "2",
                      "--no-progress"] + SMALL)
  assert rc == 0
  summary = json.load(open(os.path.join(out, "chartqa", "fastv_0.5",
                                        "summary.json")))
  assert summary["settings"]["options"] == [["faithful_span", True]]
  rc = eval_cli.main(["run", "--model", model_dir, "--task", "chartqa",
                      "--data", data, "--budgets", "0.5", "--method",
                      "fastv", "--options", '{"faithfull": true}',
                      "--out", out, "--no-progress"] + SMALL)
  assert rc == 2 and "no option(s) ['faithfull']" in capsys.readouterr().err

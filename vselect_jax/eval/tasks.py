"""The benchmark table: prompts, generation limits and scoring per task.

Prompts reproduce lmms-eval's ``doc_to_text`` with the "default" kwargs that
the VisionSelector scripts use (``docvqa_val``, ``chartqa``, ``textvqa_val``,
``ocrbench``, ``scienceqa_img``, ``ai2d_no_mask``, ``mmmu_val``, ``mme``,
``pope``), and the MMBench dev sets of the paper's tables
(``mmbench_en_dev``, ``mmbench_cn_dev``: CircularEval over the rotations the
converter writes, option letters matched deterministically where lmms-eval
would ask a GPT judge, unparsable answers counted). ``build_prompt`` returns the user text only:
``vselect_jax.data.chat.prompt_ids`` puts the images first and applies the
chat template, the one training samples are built with. Like the lmms-eval
Qwen2.5-VL wrapper, literal ``<image>`` strings are removed from the text (MMMU's
``<image 1>`` references are not ``<image>`` and stay).

Decoding is greedy up to ``max_new_tokens``; generation stops at the eos
token and, for ``stop`` strings, the decoded text is cut at their first
occurrence (``cut_at_stop``).
"""
from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence

from vselect_jax.eval import metrics as M
from vselect_jax.eval.metrics import circular as circular_lib
from vselect_jax.eval.metrics import mmmu as mmmu_lib
from vselect_jax.eval.metrics import ocrbench as ocrbench_lib
from vselect_jax.eval.records import EvalRecord

SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
LETTER_ANSWER = ("\nAnswer with the option's letter from the given choices "
                 "directly.")
# MMMU puts its instructions after a blank line and without the newline.
MMMU_MC_PROMPT = "Answer with the option's letter from the given choices directly."
MMMU_OPEN_PROMPT = "Answer the question using a single word or phrase."
# MME questions end with this; lmms-eval swaps it for the post-prompt.
MME_SUFFIX = " Please answer yes or no."
# MMBench (lmms-eval's mmbench_{en,cn}_dev): "{hint} {question} {options}"
# then a newline and the post-prompt, which itself starts with a newline.
MMBENCH_OPTIONS = "There are several options:"
MMBENCH_EN_POST = ("\nAnswer with the option's letter from the given choices "
                   "directly.")
MMBENCH_CN_POST = "\n请直接使用所提供的选项字母作为答案回答。"
# Video-MME's official prompts (lmms-eval's videomme utils).
VIDEOMME_PROMPT = ("Select the best answer to the following multiple-choice "
                   "question based on the video. Respond with only the letter "
                   "(A, B, C, or D) of the correct option.")
VIDEOMME_SUB_PROMPT = ("Select the best answer to the following "
                       "multiple-choice question based on the video and the "
                       "subtitles. Respond with only the letter (A, B, C, or "
                       "D) of the correct option.")
VIDEOMME_SUBTITLES = "This video's subtitles are listed below: \n"
VIDEOMME_POST = "The best answer is:"
MLVU_POST = "\nOnly give the best option.\n"
LVB_POST = "Answer with the option's letter from the given choices directly.\n"
VIDEO_LETTER_POST = ("Answer with the option's letter from the given choices "
                     "directly.")


@dataclasses.dataclass(frozen=True)
class TaskResult:
  """Scores of one task.

  Attributes:
    metrics: headline numbers (the keys ``summary.json`` promises).
    details: breakdowns (per category / split / subject).
    per_sample: one dict per record: id, prediction, score and what the
      parser read, for debugging.
  """
  metrics: dict
  details: dict
  per_sample: list


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One benchmark.

  Attributes:
    name: our ``--task`` name.
    lmms_task: the lmms-eval task it reproduces.
    dataset: hub dataset the lmms-eval task reads (``repo[:config]``).
    split: its split.
    max_new_tokens: generation limit.
    post_prompt: appended to the question (MMMU: the multiple-choice one).
    stop: extra stop strings (besides eos) cutting the decoded answer.
    required_fields: record keys the task needs besides id/image/question/
      answers.
    metric_keys: keys ``metrics`` always has.
    prompt_fn: record -> user text (before ``<image>`` removal).
    score_fn: (records, predictions) -> TaskResult.
  """
  name: str
  lmms_task: str
  dataset: str
  split: str
  max_new_tokens: int
  post_prompt: str
  stop: tuple[str, ...]
  required_fields: tuple[str, ...]
  metric_keys: tuple[str, ...]
  prompt_fn: Callable[[EvalRecord], str]
  score_fn: Callable[[Sequence[EvalRecord], Sequence[str]], TaskResult]


def _choices_block(options: Sequence[str]) -> str:
  letters = M.option_letters(len(options))
  return "\n".join(f"{l}. {o}" for l, o in zip(letters, options))


# ----------------------------------------------------------------- prompts


def _prompt_plain(post: str) -> Callable[[EvalRecord], str]:
  return lambda r: f"{r.question}{post}"


def _prompt_textvqa(r: EvalRecord) -> str:
  # lmms-eval capitalises the question (which also lower-cases the rest).
  return f"{r.question.capitalize()}{SHORT_ANSWER}"


def _prompt_ocrbench(r: EvalRecord) -> str:
  return r.question.strip()


def _prompt_scienceqa(r: EvalRecord) -> str:
  context = f"Context: {r.hint}\n" if r.hint else ""
  return f"{context}{r.question}\n{_choices_block(r.options)}{LETTER_ANSWER}"


def _prompt_ai2d(r: EvalRecord) -> str:
  return f"{r.question}\n{_choices_block(r.options)}{LETTER_ANSWER}"


def _prompt_mmmu(r: EvalRecord) -> str:
  if r.question_type == "multiple-choice":
    return f"{r.question}\n{_choices_block(r.options)}\n\n{MMMU_MC_PROMPT}"
  return f"{r.question}\n\n{MMMU_OPEN_PROMPT}"


def _prompt_mmbench(post: str) -> Callable[[EvalRecord], str]:
  def prompt(r: EvalRecord) -> str:
    options = MMBENCH_OPTIONS + "\n" + _choices_block(r.options)
    query = (f"{r.hint} {r.question} {options}" if r.hint
             else f"{r.question} {options}")
    return f"{query}\n{post}"
  return prompt


def _prompt_videomme(subtitles: bool) -> Callable[[EvalRecord], str]:
  def prompt(r: EvalRecord) -> str:
    body = (f"{VIDEOMME_SUB_PROMPT if subtitles else VIDEOMME_PROMPT}\n"
            f"{r.question}\n{_choices_block(r.options)}\n{VIDEOMME_POST}")
    if not subtitles:
      return body
    text = r.extra.get("subtitles") or "No subtitles available"
    return f"{VIDEOMME_SUBTITLES}{text}\n{body}"
  return prompt


def _prompt_mlvu(r: EvalRecord) -> str:
  # The question holds its "(A) ..." options (MLVU's layout).
  return f"\n{r.question}{MLVU_POST}\nBest option: ("


def _prompt_mvbench(r: EvalRecord) -> str:
  letters = M.option_letters(len(r.options))
  options = "".join(f"({l}) {o}\n" for l, o in zip(letters, r.options))
  return f"Question:{r.question}\nOption:\n{options}{VIDEO_LETTER_POST}"


def _prompt_longvideobench(r: EvalRecord) -> str:
  return f"{r.question}\n{_choices_block(r.options)}\n{LVB_POST}"


def _prompt_egoschema(r: EvalRecord) -> str:
  return f"{r.question}\n{_choices_block(r.options)}\n{VIDEO_LETTER_POST}"


def _prompt_mme(r: EvalRecord) -> str:
  return r.question.strip().replace(MME_SUFFIX, "") + SHORT_ANSWER


def _prompt_pope(r: EvalRecord) -> str:
  return r.question.strip() + SHORT_ANSWER


# ----------------------------------------------------------------- scoring


def _mean(values: Sequence[float]) -> float:
  return statistics.fmean(values) if values else 0.0


def _per_sample(records, predictions, scores, parsed=None):
  parsed = parsed or [None] * len(records)
  out = []
  for r, p, s, x in zip(records, predictions, scores, parsed):
    row = {"id": r.id, "prediction": p, "answers": list(r.answers),
           "score": s}
    if x is not None:
      row["parsed"] = x
    out.append(row)
  return out


def _by_key(records, scores, key) -> dict[str, float]:
  buckets = {}
  for r, s in zip(records, scores):
    k = getattr(r, key)
    if k is not None:
      buckets.setdefault(k, []).append(s)
  return {k: _mean(v) for k, v in sorted(buckets.items())}


def _score_mean(metric_key: str, fn, breakdown: str | None = None):
  """A task whose score is the mean of a per-sample function."""
  def score(records, predictions):
    scores = [fn(p, r) for r, p in zip(records, predictions)]
    details = {}
    if breakdown:
      by = _by_key(records, scores, breakdown)
      if by:
        details[f"{metric_key}_by_{breakdown}"] = by
    return TaskResult({metric_key: _mean(scores)}, details,
                      _per_sample(records, predictions, scores))
  return score


def _score_choice(records, predictions):
  letters = [M.extract_choice_letter(p, r.options)
             for r, p in zip(records, predictions)]
  scores = [float(l is not None and l in {a.strip().upper() for a in r.answers})
            for r, l in zip(records, letters)]
  details = {}
  by = _by_key(records, scores, "category")
  if by:
    details["accuracy_by_category"] = by
  details["unparsed"] = sum(l is None for l in letters)
  return TaskResult({"accuracy": _mean(scores)}, details,
                    _per_sample(records, predictions, scores, letters))


def _score_mmbench(records, predictions):
  """CircularEval, plain and original-row (vanilla) accuracy, per category
  and L2 category; letters by deterministic matching (no GPT judge)."""
  letters = [M.extract_choice_letter(p, r.options)
             for r, p in zip(records, predictions)]
  ok = [l is not None and l in {a.strip().upper() for a in r.answers}
        for r, l in zip(records, letters)]
  groups = [r.group for r in records]
  original = [i for i, r in enumerate(records)
              if int(r.extra.get("rotation", 0)) == 0]
  metrics = {
      "circular_accuracy": circular_lib.circular_accuracy(groups, ok),
      "accuracy": _mean([float(x) for x in ok]),
      "vanilla_accuracy": _mean([float(ok[i]) for i in original]),
  }
  details = {"unparsed": sum(l is None for l in letters),
             "questions": len(set(groups)), "rows": len(records)}
  for key, name in (("category", "category"), ("l2_category", "l2_category")):
    cats = [r.category if key == "category" else r.extra.get(key)
            for r in records]
    if not any(c is not None for c in cats):
      continue
    circ, plain = {}, {}
    for c in sorted({c for c in cats if c is not None}):
      idx = [i for i, x in enumerate(cats) if x == c]
      circ[c] = circular_lib.circular_accuracy([groups[i] for i in idx],
                                               [ok[i] for i in idx])
      plain[c] = _mean([float(ok[i]) for i in idx])
    details[f"circular_accuracy_by_{name}"] = circ
    details[f"accuracy_by_{name}"] = plain
  return TaskResult(metrics, details, _per_sample(
      records, predictions, [float(x) for x in ok], letters))


def _score_video_choice(parse: str, breakdowns: Sequence[str] = (),
                        mean_over: str | None = None):
  """A multiple-choice video task.

  Args:
    parse: "first" (lmms-eval's first-letter rule, ``first_option_letter``)
      or "choice" (``extract_choice_letter``, for tasks whose lmms-eval
      parser is a stricter form of it).
    breakdowns: record attributes / extra keys to report accuracy by.
    mean_over: also report ``mean_accuracy``, the mean of the per-value
      accuracies of this key (MVBench's 20 subtasks, MLVU's M-Avg).
  """
  def letter(r, p):
    if parse == "first":
      return M.first_option_letter(
          p, M.option_letters(len(r.options)) if r.options else "ABCD")
    return M.extract_choice_letter(p, r.options)

  def value(r, key):
    return getattr(r, key) if key in ("category", "question_type") else (
        r.extra.get(key))

  def score(records, predictions):
    letters = [letter(r, p) for r, p in zip(records, predictions)]
    ok = [float(l is not None and l in {a.strip().upper() for a in r.answers})
          for r, l in zip(records, letters)]
    metrics = {"accuracy": _mean(ok)}
    details = {"unparsed": sum(l is None for l in letters)}
    for key in dict.fromkeys((*breakdowns, *([mean_over] if mean_over
                                             else []))):
      by = {}
      for r, x in zip(records, ok):
        v = value(r, key)
        if v is not None:
          by.setdefault(str(v), []).append(x)
      details[f"accuracy_by_{key}"] = {k: _mean(v)
                                       for k, v in sorted(by.items())}
    if mean_over:
      by = details[f"accuracy_by_{mean_over}"]
      metrics["mean_accuracy"] = _mean(list(by.values()))
    return TaskResult(metrics, details,
                      _per_sample(records, predictions, ok, letters))
  return score


def _score_ocrbench(records, predictions):
  for r in records:
    if r.category not in ocrbench_lib.CATEGORIES:
      raise ValueError(f"record {r.id!r}: unknown OCRBench category "
                       f"{r.category!r}")
  hits = [M.ocrbench_match(p, r.answers, r.category)
          for r, p in zip(records, predictions)]
  totals = M.ocrbench_totals((r.category, h) for r, h in zip(records, hits))
  metrics = {"score": totals.pop("score")}
  details = {"text_recognition": totals.pop("text_recognition"),
             "max_score": len(records)}
  metrics.update(totals)
  return TaskResult(metrics, details,
                    _per_sample(records, predictions, hits))


def _score_mmmu(records, predictions):
  scores, parsed = [], []
  for r, p in zip(records, predictions):
    ok, x = mmmu_lib.mmmu_correct(p, r.answers, r.question_type, r.options,
                                  sample_id=r.id)
    scores.append(float(ok))
    parsed.append(x)
  subjects = {}
  for r, s in zip(records, scores):
    subj = r.category or mmmu_lib.subject_from_id(r.id)
    if subj is not None:
      subjects.setdefault(subj, []).append(s)
  domains = {}
  for domain, subs in mmmu_lib.DOMAINS.items():
    vals = [s for sub in subs for s in subjects.get(sub, [])]
    if vals:
      domains[domain] = _mean(vals)
  details = {"accuracy_by_subject": {k: _mean(v)
                                     for k, v in sorted(subjects.items())},
             "accuracy_by_domain": domains,
             "accuracy_by_question_type": _by_key(records, scores,
                                                  "question_type")}
  return TaskResult({"accuracy": _mean(scores)}, details,
                    _per_sample(records, predictions, scores, parsed))


def _score_mme(records, predictions):
  parsed, results = [], []
  for r, p in zip(records, predictions):
    gold = r.answers[0].lower().strip().replace(".", "")
    if gold not in ("yes", "no"):
      raise ValueError(f"record {r.id!r}: MME answers must be yes/no, got "
                       f"{r.answers[0]!r}")
    ans = M.parse_yes_no(p)
    parsed.append(ans)
    results.append((r.category, r.group, ans == gold))
  per_cat = M.mme_scores(results)
  metrics = M.mme_totals(per_cat)
  metrics.update({c: v["score"] for c, v in per_cat.items()})
  details = {"categories": per_cat}
  scores = [float(ok) for _, _, ok in results]
  return TaskResult(metrics, details,
                    _per_sample(records, predictions, scores, parsed))


def _score_pope(records, predictions):
  golds = [r.answers[0] for r in records]
  metrics = M.pope_metrics(predictions, golds)
  details = {}
  cats = sorted({r.category for r in records if r.category is not None})
  for c in cats:
    idx = [i for i, r in enumerate(records) if r.category == c]
    details[c] = M.pope_metrics([predictions[i] for i in idx],
                                [golds[i] for i in idx])
  parsed = [M.parse_pope_answer(p) for p in predictions]
  scores = [float(x == g.strip().lower()) for x, g in zip(parsed, golds)]
  return TaskResult(metrics, details,
                    _per_sample(records, predictions, scores, parsed))


# ------------------------------------------------------------------- table

def exact_match(prediction: str, record: EvalRecord) -> float:
  """1.0 when the prediction (stripped, lower-cased, a final "." dropped)
  is one of the answers, else 0.0."""
  norm = lambda x: x.strip().rstrip(".").strip().lower()
  return float(norm(prediction) in {norm(a) for a in record.answers})


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("docvqa", "docvqa_val", "lmms-lab/DocVQA:DocVQA", "validation",
             32, SHORT_ANSWER, (), (), ("anls",),
             _prompt_plain(SHORT_ANSWER),
             _score_mean("anls", lambda p, r: M.anls_score(p, r.answers))),
    TaskSpec("chartqa", "chartqa", "lmms-lab/ChartQA", "test", 16,
             "\nAnswer the question with a single word.", (), (),
             ("relaxed_accuracy",),
             _prompt_plain("\nAnswer the question with a single word."),
             # question_type carries ChartQA's human_test / augmented_test.
             _score_mean("relaxed_accuracy",
                         lambda p, r: M.relaxed_accuracy(p, r.answers),
                         breakdown="question_type")),
    # No max_new_tokens in the task yaml: the wrapper's default of 128.
    TaskSpec("textvqa", "textvqa_val", "lmms-lab/textvqa", "validation", 128,
             SHORT_ANSWER, ("ASSISTANT:",), (), ("accuracy",),
             _prompt_textvqa,
             _score_mean("accuracy",
                         lambda p, r: M.vqa_accuracy(p, r.answers))),
    TaskSpec("ocrbench", "ocrbench", "echo840/OCRBench", "test", 128, "", (),
             ("category",), ("score",), _prompt_ocrbench, _score_ocrbench),
    TaskSpec("scienceqa", "scienceqa_img", "lmms-lab/ScienceQA:ScienceQA-IMG",
             "test", 16, LETTER_ANSWER, (), ("options",), ("accuracy",),
             _prompt_scienceqa, _score_choice),
    TaskSpec("ai2d", "ai2d_no_mask", "Efficient-Large-Model/ai2d-no-mask",
             "test", 16, LETTER_ANSWER, (), ("options",), ("accuracy",),
             _prompt_ai2d, _score_choice),
    TaskSpec("mmmu", "mmmu_val", "lmms-lab/MMMU", "validation", 16,
             "\n\n" + MMMU_MC_PROMPT, (), ("question_type",), ("accuracy",),
             _prompt_mmmu, _score_mmmu),
    TaskSpec("mme", "mme", "lmms-lab/MME", "test", 16, SHORT_ANSWER, (),
             ("category",), ("perception", "cognition"), _prompt_mme,
             _score_mme),
    # vselect-jax's synthetic world (data/world.py): exact match.
    TaskSpec("world", "", "vselect_jax.data.world", "test", 4, SHORT_ANSWER,
             (), (), ("accuracy",), _prompt_plain(SHORT_ANSWER),
             _score_mean("accuracy", exact_match, breakdown="category")),
    TaskSpec("pope", "pope", "lmms-lab/POPE", "test", 128, SHORT_ANSWER, (),
             (), ("accuracy", "precision", "recall", "f1", "yes_ratio"),
             _prompt_pope, _score_pope),
    # Rows are the circular rotations (group = the question's index).
    TaskSpec("mmbench_en_dev", "mmbench_en_dev", "lmms-lab/MMBench:en", "dev",
             1024, MMBENCH_EN_POST, ("ASSISTANT:",), ("options",),
             ("circular_accuracy", "accuracy", "vanilla_accuracy"),
             _prompt_mmbench(MMBENCH_EN_POST), _score_mmbench),
    TaskSpec("mmbench_cn_dev", "mmbench_cn_dev", "lmms-lab/MMBench:cn", "dev",
             256, MMBENCH_CN_POST, (), ("options",),
             ("circular_accuracy", "accuracy", "vanilla_accuracy"),
             _prompt_mmbench(MMBENCH_CN_POST), _score_mmbench),
    # Video, multiple choice (``video`` records; frames: ``eval.video``).
    TaskSpec("videomme", "videomme", "lmms-lab/Video-MME", "test", 16,
             VIDEOMME_POST, (), ("options",), ("accuracy",),
             _prompt_videomme(False),
             _score_video_choice("first", ("duration", "category",
                                           "domain"))),
    TaskSpec("videomme_w_subtitle", "videomme_w_subtitle",
             "lmms-lab/Video-MME", "test", 16, VIDEOMME_POST, (),
             ("options",), ("accuracy",), _prompt_videomme(True),
             _score_video_choice("first", ("duration", "category",
                                           "domain"))),
    TaskSpec("mlvu_dev", "mlvu_dev", "sy1998/MLVU_dev", "test", 16,
             MLVU_POST, (), (), ("accuracy", "mean_accuracy"), _prompt_mlvu,
             _score_video_choice("first", mean_over="category")),
    TaskSpec("mvbench", "mvbench", "OpenGVLab/MVBench", "train", 16,
             VIDEO_LETTER_POST, (), ("options", "category"),
             ("mean_accuracy", "accuracy"), _prompt_mvbench,
             _score_video_choice("choice", mean_over="category")),
    TaskSpec("longvideobench_val_v", "longvideobench_val_v",
             "longvideobench/LongVideoBench", "validation", 32, LVB_POST, (),
             ("options",), ("accuracy",), _prompt_longvideobench,
             _score_video_choice("first", ("duration_group", "category"))),
    TaskSpec("egoschema_subset", "egoschema_subset", "lmms-lab/egoschema:Subset",
             "test", 16, VIDEO_LETTER_POST, (), ("options",), ("accuracy",),
             _prompt_egoschema, _score_video_choice("choice")),
)}

VIDEO_TASKS = ("videomme", "videomme_w_subtitle", "mlvu_dev", "mvbench",
               "longvideobench_val_v", "egoschema_subset")


def get_task(name: str) -> TaskSpec:
  """The spec of ``name``; raises KeyError listing the known tasks."""
  try:
    return TASKS[name]
  except KeyError:
    raise KeyError(f"unknown task {name!r}; expected one of "
                   f"{sorted(TASKS)}") from None


def check_record(task: str | TaskSpec, record: EvalRecord) -> None:
  """Raises ValueError if ``record`` lacks what ``task`` needs."""
  spec = get_task(task) if isinstance(task, str) else task
  for key in spec.required_fields:
    if getattr(record, key) is None:
      raise ValueError(f"{spec.name} record {record.id!r} needs {key!r}")
  if spec.name == "mmmu" and record.question_type not in ("multiple-choice",
                                                           "open"):
    raise ValueError(f"mmmu record {record.id!r}: question_type must be "
                     f"'multiple-choice' or 'open', got "
                     f"{record.question_type!r}")
  if spec.name == "mmmu" and record.question_type == "multiple-choice" and (
      not record.options):
    raise ValueError(f"mmmu record {record.id!r}: multiple-choice question "
                     "without options")


def build_prompt(task: str | TaskSpec, record: EvalRecord) -> str:
  """The user text of ``record`` for ``task``; ``data.chat.prompt_ids``
  makes the prompt of it (system turn, images first, generation prompt)."""
  spec = get_task(task) if isinstance(task, str) else task
  check_record(spec, record)
  return spec.prompt_fn(record).replace("<image>", "")


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
  """``text`` up to the first occurrence of each stop string in turn, as
  the lmms-eval wrapper post-processes generations."""
  for s in stop:
    if s:
      text = text.split(s)[0]
  return text


def score_task(task: str | TaskSpec, records: Sequence[EvalRecord],
               predictions: Sequence[str]) -> TaskResult:
  """Scores aligned ``records`` and ``predictions`` with the task's metric."""
  spec = get_task(task) if isinstance(task, str) else task
  if len(records) != len(predictions):
    raise ValueError(f"{len(records)} records but {len(predictions)} "
                     "predictions")
  if not records:
    raise ValueError("nothing to score")
  for r in records:
    check_record(spec, r)
  return spec.score_fn(records, predictions)

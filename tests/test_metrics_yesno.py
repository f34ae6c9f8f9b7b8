"""Metric tests for the yes/no benchmarks: MME (acc + acc+ per category) and
POPE (accuracy, precision, recall, F1, yes ratio).

Expected values are worked out by hand in the comments.
"""
import pytest

from vselect_jax.eval.metrics import (mme_scores, mme_totals,
                                      parse_pope_answer, parse_yes_no,
                                      pope_metrics)


@pytest.mark.parametrize("text,label", [
    ("Yes", "yes"), ("yes.", "yes"), ("YES", "yes"), ("y", "yes"),
    ("N", "no"), ("No, it is not.", "no"), ("Yes, there is", "yes"),
    ("nope", "no"),            # "no" within the first four characters
    ("There is no dog", "other"),
    ("Maybe", "other"), ("", "other"),
])
def test_mme_parse_yes_no(text, label):
  assert parse_yes_no(text) == label


def test_mme_acc_plus_needs_both_questions():
  results = [
      # existence: image 1 both right, image 2 one of two right.
      ("existence", "e1", True), ("existence", "e1", True),
      ("existence", "e2", True), ("existence", "e2", False),
      # count: one image, one right -> acc 50, acc+ 0.
      ("count", "c1", False), ("count", "c1", True),
      # code_reasoning: both right -> 100 + 100.
      ("code_reasoning", "r1", True), ("code_reasoning", "r1", True),
  ]
  per = mme_scores(results)
  # existence: acc = 3/4 = 75, acc+ = 1/2 images = 50 -> 125.
  assert per["existence"]["acc"] == pytest.approx(75.0)
  assert per["existence"]["acc_plus"] == pytest.approx(50.0)
  assert per["existence"]["score"] == pytest.approx(125.0)
  assert per["count"]["score"] == pytest.approx(50.0)
  assert per["code_reasoning"]["score"] == pytest.approx(200.0)
  totals = mme_totals(per)
  assert totals["perception"] == pytest.approx(175.0)  # 125 + 50
  assert totals["cognition"] == pytest.approx(200.0)


def test_mme_unknown_category_is_an_error():
  with pytest.raises(ValueError, match="Existence"):
    mme_totals(mme_scores([("Existence", "g", True)]))


@pytest.mark.parametrize("text,label", [
    ("Yes", "yes"), ("yes", "yes"), ("Yes.", "yes"), ("No", "no"),
    ("No.", "no"), ("no", "no"),
    ("Yes, there is a dog. No cat though.", "yes"),  # first sentence only
    ("There is no dog in the image.", "no"),
    ("The dog is not there", "no"),
    ("No, there is not", "no"),
    ("", "yes"),   # official rule: anything without no/not is "yes"
])
def test_pope_parse(text, label):
  assert parse_pope_answer(text) == label


def test_pope_metrics():
  golds = ["yes", "yes", "no", "no", "yes"]
  preds = ["Yes.", "no", "yes", "No", "yes"]
  m = pope_metrics(preds, golds)
  # Parsed: yes, no, yes, no, yes. TP = #0, #4; FN = #1; FP = #2; TN = #3.
  assert m["accuracy"] == pytest.approx(3 / 5)
  assert m["precision"] == pytest.approx(2 / 3)   # TP / (TP + FP)
  assert m["recall"] == pytest.approx(2 / 3)      # TP / (TP + FN)
  assert m["f1"] == pytest.approx(2 / 3)
  assert m["yes_ratio"] == pytest.approx(3 / 5)   # predicted yes: 3 of 5


def test_pope_yes_ratio_counts_predictions_not_golds():
  # Gold is half yes, the model always says yes: ratio 1, precision 1/2,
  # recall 1, F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
  m = pope_metrics(["Yes"] * 4, ["yes", "no", "yes", "no"])
  assert m["yes_ratio"] == 1.0
  assert m["precision"] == pytest.approx(0.5)
  assert m["recall"] == 1.0
  assert m["f1"] == pytest.approx(2 / 3)


def test_pope_all_no_has_zero_precision_not_an_error():
  m = pope_metrics(["No", "No"], ["yes", "no"])
  assert m == {"accuracy": 0.5, "precision": 0.0, "recall": 0.0, "f1": 0.0,
               "yes_ratio": 0.0}

"""Metric tests for the string-matching benchmarks: ANLS (DocVQA), VQA
accuracy (TextVQA), relaxed accuracy (ChartQA) and OCRBench.

Every expected value is worked out by hand in the comment beside it.
"""
import pytest

from vselect_jax.eval.metrics import (anls_score, levenshtein,
                                      normalize_vqa_answer, ocrbench_match,
                                      ocrbench_totals, relaxed_accuracy,
                                      relaxed_correctness, vqa_accuracy)

# ---------------------------------------------------------------- ANLS


@pytest.mark.parametrize("a,b,d", [
    ("kitten", "sitting", 3),   # k->s, e->i, +g
    ("", "abc", 3),
    ("abc", "abc", 0),
    ("flaw", "lawn", 2),        # -f, +n
])
def test_levenshtein(a, b, d):
  assert levenshtein(a, b) == d
  assert levenshtein(b, a) == d


def test_anls_case_and_whitespace_are_ignored():
  assert anls_score("  Hello   World ", ["hello world"]) == 1.0


def test_anls_partial_match():
  # "invoice" vs "invoices": distance 1, longer length 8 -> 1 - 1/8.
  assert anls_score("invoice", ["invoices"]) == pytest.approx(0.875)


def test_anls_threshold_boundary():
  # "abcd" vs "abef": distance 2 / 4 = 0.5 -> similarity exactly 0.5, which
  # is not below the threshold and is kept.
  assert anls_score("abef", ["abcd"]) == 0.5
  # "abcd" vs "axyz": distance 3 / 4 -> 0.25 < 0.5 -> 0.
  assert anls_score("axyz", ["abcd"]) == 0.0
  # distance 3 / 7 -> 4/7 = 0.571 > 0.5 stays.
  assert anls_score("abcdxyz", ["abcdefg"]) == pytest.approx(4 / 7)


def test_anls_best_of_several_golds():
  # Exact match with the second gold wins over the poor first one.
  assert anls_score("1990", ["nineteen ninety", "1990"]) == 1.0


def test_anls_empty_prediction_and_empty_gold():
  # Distance = len(gold) = length -> similarity 0.
  assert anls_score("", ["yes"]) == 0.0
  # Both empty: length 0 counts as distance 0 -> 1.
  assert anls_score("", [""]) == 1.0


def test_anls_length_from_raw_strings():
  # lmms-eval quirk: the distance uses normalised strings ("ac" vs "ab":
  # 1) but the denominator the raw ones (max(len("ab"), len(" ac ")) = 4),
  # so 1 - 1/4 rather than 1 - 1/2.
  assert anls_score(" ac ", ["ab"]) == pytest.approx(0.75)


# ------------------------------------------------------ VQA normalisation


@pytest.mark.parametrize("raw,norm", [
    ("Yes.", "yes"),              # case, final period
    ("yes", "yes"),
    ("The Cat", "cat"),           # article dropped
    ("an apple", "apple"),
    ("two", "2"),                 # number words -> digits
    ("none", "0"),
    ("3.5", "3.5"),               # period before a digit stays
    ("5.", "5"),                  # trailing period goes
    ("1,000", "1000"),            # commas dropped
    ("dont", "don't"),            # contraction gets its apostrophe
    ("don't", "don't"),
    ("coca-cola", "coca cola"),   # lone hyphen -> space
    ("coca - cola", "coca cola"), # hyphen touching a space -> removed
    ("man's hat", "man 's hat"),  # 's split off
    ("(yes)", "yes"),
    ("Hello, World!", "hello world"),
    ("  stop\tsign\n", "stop sign"),
    ("a/b", "b"),                 # "/" -> " ", then "a" is an article
    ("", ""),
])
def test_normalize_vqa_answer(raw, norm):
  assert normalize_vqa_answer(raw) == norm


def test_vqa_accuracy_leave_one_out():
  # k matching answers out of 10: the 10 leave-one-out subsets give
  # min(1, (k - [i matched]) / 3); averaged: k=1 -> 9*(1/3)/10 = 0.3,
  # k=2 -> (2*(1/3) + 8*(2/3))/10 = 0.6, k=3 -> (3*(2/3) + 7)/10 = 0.9,
  # k=4 -> (4*1 + 6*1)/10 = 1.
  dog = ["dog"] * 10
  for k, expected in [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                      (10, 1.0)]:
    answers = ["cat"] * k + dog[k:]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected), k


def test_vqa_accuracy_normalises_both_sides():
  # "Two." and "2" normalise to "2"; "the two" too: 3 matches -> 0.9.
  answers = ["2", "two", "The two"] + ["3"] * 7
  assert vqa_accuracy("Two.", answers) == pytest.approx(0.9)


def test_vqa_accuracy_empty_prediction():
  assert vqa_accuracy("", ["yes"] * 10) == 0.0


def test_vqa_accuracy_single_gold_is_zero():
  # The leave-one-out formula leaves nothing to match with a single answer.
  assert vqa_accuracy("yes", ["yes"]) == 0.0


# ------------------------------------------------------ relaxed accuracy


@pytest.mark.parametrize("pred,gold,ok", [
    ("12", "12.5", True),     # |12 - 12.5| / 12.5 = 0.04
    ("11.8", "12.5", False),  # 0.7 / 12.5 = 0.056
    ("105", "100", True),     # exactly 5% is allowed
    ("95", "100", True),
    ("105.1", "100", False),
    ("45%", "0.45", True),    # 45% -> 0.45
    ("0.45", "45%", True),
    ("45", "45%", False),     # 45 vs 0.45
    ("0", "0", True),         # zero gold: string comparison
    ("0.0", "0", False),
    ("-3", "-3.1", True),     # 0.1 / 3.1 = 0.032
    ("Yes", "yes", True),     # non-numeric: case-insensitive exact match
    ("Yes.", "yes", False),
    ("Paris", "paris ", False),  # not stripped, as in lmms-eval
    ("", "5", False),
])
def test_relaxed_correctness(pred, gold, ok):
  assert relaxed_correctness(pred, gold) is ok


def test_relaxed_accuracy_any_gold():
  assert relaxed_accuracy("20", ["blue", "19.5"]) == 1.0  # 0.5/19.5 = 2.6%
  assert relaxed_accuracy("20", ["blue", "30"]) == 0.0


# ---------------------------------------------------------------- OCRBench


def test_ocrbench_substring_case_insensitive():
  cat = "Regular Text Recognition"
  assert ocrbench_match("The sign says HELLO there", ["hello"], cat) == 1
  assert ocrbench_match("hell", ["hello"], cat) == 0
  # Any of several golds; newlines in the prediction read as spaces.
  assert ocrbench_match("first\nsecond", ["zzz", "first second"], cat) == 1
  assert ocrbench_match("", ["a"], cat) == 0


def test_ocrbench_hme_ignores_spaces():
  hme = "Handwritten Mathematical Expression Recognition"
  assert ocrbench_match("x ^ { 2 } + 1", ["x^{2}+1"], hme) == 1
  # lmms-eval lower-cases the prediction but not HME golds: a capital in
  # the gold can never match.
  assert ocrbench_match("\\frac{A}{B}", ["\\frac{A}{B}"], hme) == 0
  # The space-insensitive rule is only for HME.
  assert ocrbench_match("x ^ 2", ["x^2"], "Doc-oriented VQA") == 0


def test_ocrbench_totals():
  totals = ocrbench_totals([
      ("Regular Text Recognition", 1), ("Regular Text Recognition", 0),
      ("Handwriting Recognition", 1), ("Doc-oriented VQA", 1),
      ("Handwritten Mathematical Expression Recognition", 0)])
  assert totals["score"] == 3
  assert totals["text_recognition"] == 2   # Regular 1 + Handwriting 1
  assert totals["Regular Text Recognition"] == 1
  assert totals["Doc-oriented VQA"] == 1
  assert totals["Key Information Extraction"] == 0  # listed though absent
  assert len(totals) == 12   # score, text_recognition and 10 categories

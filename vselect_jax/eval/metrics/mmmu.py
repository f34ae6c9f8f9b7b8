"""MMMU answer parsing and scoring (the official MMMU rules, as in lmms-eval).

Multiple choice: the response is searched for ``(X)``, then ``X `` and then
``X.`` for every option letter; failing that, a response of more than five
words is searched for the option texts. Several candidates resolve to the one
mentioned last. When nothing is found the official code picks a random
letter; we pick one with a generator seeded by the sample id, so a run is
reproducible while the expected score stays that of a random guess.

Open questions: the "key" tail of each sentence (after "is", "so",
"therefore", ..., "=" in the last sentence) is collected with the numbers it
contains; numbers compare as floats rounded to 2 decimals, text by
containment of the lower-cased gold answer in a candidate. A one-character
gold text is padded with a space on one side to avoid trivial matches (so a
bare one-letter prediction cannot match it: an official quirk, kept).

Accuracy is micro-averaged over all questions (instance level), which is what
lmms-eval reports as ``mmmu_acc``.
"""
from __future__ import annotations

import random
import re
from collections.abc import Sequence

# Subjects of the MMMU domains, for the per-domain breakdown.
DOMAINS = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": ("Basic_Medical_Science", "Clinical_Medicine",
                            "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
                            "Public_Health"),
    "Humanities and Social Science": ("History", "Literature", "Sociology",
                                      "Psychology"),
    "Tech and Engineering": ("Agriculture", "Architecture_and_Engineering",
                             "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials",
                             "Mechanical_Engineering"),
}


def subject_from_id(sample_id: str) -> str | None:
  """``"validation_Art_Theory_12"`` -> ``"Art_Theory"``; None if no match."""
  m = re.fullmatch(r"[^_]+_(.+?)_\d+", sample_id)
  return m.group(1) if m else None


def parse_multi_choice(response: str, options: Sequence[str],
                       seed: str = "") -> str:
  """The option letter an MMMU multiple-choice response names.

  Args:
    response: the model's response.
    options: the option texts, ``A`` first.
    seed: seeds the fallback guess when no option is found (the sample id).

  Returns:
    An option letter; always one of the options' letters.
  """
  letters = [chr(ord("A") + i) for i in range(len(options))]
  for ch in (",", ".", "!", "?", ";", ":", "'"):
    response = response.strip(ch)
  # Pad so that "A" at either end still reads as the token "A ".
  response = f" {response} "

  candidates = [c for c in letters if f"({c})" in response]
  bracketed = bool(candidates)
  if not candidates:
    candidates = [c for c in letters if f"{c} " in response]
  if not candidates:
    candidates = [c for c in letters if f"{c}." in response]
  by_content = False
  if not candidates and len(response.split()) > 5:
    low = response.lower()
    candidates = [c for c, opt in zip(letters, options) if opt.lower() in low]
    by_content = bool(candidates)

  if not candidates:
    return random.Random(seed).choice(letters)
  if len(candidates) == 1:
    return candidates[0]
  # Several: the one mentioned last wins (first on ties, like np.argmax).
  if by_content:
    low = response.lower()
    positions = [low.rfind(options[letters.index(c)].lower())
                 for c in candidates]
  elif bracketed:
    positions = [response.rfind(f"({c})") for c in candidates]
  else:
    positions = [response.rfind(f" {c} ") for c in candidates]
  return candidates[positions.index(max(positions))]


_NUM_WITH_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ",
                   "answer ", "result ")
_TRIVIAL = frozenset(":,.!?;'")


def _extract_numbers(text: str) -> list[str]:
  return (_NUM_WITH_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text)
          + _NUM_SIMPLE.findall(text))


def _is_number(text: str) -> bool:
  try:
    float(text.replace(",", ""))
    return True
  except ValueError:
    return False


def normalize_open(text: str) -> list[float | str]:
  """A number becomes ``[round(float, 2)]``; text ``[lower]`` (one char:
  ``[" c", "c "]``)."""
  text = text.strip()
  if _is_number(text):
    return [round(float(text.replace(",", "")), 2)]
  text = text.lower()
  return [" " + text, text + " "] if len(text) == 1 else [text]


def _key_subresponses(response: str) -> list[str]:
  response = response.strip().strip(".").lower()
  # The split on ". X" looks for a capital after lower-casing and so only ever
  # splits on newlines; official behaviour, kept.
  sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
  keys = []
  for i, sent in enumerate(sentences):
    indicators = _KEY_INDICATORS + (("=",) if i == len(sentences) - 1 else ())
    shortest = None
    for ind in indicators:
      if ind in sent:
        tail = sent.split(ind)[-1].strip()
        if not shortest or len(tail) < len(shortest):
          shortest = tail
    if shortest and shortest.strip() not in _TRIVIAL:
      keys.append(shortest)
  return keys or [response]


def parse_open(response: str) -> list[float | str]:
  """Candidate answers (floats and lower-case strings) of an open response."""
  keys = _key_subresponses(response)
  cands = list(keys)
  for k in keys:
    cands.extend(_extract_numbers(k))
  out = []
  for c in cands:
    for n in normalize_open(c):
      if n not in out:
        out.append(n)
  return out


def eval_open(answers: Sequence[str], candidates: Sequence[float | str]
              ) -> bool:
  """Whether any candidate matches any gold answer."""
  golds = [n for a in answers for n in normalize_open(a)]
  for cand in candidates:
    if isinstance(cand, str):
      if any(isinstance(g, str) and g in cand for g in golds):
        return True
    elif cand in golds:
      return True
  return False


def mmmu_correct(prediction: str, answers: Sequence[str],
                 question_type: str, options: Sequence[str] | None,
                 sample_id: str = "") -> tuple[bool, object]:
  """Scores one MMMU question.

  Args:
    prediction: the model's response.
    answers: gold answers (a letter for multiple choice).
    question_type: ``"multiple-choice"`` or ``"open"``.
    options: option texts for multiple choice.
    sample_id: seeds the multiple-choice fallback guess.

  Returns:
    ``(correct, parsed)``: the parsed letter or open candidates as well.
  """
  if not answers:
    raise ValueError("mmmu_correct needs at least one gold answer")
  if question_type == "multiple-choice":
    if not options:
      raise ValueError(f"{sample_id}: a multiple-choice question needs options")
    letter = parse_multi_choice(prediction, options, seed=sample_id)
    return letter in answers, letter
  parsed = parse_open(prediction)
  return eval_open(answers, parsed), parsed

"""Option-letter extraction for multiple-choice benchmarks (ScienceQA-IMG,
AI2D).

The lmms-eval parsers these tasks use are strict: ScienceQA accepts only the
bare letter or ``"X. ..."``; AI2D also takes ``"(X)"``/``"x"`` (it compares
ignoring case and punctuation). With the "answer with the option's letter"
post-prompt Qwen2.5-VL nearly always answers with the bare letter, where every
rule agrees. We accept a superset of both so that a verbose answer is not
scored wrong only for its wording; a response that names no option scores 0.

Rules, first hit wins:

1. the whole answer is one letter, optionally in brackets and/or followed by
   ``.`` ``:`` ``)``: ``"B"``, ``"b"``, ``"(B)"``, ``"B."``, ``"B)"``;
2. it starts with a capital letter so marked, then text: ``"(B) cat"``,
   ``"B. cat"``, ``"B: cat"``, ``"B) cat"``;
3. a capital letter after "answer"/"option"/"choice" (optionally "is" or
   ``:``): ``"The answer is C"``, ``"Answer: (C)"``;
4. the answer is exactly one option's text (case and a final period ignored).

Letters past the number of options are rejected.

``first_option_letter`` is the video benchmarks' lmms-eval rule (Video-MME,
MLVU, LongVideoBench): drop the "The best answer is"-style prefixes, then the
first capital option letter anywhere in the answer (nothing when a long
answer has none).
"""
from __future__ import annotations

import re
import string
from collections.abc import Sequence

_LONE_LETTER = re.compile(r"[(\[]?([A-Za-z])[)\]]?[.:)]?")
_LEADING_LETTER = re.compile(r"(?:\(([A-Z])\)|\[([A-Z])\]|([A-Z])[.:)])\s")
_KEYWORD_LETTER = re.compile(
    r"\b(?i:answer|option|choice)(?:\s+(?i:is))?\s*:?\s*[(\[]?([A-Z])\b"
    r"(?![-'])")


def option_letters(num_options: int) -> str:
  """``"ABCD"`` for 4 options."""
  if not 0 < num_options <= 26:
    raise ValueError(f"need 1..26 options, got {num_options}")
  return string.ascii_uppercase[:num_options]


def _norm_option(text: str) -> str:
  return " ".join(text.lower().split()).rstrip(".")


def extract_choice_letter(prediction: str, options: Sequence[str]
                          ) -> str | None:
  """The option letter a response names, or None.

  Args:
    prediction: the model's response.
    options: the option texts, in order (``A`` is ``options[0]``).

  Returns:
    An upper-case letter within range, or None when no rule applies.
  """
  valid = option_letters(len(options))
  # Markdown emphasis (``**B**``) and quotes carry no meaning here.
  text = prediction.strip().strip("*\"'`").strip()

  def ok(letter):
    return letter if letter and letter in valid else None

  m = _LONE_LETTER.fullmatch(text)
  if m:
    return ok(m.group(1).upper())
  m = _LEADING_LETTER.match(text + " ")
  if m:
    return ok(next(g for g in m.groups() if g))
  m = _KEYWORD_LETTER.search(text)
  if m:
    return ok(m.group(1))
  norm = _norm_option(text)
  hits = [letter for letter, opt in zip(valid, options)
          if norm and _norm_option(opt) == norm]
  return hits[0] if len(hits) == 1 else None


def choice_accuracy(prediction: str, answers: Sequence[str],
                    options: Sequence[str]) -> float:
  """1.0 if the extracted letter is a gold letter, else 0.0."""
  if not answers:
    raise ValueError("choice_accuracy needs at least one gold answer")
  letter = extract_choice_letter(prediction, options)
  return float(letter is not None
               and letter in {a.strip().upper() for a in answers})


# lmms-eval's ``extract_characters_regex`` prefixes (its list concatenates
# two pairs of strings by a missing comma; these are the strings it holds).
_ANSWER_PREFIXES = ("The best answer is", "The correct answer is",
                    "The answer is", "The answer",
                    "The best option isThe correct option is",
                    "Best answer:Best option:")


def first_option_letter(prediction: str, letters: str = "ABCD"
                        ) -> str | None:
  """The first of ``letters`` in the answer after removing the answer
  prefixes, or None (also for an answer of more than 10 words naming
  none)."""
  s = prediction.strip()
  for prefix in _ANSWER_PREFIXES:
    s = s.replace(prefix, "")
  m = re.search(f"[{letters}]", s)
  return m.group(0) if m else None

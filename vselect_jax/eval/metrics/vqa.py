"""VQA accuracy with the standard answer normalisation (TextVQA, VQAv2).

Normalisation follows the EvalAI answer processor that lmms-eval's TextVQA
task uses (the official VQA evaluation with its well-known quirks):

1. lower-case; drop ``,`` and ``?``; split ``'s`` off as its own token;
2. punctuation in ``_PUNCTUATION`` is deleted if it touches a space somewhere
   in the answer, otherwise replaced by a space;
3. periods are deleted unless a digit follows (``"3.5"`` keeps its period,
   ``"yes."`` and ``"5."`` lose theirs);
4. number words zero..ten (and ``none``) become digits; articles a/an/the
   are dropped; apostrophe-less contractions (``dont``) get their apostrophe.

Accuracy of one prediction against the (usually 10) human answers is the
mean over the 10 leave-one-out subsets of ``min(1, #matches / 3)``: 1 match
gives 0.3, 2 give 0.6, 3 give 0.9 and 4 or more give 1.0.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

# Apostrophe-less (or oddly placed) spellings -> canonical form. Entries whose
# key has a capital letter in the official table can never match (the text is
# lower-cased first) and identity entries change nothing, so both are left out.
# ``somebody'd -> somebodyd`` is backwards in the official table; kept so that
# scores match the published ones.
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't",
    "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd",
    "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't",
    "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at",
    "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's",
    "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd",
    "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've",
    "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3",
    "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8",
    "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\",
                "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official pattern is ``(?!<=\d)(\.)(?!\d)``: its "lookbehind" is really a
# lookahead for the literal text "<=digit" and never fires, so the effective
# rule is "a period not followed by a digit".
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(?<=\d),+(?=\d)")


def _process_punctuation(text: str) -> str:
  # Decisions look at the input text, replacements accumulate in ``out``,
  # exactly as in the official code.
  digit_commas = _COMMA_BETWEEN_DIGITS.search(text) is not None
  out = text
  for p in _PUNCTUATION:
    if digit_commas or (p + " ") in text or (" " + p) in text:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out)


def _process_digits_and_articles(text: str) -> str:
  words = []
  for word in text.lower().split():
    word = _NUMBER_WORDS.get(word, word)
    if word not in _ARTICLES:
      words.append(_CONTRACTIONS.get(word, word))
  return " ".join(words)


def normalize_vqa_answer(text: str) -> str:
  """Canonical form of an answer (prediction or gold) for VQA matching."""
  text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
  text = text.replace("\n", " ").replace("\t", " ").strip()
  return _process_digits_and_articles(_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """VQA accuracy of one prediction against its human answers.

  Args:
    prediction: the model's answer (normalised here).
    answers: the human answers (10 for TextVQA / VQAv2; normalised here).
      With a single answer the leave-one-out average is always 0, as in the
      official formula; the metric is meant for 10 answers.

  Returns:
    A score in [0, 1].
  """
  if not answers:
    raise ValueError("vqa_accuracy needs at least one gold answer")
  pred = normalize_vqa_answer(prediction)
  golds = [normalize_vqa_answer(a) for a in answers]
  matches = sum(g == pred for g in golds)
  # Leaving answer i out removes one match exactly when answer i matched.
  return statistics.fmean(min(1.0, (matches - (g == pred)) / 3) for g in golds)

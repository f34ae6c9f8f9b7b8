"""The chat template of training and evaluation, tokenisation and label
masking, as the reference trains and evaluates.

One template for both: ``tokenize_conversation`` (training samples) and
``prompt_ids`` (evaluation prompts) render every turn with ``render_turn``.
Every turn is rendered as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
(no default system injection, no generation prompt) and tokenised on its
own; the ids are concatenated after a system turn "You are a helpful
assistant.". ``<image>`` in a user turn becomes ``<|vision_start|>`` +
N x ``<|image_pad|>`` + ``<|vision_end|>``, N being that image's merged-token
count (``<video>`` / ``<|video_pad|>`` likewise); text around the tag is kept
verbatim (for LLaVA-OV-1.5, ``eat_newlines``: minus one newline on each side
of the tag, as its reference's data code). Labels: -100 on the system and user turns and on the first three
tokens of each assistant turn (``<|im_start|>``, ``assistant``, ``\\n``); the
answer, ``<|im_end|>`` and the trailing newline are supervised.

An evaluation prompt is the system turn, one user turn holding all images
first and then the text (the lmms-eval Qwen2.5-VL wrapper's order, which the
official Qwen template renders the same way), and the generation prompt
``<|im_start|>assistant\\n``: token for token the prefix a training sample
of the same user turn has before its first supervised token.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vselect_jax.data.errors import RecordError

IGNORE = -100
SYSTEM = "You are a helpful assistant."
ROLES = {"human": "user", "user": "user", "gpt": "assistant",
         "assistant": "assistant", "system": "system"}
# The text opening an assistant turn (the generation prompt); its 3 tokens
# (<|im_start|>, assistant, \n) are never supervised.
GENERATION_PROMPT = "<|im_start|>assistant\n"
ASSISTANT_PREFIX = 3
MEDIA = (("<image>", "<|image_pad|>"), ("<video>", "<|video_pad|>"))


def normalize_turns(conversations) -> list[tuple[str, str]]:
  """(role, content) pairs from ``from``/``value`` or ``role``/``content``.

  Roles ``human``/``user`` map to user, ``gpt``/``assistant`` to assistant.
  A leading non-user turn is dropped (as the reference does), so a record's
  own system turn gives way to the fixed one.

  Raises:
    RecordError: ``malformed`` (not a list of turns with a known role and
      string content), ``no_assistant`` (nothing to supervise).
  """
  if not isinstance(conversations, list) or not conversations:
    raise RecordError("malformed", "conversations must be a non-empty list")
  turns = []
  for i, turn in enumerate(conversations):
    if not isinstance(turn, dict):
      raise RecordError("malformed", f"turn {i} is not an object")
    role = turn.get("from", turn.get("role"))
    content = turn.get("value", turn.get("content"))
    if role not in ROLES or not isinstance(content, str):
      raise RecordError("malformed", f"turn {i} has role {role!r} and "
                        f"content of type {type(content).__name__}")
    turns.append((ROLES[role], content))
  if turns[0][0] != "user":
    turns = turns[1:]
  if not any(r == "assistant" for r, _ in turns):
    raise RecordError("no_assistant", "no assistant turn")
  return turns


def count_tags(turns, tag: str) -> int:
  """How many ``tag`` (``<image>`` / ``<video>``) the user turns hold."""
  return sum(c.count(tag) for r, c in turns if r == "user")


def _expand(content: str, tag: str, pad: str, counts,
            eat_newlines: bool = False) -> str:
  parts = content.split(tag)
  if eat_newlines:  # one "\n" on each side of a tag goes with it
    parts = [p[1:] if i and p.startswith("\n") else p
             for i, p in enumerate(parts)]
    parts = [p[:-1] if i < len(parts) - 1 and p.endswith("\n") else p
             for i, p in enumerate(parts)]
  out = [parts[0]]
  for p in parts[1:]:
    n = next(counts, None)
    if n is None:
      raise ValueError(f"more {tag} tags than media token counts")
    out += ["<|vision_start|>", pad * n, "<|vision_end|>", p]
  return "".join(out)


def expand_media(content: str, image_tokens=None, video_tokens=None, *,
                 eat_newlines: bool = False) -> str:
  """``content`` with each ``<image>`` / ``<video>`` tag replaced by
  ``<|vision_start|>`` + N pad tokens + ``<|vision_end|>``, N taken in turn
  from the iterators ``image_tokens`` / ``video_tokens`` (merged-token
  counts, shared across the turns of a conversation; None: no media).
  ``eat_newlines``: the tag takes one newline on each side with it, as the
  LLaVA-OV-1.5 reference's data code replaces ``<image>`` with its
  surrounding newlines.

  Raises:
    ValueError: more tags than counts are left.
  """
  for (tag, pad), counts in zip(MEDIA, (image_tokens, video_tokens)):
    content = _expand(content, tag, pad, iter(()) if counts is None
                      else counts, eat_newlines)
  return content


def render_turn(role: str, content: str) -> str:
  """The text of one turn: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
  (media already expanded)."""
  return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def _ids(tokenizer, text: str) -> list[int]:
  # Each turn on its own, as the reference tokenises (the special tokens
  # bound every turn, so this equals tokenising the concatenation).
  return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_conversation(tokenizer, turns, image_tokens: Sequence[int] = (),
                          video_tokens: Sequence[int] = (), *,
                          eat_newlines: bool = False
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and labels for one sample.

  Args:
    tokenizer: an HF tokenizer holding the Qwen special tokens.
    turns: from ``normalize_turns``.
    image_tokens: merged-token count of each image, in tag order.
    video_tokens: merged-token count of each video, in tag order.
    eat_newlines: tags take their surrounding newlines (LLaVA-OV-1.5's
      format, see ``expand_media``).

  Returns:
    (input_ids int32[L], labels int32[L]), labels -100 where ignored.

  Raises:
    RecordError: ``image_count`` when the tags and the media disagree.
  """
  for tag, counts in (("<image>", image_tokens), ("<video>", video_tokens)):
    if count_tags(turns, tag) != len(counts):
      raise RecordError("image_count", f"{count_tags(turns, tag)} {tag} "
                        f"tags but {len(counts)} media")
  images, videos = iter(image_tokens), iter(video_tokens)
  ids, labels = [], []
  for role, content in [("system", SYSTEM)] + list(turns):
    if role == "user":
      content = expand_media(content, images, videos,
                             eat_newlines=eat_newlines)
    tok = _ids(tokenizer, render_turn(role, content))
    ids.extend(tok)
    if role == "assistant":
      labels.extend([IGNORE] * ASSISTANT_PREFIX + tok[ASSISTANT_PREFIX:])
    else:
      labels.extend([IGNORE] * len(tok))
  return np.array(ids, np.int32), np.array(labels, np.int32)


def prompt_ids(tokenizer, text: str, image_tokens: Sequence[int] = (),
               video_tokens: Sequence[int] = ()) -> np.ndarray:
  """Token ids of an evaluation prompt: system turn, the user turn (all
  images, then all videos, then ``text`` verbatim) and the generation
  prompt.

  Args:
    tokenizer: an HF tokenizer holding the Qwen special tokens.
    text: the user text (``eval.tasks.build_prompt``); tags in it are not
      expanded.
    image_tokens, video_tokens: merged-token count of each image / video.

  Returns:
    input_ids int32[L].
  """
  media = expand_media("<image>" * len(image_tokens) +
                       "<video>" * len(video_tokens),
                       iter(image_tokens), iter(video_tokens))
  ids = (_ids(tokenizer, render_turn("system", SYSTEM)) +
         _ids(tokenizer, render_turn("user", media + text)) +
         _ids(tokenizer, GENERATION_PROMPT))
  return np.array(ids, np.int32)

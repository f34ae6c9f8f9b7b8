"""Chat template, tokenisation and label masking, as the reference trains.

Every turn is rendered as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
(no default system injection, no generation prompt) and tokenised on its
own; the ids are concatenated after a system turn "You are a helpful
assistant.". ``<image>`` in a user turn becomes ``<|vision_start|>`` +
N x ``<|image_pad|>`` + ``<|vision_end|>``, N being that image's merged-token
count (``<video>`` / ``<|video_pad|>`` likewise); text around the tag is kept
verbatim. Labels: -100 on the system and user turns and on the first three
tokens of each assistant turn (``<|im_start|>``, ``assistant``, ``\\n``); the
answer, ``<|im_end|>`` and the trailing newline are supervised.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vselect_jax.data.errors import RecordError

IGNORE = -100
SYSTEM = "You are a helpful assistant."
ROLES = {"human": "user", "user": "user", "gpt": "assistant",
         "assistant": "assistant", "system": "system"}
# Tokens of "<|im_start|>assistant\n" that are never supervised.
ASSISTANT_PREFIX = 3


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


def _expand(content: str, tag: str, pad: str, counts) -> str:
  parts = content.split(tag)
  return parts[0] + "".join("<|vision_start|>" + pad * next(counts) +
                            "<|vision_end|>" + p for p in parts[1:])


def tokenize_conversation(tokenizer, turns, image_tokens: Sequence[int] = (),
                          video_tokens: Sequence[int] = ()
                          ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and labels for one sample.

  Args:
    tokenizer: an HF tokenizer holding the Qwen special tokens.
    turns: from ``normalize_turns``.
    image_tokens: merged-token count of each image, in tag order.
    video_tokens: merged-token count of each video, in tag order.

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
      content = _expand(content, "<image>", "<|image_pad|>", images)
      content = _expand(content, "<video>", "<|video_pad|>", videos)
    tok = tokenizer(f"<|im_start|>{role}\n{content}<|im_end|>\n",
                    add_special_tokens=False)["input_ids"]
    ids.extend(tok)
    if role == "assistant":
      labels.extend([IGNORE] * ASSISTANT_PREFIX + tok[ASSISTANT_PREFIX:])
    else:
      labels.extend([IGNORE] * len(tok))
  return np.array(ids, np.int32), np.array(labels, np.int32)

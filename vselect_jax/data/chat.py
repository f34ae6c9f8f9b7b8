"""Chat template, tokenisation and label masking, as the reference trains.

Every turn is rendered as ``<|im_start|>{role}\\n{content}<|im_end|>\\n``
(no default system injection, no generation prompt) and tokenised on its
own; the ids are concatenated after a system turn "You are a helpful
assistant.". ``<image>`` in a user turn becomes ``<|vision_start|>`` +
N x ``<|image_pad|>`` + ``<|vision_end|>``, N being that image's merged-token
count (``<video>`` likewise). Labels: -100 on the system and user turns and
on the first three tokens of each assistant turn (``<|im_start|>``,
``assistant``, ``\\n``); the answer, ``<|im_end|>`` and the trailing newline
are supervised.
"""
from __future__ import annotations

import numpy as np

IGNORE = -100
SYSTEM = "You are a helpful assistant."
ROLES = {"human": "user", "user": "user", "gpt": "assistant",
         "assistant": "assistant", "system": "system"}


class RecordError(ValueError):
  """A record that cannot be turned into a training sample; ``kind`` names
  the problem for the skip accounting."""

  def __init__(self, kind: str, message: str):
    super().__init__(message)
    self.kind = kind


def normalize_turns(conversations) -> list[tuple[str, str]]:
  """(role, content) pairs from ``from``/``value`` or ``role``/``content``.

  A leading non-user turn is dropped (as the reference does); a conversation
  without an assistant turn is refused.
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
      raise RecordError("malformed", f"turn {i} has role {role!r} / "
                        f"content of type {type(content).__name__}")
    turns.append((ROLES[role], content))
  if turns[0][0] != "user":
    turns = turns[1:]
  if not any(r == "assistant" for r, _ in turns):
    raise RecordError("no_assistant", "no assistant turn")
  return turns


def tokenize_conversation(tokenizer, turns, visual_tokens: list[int],
                          kind: str = "image") -> tuple[np.ndarray, np.ndarray]:
  """Token ids and labels for one sample.

  Args:
    tokenizer: an HF tokenizer holding the Qwen special tokens.
    turns: from ``normalize_turns``.
    visual_tokens: merged-token count of each image (or video), in order.
    kind: "image" or "video".

  Returns:
    (input_ids int32[L], labels int32[L]).
  """
  tag, pad = ("<image>", "<|image_pad|>") if kind == "image" else (
      "<video>", "<|video_pad|>")
  n_tags = sum(c.count(tag) for r, c in turns if r == "user")
  if n_tags != len(visual_tokens):
    raise RecordError("image_count", f"{n_tags} {tag} tags but "
                      f"{len(visual_tokens)} {kind}s")
  counts = iter(visual_tokens)
  ids, labels = [], []
  for role, content in [("system", SYSTEM)] + turns:
    if role == "user":
      parts = content.split(tag)
      content = parts[0] + "".join(
          "<|vision_start|>" + pad * next(counts) + "<|vision_end|>" + p
          for p in parts[1:])
    text = f"<|im_start|>{role}\n{content}<|im_end|>\n"
    tok = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids.extend(tok)
    if role == "assistant":
      labels.extend([IGNORE] * 3 + tok[3:])
    else:
      labels.extend([IGNORE] * len(tok))
  return np.array(ids, np.int32), np.array(labels, np.int32)

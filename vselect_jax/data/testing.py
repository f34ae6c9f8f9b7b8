"""A small offline tokenizer with the Qwen special tokens (tests, demo)."""
from __future__ import annotations

import os

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
           "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def testing_tokenizer(path: str, vocab_size: int = 400):
  """Trains a byte-level BPE on a fixed corpus, adds the Qwen special
  tokens, saves it to ``path`` and returns it (``AutoTokenizer`` loads the
  directory offline)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  corpus = ["You are a helpful assistant.", "user", "assistant", "system",
            "What color is the square? Answer with one word.",
            "red green blue yellow circle square triangle left right top",
            "How many bars are higher than 10? 1 2 3 4 5 6 7 8 9 0"] * 20
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=SPECIAL,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(corpus, trainer)
  fast = PreTrainedTokenizerFast(
      tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
      additional_special_tokens=SPECIAL[1:])
  os.makedirs(path, exist_ok=True)
  fast.save_pretrained(path)
  return fast

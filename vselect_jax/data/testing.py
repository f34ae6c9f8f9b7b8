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


def tiny_hf_model(path: str, *, hidden: int = 64, layers: int = 2,
                  vision_depth: int = 2, seed: int = 0,
                  initializer_range: float = 0.02) -> str:
  """Saves a tiny random HF Qwen2.5-VL with ``testing_tokenizer`` at
  ``path`` (for tests and the demo; needs torch) and returns ``path``.

  ``initializer_range`` is HF's init std; 0.02 suits wide models, a model
  this narrow trained from scratch learns attention much sooner with
  ~1/sqrt(width).
  """
  import torch
  from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
  tok = testing_tokenizer(path)
  ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
  torch.manual_seed(seed)
  half = hidden // 4 // 2            # rotary pairs per head (4 heads)
  hw = half * 3 // 8                 # Qwen's 16/24/24 split, scaled
  cfg = Qwen2_5_VLConfig(
      text_config=dict(vocab_size=len(tok), hidden_size=hidden,
                       intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2,
                       rope_parameters={
                           "rope_type": "default",
                           "mrope_section": [half - 2 * hw, hw, hw],
                           "rope_theta": 1e6},
                       bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                       initializer_range=initializer_range),
      vision_config=dict(depth=vision_depth, hidden_size=64,
                         intermediate_size=128, num_heads=2,
                         out_hidden_size=hidden,
                         fullatt_block_indexes=[vision_depth - 1],
                         tokens_per_second=2,
                         initializer_range=initializer_range),
      image_token_id=ids["<|image_pad|>"],
      video_token_id=ids["<|video_pad|>"],
      vision_start_token_id=ids["<|vision_start|>"],
      vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
  Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(path)
  return path

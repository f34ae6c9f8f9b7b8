"""1-D RoPE position ids (LLaVA-OneVision-1.5), on the host in numpy.

The reference's LLaVA-OV-1.5 forward uses ``position_ids = cache_position``:
every token, visual pads included, takes the next position, so an image's
tokens are consecutive (the modeling file's M-RoPE ``get_rope_index`` is
never called). After selection the kept tokens keep these positions (gaps)
and decoding continues at the uncompressed length + step.

They are returned in the M-RoPE batch format int32[3, B, L] with three equal
rows, so one batch layout serves both model families (``TextModel`` reads
row 0 when ``mrope_section`` is None).

Rows are counted per sample: the real tokens of a row get 0..n-1 whatever
padding precedes them, which is the reference's cache position for that
sample run alone (it never pads: one sample per device). Padding tokens get
position 1, as ``rope_index.get_rope_index`` gives them; they are masked.
"""
from __future__ import annotations

import numpy as np


def get_1d_position_ids(input_ids, attention_mask=None
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Position ids for a batch of prompts.

  Args:
    input_ids: int[B, L].
    attention_mask: int[B, L] with 1 for real tokens; None means all real.

  Returns:
    position_ids: int32[3, B, L] (three equal rows).
    rope_deltas: int32[B, 1], ``max(position) + 1 - num_valid_tokens``
      (always 0), as ``get_rope_index`` defines it: decoding continues at
      ``num_valid_tokens + step``.
  """
  ids = np.asarray(input_ids)
  if ids.ndim != 2:
    raise ValueError(f"input_ids must be [batch, seq], got shape {ids.shape}")
  mask = (np.ones(ids.shape, bool) if attention_mask is None
          else np.asarray(attention_mask).astype(bool))
  if mask.shape != ids.shape:
    raise ValueError(
        f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}")
  pos = np.where(mask, np.cumsum(mask, axis=1) - 1, 1)
  position_ids = np.broadcast_to(pos[None], (3,) + ids.shape)
  deltas = np.zeros((ids.shape[0], 1), np.int32)
  return position_ids.astype(np.int32), deltas

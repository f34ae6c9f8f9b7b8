"""Deterministic packed training batches for loop tests (stand-ins for the
grain pipeline, with the same batch format and iterator-state API)."""
import numpy as np

from tests import hf_tiny
from tests.hf_tiny import IMAGE, VIDEO
from vselect_jax.host.rope_index import get_rope_index

GRIDS = ([1, 6, 10], [1, 8, 8], [1, 4, 6])


def packed_batch(seed: int, rows: int = 2, length: int = 96,
                 patches: int = 160, images: int = 2) -> dict:
  """Rows packing two samples each: image + question + supervised answer."""
  rng = np.random.default_rng(seed)
  out = dict(input_ids=np.zeros((rows, length), np.int32),
             labels=np.full((rows, length), -100, np.int32),
             segment_ids=np.zeros((rows, length), np.int32),
             position_ids=np.ones((3, rows, length), np.int32),
             pixel_values=np.zeros((rows, patches, 1176), np.float32),
             image_grid_thw=np.zeros((rows, images, 3), np.int32),
             num_images=np.zeros(rows, np.int32))
  for r in range(rows):
    t = p = 0
    for s in range(2):
      g = GRIDS[rng.integers(len(GRIDS))]
      answer = list(rng.integers(3, 900, 4))
      sample = [1, 2] + hf_tiny.block(IMAGE, g) + [5, 6] + answer
      n = len(sample)
      out["input_ids"][r, t:t + n] = sample
      out["labels"][r, t + n - 4:t + n] = answer
      out["segment_ids"][r, t:t + n] = s + 1
      pos, _ = get_rope_index(np.array([sample]), image_grid_thw=[g],
                              image_token_id=IMAGE, video_token_id=VIDEO)
      out["position_ids"][:, r, t:t + n] = pos[:, 0]
      npatch = int(np.prod(g))
      out["pixel_values"][r, p:p + npatch] = hf_tiny.pixels(rng, g)
      out["image_grid_thw"][r, s] = g
      t += n
      p += npatch
    out["num_images"][r] = 2
  return out


class FakeData:
  """Iterator of ``packed_batch(seed + i)`` with exact state save/restore."""

  def __init__(self, seed: int = 0, process_index: int = 0,
               on_next=None):
    self.index = 0
    self.seed = seed * 1000 + process_index
    self.on_next = on_next

  def __iter__(self):
    return self

  def __next__(self):
    if self.on_next is not None:
      self.on_next(self.index)
    batch = packed_batch(self.seed + self.index, rows=8)
    self.index += 1
    return batch

  def get_state(self):
    return {"index": self.index}

  def set_state(self, state):
    self.index = int(state["index"])


def relaxed_forward(module, batch, k_row, *, remat=False, vision_grad=False):
  """The training path of ``vselect_jax.forward`` (soft mask, pooled per
  row): (logits, soft, hard, bce)."""
  import jax.numpy as jnp
  from vselect_jax.forward import Selection, forward
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  k_row = jnp.asarray(k_row, jnp.int32)
  visual = batch["visual_index"] >= 0
  out = forward(module, batch, Selection(
      "selector", jnp.where(visual, k_row[:, None], 0), k_row),
                relaxed=True, remat=remat, vision_grad=vision_grad)
  r = out.relaxed
  return module.head(out.hidden), r.soft, r.hard, r.reg

"""Held-out accuracy through the training path and through hard selection,
on the same packed rows: the soft/hard gap a selector's training must close.

    batches = held_out_rows(config, "world/test.jsonl", "runs/x")
    acc = teacher_forced(model, batches, 0.2)       # {"soft", "hard", ...}

Both numbers are teacher-forced (a sample counts when every supervised
token is the argmax) on the eval split rewritten in the training schema and
packed like training rows, so the only difference between them is the
selection: ``soft`` runs ``forward(..., relaxed=True)`` (the soft top-k
mask applied as training applies it, ``soft_mask`` "scale" or "attn_bias",
nothing dropped), ``hard`` drops the unselected tokens (the inference path,
k pooled over each packed row as in training). Generation-based accuracy
(``eval.py``) selects per prompt instead; this one isolates what the soft
mask hides.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vselect_jax.forward import Selection, forward
from vselect_jax.host import train_batch as batch_lib
from vselect_jax.selector.budget import budget_to_k


def as_training_records(test_jsonl: str, out_jsonl: str) -> str:
  """The eval-schema split (id, image, question, answers) rewritten in the
  training schema (first answer supervised); returns ``out_jsonl``."""
  from vselect_jax.data.world import training_record
  with open(test_jsonl) as f, open(out_jsonl, "w") as out:
    for n, line in enumerate(f):
      r = json.loads(line)
      missing = {"id", "image", "question", "answers"} - set(r)
      if missing:
        raise ValueError(f"{test_jsonl}:{n + 1}: record lacks "
                         f"{sorted(missing)}")
      out.write(json.dumps(training_record(
          r["id"], r["image"], r["question"], r["answers"][0])) + "\n")
  return out_jsonl


def held_out_rows(config, test_jsonl: str, workdir: str, limit: int = 0):
  """One pass over ``test_jsonl`` packed as ``config``'s training rows
  (host batches in the ``prepare_train_batch`` input format); at most
  ``limit`` batches (0: all). Images resolve against the split's folder."""
  from vselect_jax.data.pipeline import DataConfig, make_train_iterator
  root = os.path.dirname(os.path.abspath(test_jsonl))
  os.makedirs(workdir, exist_ok=True)
  train_format = as_training_records(
      test_jsonl, os.path.join(workdir, "held_out_as_training.jsonl"))
  cfg = dataclasses.replace(
      DataConfig.from_config(config.data), mixture="held_out",
      registry={"held_out": {"annotation": train_format, "root": root}},
      rows_per_batch=int(config.global_batch_rows))
  tok = config.data.get("tokenizer_path", "") or config.model_path
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1,
                           repeat=False)
  for n, batch in enumerate(it):
    if limit and n >= limit:
      return
    yield batch


def _row_k(visual: np.ndarray, budget: float) -> np.ndarray:
  return np.array([budget_to_k(int(v), budget) for v in visual.sum(1)],
                  np.int32)


def _correct(pred: np.ndarray, target: np.ndarray, seg: np.ndarray):
  """(samples right, samples) over rows: a sample is right when every
  supervised token (target != -100) of its segment is predicted."""
  right = total = 0
  for r in range(pred.shape[0]):
    sup = target[r] != -100
    for s in np.unique(seg[r][sup]):
      where = sup & (seg[r] == s)
      right += bool((pred[r][where] == target[r][where]).all())
      total += 1
  return right, total


def teacher_forced(model, batches, budget: float, *, method: str = "selector",
                   options: tuple = (), soft_mask: str = "scale") -> dict:
  """Soft-path and hard-selection accuracy of ``model`` (an engine
  ``VisionLanguageModel``) at ``budget`` on host ``batches``.

  Args:
    model: the loaded model with its trained method parameters.
    batches: packed training-format batches (``held_out_rows``).
    budget: kept fraction of each row's visual tokens.
    method: a trainable method ("selector", "tower_selector", ...).
    options: its static options as ((name, value), ...).
    soft_mask: how the soft path applies the mask ("scale", "attn_bias").

  Returns:
    {"soft": accuracy, "hard": accuracy, "samples": n}.
  """
  graphdef, state = nnx.split(model.module)
  options = tuple(sorted(dict(options).items()))

  def logits(state, batch, k_row, relaxed):
    m = nnx.merge(graphdef, state)
    visual = batch["visual_index"] >= 0
    k_token = jnp.where(visual, k_row[:, None], 0)
    t = batch["input_ids"].shape[1]
    vision_size = None
    if "window_seg" in batch:   # in-tower at inference: every unit slot
      vision_size = (batch["window_seg"].shape[1] //
                     model.config.vision.merge_unit)
    sel = Selection(method, k_token, k_row, None if relaxed else t,
                    options=options, vision_size=vision_size)
    out = forward(m, batch, sel, relaxed=relaxed, soft_mask=soft_mask)
    keep = (jnp.broadcast_to(jnp.arange(t), batch["input_ids"].shape)
            if relaxed else out.keep_index)
    return m.head(out.hidden).argmax(-1), keep

  run = jax.jit(logits, static_argnames=("relaxed",))
  got = {"soft": [0, 0], "hard": [0, 0]}
  for host in batches:
    host = batch_lib.prepare_train_batch(model.config, host)
    dev = {k: jnp.asarray(v) for k, v in host.items()
           if isinstance(v, np.ndarray)}
    k_row = jnp.asarray(_row_k(host["visual_index"] >= 0, budget))
    for name, relaxed in (("soft", True), ("hard", False)):
      pred, keep = (np.asarray(a) for a in run(state, dev, k_row, relaxed))
      # Kept positions' labels and segments (every text token is kept, so
      # each supervised token's predecessor sits right before it).
      idx = np.maximum(keep, 0)
      labels = np.where(keep >= 0, np.take_along_axis(host["labels"], idx, 1),
                        -100)
      seg = np.where(keep >= 0,
                     np.take_along_axis(host["segment_ids"], idx, 1), 0)
      r, n = _correct(pred[:, :-1], labels[:, 1:], seg[:, 1:])
      got[name][0] += r
      got[name][1] += n
  n = got["soft"][1]
  if n == 0:
    raise ValueError("no supervised samples in the held-out batches")
  return {"soft": got["soft"][0] / n, "hard": got["hard"][0] / n,
          "samples": n}

"""``eval.py run`` / ``sweep``: compressed generation on a benchmark file.

For each (task, method, budget) the runner writes, under
``<out>/<task>/<method>_<budget>/``::

  predictions.jsonl   id, prediction, answers, visual_tokens_before/after,
                      prefill_ms, latency_ms, peak_memory_bytes (GPU/TPU)
  summary.json        the task's metrics (``score.score_predictions``),
                      efficiency means and p50/p90, run settings

Preprocessing follows the reference's evaluation (section 4.3 of its spec):
each image is converted to RGB and round-tripped through JPEG at quality 75
(as ``qwen_vl_utils.fetch_image`` does through base64), then resized with
``smart_resize`` between 200704 and 1605632 pixels; the prompt is the
official Qwen chat template with the system turn, all images first, then the
task's text, and the assistant generation prompt. Decoding is greedy up to
the task's ``max_new_tokens``, stopping at ``<|im_end|>``; the text is cut at
the task's stop strings.

Timings follow the reference's protocol on our two programs: ``prefill_ms``
is host preparation + vision tower + selection + LLM prefill + lm_head up to
the first token, ``latency_ms`` the whole ``generate``; both synchronised.
A call that compiles a new program (the first of each bucket) is not timed:
its timings are left out of the summary's statistics (``warmup_excluded``;
its wall time is kept as ``first_call_ms``), unlike the reference's plain
means (no compile there).

Examples are prepared while the model generates: a thread prepares at most
``EvalSettings.prefetch`` examples ahead (``ExampleStream``), so host memory
is bounded by that depth (each example holds its pixels, ~37 MB at the
default pixel limits), not by the dataset. The data file is validated before
(``records.read_data``); with ``skip_bad`` bad records are skipped and
counted by kind in ``summary.json`` (``skipped``, ``skipped_records``),
those found only when an image is decoded included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import os
import queue
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

from vselect_jax.eval import records as records_lib
from vselect_jax.eval import score as score_lib
from vselect_jax.eval import tasks as tasks_lib
from vselect_jax.eval.video import VideoSampling

log = logging.getLogger(__name__)

# The reference's max_pixels per model family (LLaVA-OV-1.5:
# run_ov_selector.sh); min_pixels is 200704 for both.
MAX_PIXELS = {"qwen2_5_vl": 1605632, "llava_ov15": 3240000}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How samples are prepared and run.

  Attributes:
    min_pixels, max_pixels: image area bounds (reference: 256 and 2048
      merged tokens' worth).
    jpeg_quality: JPEG round trip before resizing (reference: PIL's default
      75); None skips it.
    per_image: budget per image (and per frame slot of a video) instead of
      pooled over the sample's images and frames.
    seed: for ``method="random"``.
    limit: evaluate only the first ``limit`` (usable) records.
    max_new_tokens: override the task's generation limit.
    family: "qwen2_5_vl" or "llava_ov15" (its processor: 14-px patches of
      one frame, CLIP mean/std; the reference evaluates it with
      max_pixels 3240000, ``MAX_PIXELS``); None takes the model's.
    skip_bad: skip bad records (counted by kind in the summary) instead of
      stopping at the first.
    prefetch: examples prepared ahead of the one generating (host memory
      grows with it; 1 or 2 keep the device fed).
    batch_size: prompts per ``generate`` call, grouped so that they share
      every padded shape (``batch_key``): the same predictions as one at a
      time.
    video: how video frames are sampled and sized (``eval.video``).

  Raises:
    ValueError: naming the field (and its ``eval.py`` flag) on a value that
      would be dropped or misread silently.
  """
  min_pixels: int = 200704
  max_pixels: int = 1605632
  # The model family the prompts and pixels are prepared for (its image
  # processor); None: the model's (``run_one``).
  family: str | None = None
  jpeg_quality: int | None = 75
  per_image: bool = False
  seed: int = 0
  # Method options (``methods.validate``), e.g. (("faithful", True),) or
  # (("block", 8),) for tower_selector; sorted pairs so settings hash.
  options: tuple = ()
  limit: int | None = None
  max_new_tokens: int | None = None
  skip_bad: bool = False
  prefetch: int = 2
  video: VideoSampling = VideoSampling()
  batch_size: int = 1

  def __post_init__(self):
    def check(name, low, high=None, optional=False):
      value = getattr(self, name)
      if value is None and optional:
        return
      flag = "--" + name.replace("_", "-")
      if (isinstance(value, bool) or not isinstance(value, int)
          or value < low or (high is not None and value > high)):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} ({flag}) must be an integer {bound}"
                         + (" or None" if optional else "")
                         + f", got {value!r}")
    check("min_pixels", 1)
    check("max_pixels", 1)
    check("limit", 1, optional=True)
    check("max_new_tokens", 1, optional=True)
    check("jpeg_quality", 1, 100, optional=True)
    check("prefetch", 1)
    check("batch_size", 1)
    if self.min_pixels > self.max_pixels:
      raise ValueError(f"min_pixels ({self.min_pixels}, --min-pixels) is "
                       f"above max_pixels ({self.max_pixels}, --max-pixels)")
    if not isinstance(self.video, VideoSampling):
      raise ValueError(f"video must be a VideoSampling, got {self.video!r}")


def load_image(path: str, settings: EvalSettings) -> Image.Image:
  """The image as the reference's evaluation sees it (RGB, JPEG round trip).

  Raises:
    records.BadRecordError: naming the file when it is missing
      ("missing_file") or unreadable ("corrupt_image").
  """
  try:
    with Image.open(path) as im:
      im.load()
      rgb = im.convert("RGB")
  except (OSError, ValueError) as e:
    kind = ("missing_file" if isinstance(e, FileNotFoundError)
            else "corrupt_image")
    raise records_lib.BadRecordError(
        kind, f"cannot read image {path}: {e}") from e
  if settings.jpeg_quality is None:
    return rgb
  buf = io.BytesIO()
  rgb.save(buf, format="JPEG", quality=settings.jpeg_quality)
  buf.seek(0)
  with Image.open(buf) as im:
    im.load()
    return im.convert("RGB")


@dataclasses.dataclass
class Example:
  """One prepared prompt (batch of one)."""
  record: records_lib.EvalRecord
  input_ids: np.ndarray                 # int32[1, L]
  pixel_values: np.ndarray | None       # float32[P, 1176]
  image_grid_thw: np.ndarray | None     # int64[I, 3]
  images: list                          # the PIL images as preprocessed
  pixel_values_videos: np.ndarray | None = None   # float32[Pv, 1176]
  video_grid_thw: np.ndarray | None = None        # int64[V, 3]
  second_per_grid_ts: np.ndarray | None = None    # float32[V]
  clips: list = dataclasses.field(default_factory=list)  # video.Clip per video

  @property
  def grids(self) -> np.ndarray | None:
    """int64[I + V, 3]: image then video grids (the prompt's order)."""
    parts = [g for g in (self.image_grid_thw, self.video_grid_thw)
             if g is not None]
    return np.concatenate(parts) if parts else None

  def media(self) -> dict:
    """The processor-style keyword arguments of ``model.generate``."""
    return {"pixel_values": self.pixel_values,
            "image_grid_thw": self.image_grid_thw,
            "pixel_values_videos": self.pixel_values_videos,
            "video_grid_thw": self.video_grid_thw,
            "second_per_grid_ts": self.second_per_grid_ts}


def prepare_example(tokenizer, spec: tasks_lib.TaskSpec,
                    record: records_lib.EvalRecord,
                    settings: EvalSettings) -> Example:
  """Chat-templated token ids and pixels of one record (images, then
  videos, then the text)."""
  from vselect_jax.data import chat, preprocess_image, preprocess_video
  from vselect_jax.data.image_processor import merged_tokens
  from vselect_jax.data.sample import processor_params
  from vselect_jax.eval import video as video_lib
  params = processor_params(settings.family or "qwen2_5_vl")
  pix, grids, images = [], [], []
  for path in record.images:
    im = load_image(path, settings)
    p, g = preprocess_image(im, settings.min_pixels, settings.max_pixels,
                            params=params)
    pix.append(p)
    grids.append(np.asarray(g).reshape(3))
    images.append(im)
  vpix, vgrids, clips = [], [], []
  for path in record.videos:
    clip = video_lib.load_clip(path, settings.video)
    p, g = preprocess_video(clip.frames, clip.min_pixels, clip.max_pixels,
                            params=params)
    vpix.append(p)
    vgrids.append(np.asarray(g).reshape(3))
    clips.append(clip)
  # The one chat template of training and evaluation (data/chat.py).
  ids = chat.prompt_ids(tokenizer, tasks_lib.build_prompt(spec, record),
                        [merged_tokens(g) for g in grids],
                        [merged_tokens(g) for g in vgrids])
  return Example(
      record, np.asarray([ids], np.int32),
      np.concatenate(pix) if pix else None,
      np.stack(grids) if grids else None, images,
      np.concatenate(vpix) if vpix else None,
      np.stack(vgrids) if vgrids else None,
      np.full(len(vgrids), settings.video.second_per_grid_t, np.float32)
      if vgrids else None, clips)


def visual_token_counts(grids: np.ndarray | None, budget, per_image: bool,
                        *, merge_unit: int, total: int | None = None
                        ) -> tuple[int, int]:
  """(before, after) selection for one sample.

  Args:
    grids: int[I, 3] (t, h, w) in patches, or None.
    merge_unit: patches per LLM token (``VisionConfig.merge_unit``).
    total: the prompt's token count, for methods whose k is a fraction of
      the whole prompt (``Method.count`` "total": Dynamic-Qwen); None: of
      the visual tokens.
  """
  from vselect_jax.selector.budget import budget_to_k
  if grids is None:
    return 0, 0
  per = [int(np.prod(g)) // merge_unit for g in grids]
  if budget is None:
    return sum(per), sum(per)
  if per_image:  # per image, and per temporal slot of a video
    return sum(per), sum(int(g[0]) * budget_to_k(n // int(g[0]), budget)
                         for n, g in zip(per, grids))
  if total is not None and sum(per):
    return sum(per), min(sum(per), budget_to_k(total, budget))
  return sum(per), budget_to_k(sum(per), budget)


def _counts_total(method: str, settings) -> bool:
  """Whether ``method`` (with the settings' options) takes k of the whole
  prompt."""
  from vselect_jax import methods as methods_lib
  m, opts = methods_lib.validate(method, None, settings.per_image,
                                 dict(settings.options))
  return m.count(dict(opts)) == "total"


def peak_memory_bytes() -> int | None:
  """Peak device memory in use (GPU/TPU); None where not reported (CPU)."""
  import jax
  # This process's first device (others' are not addressable).
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def budget_name(budget) -> str:
  return "none" if budget is None else f"{float(budget):g}"


def _where(data_path: str, record: records_lib.EvalRecord) -> str:
  return f"{data_path}:{record.line} (id {record.id!r})"


class ExampleStream:
  """Prepares records into ``Example``s in a thread, at most ``depth`` ahead.

  Iterating yields the examples in record order. At any time at most
  ``depth`` prepared examples wait in the queue, one is being prepared and
  one is used by the caller, so host memory stays bounded whatever the
  number of records. A record whose preparation fails stops the iteration
  with an error naming the record, or, with ``settings.skip_bad`` and a data
  problem (``records.BadRecordError``, or a ``ValueError`` of the image
  processor such as a degenerate image), is left out and listed in
  ``skipped``.

  Args:
    tokenizer, spec, settings: as for ``prepare_example``.
    records: the records to prepare.
    data_path: the data file (for error messages).
    depth: queue depth (default ``settings.prefetch``).
  """

  _DONE = object()

  def __init__(self, tokenizer, spec: tasks_lib.TaskSpec,
               records: Sequence[records_lib.EvalRecord],
               settings: EvalSettings, *, data_path: str,
               depth: int | None = None):
    self.tokenizer, self.spec, self.settings = tokenizer, spec, settings
    self.records = list(records)
    self.data_path = data_path
    self.depth = settings.prefetch if depth is None else depth
    self.skipped: list[records_lib.Skipped] = []

  def __len__(self) -> int:
    return len(self.records)

  def _prepare(self, record):
    """An Example, a Skipped, or the exception to raise in the caller."""
    where = _where(self.data_path, record)
    try:
      return prepare_example(self.tokenizer, self.spec, record, self.settings)
    except records_lib.BadRecordError as e:
      err = records_lib.BadRecordError(e.kind, f"{where}: {e}")
    except ValueError as e:  # the image processor on a degenerate image
      kind = "corrupt_video" if record.videos else "corrupt_image"
      err = records_lib.BadRecordError(kind, f"{where}: {e}")
    except Exception as e:  # not the data's fault: re-raised, record named
      e.add_note(f"while preparing {where}")
      return e
    if self.settings.skip_bad:
      return records_lib.Skipped(err.kind, record.line, record.id, str(err))
    return err

  def __iter__(self) -> Iterator[Example]:
    q: queue.Queue = queue.Queue(maxsize=self.depth)
    stop = threading.Event()

    def put(item) -> bool:
      while not stop.is_set():
        try:
          q.put(item, timeout=0.05)
          return True
        except queue.Full:
          continue
      return False

    def work():
      try:
        for record in self.records:
          item = self._prepare(record)
          if not put(item) or isinstance(item, BaseException):
            return
        put(self._DONE)
      except BaseException as e:  # the caller must never wait forever
        put(e)

    thread = threading.Thread(target=work, name="eval-prefetch", daemon=True)
    thread.start()
    try:
      while True:
        item = q.get()
        if item is self._DONE:
          return
        if isinstance(item, BaseException):
          raise item
        if isinstance(item, records_lib.Skipped):
          log.warning("skipped record (%s): %s", item.kind, item.error)
          self.skipped.append(item)
          continue
        yield item
    finally:  # also when the caller stops early: never leave it blocked
      stop.set()
      thread.join()


def for_model(settings: EvalSettings, model) -> EvalSettings:
  """``settings`` with the model's family (refused if another is set)."""
  family = model.config.family
  if settings.family is None:
    return dataclasses.replace(settings, family=family)
  if settings.family != family:
    raise ValueError(f"the eval settings are for {settings.family!r} but the "
                     f"model is {family!r}")
  return settings


def run_one(model, tokenizer, task: str, data_path: str, budget,
            method: str, out_dir: str, settings: EvalSettings = EvalSettings(),
            *, visualize: int = 0, progress: bool = True,
            examples: Sequence[Example] | None = None,
            data: records_lib.EvalData | None = None) -> dict:
  """Evaluates one (task, method, budget); writes and returns the summary.

  Args:
    model: a ``VisionLanguageModel``.
    tokenizer: an HF tokenizer with the Qwen special tokens.
    task: a ``tasks.TASKS`` name.
    data_path: the task's JSONL file.
    budget: fraction of visual tokens kept, or None for the base model.
    method: a name of ``vselect_jax.methods.names()``.
    out_dir: this run's directory (created).
    visualize: write selection pictures for the first N samples.
    examples: prepared examples to use instead of streaming them from the
      data file.
    data: the data file as ``records.read_data`` validated it (read here
      when None); its skipped records are counted in the summary.

  Raises:
    records.EvalDataError: a bad data file or record (naming it), before any
      output when the data file itself is bad.
    ValueError: ``settings.family`` is not the model's.
  """
  settings = for_model(settings, model)
  spec = tasks_lib.get_task(task)
  if data is None:
    data = records_lib.read_data(data_path, spec.required_fields,
                                 skip_bad=settings.skip_bad)
  if examples is None:
    examples = ExampleStream(tokenizer, spec,
                             data.records[:settings.limit], settings,
                             data_path=data_path)
  os.makedirs(out_dir, exist_ok=True)
  rank, ranks = _process_shard(model)
  if ranks > 1 and isinstance(examples, ExampleStream):
    # Data parallel: this process evaluates every ranks-th record.
    examples.records = examples.records[rank::ranks]
  merge_unit = model.config.vision.merge_unit
  total = _counts_total(method, settings)
  eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
  pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  max_new = settings.max_new_tokens or spec.max_new_tokens
  pred_path = os.path.join(out_dir, "predictions.jsonl")
  own_path = pred_path if ranks == 1 else os.path.join(
      out_dir, f"predictions.process{rank}.jsonl")
  warm, rows, scored = [], [], []
  bar = _progress(len(examples), f"{task} {method} {budget_name(budget)}",
                  progress)
  stream = iter(examples)
  # Closing the stream on an error stops its prefetch thread at once.
  closing = (contextlib.closing(stream) if hasattr(stream, "close")
             else contextlib.nullcontext())
  key = functools.partial(batch_key, model, budget=budget,
                          per_image=settings.per_image)
  drawn = 0
  with open(own_path, "w") as f, closing:
    for group in group_batches(stream, settings.batch_size, key):
      timings = {}
      compiles = model.num_compiles
      tokens = model.generate(
          **collate(group), budget=budget, method=method,
          per_image=settings.per_image, seed=settings.seed,
          options=dict(settings.options) or None,
          max_new_tokens=max_new, eos_token_id=eos, pad_token_id=pad,
          timings=timings)
      # A call that traced a new program also compiled it: not timed.
      first_of_shape = model.num_compiles != compiles
      mem = peak_memory_bytes()
      for ex, toks in zip(group, tokens):
        text = tokenizer.decode([t for t in toks if t not in (eos, pad)],
                                skip_special_tokens=True)
        text = tasks_lib.cut_at_stop(text, spec.stop).strip()
        before, after = visual_token_counts(
            ex.grids, budget, settings.per_image, merge_unit=merge_unit,
            total=int(ex.input_ids.shape[1]) if total else None)
        if first_of_shape:
          warm.append(ex.record.id)
        row = {"id": ex.record.id, "prediction": text,
               "answers": list(ex.record.answers),
               "visual_tokens_before": before, "visual_tokens_after": after,
               "prompt_tokens": int(ex.input_ids.shape[1]),
               "kv_cache_bytes": kv_cache_bytes(
                   model, method, budget, int(ex.input_ids.shape[1]),
                   before, after),
               "batch_size": len(group),
               "prefill_ms": None if first_of_shape
               else timings["prefill_ms"],
               "latency_ms": None if first_of_shape
               else timings["latency_ms"],
               "first_call_ms": timings["latency_ms"] if first_of_shape
               else None}
        if mem is not None:
          row["peak_memory_bytes"] = mem
        f.write(json.dumps(row) + "\n")
        rows.append(row)
        scored.append(ex.record)
        if drawn < visualize:
          drawn += 1
          _visualize(model, ex, budget, method, settings,
                     os.path.join(out_dir, "visualize"), task)
      bar.update(len(group))
  bar.close()
  skipped = list(data.skipped) + list(getattr(examples, "skipped", ()))
  if ranks > 1:  # every process gets every process's rows, once
    rows, stream_skips = _gather_rows(rows, [s.as_dict() for s in skipped
                                             if s not in data.skipped])
    order = {r.id: i for i, r in enumerate(data.records)}
    rows.sort(key=lambda r: order[r["id"]])
    by_id = {r.id: r for r in data.records}
    scored = [by_id[r["id"]] for r in rows]
    skipped = list(data.skipped) + [records_lib.Skipped(**d)
                                    for d in stream_skips]
    warm = [r["id"] for r in rows if r["first_call_ms"] is not None]
    if rank == 0:
      with open(pred_path, "w") as f:
        for row in rows:
          f.write(json.dumps(row) + "\n")
    _barrier("vselect_eval_predictions_written")
  summary = score_lib.score_predictions(task, data_path, pred_path,
                                        records=scored)
  summary.update({
      "method": method, "budget": budget,
      "settings": dataclasses.asdict(settings),
      "warmup_excluded": len(warm),
      "processes": ranks,
      "skipped": records_lib.count_skipped(skipped),
      "skipped_records": [s.as_dict() for s in skipped],
  })
  if rank == 0:
    with open(os.path.join(out_dir, score_lib.SUMMARY_NAME), "w") as f:
      json.dump(summary, f, indent=2)
      f.write("\n")
  return summary


def _process_shard(model) -> tuple[int, int]:
  """(this process, processes) over which records are split: all JAX
  processes when the model lives on this process's devices only; one
  shard when its mesh spans processes (every process then runs the same
  global program on the same records)."""
  import jax
  if jax.process_count() == 1:
    return 0, 1
  mesh = getattr(model, "mesh", None)
  if mesh is not None and any(d.process_index != jax.process_index()
                              for d in mesh.devices.flat):
    return 0, 1
  return jax.process_index(), jax.process_count()


def _barrier(name: str) -> None:
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices(name)


def _gather_rows(rows: list[dict], skips: list[dict]
                 ) -> tuple[list[dict], list[dict]]:
  """Every process's prediction rows and skipped records, on every process
  (one all-gather of their JSON bytes, padded to the longest)."""
  from jax.experimental import multihost_utils
  payload = np.frombuffer(json.dumps({"rows": rows, "skips": skips})
                          .encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(
      np.array([payload.size], np.int64))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:payload.size] = payload
  everything = np.asarray(multihost_utils.process_allgather(padded))
  all_rows, all_skips = [], []
  for n, buf in zip(sizes, everything):
    part = json.loads(bytes(buf[:int(n)]).decode())
    all_rows += part["rows"]
    all_skips += part["skips"]
  return all_rows, all_skips


def batch_key(model, ex: Example, *, budget, per_image: bool) -> tuple:
  """Examples with equal keys share every padded shape of a batch of one
  (sequence bucket, patch capacity, kept-length bucket), so batching them
  pads nothing more and gives batch-1 results."""
  from vselect_jax.host.buckets import bucket
  from vselect_jax.host.rows import patch_capacity
  n = int(ex.input_ids.shape[1])
  grids = ex.grids
  patches = 0 if grids is None else int(np.prod(grids, axis=1).sum())
  before, after = visual_token_counts(grids, budget, per_image,
                                      merge_unit=model.config.vision
                                      .merge_unit)
  return (bucket(n, model.seq_multiple),
          patch_capacity(patches, model.config.vision) if patches else 0,
          bucket(n - before + after, model.seq_multiple))


def group_batches(examples, batch_size: int, key) -> Iterator[list]:
  """Batches of up to ``batch_size`` examples of equal ``key(ex)``, in
  stream order of completion. At most ``4 * batch_size`` examples wait
  (then the fullest group goes out short), so memory stays bounded."""
  if batch_size == 1:  # nothing to group: no key needed
    for ex in examples:
      yield [ex]
    return
  pending: dict = {}
  waiting = 0
  for ex in examples:
    group = pending.setdefault(key(ex), [])
    group.append(ex)
    waiting += 1
    if len(group) == batch_size:
      yield pending.pop(key(ex))
      waiting -= batch_size
    elif waiting > 4 * batch_size:
      k = max(pending, key=lambda k: len(pending[k]))
      waiting -= len(pending[k])
      yield pending.pop(k)
  for group in pending.values():
    yield group


def collate(examples: Sequence[Example]) -> dict:
  """The processor-style inputs of a batch: right-padded ``input_ids``
  with its ``attention_mask``, media concatenated in row order."""
  width = max(int(e.input_ids.shape[1]) for e in examples)
  ids = np.zeros((len(examples), width), np.int32)
  mask = np.zeros((len(examples), width), np.int32)
  for i, e in enumerate(examples):
    n = int(e.input_ids.shape[1])
    ids[i, :n] = e.input_ids[0]
    mask[i, :n] = 1
  out = {"input_ids": ids, "attention_mask": mask}
  for name, value in examples[0].media().items():
    parts = [e.media()[name] for e in examples if e.media()[name] is not None]
    out[name] = np.concatenate(parts) if parts else None
  return out


def kv_cache_bytes(model, method: str, budget, prompt_tokens: int,
                   before: int, after: int) -> int:
  """Bytes of the prompt's KV cache after selection (before decoding):
  2 (k, v) x kv heads x head dim x dtype bytes per token and layer; the
  layers before an in-LLM method's selection layer hold the whole prompt,
  the rest the kept ``prompt_tokens - before + after``."""
  from vselect_jax import methods as methods_lib
  from vselect_jax.methods.base import IN_LLM
  t = model.config.text
  per = 2 * t.num_key_value_heads * t.head_dim * np.dtype(model.dtype).itemsize
  kept = prompt_tokens - before + after
  layers = t.num_hidden_layers
  early = 0
  if budget is not None:
    m = methods_lib.get(method)
    if m.stage == IN_LLM:
      early = int(m.layer(model.module))
  return int(per * (early * prompt_tokens + (layers - early) * kept))


def prepare_examples(tokenizer, spec, data_path: str,
                     settings: EvalSettings) -> list[Example]:
  recs = records_lib.load_records(data_path, spec.required_fields)
  if settings.limit is not None:
    recs = recs[:settings.limit]
  return [prepare_example(tokenizer, spec, r, settings) for r in recs]


def _progress(total: int, desc: str, enabled: bool):
  if enabled:
    from tqdm import tqdm
    return tqdm(total=total, desc=desc)

  class _Null:
    def update(self, n):
      pass

    def close(self):
      pass
  return _Null()


def token_maps(model, ex: Example, budget, method: str,
               settings: EvalSettings) -> list[tuple]:
  """Per image, then per video: (importance float[N_i], kept bool[N_i])
  over its merged tokens in raster order (a video's: frame slot, row,
  column). Importance is the selector's soft top-k mask (what the reference
  visualises) or the baseline's own signal."""
  out = model.forward(ex.input_ids, **ex.media(),
                      budget=1.0 if budget is None else budget,
                      method=method, per_image=settings.per_image,
                      seed=settings.seed, soft_mask=True,
                      options=dict(settings.options) or None)
  ids = ex.input_ids[0]
  visual = np.flatnonzero(np.isin(ids, (model.config.image_token_id,
                                        model.config.video_token_id)))
  imp = out.soft_mask[0, visual]
  kept_pos = set(int(p) for p in out.keep_index[0] if p >= 0)
  kept = np.array([int(p) in kept_pos for p in visual])
  maps, start = [], 0
  for g in ex.grids:
    n = int(np.prod(g)) // model.config.vision.merge_unit
    maps.append((imp[start:start + n], kept[start:start + n]))
    start += n
  return maps


def _visualize(model, ex: Example, budget, method, settings, out_dir, task):
  from vselect_jax.eval import pictures
  os.makedirs(out_dir, exist_ok=True)
  if ex.grids is None:
    return
  maps = token_maps(model, ex, budget, method, settings)
  n_img = 0 if ex.image_grid_thw is None else len(ex.image_grid_thw)
  title = f"{method} @ {budget_name(budget)}: {ex.record.id}"
  for j, ((imp, kept), g) in enumerate(zip(maps, ex.grids)):
    name = f"{task}_{ex.record.id}_{method}_{budget_name(budget)}_{j}.png"
    path = os.path.join(out_dir, name)
    if j < n_img:
      pictures.render_selection(ex.images[j], (int(g[1]), int(g[2])), imp,
                                kept, path, title=title)
    else:
      pictures.render_frame_strip(ex.clips[j - n_img].frames, g, imp, kept,
                                  path, title=title)

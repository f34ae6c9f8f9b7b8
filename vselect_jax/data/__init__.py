"""Training data: records and mixtures, the numpy/PIL Qwen2.5-VL image
processor, chat template and label masking, packing, the grain pipeline,
ArrayRecord/TFDS shards and a synthetic dataset.

  cfg = DataConfig(mixture="chartqa,coco%10,ocr_vqa", registry={...})
  it = make_train_iterator(cfg, tokenizer_dir)   # get_state / set_state
  batch = next(it)                               # static-shape numpy dict
"""
from vselect_jax.data.errors import SKIP_KINDS, RecordError, SkipMonitor
from vselect_jax.data.image_processor import (preprocess_image,
                                              preprocess_video,
                                              sample_frame_indices,
                                              smart_resize)
from vselect_jax.data.pipeline import (DataConfig, make_dataset,
                                       make_train_iterator)
from vselect_jax.data.testing import testing_tokenizer

__all__ = ["DataConfig", "RecordError", "SKIP_KINDS", "SkipMonitor",
           "make_dataset", "make_train_iterator",
           "make_train_iterator_from_config", "preprocess_image",
           "preprocess_video", "sample_frame_indices", "smart_resize",
           "testing_tokenizer"]


def make_train_iterator_from_config(config, process_index: int,
                                    process_count: int):
  """The training stream for ``train.py`` from a training ConfigDict.

  ``config.data`` holds the ``DataConfig`` fields except the rows per host
  batch, which is this host's share of ``config.global_batch_rows``
  (``training.global_batch.host_rows``); the tokenizer is read from
  ``config.data.tokenizer_path`` or else ``config.model_path``.
  """
  import dataclasses
  from vselect_jax.training import global_batch
  rows = global_batch.host_rows(config, process_count)
  cfg = dataclasses.replace(DataConfig.from_config(config.data),
                            rows_per_batch=rows)
  tok = config.data.get("tokenizer_path", "") or config.model_path
  return make_train_iterator(cfg, tok, process_index=process_index,
                             process_count=process_count)

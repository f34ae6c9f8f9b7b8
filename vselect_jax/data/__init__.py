"""Training data: records and mixtures, the numpy/PIL Qwen2.5-VL image
processor, chat template and label masking, packing, the grain pipeline."""
from vselect_jax.data.image_processor import preprocess_image, smart_resize

__all__ = ["preprocess_image", "smart_resize"]


def make_train_iterator_from_config(config, process_index: int,
                                    process_count: int):
  """The training stream for ``train.py`` from a training ConfigDict.

  ``config.data`` holds the DataConfig fields; the tokenizer is read from
  ``config.data.tokenizer_path`` or else ``config.model_path``.
  """
  from vselect_jax.data.pipeline import DataConfig, make_dataset
  d = dict(config.data)
  tok = d.pop("tokenizer_path", None) or config.model_path
  d["registry"] = {k: dict(v) for k, v in dict(d["registry"]).items()}
  d.setdefault("tokens_per_second", 2)
  cfg = DataConfig(**d)
  return iter(make_dataset(cfg, tok, process_index=process_index,
                           process_count=process_count))

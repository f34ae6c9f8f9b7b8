"""Data: the numpy/PIL Qwen2.5-VL image processor (training-data records,
packing and the grain pipeline are in progress)."""
from vselect_jax.data.image_processor import preprocess_image, smart_resize

__all__ = ["preprocess_image", "smart_resize"]

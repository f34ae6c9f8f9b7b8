"""Flax NNX modules of Qwen2.5-VL and the host-side layout helpers they need."""

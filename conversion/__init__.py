"""Weight conversion between HF Qwen2.5-VL / VisionSelector checkpoints and
vselect-jax (Orbax) checkpoints."""

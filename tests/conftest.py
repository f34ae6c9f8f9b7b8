"""Test session setup: CPU backend with 8 simulated devices, float32 matmuls.

The XLA flag must be set before jax is imported anywhere, so it lives here.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

# Parity tests compare against float32 PyTorch; default TPU/CPU matmul precision
# may use reduced-precision passes on some backends.
jax.config.update("jax_default_matmul_precision", "highest")

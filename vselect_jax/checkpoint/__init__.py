"""Checkpoint formats the library reads and writes: HF safetensors (read
streaming or per shard, ``hf_reader``), their key names (``key_map``) and the
converted vselect-jax directory (``converted``). The ``conversion`` CLIs are
built on these."""

"""Peak host memory while loading a ~1 GB checkpoint onto one device and
onto an 8-device mesh (simulated CPU devices), from an HF directory and from
a converted one.

    python bench/load_memory.py [--gb 1.1] [--keep DIR]

On the CPU backend device memory *is* host memory, so the model itself
(~1x the checkpoint) is in every figure; what the loader adds on top is
the point: each device's block of each tensor is read from the memory-
mapped file straight into its buffer, so there is no full numpy copy of the
model and no whole tensor on one device before sharding. Each load runs in
a fresh process (its VmHWM high-water mark).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_checkpoint(path: str, scale: float) -> float:
  """A random Qwen2.5-VL-architecture HF checkpoint of ~``scale`` GB."""
  from vselect_jax.checkpoint import key_map
  from vselect_jax.checkpoint.safetensors_io import save_file
  from vselect_jax.config import VLMConfig
  from vselect_jax.loading import abstract_model, expected_shapes
  layers = max(1, int(round(16 * scale / 1.1)))
  hf = {
      "model_type": "qwen2_5_vl", "architectures": [
          "Qwen2_5_VLForConditionalGeneration"],
      "vocab_size": 32768, "hidden_size": 1024, "intermediate_size": 2816,
      "num_hidden_layers": layers, "num_attention_heads": 16,
      "num_key_value_heads": 4, "rms_norm_eps": 1e-6, "rope_theta": 1e6,
      "tie_word_embeddings": False, "image_token_id": 151655,
      "video_token_id": 151656, "vision_start_token_id": 151652,
      "rope_scaling": {"type": "mrope", "mrope_section": [16, 8, 8]},
      "vision_config": {"depth": 8, "hidden_size": 512,
                        "intermediate_size": 1376, "num_heads": 8,
                        "out_hidden_size": 1024, "patch_size": 14,
                        "spatial_merge_size": 2, "temporal_patch_size": 2,
                        "window_size": 112, "fullatt_block_indexes": [7],
                        "tokens_per_second": 2}}
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf, f)
  cfg = VLMConfig.from_pretrained(path)
  _, abs_state = abstract_model(cfg, np.float32)
  rng = np.random.default_rng(0)
  tensors, nbytes = {}, 0
  for p, shape in expected_shapes(abs_state).items():
    if p[:2] == ("visual", "importance_scorer"):
      continue
    hf_shape = shape
    if p[-1] == "kernel":
      hf_shape = shape[::-1]
      if p[:3] == ("visual", "patch_embed", "proj"):
        hf_shape = (shape[1], 3, 2, 14, 14)
    value = rng.standard_normal(hf_shape, dtype=np.float32) * 0.02
    tensors[key_map.path_to_hf_key(p)] = value
    nbytes += value.nbytes
  save_file(tensors, os.path.join(path, "model.safetensors"))
  return nbytes / 2 ** 30


PROBE = """
import os, sys, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, {root!r})
import jax, vselect_jax
from vselect_jax.sharding import make_mesh

def hwm():  # this process's peak RSS in GiB (reset at exec, unlike ru_maxrss)
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 2**20

base = hwm()
mesh = make_mesh({{"data": 1, "fsdp": 4, "tensor": 2}}) if {mesh} else None
t = time.perf_counter()
if {old}:  # the previous loader: the whole model as numpy, then device_put
  import numpy as np
  from flax import nnx
  from vselect_jax import loading, sharding
  from vselect_jax.checkpoint.hf_reader import read_hf_params
  from vselect_jax.config import VLMConfig
  cfg = VLMConfig.from_pretrained({path!r})
  graphdef, abs_state = loading.abstract_model(cfg, np.float32)
  params = read_hf_params({path!r}, loading.expected_shapes(abs_state),
                          np.float32, optional_prefixes=(loading.SCORER_PATH,))
  state = {{p: jax.device_put(v) for p, v in params.items()}}
  if mesh is not None:
    shards = dict(sharding.state_shardings(abs_state, mesh).flat_state())
    state = {{p: jax.device_put(v, shards[p]) for p, v in state.items()}}
  jax.block_until_ready(state)
else:
  m = vselect_jax.from_pretrained({path!r}, mesh=mesh)
  jax.block_until_ready(m.state)
dt = time.perf_counter() - t
peak = hwm()
print(base, peak, dt)
"""


def measure(path: str, mesh: bool, old: bool = False
            ) -> tuple[float, float, float]:
  out = subprocess.run(
      [sys.executable, "-c", PROBE.format(root=ROOT, path=path, mesh=mesh,
                                          old=old)],
      capture_output=True, text=True, check=True).stdout.split()
  return tuple(float(x) for x in out[-3:])


def main(argv=None) -> int:
  p = argparse.ArgumentParser()
  p.add_argument("--gb", type=float, default=1.1)
  p.add_argument("--keep", default=None, help="work directory to keep")
  args = p.parse_args(argv)
  work = args.keep or tempfile.mkdtemp(prefix="load-mem-")
  hf_dir, jx_dir = os.path.join(work, "hf"), os.path.join(work, "jx")
  if not os.path.exists(os.path.join(hf_dir, "model.safetensors")):
    size = write_checkpoint(hf_dir, args.gb)
  else:
    size = os.path.getsize(os.path.join(hf_dir, "model.safetensors")) / 2**30
  if not os.path.exists(jx_dir):
    from vselect_jax.checkpoint.convert import convert
    convert(hf_dir, jx_dir, "float32", progress=False)
  rows = []
  for name, path, old in (
      ("HF safetensors, previous loader (numpy model, then device_put)",
       hf_dir, True),
      ("HF safetensors", hf_dir, False),
      ("converted (Orbax)", jx_dir, False)):
    for mesh in (False, True):
      base, peak, dt = measure(path, mesh, old)
      rows.append((name, "8 devices (fsdp 4 x tensor 2)" if mesh
                   else "1 device", base, peak, dt))
  from bench.forward import append_result, machine
  results = os.path.join(ROOT, "bench", "results.md")
  title = ("## Host memory while loading a ~1 GB checkpoint "
           "(bench/load_memory.py)")
  intro = ("A random Qwen2.5-VL-architecture checkpoint in float32, loaded "
           "by `from_pretrained` in a fresh process onto one CPU device or "
           "an 8-device simulated mesh. On the CPU backend device memory is "
           "host memory, so ~1x the checkpoint is the model itself, and the "
           "peak (VmHWM) also counts the memory-mapped file's pages that were "
           "read (~1x more for safetensors; page cache, reclaimable). The "
           "loader reads each device's block straight from the mapped file "
           "(HF) or tensorstore (converted); the previous loader held a "
           "whole-model numpy copy as well, before placing it.")
  columns = ("| machine | checkpoint GiB | source | placed on | RSS after "
             "imports GiB | peak RSS GiB | (peak - imports) / checkpoint | "
             "load s |")
  where = machine()
  for name, placed, base, peak, dt in rows:
    row = (f"| {where} | {size:.2f} | {name} | {placed} | {base:.2f} | "
           f"{peak:.2f} | {(peak - base) / size:.2f}x | {dt:.1f} |")
    print(row)
    append_result(results, title, intro, columns, row)
  return 0


if __name__ == "__main__":
  sys.exit(main())

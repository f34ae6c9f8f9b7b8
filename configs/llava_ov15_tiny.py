"""A seconds-long CPU run of the LLaVA-OV-1.5 recipe on a tiny model (the
suite's: ``tests/test_ov_e2e.py`` sets ``model_path`` and feeds packed rows
of two samples each, pooled per sample).

  python train.py --config configs/llava_ov15_tiny.py --workdir /tmp/ov \\
      --config.model_path=<tiny converted LLaVA-OV-1.5 dir> \\
      --config.data.registry.textvqa_ocrvqa_cambrian.annotation=...
"""
from configs import llava_ov15_8b


def get_config():
  c = llava_ov15_8b.get_config()
  c.param_dtype = "float32"
  c.compute_dtype = None
  c.export_dtype = "float32"
  c.total_steps = 3
  c.checkpoint_every = 3
  c.async_checkpointing = False
  c.remat = False
  c.global_batch_rows = 8
  c.optim.grad_accum = 1
  c.optim.lr = 3e-2
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 2, -1, 1
  c.data.row_length = 64
  c.data.patches_per_row = 128
  c.data.max_images_per_row = 2
  c.data.samples_per_row = 2
  c.data.mean_samples_per_row = 2
  c.data.num_workers = 0
  return c

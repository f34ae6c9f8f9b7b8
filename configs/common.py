"""Defaults shared by the training configs (the reference's recipe)."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.model_path = ""               # converted vselect-jax dir (or HF dir)
  c.param_dtype = "bfloat16"      # frozen backbone storage
  c.compute_dtype = "bfloat16"    # scorer cast for the forward; master fp32
  c.seed = 42
  c.budget = 0.2                  # fraction of visual tokens kept
  # What the scorer's top-k (and its mean key) pools in training: "row"
  # (every visual token of a packed row, as a device micro-batch of the
  # Qwen reference) or "sample" (each sample of a row on its own, as the
  # LLaVA-OV-1.5 reference with one sample per device).
  c.selection_pool = "row"
  # Where selection happens: None (or the tower's depth) after the vision
  # tower (the reference); j: after vision block j, training the in-tower
  # scorer visual.block_scorer (README, "Selection inside the vision tower").
  c.select_at = ml_collections.config_dict.placeholder(int)
  # How the soft mask m enters training: "scale" multiplies (the
  # reference); "attn_bias" adds log(m) to every attention logit of the
  # token's keys (m -> 0 is dropping).
  c.soft_mask = "scale"
  # The global batch: packed rows per optimizer step, all hosts together
  # (rows, not samples: a row holds as many samples as fit, so rows are the
  # exact count; data.mean_samples_per_row converts). Each host feeds
  # global_batch_rows / (optim.grad_accum * hosts) rows per micro-batch
  # (vselect_jax/training/global_batch.py); a count that does not divide
  # is an error.
  c.global_batch_rows = 32
  # Run length: total_steps if set, else ceil(epochs * records /
  # (global_batch_rows * data.mean_samples_per_row)).
  c.epochs = 1.0
  c.total_steps = ml_collections.config_dict.placeholder(int)
  c.prefetch_batches = 2          # host batches prepared ahead (a thread)
  c.checkpoint_every = 100
  c.keep_checkpoints = 2
  c.async_checkpointing = True
  c.log_every = 1
  c.remat = True
  c.export_dtype = "bfloat16"

  c.optim = ml_collections.ConfigDict(dict(
      lr=5e-5, warmup_ratio=0.03, weight_decay=0.0, clip_norm=1.0,
      grad_accum=2))
  # BCE weight w(step): start -> end, "linear" as the reference; "cosine",
  # "step", "constant_start", "constant_end" for ablations.
  c.reg = ml_collections.ConfigDict(dict(start=0.1, end=2.0, shape="linear"))
  # CE weighting (training/loss.py): "token_mean" weighs every supervised
  # token of a micro-batch alike; "reference_groups" is the reference's mean
  # of per-device token means, a group being rows_per_group packed rows.
  c.loss = ml_collections.ConfigDict(dict(ce_weighting="token_mean",
                                          rows_per_group=1))
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  # What trains (the reference's tune_* flags). Only the scorer by default;
  # backbone parts without the compressor train on plain CE with every
  # visual token, and the run ends with an HF checkpoint in <workdir>/hf.
  c.train_parts = ml_collections.ConfigDict(dict(
      tune_mm_vision=False, tune_mm_mlp=False, tune_mm_llm=False,
      tune_compressor=True))

  c.data = ml_collections.ConfigDict()
  c.data.mixture = "chartqa,coco%10,ocr_vqa"
  c.data.registry = ml_collections.ConfigDict()  # name -> {annotation, root}
  c.data.seed = 42
  # The scorer's mean key and the top-k pool over one packed row, as the
  # reference pools over one device micro-batch (3B: 8 samples, <= 512
  # visual tokens; 7B: 16 samples, <= 1024). These defaults are the 3B's:
  # rows of 2048 tokens hold 7.7 samples of the reference mix on average,
  # and 2048 patches at most 8 full-size (64-token) training images. A cap
  # of 8 samples per row would pad 6.8% of token slots where packing
  # densely pads 1.9% (bench/data.py), so rows pack densely.
  c.data.row_length = 2048        # tokens per packed row
  c.data.patches_per_row = 2048   # visual patches per row
  c.data.max_images_per_row = 32
  c.data.mean_samples_per_row = 7.7  # bench/data.py, reference-mix lengths
  c.data.samples_per_row = 0      # most samples per row; 0: as many as fit
  c.data.min_pixels = 784
  c.data.max_pixels = 50176       # <= 64 merged tokens per training image
  c.data.max_skip_fraction = 0.01
  c.data.num_workers = 8
  c.data.tokenizer_path = ""      # default: model_path
  # The model family the samples are built for (processor, positions, tag
  # format): "qwen2_5_vl" or "llava_ov15"; must match the model's.
  c.data.family = "qwen2_5_vl"
  return c

"""configs/smoke.py builds its own tiny model and data and trains; the BCE
term falls under the annealed weight."""
import importlib
import json

import pytest


def test_smoke_config_trains(tmp_path, monkeypatch):
  monkeypatch.setenv("VSELECT_CACHE", str(tmp_path / "cache"))
  import configs.smoke
  smoke = importlib.reload(configs.smoke)
  config = smoke.get_config()
  assert (tmp_path / "cache" / "model" / "tokenizer.json").exists()
  config.total_steps = 12
  config.checkpoint_every = 12
  from vselect_jax.training import loop
  result = loop.train(config, str(tmp_path / "run"), progress=False)
  assert int(result["state"].step) == 12
  lines = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert len(lines) == 12
  assert lines[-1]["bce"] < lines[0]["bce"] - 0.01
  assert lines[-1]["reg_weight"] > lines[0]["reg_weight"]
  assert (tmp_path / "run" / "scorer.safetensors").exists()

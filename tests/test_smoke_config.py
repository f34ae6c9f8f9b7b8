"""configs/smoke.py trains on its own tiny model and data once they are
built (an explicit step); the BCE term falls under the annealed weight.
Configs are pure: get_config() writes nothing."""
import importlib
import json
import os


def test_configs_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("VSELECT_CACHE", str(tmp_path / "cache"))
  import configs.smoke
  import configs.world
  smoke = importlib.reload(configs.smoke)
  world = importlib.reload(configs.world)
  smoke.get_config()
  world.get_config("backbone")
  world.get_config("selector")
  assert not os.path.exists(tmp_path / "cache")
  assert world.get_config().model_path == world.asset_paths()["model"]


def test_smoke_config_trains(tmp_path, monkeypatch):
  monkeypatch.setenv("VSELECT_CACHE", str(tmp_path / "cache"))
  import configs.smoke
  smoke = importlib.reload(configs.smoke)
  assets = smoke.build_assets()
  assert (tmp_path / "cache" / "model" / "tokenizer.json").exists()
  config = smoke.get_config()
  assert config.model_path == assets["model"]
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

"""Selection pictures line up with the token grid; sweep table and plot."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from vselect_jax.data import preprocess_image
from vselect_jax.eval import pictures, sweep_report


def test_token_map_blocks_in_raster_order():
  m = pictures.token_map(np.arange(6), (4, 6))   # 2 x 3 tokens
  assert m.shape == (56, 84)
  for r in range(2):
    for c in range(3):
      block = m[28 * r:28 * (r + 1), 28 * c:28 * (c + 1)]
      assert np.all(block == 3 * r + c)


def test_dim_dropped_on_28px_boundaries():
  img = np.full((56, 84, 3), 200, np.uint8)
  keep = np.array([True, False, True, True, True, False])
  out = pictures.dim_dropped(img, keep, (4, 6), factor=0.25)
  assert np.all(out[:28, 28:56] == 50) and np.all(out[28:, 56:] == 50)
  assert np.all(out[:28, :28] == 200) and np.all(out[:28, 56:] == 200)
  assert np.all(out[28:, :56] == 200)


def test_render_on_an_odd_image(tmp_path):
  rng = np.random.default_rng(0)
  arr = rng.integers(0, 255, (157, 301, 3), dtype=np.uint8)
  _, grid = preprocess_image(arr, 3136, 50176)
  grid = np.asarray(grid).reshape(-1)[1:]
  n = int(grid.prod()) // 4
  path = pictures.render_selection(
      Image.fromarray(arr), grid, rng.random(n), rng.random(n) < 0.3,
      str(tmp_path / "sel.png"), title="t")
  with Image.open(path) as im:
    assert im.size[0] > 100 and im.size[1] > 50 and im.mode in ("RGB",
                                                                "RGBA")
  # The processor's grid is the resized image's: 14 px per patch.
  assert pictures.resized(arr, grid).shape[:2] == (grid[0] * 14,
                                                   grid[1] * 14)


def test_bad_inputs_are_named(tmp_path):
  img = np.zeros((56, 84, 3), np.uint8)
  with pytest.raises(ValueError, match="one entry per merged token"):
    pictures.render_selection(img, (4, 6), np.zeros(5), np.ones(6, bool),
                              str(tmp_path / "a.png"))
  with pytest.raises(ValueError, match="even"):
    pictures.token_map(np.zeros(6), (3, 6))
  with pytest.raises(ValueError, match="finite"):
    pictures.render_selection(img, (4, 6), np.array([0, 1, np.nan, 0, 0, 0]),
                              np.ones(6, bool), str(tmp_path / "b.png"))


def test_sweep_table_and_plot(tmp_path):
  rows = [dict(method=m, budget=b, kept_fraction=b, metric=m_ * b,
               prefill_ms=None if m == "random" else 10 * b)
          for m, m_ in (("selector", 0.9), ("random", 0.5))
          for b in (0.1, 1.0, 0.3)]
  md, cs = tmp_path / "s.md", tmp_path / "s.csv"
  sweep_report.write_sweep_table(rows, str(md), str(cs), "accuracy")
  lines = md.read_text().splitlines()
  assert lines[0].startswith("| method | budget") and "accuracy" in lines[0]
  assert [l.split("|")[1].strip() + l.split("|")[2].strip()
          for l in lines[2:]] == ["random1", "random0.3", "random0.1",
                                  "selector1", "selector0.3", "selector0.1"]
  assert lines[2].endswith("| - |")
  back = list(csv.DictReader(open(cs)))
  assert len(back) == 6 and float(back[3]["metric"]) == pytest.approx(0.9)
  png = sweep_report.plot_sweep(rows, str(tmp_path / "s.png"))
  with Image.open(png) as im:
    assert im.size == (1000, 400)

"""The config states the global batch (rows per optimizer step, all hosts);
each host's share and the run length follow from it."""
import ml_collections
import pytest

from configs import qwen25vl_3b, qwen25vl_7b
from vselect_jax.training import global_batch


def test_7b_on_four_hosts_keeps_the_reference_batch_and_one_epoch():
  c = qwen25vl_7b.get_config()
  one = global_batch.make_plan(c, 1, records=144_384)
  four = global_batch.make_plan(c, 4, records=144_384)
  assert four.host_rows * four.grad_accum * 4 == one.host_rows * (
      one.grad_accum) == c.global_batch_rows == 32
  assert four.total_steps == one.total_steps
  assert 480 < four.samples_per_step < 520       # the reference's 512
  assert four.epochs == pytest.approx(1.0, abs=0.01)
  assert "global batch 32 rows/step" in four.describe()
  assert "1.00 epochs of 144,384 records" in four.describe()
  # Twice the epochs, twice the steps.
  c.epochs = 2.0
  assert global_batch.make_plan(c, 4, 144_384).total_steps == pytest.approx(
      2 * four.total_steps, abs=1)


def test_counts_that_do_not_divide_are_errors_that_say_so():
  c = qwen25vl_3b.get_config()
  with pytest.raises(ValueError, match="does not divide into grad_accum=2 "
                     "micro-batches x 3 hosts"):
    global_batch.host_rows(c, 3)
  with pytest.raises(ValueError, match="does not split over the 32 devices"):
    global_batch.check_batch_devices(c, 32)
  global_batch.check_batch_devices(c, 16)        # a v4-32: one row per chip


@pytest.mark.parametrize("steps", [0, -5])
def test_non_positive_step_counts_are_rejected(steps):
  c = qwen25vl_3b.get_config()
  c.total_steps = steps
  with pytest.raises(ValueError, match="total_steps must be a positive"):
    global_batch.make_plan(c, 1, records=1000)


def test_per_host_rows_key_is_refused():
  c = ml_collections.ConfigDict(dict(
      global_batch_rows=8, optim=dict(grad_accum=1),
      data=dict(rows_per_batch=8)))
  with pytest.raises(ValueError, match="replaced by config.global_batch_rows"):
    global_batch.host_rows(c, 1)


def test_derived_steps_need_the_record_count():
  c = qwen25vl_3b.get_config()
  with pytest.raises(ValueError, match="set --config.total_steps"):
    global_batch.make_plan(c, 1, records=None)


def test_rows_pool_like_each_reference():
  """The scorer's mean key and top-k pool over one packed row: 16
  full-size training images (<= 1024 visual tokens) for 7B, 8 for 3B, as
  each reference pools over its per-device micro-batch (16 / 8 samples)."""
  full = 50176 // (14 * 14)          # patches of a max_pixels image: 256
  seven, three = qwen25vl_7b.get_config(), qwen25vl_3b.get_config()
  assert seven.data.max_pixels == three.data.max_pixels == 50176
  assert seven.data.patches_per_row // full == 16
  assert three.data.patches_per_row // full == 8
  # Tokens for them too: ~15.6 samples per 4096-token row on the mix.
  assert seven.data.row_length == 2 * three.data.row_length == 4096

"""Bad keyword arguments and token ids are refused by name, before any
device work (issue 20)."""
import numpy as np
import pytest

import vselect_jax
from tests import hf_tiny


@pytest.fixture(scope="module")
def jx(tmp_path_factory):
  path = tmp_path_factory.mktemp("inputs") / "hf"
  hf_tiny.make_model("tied_w56", seed=3).save_pretrained(path)
  return vselect_jax.from_pretrained(str(path))


def test_a_misspelt_keyword_is_an_error_naming_the_right_one(jx):
  ids = np.array([[1, 2, 3]])
  with pytest.raises(TypeError, match="'budjet' \\(did you mean 'budget'"):
    jx.forward(ids, budjet=0.2)
  with pytest.raises(TypeError, match="max_new_token"):
    jx.generate(ids, max_new_token=3)
  # The HF processor's other outputs are accepted and ignored.
  out = jx.forward(ids, mm_token_type_ids=np.zeros_like(ids))
  assert out.logits.shape[:2] == (1, 3)


@pytest.mark.parametrize("bad", [1000, 5000, -1])
def test_token_ids_outside_the_vocabulary_are_refused(jx, bad):
  ids = np.array([[1, bad, 3]])
  with pytest.raises(ValueError, match=r"input_ids\[0, 1\] = .* outside the "
                     r"vocabulary \[0, 1000\)"):
    jx.forward(ids)
  with pytest.raises(ValueError, match="outside the vocabulary"):
    jx.generate(ids, max_new_tokens=2)
  # Padding positions may hold anything.
  jx.forward(ids, attention_mask=np.array([[1, 0, 1]]))

"""Benchmark metrics, one module per family, written to reproduce the
official scripts (and where they differ, lmms-eval, which produced the
VisionSelector numbers). Pure Python: no model, no JAX."""
from vselect_jax.eval.metrics.anls import anls_score, levenshtein
from vselect_jax.eval.metrics.choice import (choice_accuracy,
                                             extract_choice_letter,
                                             first_option_letter,
                                             option_letters)
from vselect_jax.eval.metrics.mme import (mme_scores, mme_totals,
                                          parse_yes_no)
from vselect_jax.eval.metrics.mmmu import (mmmu_correct, parse_multi_choice,
                                           parse_open)
from vselect_jax.eval.metrics.ocrbench import ocrbench_match, ocrbench_totals
from vselect_jax.eval.metrics.pope import parse_pope_answer, pope_metrics
from vselect_jax.eval.metrics.relaxed import (relaxed_accuracy,
                                              relaxed_correctness)
from vselect_jax.eval.metrics.vqa import normalize_vqa_answer, vqa_accuracy

__all__ = [
    "anls_score", "levenshtein", "choice_accuracy", "extract_choice_letter",
    "first_option_letter", "option_letters", "mme_scores", "mme_totals", "parse_yes_no",
    "mmmu_correct", "parse_multi_choice", "parse_open", "ocrbench_match",
    "ocrbench_totals", "parse_pope_answer", "pope_metrics",
    "relaxed_accuracy", "relaxed_correctness", "normalize_vqa_answer",
    "vqa_accuracy",
]

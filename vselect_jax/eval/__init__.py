"""Model-free evaluation: benchmark metrics, the task table (prompts,
generation limits), the local JSONL data format, the lmms-lab parquet
converter and ``score`` (scoring saved predictions)."""
from vselect_jax.eval.records import (EvalDataError, EvalRecord, Prediction,
                                      load_predictions, load_records)
from vselect_jax.eval.tasks import (TASKS, TaskResult, TaskSpec, build_prompt,
                                    cut_at_stop, get_task, score_task)

__all__ = ["EvalDataError", "EvalRecord", "Prediction", "load_predictions",
           "load_records", "TASKS", "TaskResult", "TaskSpec", "build_prompt",
           "cut_at_stop", "get_task", "score_task"]

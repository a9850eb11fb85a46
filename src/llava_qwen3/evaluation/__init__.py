"""Evaluation: captioning and VQA metrics with the reference implementations, the eval command over record files on
any inference backend, and a model wrapper for the lmms-eval harness (`lmms_model`, loaded by lmms-eval itself).

    from llava_qwen3.evaluation import evaluate, vqa_accuracy, caption_scores
"""

from .captioning import CAPTION_METRICS, SPICE_LEFT_OUT, CaptionScorer, JavaMissingError, caption_scores, check_java
from .data import TASKS, EvalItem, EvalSet, load_eval_set
from .run import EvalReport, EvalRun, evaluate
from .vqa import normalize_answer, vqa_accuracy, vqa_scores

__all__ = [
    "CAPTION_METRICS",
    "SPICE_LEFT_OUT",
    "TASKS",
    "CaptionScorer",
    "EvalItem",
    "EvalReport",
    "EvalRun",
    "EvalSet",
    "JavaMissingError",
    "caption_scores",
    "check_java",
    "evaluate",
    "load_eval_set",
    "normalize_answer",
    "vqa_accuracy",
    "vqa_scores",
]

"""Measures of annotation quality: how far model predictions are from the corrected labels."""

from core.metrics.coco_eval import (
    APScores,
    EvalResult,
    EvaluationError,
    ImageEval,
    evaluate_instances,
)

__all__ = ["APScores", "EvalResult", "EvaluationError", "ImageEval", "evaluate_instances"]

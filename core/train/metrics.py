"""Dice and IoU per class from a confusion matrix (numpy; torch-free).

Pixels whose true label is negative (padding, unlabelled) are ignored. A class absent from both
the truth and the prediction has no score (NaN) and is left out of the means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = truth, columns = prediction; negative truth ignored."""
    truth = np.asarray(truth).ravel().astype(np.int64)
    prediction = np.asarray(prediction).ravel().astype(np.int64)
    if truth.shape != prediction.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {prediction.size}")
    keep = (truth >= 0) & (truth < num_classes) & (prediction >= 0) & (prediction < num_classes)
    index = truth[keep] * num_classes + prediction[keep]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes,
                                                                            num_classes)


@dataclass
class SegmentationScores:
    """Per-class Dice and IoU (NaN for a class in neither truth nor prediction) and means."""

    classes: list[str]
    dice: list[float]
    iou: list[float]
    pixels: list[int]

    @property
    def mean_dice(self) -> float:
        return _nanmean(self.dice)

    @property
    def mean_iou(self) -> float:
        return _nanmean(self.iou)

    def to_json(self) -> dict:
        def clean(value: float) -> float | None:
            return None if np.isnan(value) else round(float(value), 6)

        return {"mean_dice": clean(self.mean_dice), "mean_iou": clean(self.mean_iou),
                "per_class": [{"class": name, "dice": clean(d), "iou": clean(i),
                               "pixels": int(p)}
                              for name, d, i, p in zip(self.classes, self.dice, self.iou,
                                                       self.pixels, strict=True)]}


def scores_from_confusion(matrix: np.ndarray, classes: Sequence[str] | None = None,
                          ) -> SegmentationScores:
    """Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN) per class."""
    matrix = np.asarray(matrix, np.float64)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    names = list(classes) if classes is not None else [f"class {i}" for i in range(len(tp))]
    return SegmentationScores(names, dice.tolist(), iou.tolist(),
                              matrix.sum(axis=1).astype(np.int64).tolist())


def segmentation_scores(truth: np.ndarray, prediction: np.ndarray, num_classes: int,
                        classes: Sequence[str] | None = None) -> SegmentationScores:
    """Dice and IoU of one label map (or a batch) against the truth."""
    return scores_from_confusion(confusion_matrix(truth, prediction, num_classes), classes)


def _nanmean(values: Sequence[float]) -> float:
    array = np.asarray(values, np.float64)
    array = array[~np.isnan(array)]
    return float(array.mean()) if array.size else float("nan")


def agreement_dice(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Mean Dice over the foreground classes present in either map: how much of a model's
    prediction the person kept (1.0: nothing corrected). None when both are all background or
    the shapes differ."""
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if prediction.shape != truth.shape:
        return None
    classes = np.union1d(np.unique(prediction), np.unique(truth))
    scores = []
    for value in classes[classes != 0]:
        a, b = prediction == value, truth == value
        scores.append(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    return float(np.mean(scores)) if scores else None

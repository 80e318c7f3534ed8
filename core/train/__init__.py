"""Training semantic models on a project's corrected labels or an exported dataset.

Importing this package does not import torch: :mod:`core.train.data` (samples, split,
augmentations) and :mod:`core.train.metrics` (Dice, IoU) are numpy only; the names of
:mod:`core.train.loop` (``train``, ``TrainConfig``, ``TrainResult``, ``evaluate_model``) load
torch on first use.

Example::

    from core.train import TrainConfig, dataset_from_project, train

    data = dataset_from_project("my_project", items="done")
    result = train(TrainConfig("unet", out="unet_best.pt", epochs=30, patch=256), data)
"""

from __future__ import annotations

import importlib
from typing import Any

from core.train.data import (
    Augmentation,
    TrainDataError,
    TrainDataset,
    TrainSample,
    check_dataset,
    class_weights,
    dataset_from_folder,
    dataset_from_project,
    split_dataset,
)
from core.train.metrics import (
    SegmentationScores,
    confusion_matrix,
    scores_from_confusion,
    segmentation_scores,
)

_LAZY = {name: "core.train.loop" for name in (
    "TrainConfig", "TrainResult", "TrainError", "train", "evaluate_model", "dice_loss",
    "write_log", "LOSSES", "OPTIMIZERS", "SCHEDULES", "LOG_COLUMNS")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Augmentation", "SegmentationScores", "TrainDataError", "TrainDataset", "TrainSample",
    "check_dataset", "class_weights", "confusion_matrix", "dataset_from_folder",
    "dataset_from_project", "scores_from_confusion", "segmentation_scores", "split_dataset",
    *_LAZY,
]

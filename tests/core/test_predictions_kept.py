"""A semantic model's prediction kept per item (with its mean confidence), and the Dice that says
how much of it the person kept."""

from __future__ import annotations

import numpy as np
import pytest

from core.project.store import Project
from core.train.metrics import agreement_dice


def test_kept_prediction_round_trip(tmp_path, sample_dir):
    labels = np.zeros((4, 6), np.uint16)
    labels[1:3, 2:5] = 300
    with Project.create(tmp_path / "p") as project:
        (item_id,) = project.add_items([sample_dir / "camera.png"]).added_ids
        assert project.load_class_prediction(item_id) is None
        project.save_class_prediction(item_id, "unet", labels, 0.75)
        project.save_class_prediction(item_id, "unet", labels, 0.8)  # the last one is kept
    with Project.open(tmp_path / "p") as project:
        model, kept = project.load_class_prediction(item_id)
        assert model == "unet" and kept.dtype == np.uint16 and np.array_equal(kept, labels)
        assert project.prediction_confidences() == {item_id: pytest.approx(0.8)}


def test_agreement_dice_by_hand():
    prediction = np.array([[1, 1, 0, 0], [2, 2, 0, 0]])
    truth = np.array([[1, 0, 0, 0], [2, 2, 2, 0]])
    # class 1: 2*1/(2+1) = 2/3; class 2: 2*2/(2+3) = 4/5
    assert agreement_dice(prediction, truth) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert agreement_dice(prediction, prediction) == 1.0
    assert agreement_dice(np.zeros((2, 2)), np.zeros((2, 2))) is None
    assert agreement_dice(np.zeros((2, 2)), np.zeros((3, 2))) is None

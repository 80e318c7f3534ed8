"""Semantic predictions kept per part of an item (the whole item, a video frame, a slice of a
volume along any axis), the v5 -> v6 migration that keeps the older whole-item rows, and the
item's Dice and confidence computed from its parts."""

from __future__ import annotations

import shutil
import sqlite3
import zlib

import cv2
import numpy as np
import pytest
import torch
from dicom_series import make_series
from skimage import data

from core.errors import ProjectError
from core.project.predictions import WHOLE_ITEM, PredictedPart, part_of_view
from core.project.schema import _V5, SCHEMA_VERSION
from core.project.store import Project


@pytest.fixture
def volume_project(tmp_path):
    """A project holding a 4 x 128 x 128 CT volume (copies of pydicom's CT_small.dcm)."""
    project = Project.create(tmp_path / "project")
    item = project.add_volume(make_series(tmp_path / "study"))
    assert item.mask_shape == (4, 128, 128)
    yield project, item
    project.close()


@pytest.fixture
def video_project(tmp_path):
    """A project holding a 6-frame video (a folder of 32 x 48 crops of scikit-image's camera)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    camera = data.camera()
    for t in range(6):
        cv2.imwrite(str(folder / f"f{t}.png"), camera[200:232, 200 + 3 * t:248 + 3 * t])
    project = Project.create(tmp_path / "project")
    item = project.add_video(folder)
    assert item.kind == "video" and item.frames == 6 and item.mask_shape == (32, 48)
    yield project, item
    project.close()


def test_parts_are_kept_apart_and_a_newer_one_replaces_the_same_part(volume_project):
    project, item = volume_project
    axial = np.zeros((128, 128), np.uint8)
    axial[:10, :10] = 1
    sagittal = np.full((4, 128), 2, np.uint16)
    project.save_class_prediction(item.id, "unet", axial, 0.9, PredictedPart.slice(0, 1))
    project.save_class_prediction(item.id, "deeplab", sagittal, 0.6, PredictedPart.slice(2, 5))
    parts = project.class_prediction_parts(item.id)
    assert [(p.part, p.model, p.confidence) for p in parts] == [
        (PredictedPart("z", 1), "unet", 0.9), (PredictedPart("x", 5), "deeplab", 0.6)]
    assert parts[0].created <= parts[1].created
    assert parts[1].labels.dtype == np.uint16 and np.array_equal(parts[1].labels, sagittal)
    assert project.load_class_prediction(item.id) is None  # no whole-volume prediction

    again = np.zeros((128, 128), np.uint8)  # the same slice run again: it replaces the first
    project.save_class_prediction(item.id, "unet", again, 0.95, PredictedPart.slice(0, 1))
    parts = project.class_prediction_parts(item.id)
    assert [p.part for p in parts] == [PredictedPart("x", 5), PredictedPart("z", 1)]  # newest last
    assert not parts[1].labels.any() and parts[1].confidence == 0.95
    model, kept = project.load_class_prediction(item.id, PredictedPart.slice(2, 5))
    assert model == "deeplab" and np.array_equal(kept, sagittal)

    whole = np.ones(item.mask_shape, np.uint8)  # a whole-volume run covers every slice
    project.save_class_prediction(item.id, "unet", whole, 0.7)
    (part,) = project.class_prediction_parts(item.id)
    assert part.part == WHOLE_ITEM and np.array_equal(part.labels, whole)
    assert project.prediction_confidences() == {item.id: pytest.approx(0.7)}

    with pytest.raises(ProjectError, match="2-D"):
        project.save_class_prediction(item.id, "unet", whole, 0.7, PredictedPart.frame(2))
    with pytest.raises(ProjectError, match="axis 0, 1 or 2"):
        PredictedPart.slice(3, 0)
    with pytest.raises(ProjectError, match="Unknown part"):
        PredictedPart("page", 0)


def test_predictions_survive_reopening(tmp_path, volume_project):
    project, item = volume_project
    coronal = np.zeros((4, 128), np.uint8)
    coronal[1:3, 40:50] = 1
    project.save_class_prediction(item.id, "unet", coronal, 0.8, PredictedPart.slice(1, 64))
    project.close()
    with Project.open(tmp_path / "project") as reopened:
        model, kept = reopened.load_class_prediction(item.id, PredictedPart("y", 64))
        assert model == "unet" and np.array_equal(kept, coronal)
        assert reopened.prediction_confidences() == {item.id: pytest.approx(0.8)}


def test_a_slice_shown_in_any_view_is_kept_in_array_order():
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    for axes in ((0, 1, 2), (1, 0, 2), (2, 0, 1), (2, 1, 0), (1, 2, 0)):
        shown = volume.transpose(axes)[3]  # what a view cutting across axes[0] shows
        part, labels = part_of_view((3,), axes, shown)
        assert part == PredictedPart.slice(axes[0], 3)
        assert np.array_equal(labels, np.take(volume, 3, axis=axes[0])), axes
    image = np.zeros((5, 6), np.uint8)
    assert part_of_view((), (0, 1), image) == (WHOLE_ITEM, image)
    assert part_of_view((), (), image, frame=7)[0] == PredictedPart.frame(7)


def test_volume_dice_and_confidence_over_two_slices_on_different_axes(volume_project):
    project, item = volume_project
    axial = np.zeros((128, 128), np.uint8)  # slice z = 1
    axial[:10, :10] = 1
    sagittal = np.zeros((4, 128), np.uint8)  # slice x = 5, made after the axial one
    sagittal[:, :20] = 1
    project.save_class_prediction(item.id, "unet", axial, 0.9, PredictedPart.slice(0, 1))
    project.save_class_prediction(item.id, "unet", sagittal, 0.6, PredictedPart.slice(2, 5))

    labels = np.zeros(item.mask_shape, np.uint8)
    labels[:, :20, 5] = 1  # the person kept the sagittal prediction...
    labels[1, :10, :8] = 1  # ...narrowed the axial square by two columns...
    labels[3, 100:110, 100:110] = 2  # ...and drew elsewhere, where no prediction was kept
    project.save_mask(item.id, labels)
    # Predicted class 1: z = 1 holds the 10 x 10 square and, from the newer x = 5 slice,
    # rows 10-19 of column 5 (110 voxels); x = 5 adds 20 rows on the three other slices (60).
    # The labels: 80 (square) + 20 (column 5, rows 0-19) - 10 (both) on z = 1, 60 elsewhere;
    # in common: 90 on z = 1 and 60 elsewhere. Class 2 lies outside the predicted slices.
    expected = 2 * (90 + 60) / ((110 + 60) + (90 + 60))
    assert project.prediction_agreement(item) == pytest.approx(expected) == 0.9375
    confidence = (0.9 * 128 * 128 + 0.6 * 4 * 128) / (128 * 128 + 4 * 128)  # pixel-weighted
    assert project.prediction_confidences() == {item.id: pytest.approx(confidence)}

    labels[1, :10, 8:10] = 1  # undo the correction: every predicted voxel kept
    assert project.prediction_agreement(item, labels) == 1.0  # labels the caller holds
    project.save_mask(item.id, labels)
    assert project.prediction_agreement(item) == 1.0


def test_video_dice_and_confidence_over_two_frames(video_project):
    project, item = video_project
    first = np.zeros((32, 48), np.uint8)
    first[:10, :10] = 1
    fourth = np.zeros((32, 48), np.uint8)
    fourth[:4, :5] = 2
    project.save_class_prediction(item.id, "unet", first, 0.7, PredictedPart.frame(1))
    project.save_class_prediction(item.id, "unet", fourth, 0.5, PredictedPart.frame(4))
    assert project.prediction_agreement(item) == 0.0  # frames unlabelled: nothing kept
    corrected_first = np.zeros((32, 48), np.uint8)
    corrected_first[:10, :5] = 1  # half the square erased
    corrected_fourth = fourth.copy()
    corrected_fourth[20:25, :4] = 1  # class 1 added
    project.save_mask(item.id, corrected_first, frame=1)
    project.save_mask(item.id, corrected_fourth, frame=4)
    project.save_mask(item.id, np.ones((32, 48), np.uint8), frame=2)  # not predicted: ignored
    # class 1: predicted 100, labelled 50 + 20, in common 50; class 2: 20, 20, 20
    expected = (2 * 50 / (100 + 70) + 1.0) / 2
    assert project.prediction_agreement(item) == pytest.approx(expected)
    assert project.prediction_confidences() == {item.id: pytest.approx((0.7 + 0.5) / 2)}
    # the frame being edited, newer than what is stored
    assert project.prediction_agreement(item, frames={1: first}) == pytest.approx(
        (2 * 100 / (100 + 120) + 1.0) / 2)


def test_a_version_5_project_keeps_its_predictions_as_whole_items(tmp_path, sample_dir):
    labels = np.zeros((512, 512), np.uint8)
    labels[100:200, 50:150] = 1
    with Project.create(tmp_path / "old") as project:
        (item_id,) = project.add_items([sample_dir / "camera.png"]).added_ids
        project.save_mask(item_id, labels)
    db = sqlite3.connect(tmp_path / "old" / "project.sqlite")
    db.execute("DROP TABLE part_predictions")
    db.executescript(_V5)
    db.execute("INSERT INTO class_predictions (item_id, model, shape, dtype, data, confidence) "
               "VALUES (?, 'unet', '[512, 512]', ?, ?, 0.75)",
               (item_id, labels.dtype.str, zlib.compress(labels.tobytes())))
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()
    with Project.open(tmp_path / "old") as project:
        (part,) = project.class_prediction_parts(item_id)
        assert part.part == WHOLE_ITEM and part.model == "unet" and part.created is None
        assert np.array_equal(part.labels, labels)
        assert project.prediction_confidences() == {item_id: pytest.approx(0.75)}
        assert project.prediction_agreement(project.item(item_id)) == 1.0
    db = sqlite3.connect(tmp_path / "old" / "project.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "part_predictions" in tables and "class_predictions" not in tables
    db.close()


def test_predicting_a_stack_item_keeps_the_whole_stack(tmp_path, sample_dir):
    """The batch (``segstudio-cli predict --project``, Models > All items) keeps a stack's
    prediction too, with the mean confidence of its pages."""
    from core.inference.engine import InferenceEngine, InferenceSettings
    from core.models import get_model
    from core.models.loading import load_model, save_checkpoint
    from core.predict import predict_items

    kwargs = {"base_channels": 8, "depth": 2}
    torch.manual_seed(1)
    model = get_model("unet", num_classes=2, in_channels=1, **kwargs)
    with torch.no_grad():  # random weights whose output depends on the image
        model.head.bias.zero_()
        model.head.weight.mul_(10)
    weights = save_checkpoint(tmp_path / "unet.pt", "unet", model, ["background", "thing"], 1,
                              [0.5], [0.25], model_kwargs=kwargs)
    shutil.copy(sample_dir / "camera_stack.tif", tmp_path / "stack.tif")
    engine = InferenceEngine(InferenceSettings(device="cpu", tile_size=160))
    loaded = load_model("unet", weights=weights)
    with Project.create(tmp_path / "project") as project:
        (item_id,) = project.add_items([tmp_path / "stack.tif"]).added_ids
        item = project.item(item_id)
        assert item.mask_shape == (5, 160, 160)
        summary = predict_items(engine, loaded, project, [item])
        assert summary.written == ["stack"]
        from core.io import load_image

        pages = [engine.predict(loaded, page) for page in load_image(tmp_path / "stack.tif").array]
        model, kept = project.load_class_prediction(item_id)
        assert model == "unet" and np.array_equal(kept, np.stack([p.labels for p in pages]))
        by_hand = np.mean([p.confidence.mean() for p in pages])
        assert project.prediction_confidences() == {item_id: pytest.approx(by_hand)}
        # its labels are the prediction: all kept (None: all background, nothing to compare)
        assert kept.any() and project.prediction_agreement(project.item(item_id)) == 1.0

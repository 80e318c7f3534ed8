"""CT/MR volumes in the window: open a DICOM series or a NIfTI, page through slices, paint a
slice, pick a series or a volume when there are several, find the strokes after reopening."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel.testing
import numpy as np
import pydicom
import pytest
from dicom_series import write_series
from helpers import drag, line
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from app.main_window import MainWindow
from core.project.store import Project


def test_open_a_dicom_series_page_and_paint_a_slice(qtbot, window, tmp_path):
    study = write_series(tmp_path / "study", [7.5, 0.0, 5.0, 2.5])  # written out of order
    assert window.open_paths([str(study)])
    item = window.workspace.item
    assert item.kind == "volume" and item.mask_shape == (4, 128, 128)
    assert window.display_panel.frame_label.text() == "Slice"
    volume = window.workspace.image
    assert volume.shape == (4, 128, 128) and volume.dtype == np.int16  # HU
    raw = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    hu = raw.pixel_array * float(raw.RescaleSlope) + float(raw.RescaleIntercept)
    assert np.array_equal(volume[0], hu.astype(np.int16))

    window.display_panel.frame.setValue(3)  # third slice, counted from 1
    assert window.workspace.frame == 2
    canvas = window.canvas
    window.tools.set_brush_size(5)
    drag(qtbot, canvas.viewport(),
         line(canvas.map_image_to_widget(20, 64), canvas.map_image_to_widget(100, 64), 8))
    labels = window.workspace.session.labels
    assert labels[2, 64, 20:101].all()
    assert not labels[[0, 1, 3]].any()
    window.close()

    with Project.open(study / ".segstudio") as project:
        (volume_item,) = project.items()
        assert np.array_equal(project.load_mask(volume_item), labels)


def test_several_series_ask_which_one(qtbot, window, tmp_path, monkeypatch):
    study = tmp_path / "study"
    write_series(study / "a", [0.0, 2.5], series_uid=generate_uid())
    write_series(study / "b", [0.0, 2.5, 5.0], series_uid=generate_uid())
    asked: list[list[str]] = []

    def choose(question, options):
        asked.append(options)
        return next(i for i, label in enumerate(options) if "3 x" in label)

    window.workspace.chooser = choose
    assert window.open_paths([str(study)])
    assert len(asked) == 1 and len(asked[0]) == 2
    assert window.workspace.item.frames == 3


def test_a_4d_nifti_asks_for_a_volume(qtbot, window, tmp_path):
    source = Path(nibabel.testing.data_path) / "example4d.nii.gz"
    folder = tmp_path / "mri"
    folder.mkdir()
    shutil.copy(source, folder)
    window.workspace.chooser = lambda question, options: 1
    assert window.open_paths([str(folder / "example4d.nii.gz")])
    item = window.workspace.item
    assert item.kind == "volume" and item.extra.get("volume_index") == 1

    refused = MainWindow()
    qtbot.add_widget(refused)
    shown: list[str] = []
    refused._show_error = shown.append
    refused.workspace.chooser = lambda question, options: None  # the person cancels
    other = tmp_path / "mri2"
    other.mkdir()
    shutil.copy(source, other)
    refused.open_paths([str(other / "example4d.nii.gz")])
    assert refused.workspace.items == []
    refused.close()


def test_3d_panel_interpolates_fills_a_range_and_keeps_the_largest(qtbot, window, tmp_path):
    from core.annotation.tools import PaintRule

    study = write_series(tmp_path / "study", [0.0, 2.5, 5.0, 7.5, 10.0])
    window.open_paths([str(study)])
    ws, panel = window.workspace, window.volume_panel
    session = ws.session
    for frame, radius in ((0, 10), (4, 20)):
        session.plane = (frame,)
        square = [(64 - radius, 64 - radius), (64 + radius, 64 - radius),
                  (64 + radius, 64 + radius), (64 - radius, 64 + radius)]
        session.polygon(square, PaintRule(1))
    session.plane = (0,)
    steps = len(session.history)

    panel.interpolate.click()
    labels = session.labels
    areas = [int((labels[z] == 1).sum()) for z in range(5)]
    assert areas[0] < areas[1] < areas[2] < areas[3] < areas[4]
    assert len(session.history) == steps + 1
    assert "Interpolated" in panel.status.text()
    window.undo()
    assert not labels[1:4].any()

    window.workspace.add_class("bone")
    window.tools.set_class_index(2)
    window.display_panel.frame.setValue(3)  # slice index 2
    panel.low.setValue(300)
    panel.high.setValue(3000)
    panel.scope.setCurrentIndex(panel.scope.findData("slice"))
    before = labels.copy()
    panel.fill.click()
    bone = (ws.image >= 300) & (ws.image <= 3000)
    expected = before.copy()
    expected[2][bone[2] & (before[2] == 0)] = 2
    assert np.array_equal(labels, expected)  # only slice 2, only background pixels
    assert (labels[2] == 2).sum() > 100

    panel.largest.click()  # bone on one slice: the spine plus small specks
    remaining = labels == 2
    from core.annotation.volume_tools import connected_components_3d

    assert connected_components_3d(labels, 2)[1] == 1
    assert remaining.sum() <= bone[2].sum()


def test_3d_panel_explains_what_it_needs(qtbot, window, tmp_path, sample_dir):
    panel = window.volume_panel
    panel.interpolate.click()
    assert "Open a volume" in panel.status.text()
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sample_dir / "camera.png", folder)
    window.open_paths([str(folder)])
    panel.interpolate.click()
    assert "works across slices" in panel.status.text()
    window.tools.set_class_index(0)
    panel.fill.click()
    assert "other than background" in panel.status.text()


def test_a_model_runs_over_every_slice_as_one_undo_step(qtbot, window, tmp_path):
    import torch

    torch.manual_seed(0)
    study = write_series(tmp_path / "study", [0.0, 2.5, 5.0])
    window.open_paths([str(study)])
    panel = window.models_panel
    panel.model.setCurrentIndex(panel.model.findData("unet"))
    panel.weights.setCurrentIndex(panel.weights.findData(None))
    panel.device.setCurrentText("cpu")
    panel.tile.setValue(128)
    session = window.workspace.session
    steps = len(session.history)
    with qtbot.waitSignal(panel.applied, timeout=60000) as applied:
        panel.buttons["volume"].click()
    prediction = applied.args[0]
    assert prediction.labels.shape == (3, 128, 128)
    engine = panel._engine
    loaded = engine.load("unet", weights=None, num_classes=2)
    for z in range(3):  # each slice equals the model run on that slice alone
        alone = engine.predict(loaded, window.workspace.image[z]).labels
        assert np.array_equal(window.workspace.session.labels[z], alone)
    assert len(session.history) == steps + 1
    panel.confidence.setChecked(True)
    window.display_panel.frame.setValue(2)
    assert window.canvas.confidence_visible()
    window.undo()
    assert not window.workspace.session.labels.any()


def test_right_drag_sets_the_window_on_volumes_and_pans_on_photos(qtbot, window, tmp_path,
                                                                  sample_dir):
    from PySide6.QtCore import Qt

    study = write_series(tmp_path / "study", [0.0, 2.5])
    window.open_paths([str(study)])
    canvas = window.canvas
    low, high = canvas.levels()
    view = canvas.view_rect()
    centre = canvas.map_image_to_widget(64, 64)
    drag(qtbot, canvas.viewport(), line(centre, centre + type(centre)(64, 32), 8),
         button=Qt.MouseButton.RightButton)
    new_low, new_high = canvas.levels()
    assert new_high - new_low > high - low  # dragged right: a wider window
    assert (new_low + new_high) / 2 > (low + high) / 2  # dragged down: a higher level
    assert canvas.view_rect() == view  # no panning
    assert window.display_panel.level_high.value() == pytest.approx(new_high, abs=0.1)

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sample_dir / "camera.png", photos)
    other = MainWindow()
    qtbot.add_widget(other)
    other.resize(800, 600)
    other.show()
    other.open_paths([str(photos)])
    levels, view = other.canvas.levels(), other.canvas.view_rect()
    start = other.canvas.map_image_to_widget(200, 200)
    drag(qtbot, other.canvas.viewport(), line(start, start + type(start)(60, 0), 6),
         button=Qt.MouseButton.RightButton)
    assert other.canvas.levels() == levels and other.canvas.view_rect() != view  # panned
    other.close()


def test_import_a_nifti_label_volume_onto_the_open_volume(qtbot, window, tmp_path):
    from PySide6.QtWidgets import QDialogButtonBox

    from core.annotation.tools import PaintRule, fill_polygon
    from core.io.nifti import save_label_nifti
    from core.io.volumes import load_item_volume

    study = write_series(tmp_path / "study", [0.0, 2.5, 5.0])
    window.open_paths([str(study)])
    item = window.workspace.item
    labels = np.zeros(item.mask_shape, np.uint8)
    fill_polygon(labels, [(10, 10), (90, 15), (50, 80)], PaintRule(1), plane=(1,))
    save_label_nifti(labels, load_item_volume(item).affine, tmp_path / "labels.nii.gz")

    window.show_import()
    dialog = window.import_dialog
    dialog.format.setCurrentIndex(dialog.format.findData("nifti"))
    dialog.folder.setText(str(tmp_path / "labels.nii.gz"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=20000)
    assert f"Imported {int(labels.sum()):,} labelled voxels" in dialog.status.text()
    dialog.reject()
    assert np.array_equal(window.workspace.session.labels, labels)

    wrong = np.zeros((3, 64, 64), np.uint8)  # another shape: refused, nothing changes
    save_label_nifti(wrong, load_item_volume(item).affine, tmp_path / "wrong.nii.gz")
    window.show_import()
    dialog = window.import_dialog
    dialog.format.setCurrentIndex(dialog.format.findData("nifti"))
    dialog.folder.setText(str(tmp_path / "wrong.nii.gz"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=20000)
    assert "64" in dialog.status.text() and "128" in dialog.status.text()
    dialog.reject()
    assert np.array_equal(window.workspace.session.labels, labels)

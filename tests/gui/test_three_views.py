"""Axial, coronal and sagittal views of a volume: the three-view layout with its linked crosshair,
painting on a side view, the slice wheel, true aspect from the voxel spacing, the radiological
flips, one window for every view and what the status bar says under the cursor."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel.testing
import numpy as np
import pytest
from dicom_series import write_series
from helpers import click, drag, line
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication


@pytest.fixture
def brain(tmp_path) -> Path:
    """nibabel's anatomical.nii: a real MR head, (x, y, z) = (33, 41, 25), 2 mm voxels."""
    path = tmp_path / "anatomical.nii"
    shutil.copy(Path(nibabel.testing.data_path) / "anatomical.nii", path)
    return path


def three_views(qtbot, window) -> dict[int, object]:
    """Switch to the three-view layout; returns {axis: canvas}."""
    window.actions_by_id["view_three"].trigger()
    qtbot.wait(10)
    assert window.views.three and window.views.side.isVisible()
    return {axis: canvas for canvas, axis in window.view_axes()}


def wheel(canvas, steps: int, modifiers=Qt.KeyboardModifier.NoModifier) -> None:
    pos = QPointF(canvas.viewport().width() / 2, canvas.viewport().height() / 2)
    event = QWheelEvent(pos, QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0),
                        QPoint(0, 120 * steps), Qt.MouseButton.NoButton, modifiers,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), event)


def test_three_views_show_the_three_cuts_through_the_cursor(qtbot, window, brain):
    assert window.open_paths([str(brain)])
    ws = window.workspace
    volume = ws.image
    assert volume.shape == (25, 41, 33)
    assert ws.position == [12, 20, 16]  # a volume opens in its middle
    canvases = three_views(qtbot, window)
    assert [g.name for g in ws.geometries] == ["axial", "coronal", "sagittal"]
    for axis, canvas in canvases.items():
        geometry = ws.geometry(axis)
        expected = volume.transpose(geometry.axes)[ws.position[axis]]
        assert np.array_equal(canvas.image(), expected)
        # each view marks where the other two cut it: column and row of the 3-D cursor
        vertical, horizontal = canvas.crosshair
        assert vertical.isVisible() and horizontal.isVisible()
        assert vertical.value() == ws.position[geometry.axes[2]]
        assert horizontal.value() == ws.position[geometry.axes[1]]
    # the coronal slice is (slices, columns) of the volume at the cursor's row
    assert canvases[1].image().shape == (25, 33)
    assert np.array_equal(canvases[1].image(), volume[:, 20, :])

    window.actions_by_id["view_three"].trigger()  # back to one view: no crosshair
    assert not window.views.three
    assert not window.canvas.crosshair[0].isVisible()


def test_crosshair_tool_points_the_other_views_at_the_clicked_voxel(qtbot, window, brain):
    window.open_paths([str(brain)])
    ws = window.workspace
    canvases = three_views(qtbot, window)
    window.actions_by_id["tool_crosshair"].trigger()
    axial = canvases[0]
    click(axial.viewport(), axial.map_image_to_widget(7, 30))  # column 7, row 30 of slice 12
    assert ws.position == [12, 30, 7]
    assert np.array_equal(canvases[1].image(), ws.image[:, 30, :])
    assert np.array_equal(canvases[2].image(), ws.image[:, :, 7])
    assert canvases[1].crosshair[0].value() == 7  # the coronal view's column line
    assert not ws.session.labels.any()  # the crosshair never paints

    # a click on the sagittal view moves the slice and the row of the others
    sagittal = canvases[2]
    geometry = ws.geometry(2)
    assert geometry.axes == (2, 0, 1)  # rows are slices, columns are rows of the volume
    click(sagittal.viewport(), sagittal.map_image_to_widget(10, 4))
    assert ws.position == [4, 10, 7]
    assert np.array_equal(canvases[0].image(), ws.image[4])


def test_paint_on_the_coronal_view_is_one_undo_step_seen_by_the_axial_view(qtbot, window,
                                                                          brain):
    window.open_paths([str(brain)])
    ws = window.workspace
    canvases = three_views(qtbot, window)
    coronal = canvases[1]
    window.tools.set_brush_size(3)
    row = ws.position[1]
    # a horizontal stroke across the coronal slice at slice z = 5: voxels (5, row, 4..28)
    drag(qtbot, coronal.viewport(),
         line(coronal.map_image_to_widget(4, 5), coronal.map_image_to_widget(28, 5), 12))
    labels = ws.session.labels
    assert ws.view_axis == 1
    assert labels[5, row, 4:29].all()
    painted = np.argwhere(labels)
    assert set(painted[:, 1]) == {row}  # nothing outside the coronal slice
    assert set(painted[:, 0]) <= {4, 5, 6}
    # the axial view at slice 5 shows the stroke as a line along the cursor's row
    ws.set_position(0, 5)
    assert canvases[0].overlay.labels()[row, 4:29].all()
    window.undo()
    assert not ws.session.labels.any()
    assert not canvases[0].overlay.labels().any()
    window.redo()
    assert ws.session.labels[5, row, 4:29].all()
    window.close()
    from core.project.store import Project

    with Project.open(brain.parent / ".segstudio") as project:
        (item,) = project.items()
        assert np.array_equal(project.load_mask(item), labels)


def test_wheel_moves_through_slices_and_ctrl_wheel_zooms(qtbot, window, brain):
    window.open_paths([str(brain)])
    ws = window.workspace
    canvas = window.canvas
    wheel(canvas, 1)
    assert ws.position[0] == 13
    assert window.views.panes[0].number.text() == "14 / 25"
    assert window.display_panel.frame.value() == 14
    wheel(canvas, -3)
    assert ws.position[0] == 10
    assert np.array_equal(canvas.image(), ws.image[10])
    before = canvas.zoom_factor()
    wheel(canvas, 2, Qt.KeyboardModifier.ControlModifier)
    assert ws.position[0] == 10 and canvas.zoom_factor() > before * 1.05
    wheel(canvas, -100)  # clamped at the first slice
    assert ws.position[0] == 0

    window.views.panes[0].slider.setValue(20)  # the view's own slider
    assert ws.position[0] == 20 and np.array_equal(canvas.image(), ws.image[20])


def test_wheel_zooms_on_a_plain_image(qtbot, window, sample_dir, tmp_path):
    shutil.copy(sample_dir / "camera.png", tmp_path / "camera.png")  # its project goes beside it
    window.open_paths([str(tmp_path / "camera.png")])
    canvas = window.canvas
    before = canvas.zoom_factor()
    wheel(canvas, 2)
    assert canvas.zoom_factor() > before * 1.05
    assert not window.actions_by_id["view_three"].isEnabled()
    assert not window.views.panes[0].header.isVisible()


def test_views_have_the_aspect_of_the_voxels_and_the_radiological_layout(qtbot, window,
                                                                        tmp_path):
    # CT_small.dcm copies 5 mm apart: 0.66 mm pixels, 5 mm slices
    study = write_series(tmp_path / "study", [0.0, 5.0, 10.0, 15.0, 20.0, 25.0])
    window.open_paths([str(study)])
    ws = window.workspace
    canvases = three_views(qtbot, window)
    coronal = canvases[1]
    geometry = ws.geometry(1)
    assert geometry.name == "coronal" and geometry.rows_up  # slices sorted inferior to superior
    spacing = ws.geometry(0).row_spacing
    assert spacing == pytest.approx(0.661468, rel=1e-4)
    assert geometry.row_spacing == pytest.approx(5.0)
    one_row = coronal.map_image_to_widget(10, 1) - coronal.map_image_to_widget(10, 0)
    one_col = coronal.map_image_to_widget(11, 0) - coronal.map_image_to_widget(10, 0)
    # a slice is drawn 5 / 0.66 times as tall as a pixel is wide, and upward (superior on top)
    assert -one_row.y() / one_col.x() == pytest.approx(5.0 / spacing, rel=1e-3)
    assert one_row.x() == 0
    top, bottom, left, right = coronal.edge_labels
    assert (top.text(), bottom.text(), left.text(), right.text()) == ("S", "I", "R", "L")
    assert top.isVisible()
    # the axial view keeps DICOM's own layout: row 0 (anterior) on top, column 0 (right) left
    axial = canvases[0]
    assert axial.map_image_to_widget(0, 1).y() > axial.map_image_to_widget(0, 0).y()
    assert axial.map_image_to_widget(1, 0).x() > axial.map_image_to_widget(0, 0).x()


def test_one_window_for_every_view_and_every_slice(qtbot, window, tmp_path):
    study = write_series(tmp_path / "study", [0.0, 2.5, 5.0, 7.5])
    window.open_paths([str(study)])
    canvases = three_views(qtbot, window)
    combo = window.display_panel.window_preset
    combo.setCurrentIndex(combo.findData("CT bone"))
    combo.activated.emit(combo.currentIndex())
    for canvas in canvases.values():
        assert canvas.levels() == (-500.0, 1300.0)  # level 400, width 1800
    window.workspace.set_position(0, 3)  # another slice keeps the window
    assert canvases[0].levels() == (-500.0, 1300.0)
    # right-drag on a side view changes the window of all views
    drag(qtbot, canvases[2].viewport(), [(50, 50), (90, 50)], Qt.MouseButton.RightButton)
    low, high = canvases[2].levels()
    assert high - low > 1800.0
    assert canvases[0].levels() == (low, high) == canvases[1].levels()
    assert window.display_panel.level_low.value() == pytest.approx(low, abs=0.1)


def test_status_bar_names_the_voxel_and_its_hounsfield_value(qtbot, window, tmp_path):
    study = write_series(tmp_path / "study", [0.0, 2.5, 5.0, 7.5])
    window.open_paths([str(study)])
    ws = window.workspace
    canvases = three_views(qtbot, window)
    sagittal = canvases[2]
    column = ws.position[2]
    sagittal.cursor_moved.emit(40.0, 3.0)  # row 3 = slice 3, column 40 = volume row 40
    text = window.cursor_label.text()
    value = int(ws.image[3, 40, column])
    assert text.startswith(f"x {column}  y 40  z 3  HU {value}  label 0")


def test_main_view_can_show_another_cut(qtbot, window, brain):
    window.open_paths([str(brain)])
    ws = window.workspace
    window.actions_by_id["view_axis_2"].trigger()
    assert window.main_axis == 2 and ws.view_axis == 2
    assert window.views.panes[0].chooser.currentText() == "Sagittal"
    assert window.display_panel.frame_label.text() == "Sagittal slice"
    assert window.display_panel.frame.maximum() == 33
    window.display_panel.frame.setValue(5)
    assert ws.position[2] == 4
    assert np.array_equal(window.canvas.image(), ws.image[:, :, 4])
    # painting on it edits that sagittal slice
    window.tools.set_tool("fill")
    click(window.canvas.viewport(), window.canvas.map_image_to_widget(2, 2))
    labels = ws.session.labels
    assert labels[:, :, 4].all() and labels.sum() == 25 * 41
    # Left/Right step through the main view's slices
    window.actions_by_id["previous_frame"].trigger()
    assert ws.position[2] == 3

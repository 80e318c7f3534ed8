"""The 3D panel on its own, driven like a user: interpolation previewed, applied, discarded along
the axis of the view drawn in; range fill on the active view's slice, within the visible area or
inside another class's mask. A real workspace on a real DICOM series (copies of CT_small.dcm)."""

from __future__ import annotations

import numpy as np
import pytest
from dicom_series import write_series

from app.panels.volume_panel import VolumePanel, preview_mask
from app.workspace import Workspace
from core.annotation.tools import PaintRule
from core.annotation.volume_tools import interpolate_between_slices


class Selected:
    """The class the tool bar would have selected."""

    def __init__(self, index: int = 1) -> None:
        self.index = index

    def __call__(self) -> int:
        return self.index


@pytest.fixture
def workspace(qtbot, tmp_path):
    study = write_series(tmp_path / "study", [2.5 * z for z in range(7)])
    ws = Workspace()
    ws.open_paths([study])
    assert ws.session.labels.shape == (7, 128, 128)
    yield ws
    ws.close()


def make_panel(qtbot, workspace, cls=None, visible_box=None):
    cls = cls or Selected()
    panel = VolumePanel(workspace, cls, visible_box=visible_box)
    qtbot.add_widget(panel)
    panel.show()
    return panel


def square(centre_x, centre_y, radius):
    return [(centre_x - radius, centre_y - radius), (centre_x + radius, centre_y - radius),
            (centre_x + radius, centre_y + radius), (centre_x - radius, centre_y + radius)]


def draw(ws, axis, index, points, value=1):
    """Paint a polygon (x = column, y = row of the view) on slice ``index`` of the view along
    ``axis``, as the canvas does when the person draws in that view."""
    ws.set_view_axis(axis)
    ws.set_position(axis, index)
    assert ws.session.polygon(points, PaintRule(value)) is not None


def full_mask(edit, shape):
    mask = np.zeros(shape, bool)
    mask[edit.region] = edit.changed
    return mask


def test_preview_apply_and_undo_an_interpolation(qtbot, workspace):
    ws = workspace
    panel = make_panel(qtbot, ws)
    draw(ws, 0, 1, square(64, 64, 8))
    draw(ws, 0, 5, square(70, 60, 20))
    labels = ws.session.labels
    original = labels.copy()
    expected = original.copy()
    assert interpolate_between_slices(expected, 1, axis=0) is not None
    steps = len(ws.session.history)
    assert not panel.apply.isEnabled() and not panel.discard.isEnabled()

    with qtbot.waitSignal(panel.preview_changed) as shown:
        panel.preview.click()
    edit = shown.args[0]
    assert edit is panel.current_preview
    assert np.array_equal(labels, original)  # a preview changes nothing
    assert len(ws.session.history) == steps
    changed = full_mask(edit, labels.shape)
    assert np.array_equal(changed, expected != original)
    assert (edit.new == 1).all() and edit.count == int(changed.sum())
    assert f"{edit.count:,} voxels on 3 " in panel.status.text()
    assert panel.apply.isEnabled() and panel.discard.isEnabled()

    middle = preview_mask(edit, labels.shape, ws.geometry(0), 3)
    assert middle is not None and middle.any() and np.array_equal(middle, changed[3])
    assert preview_mask(edit, labels.shape, ws.geometry(0), 1) is None  # a key slice
    assert preview_mask(edit, labels.shape, ws.geometry(0), 0) is None  # outside the keys
    for axis in range(3):  # every slice of every view: the full mask cut the view's way
        geometry = ws.geometry(axis)
        for index in range(labels.shape[axis]):
            want = changed.transpose(geometry.axes)[index]
            got = preview_mask(edit, labels.shape, geometry, index)
            if want.any():
                assert got is not None and np.array_equal(got, want)
            else:
                assert got is None

    heard = []
    panel.applied.connect(lambda e: heard.append(("applied", e)))
    panel.preview_changed.connect(lambda e: heard.append(("preview_changed", e)))
    panel.apply.click()
    assert heard == [("applied", edit), ("preview_changed", None)]
    assert np.array_equal(labels, expected)
    assert len(ws.session.history) == steps + 1  # one undo step
    assert panel.current_preview is None
    assert not panel.apply.isEnabled() and not panel.discard.isEnabled()
    assert "Interpolated" in panel.status.text()

    ws.session.undo()
    assert np.array_equal(labels, original)


def test_preview_along_the_view_drawn_in(qtbot, workspace):
    ws = workspace
    panel = make_panel(qtbot, ws)
    geometry = ws.geometry(1)
    assert geometry.name == "coronal" and geometry.axes == (1, 0, 2)  # rows z, columns x
    # two slices of the coronal view (y = 40 and y = 52), drawn in that view's coordinates
    draw(ws, 1, 40, [(30, 1), (80, 1), (80, 5), (30, 5)])
    draw(ws, 1, 52, [(50, 2), (100, 2), (100, 4), (50, 4)])
    labels = ws.session.labels
    assert labels[:, 40].any() and labels[:, 52].any() and not labels[:, 41:52].any()
    original = labels.copy()
    expected = original.copy()
    assert interpolate_between_slices(expected, 1, axis=1) is not None
    assert ws.view_axis == 1

    with qtbot.waitSignal(panel.preview_changed) as shown:
        panel.preview.click()
    edit = shown.args[0]
    assert np.array_equal(labels, original)
    changed = full_mask(edit, labels.shape)
    assert np.array_equal(changed, expected != original)
    assert changed[:, 41:52].any() and not changed[:, :41].any() and not changed[:, 52:].any()
    middle = preview_mask(edit, labels.shape, geometry, 46)
    assert middle is not None and np.array_equal(middle, changed.transpose(geometry.axes)[46])
    assert preview_mask(edit, labels.shape, geometry, 40) is None
    assert "11 coronal slices" in panel.status.text()

    panel.apply.click()
    assert np.array_equal(labels, expected)
    ws.session.undo()
    assert np.array_equal(labels, original)

    # the one-click button interpolates along the active view as well
    steps = len(ws.session.history)
    with qtbot.waitSignal(panel.applied):
        panel.interpolate.click()
    assert np.array_equal(labels, expected)
    assert len(ws.session.history) == steps + 1


def test_discard_and_what_discards_a_preview(qtbot, workspace):
    ws = workspace
    panel = make_panel(qtbot, ws)
    draw(ws, 0, 0, square(64, 64, 10))
    draw(ws, 0, 6, square(64, 64, 10))
    labels = ws.session.labels
    original = labels.copy()
    steps = len(ws.session.history)

    panel.preview.click()
    assert panel.current_preview is not None
    with qtbot.waitSignal(panel.preview_changed) as cleared:
        panel.discard.click()
    assert cleared.args == [None]
    assert np.array_equal(labels, original) and len(ws.session.history) == steps
    assert not panel.apply.isEnabled() and not panel.discard.isEnabled()

    panel.preview.click()  # opening an item (here: the same again) drops the preview
    with qtbot.waitSignal(panel.preview_changed) as cleared:
        ws.open_item(ws.index)
    assert cleared.args == [None] and panel.current_preview is None

    labels = ws.session.labels
    panel.preview.click()
    with qtbot.waitSignal(panel.preview_changed):
        panel.discard_preview()  # what the window calls when an edit happens elsewhere
    with qtbot.assertNotEmitted(panel.preview_changed):
        panel.discard_preview()  # nothing left: no second signal
    assert np.array_equal(labels, original)

    # the labels change under the preview: Apply refuses and drops it
    panel.preview.click()
    ws.set_view_axis(0)
    ws.set_position(0, 3)
    ws.session.polygon(square(64, 64, 3), PaintRule(2))
    painted = labels.copy()
    with qtbot.waitSignal(panel.preview_changed) as cleared:
        panel.apply.click()
    assert cleared.args == [None]
    assert "changed since the preview" in panel.status.text()
    assert np.array_equal(labels, painted)
    assert not panel.apply.isEnabled()

    # nothing to interpolate: no preview, and the status says why
    ws.session.undo()
    ws.session.undo()
    blank = make_panel(qtbot, ws, Selected(1))
    labels[:] = 0
    with qtbot.assertNotEmitted(blank.preview_changed):
        blank.preview.click()
    assert "at least two" in blank.status.text()


def test_range_fill_within_the_visible_area(qtbot, workspace):
    ws = workspace
    shown = {"box": (slice(20, 60), slice(30, 90))}  # what the window would say is on screen
    panel = make_panel(qtbot, ws, Selected(1), visible_box=lambda: shown["box"])
    visible = shown["box"]
    panel.low.setValue(300)
    panel.high.setValue(3000)
    panel.within.setCurrentIndex(panel.within.findData("visible"))
    image, labels = ws.image, ws.session.labels
    in_range = (image >= 300) & (image <= 3000)

    # this slice of the axial view: slice z = 3, the visible rows and columns
    ws.set_position(0, 3)
    panel.scope.setCurrentIndex(panel.scope.findData("slice"))
    expected = labels.copy()
    axes = ws.geometry(0).axes
    part = expected.transpose(axes)[3, visible[0], visible[1]]  # a view into expected
    part[in_range.transpose(axes)[3, visible[0], visible[1]] & (part == 0)] = 1
    with qtbot.waitSignal(panel.applied):
        panel.fill.click()
    assert np.array_equal(labels, expected)
    assert (labels == 1).sum() > 50
    assert "in the visible area" in panel.status.text()
    ws.session.undo()
    assert not labels.any()

    # the whole volume seen from the side: the visible rows/columns of the coronal view, every
    # coronal slice; background only (class 2 painted there stays)
    ws.add_class("other")
    draw(ws, 0, 2, square(64, 40, 30), value=2)
    ws.set_view_axis(1)
    ws.set_position(1, 64)
    geometry = ws.geometry(1)
    coronal = shown["box"] = (slice(1, 5), slice(40, 100))
    panel.scope.setCurrentIndex(panel.scope.findData("volume"))
    before = labels.copy()
    expected = before.copy()
    box = [slice(None)] * 3
    box[geometry.axes[1]], box[geometry.axes[2]] = coronal
    target = np.zeros(labels.shape, bool)
    target[tuple(box)] = True
    expected[target & in_range & (before == 0)] = 1
    panel.fill.click()
    assert np.array_equal(labels, expected)
    assert (labels[target] == 1).any() and not (labels[~target] == 1).any()
    assert (labels == 2).sum() == (before == 2).sum()

    # this slice of the coronal view: only y = 64 inside the visible box
    ws.session.undo()
    panel.scope.setCurrentIndex(panel.scope.findData("slice"))
    expected = before.copy()
    one = target.copy()
    one[:, :64] = one[:, 65:] = False
    expected[one & in_range & (before == 0)] = 1
    panel.fill.click()
    assert np.array_equal(labels, expected)
    assert (labels[:, 64] == 1).any()


def test_range_fill_inside_another_class_mask(qtbot, workspace):
    ws = workspace
    body = 1
    bone = ws.add_class("bone").index
    selected = Selected(bone)
    panel = make_panel(qtbot, ws, selected)  # no visible area from this window
    assert panel.within.findData(bone) >= 0 and panel.within.findData(body) >= 0
    for z in range(7):
        draw(ws, 0, z, square(64, 64, 35), value=body)
    ws.set_view_axis(0)
    ws.set_position(0, 3)
    labels, image = ws.session.labels, ws.image
    before = labels.copy()
    in_range = (image >= 300) & (image <= 3000)
    assert (in_range & (before == body)).any() and (in_range & (before == 0)).any()

    panel.low.setValue(300)
    panel.high.setValue(3000)
    panel.scope.setCurrentIndex(panel.scope.findData("volume"))
    panel.within.setCurrentIndex(panel.within.findData(body))
    steps = len(ws.session.history)
    with qtbot.waitSignal(panel.applied):
        panel.fill.click()
    expected = before.copy()
    expected[in_range & (before == body)] = bone
    assert np.array_equal(labels, expected)  # bone inside the body, nothing outside it
    assert len(ws.session.history) == steps + 1
    assert "inside the object mask" in panel.status.text()
    ws.session.undo()
    assert np.array_equal(labels, before)

    # this slice: only the body voxels in range on slice 3
    panel.scope.setCurrentIndex(panel.scope.findData("slice"))
    panel.fill.click()
    expected = before.copy()
    expected[3][in_range[3] & (before[3] == body)] = bone
    assert np.array_equal(labels, expected)
    ws.session.undo()

    # anywhere: background only, the body keeps its voxels
    panel.within.setCurrentIndex(panel.within.findData("anywhere"))
    panel.scope.setCurrentIndex(panel.scope.findData("volume"))
    panel.fill.click()
    expected = before.copy()
    expected[in_range & (before == 0)] = bone
    assert np.array_equal(labels, expected)
    ws.session.undo()

    # the selected class's own mask, or a visible area nobody supplies: refused, said why
    panel.within.setCurrentIndex(panel.within.findData(bone))
    panel.fill.click()
    assert "another class" in panel.status.text()
    visible = panel.within.findData("visible")
    assert "unavailable" in panel.within.itemText(visible)
    panel.within.setCurrentIndex(visible)
    panel.fill.click()
    assert "not available" in panel.status.text()
    assert np.array_equal(labels, before)

    ws.add_class("lung")  # new classes show up in the list
    assert panel.within.findText("inside the lung mask") >= 0

"""The image canvas, its label overlay and the tool controller, driven with real mouse events."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import click, double_click, drag, line, move
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from skimage import data

from app.canvas.overlay import LabelOverlayItem, display_indices
from app.canvas.tools import ToolController
from app.canvas.viewer import ImageCanvas
from core.annotation.classes import LabelClass, palette_rgb
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule, paint_segment
from core.errors import StorageFullError
from core.io import load_image
from core.project.store import Project

RED, BLUE = (255, 0, 0), (0, 0, 255)
CLASSES = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "tumour", RED),
           LabelClass(2, "vessel", BLUE)]
PALETTE = palette_rgb(CLASSES)


@pytest.fixture
def camera() -> np.ndarray:
    return data.camera()  # 512 x 512 uint8


@pytest.fixture
def canvas(qtbot) -> ImageCanvas:
    widget = ImageCanvas()
    qtbot.addWidget(widget)
    widget.resize(640, 640)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def rgb_at(canvas: ImageCanvas, x: float, y: float) -> tuple[int, int, int]:
    """Colour the canvas shows at image point (x, y), read from a grab of the widget."""
    image = canvas.grab().toImage()
    pos = canvas.map_image_to_widget(x, y).toPoint()
    return image.pixelColor(pos).getRgb()[:3]


def settle(qtbot) -> None:
    qtbot.wait(1)
    QApplication.processEvents()


# -- overlay ---------------------------------------------------------------------------------------------
def test_overlay_colours_labelled_region_and_leaves_background_clear(canvas, camera, qtbot):
    labels = np.zeros(camera.shape, np.uint8)
    labels[100:200, 150:300] = 1
    canvas.set_image(camera)
    canvas.set_labels(labels, PALETTE)
    canvas.set_overlay_opacity(1.0)
    settle(qtbot)

    assert rgb_at(canvas, 225, 150) == RED
    grey = int(camera[400, 50])
    assert rgb_at(canvas, 50, 400) == (grey, grey, grey)  # 8-bit levels 0-255: unchanged


def test_overlay_opacity_blends_with_the_image(canvas, camera, qtbot):
    labels = np.zeros(camera.shape, np.uint8)
    labels[100:200, 150:300] = 2
    canvas.set_image(camera)
    canvas.set_labels(labels, PALETTE)
    canvas.set_overlay_opacity(0.5)
    settle(qtbot)

    r, g, b = rgb_at(canvas, 225, 150)
    grey = int(camera[150, 225])
    assert abs(r - grey / 2) <= 2 and abs(g - grey / 2) <= 2
    assert abs(b - (255 + grey) / 2) <= 2

    canvas.set_overlay_visible(False)
    settle(qtbot)
    assert rgb_at(canvas, 225, 150) == (grey, grey, grey)


def test_refresh_redraws_only_the_box(qapp, monkeypatch):
    labels = np.zeros((300, 400), np.uint8)
    overlay = LabelOverlayItem()
    overlay.set_labels(labels, PALETTE)
    rects: list[QRectF] = []
    monkeypatch.setattr(overlay, "update", lambda rect=None: rects.append(rect))

    labels[10:20, 30:50] = 1  # refreshed
    labels[200:210, 300:310] = 2  # outside the box: not read
    overlay.refresh((10, 20, 30, 50))

    assert rects == [QRectF(30, 10, 20, 10)]
    shown = overlay.display_buffer()
    assert (shown[10:20, 30:50] == 1).all()
    assert (shown[200:210, 300:310] == 0).all()
    overlay.refresh()
    assert (shown[200:210, 300:310] == 2).all()


def test_paint_draws_only_the_exposed_rect(canvas, camera, qtbot):
    labels = np.zeros(camera.shape, np.uint8)
    canvas.set_image(camera)
    canvas.set_labels(labels, PALETTE)
    settle(qtbot)
    exposed: list[QRectF] = []
    original = LabelOverlayItem.paint

    class SpyOverlay(LabelOverlayItem):
        def paint(self, painter, option, widget=None):
            exposed.append(QRectF(option.exposedRect))
            original(self, painter, option, widget)

    spy = SpyOverlay()
    spy.setPos(canvas.overlay.pos())
    canvas.view_box.addItem(spy)
    spy.set_labels(labels, PALETTE)
    settle(qtbot)
    exposed.clear()

    labels[100:110, 200:220] = 1
    spy.refresh((100, 110, 200, 220))
    settle(qtbot)

    assert exposed, "the refreshed box was not repainted"
    union = QRectF(exposed[0])
    for rect in exposed[1:]:
        union = union.united(rect)
    # The view pads update rectangles by 2 screen pixels (< 2 image pixels at this zoom).
    assert QRectF(198, 98, 24, 14).contains(union)


def test_outline_mode_keeps_only_edge_pixels(qapp):
    labels = np.zeros((20, 20), np.uint8)
    labels[5:10, 5:10] = 2
    overlay = LabelOverlayItem()
    overlay.set_labels(labels, PALETTE)
    overlay.set_outline_mode(True)

    shown = overlay.display_buffer()
    expected = np.zeros_like(labels)
    expected[5:10, 5:10] = 2
    expected[6:9, 6:9] = 0
    np.testing.assert_array_equal(shown, expected)

    # Growing the square by one column turns the old edge column interior: the margin is redrawn.
    labels[5:10, 10] = 2
    overlay.refresh((5, 10, 10, 11))
    expected[5:10, 10] = 2
    expected[6:9, 9] = 0
    np.testing.assert_array_equal(shown, expected)

    overlay.set_outline_mode(False)
    np.testing.assert_array_equal(shown, labels)


def test_uint16_labels_wrap_the_palette():
    labels = np.array([[0, 1, 255, 256, 510, 511, 65535]], np.uint16)
    np.testing.assert_array_equal(display_indices(labels), [[0, 1, 255, 1, 255, 1, 255]])


def test_opacity_changes_only_the_colour_table(qapp):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:4, 2:4] = 1
    overlay = LabelOverlayItem()
    overlay.set_labels(labels, PALETTE)
    before = overlay.display_buffer().copy()
    overlay.set_opacity(0.25)
    assert overlay._qimage.color(1) >> 24 == round(0.25 * 255)
    assert overlay._qimage.color(0) == 0
    np.testing.assert_array_equal(overlay.display_buffer(), before)


# -- view and coordinates ----------------------------------------------------------------------------
def test_cursor_reports_the_pixel_under_the_mouse_at_high_zoom(canvas, camera, qtbot):
    labels = np.zeros(camera.shape, np.uint8)
    labels[77, 130] = 1  # one marked pixel
    canvas.set_image(camera)
    canvas.set_labels(labels, PALETTE)
    canvas.set_overlay_opacity(1.0)
    canvas.view_box.setRange(QRectF(110.3, 60.2, 50, 50), padding=0.0)  # ~12.8 px per pixel
    settle(qtbot)
    assert canvas.zoom_factor() > 10

    # Find the red square on screen, independently of the canvas's own mapping.
    grab = canvas.grab().toImage()
    red = [(x, y) for y in range(grab.height()) for x in range(grab.width())
           if grab.pixelColor(x, y).getRgb()[:3] == RED]
    xs, ys = [p[0] for p in red], [p[1] for p in red]
    centre = QPointF((min(xs) + max(xs) + 1) / 2, (min(ys) + max(ys) + 1) / 2)

    with qtbot.waitSignal(canvas.cursor_moved) as moved:
        move(canvas.viewport(), centre)
    x, y = moved.args
    assert abs(x - 130) < 0.1 and abs(y - 77) < 0.1
    # Just inside the square's corners the cursor is still within half a pixel of the centre.
    for cx, cy in ((min(xs) + 0.5, min(ys) + 0.5), (max(xs) + 0.5, max(ys) + 0.5)):
        with qtbot.waitSignal(canvas.cursor_moved) as moved:
            move(canvas.viewport(), QPointF(cx, cy))
        x, y = moved.args
        assert abs(x - 130) <= 0.5 and abs(y - 77) <= 0.5
        assert canvas.label_at(x, y) == 1
        assert canvas.value_at(x, y) == camera[77, 130]

    with qtbot.waitSignal(canvas.cursor_left):
        QApplication.sendEvent(canvas.viewport(), QEvent(QEvent.Type.Leave))


def test_value_at_outside_and_colour(canvas, qtbot):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[3, 4] = (10, 20, 30)
    canvas.set_image(rgb)
    assert canvas.image_size() == (20, 10)
    assert canvas.value_at(4.4, 2.6) == (10, 20, 30)
    assert canvas.value_at(-0.6, 0) is None
    assert canvas.value_at(19.49, 9.49) == (0, 0, 0)
    assert canvas.value_at(19.5, 0) is None


def test_auto_levels_for_16_bit_and_manual_levels(canvas):
    image = np.linspace(0, 4000, 100 * 100).reshape(100, 100).astype(np.uint16)
    canvas.set_image(image)
    lo, hi = canvas.levels()
    assert 0 <= lo < 100 and 3900 < hi <= 4000
    canvas.set_levels(10, 20)
    assert canvas.levels() == (10, 20)


def test_fit_and_zoom_1to1(canvas, camera, qtbot):
    canvas.set_image(camera)
    settle(qtbot)
    rect = canvas.view_rect()
    assert rect.contains(QRectF(-0.5, -0.5, 512, 512).adjusted(0.01, 0.01, -0.01, -0.01))
    assert canvas.zoom_factor() == pytest.approx(640 / 512, rel=1e-3)

    canvas.zoom_1to1()
    settle(qtbot)
    a, b = canvas.map_image_to_widget(100, 100), canvas.map_image_to_widget(110, 120)
    assert b.x() - a.x() == pytest.approx(10, abs=1e-6)
    assert b.y() - a.y() == pytest.approx(20, abs=1e-6)


def test_wheel_zooms_around_the_cursor(canvas, camera, qtbot):
    canvas.set_image(camera)
    settle(qtbot)
    pos = QPointF(200, 300)
    before = canvas.map_widget_to_image(pos)
    zoom = canvas.zoom_factor()
    event = QWheelEvent(pos, QPointF(canvas.viewport().mapToGlobal(pos)), QPoint(0, 0),
                        QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas.viewport(), event)
    settle(qtbot)
    assert canvas.zoom_factor() > zoom * 1.1
    after = canvas.map_widget_to_image(pos)
    assert after == pytest.approx(before, abs=0.5)


# -- tools on a real project -------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path, camera):
    from PIL import Image

    path = tmp_path / "camera.png"
    Image.fromarray(camera).save(path)
    proj = Project.create(tmp_path / "proj", CLASSES)
    assert proj.add_items([path]).added_ids
    yield proj
    proj.close()


@pytest.fixture
def session(project) -> EditSession:
    return EditSession(project, project.items()[0])


@pytest.fixture
def tools(canvas, session, qtbot) -> ToolController:
    canvas.set_image(load_image(session.item.source).array)
    canvas.set_labels(session.labels, palette_rgb(session.project.classes()))
    settle(qtbot)
    controller = ToolController(canvas, lambda: session)
    controller.set_class_index(1)
    controller.set_brush_size(10)
    return controller


def widget_points(canvas: ImageCanvas, points) -> list[QPointF]:
    return [canvas.map_image_to_widget(x, y) for x, y in points]


def expected_stroke(canvas, shape, positions, radius, rule) -> np.ndarray:
    """Labels after painting the stroke the controller saw (image points of the widget points)."""
    labels = np.zeros(shape, np.uint8)
    pts = [canvas.map_widget_to_image(p) for p in positions]
    paint_segment(labels, pts[0], pts[0], radius, rule)
    for p0, p1 in itertools.pairwise(pts):
        paint_segment(labels, p0, p1, radius, rule)
    return labels


def test_brush_stroke_paints_exactly_the_stroke_and_undo_restores(canvas, tools, session, qtbot):
    positions = line(*widget_points(canvas, [(100.3, 100.2), (200.6, 140.1)]), steps=12)
    with qtbot.waitSignal(tools.edited) as done:
        drag(qtbot, canvas.viewport(), positions)

    expected = expected_stroke(canvas, session.labels.shape, positions, 5.0, PaintRule(1))
    np.testing.assert_array_equal(session.labels, expected)
    assert session.labels[100, 100] == 1 and session.labels[140, 200] == 1
    assert session.labels[400, 400] == 0 and session.labels[100, 300] == 0
    rows, cols = np.nonzero(expected)
    assert done.args[0].bbox_2d() == (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    np.testing.assert_array_equal(canvas.overlay.display_buffer(), session.labels)
    assert len(session.history) == 1  # one drag = one undo step

    tools.undo()
    assert not session.labels.any()
    assert not canvas.overlay.display_buffer().any()
    tools.redo()
    np.testing.assert_array_equal(session.labels, expected)


def test_brush_stroke_is_journaled(canvas, tools, session, project, qtbot):
    drag(qtbot, canvas.viewport(), widget_points(canvas, [(50, 50), (80, 60)]))
    np.testing.assert_array_equal(project.load_mask(session.item), session.labels)


def test_eraser_and_preserve_others(canvas, tools, session, qtbot):
    session.labels[150:250, 150:250] = 2
    canvas.refresh_labels()
    tools.set_preserve_others(True)
    positions = line(*widget_points(canvas, [(120.2, 200.4), (280.3, 200.1)]), steps=10)
    drag(qtbot, canvas.viewport(), positions)

    square = session.labels[150:250, 150:250]
    assert (square == 2).all()  # the other class is untouched
    assert session.labels[200, 130] == 1 and session.labels[200, 270] == 1

    tools.set_tool("eraser")  # preserve: erases only the active class (1)
    drag(qtbot, canvas.viewport(), positions)
    assert (session.labels[150:250, 150:250] == 2).all()
    assert not (session.labels == 1).any()

    tools.set_preserve_others(False)
    drag(qtbot, canvas.viewport(), positions)
    assert session.labels[200, 200] == 0 and session.labels[160, 200] == 2


def test_fill_click(canvas, tools, session, qtbot):
    session.labels[100:200, 100:200] = 2
    session.labels[110:190, 110:190] = 0  # a ring of class 2 around a hole
    canvas.refresh_labels()
    tools.set_tool("fill")
    with qtbot.waitSignal(tools.edited):
        click(canvas.viewport(), canvas.map_image_to_widget(150, 150))

    assert (session.labels[110:190, 110:190] == 1).all()
    assert (session.labels[100:110, 100:200] == 2).all()
    assert session.labels[50, 50] == 0
    np.testing.assert_array_equal(canvas.overlay.display_buffer(), session.labels)


@pytest.mark.parametrize("closing", ["enter", "first_point", "double_click"])
def test_polygon(canvas, tools, session, qtbot, closing):
    tools.set_tool("polygon")
    corners = [(50, 60), (150, 60), (150, 120), (50, 120)]
    view = canvas.viewport()
    for point in widget_points(canvas, corners[:3]):
        click(view, point)
    last = canvas.map_image_to_widget(*corners[3])
    if closing == "double_click":
        double_click(view, last)
    else:
        click(view, last)
        move(view, last + QPointF(30, 10))  # rubber band follows the mouse
        np.testing.assert_allclose(tools.polygon_points(), corners, atol=1e-6)
        if closing == "enter":
            QTest.keyClick(canvas.view, Qt.Key.Key_Return)
        else:
            click(view, canvas.map_image_to_widget(*corners[0]) + QPointF(3, -2))

    assert tools.polygon_points() == []
    assert (session.labels[60:121, 50:151] == 1).all()
    assert session.labels.sum() == 101 * 61
    assert not canvas.polygon_preview.isVisible()


def test_polygon_escape_and_backspace(canvas, tools, session, qtbot):
    tools.set_tool("polygon")
    for point in widget_points(canvas, [(10, 10), (50, 10), (50, 50)]):
        click(canvas.viewport(), point)
    QTest.keyClick(canvas.view, Qt.Key.Key_Backspace)
    np.testing.assert_allclose(tools.polygon_points(), [(10, 10), (50, 10)], atol=1e-6)
    QTest.keyClick(canvas.view, Qt.Key.Key_Escape)
    assert tools.polygon_points() == []
    assert not session.labels.any()


def test_bracket_keys_change_the_brush_size(canvas, tools, qtbot):
    sizes: list[int] = []
    tools.brush_size_changed.connect(sizes.append)
    QTest.keyClick(canvas.view, Qt.Key.Key_BracketRight)
    QTest.keyClick(canvas.view, Qt.Key.Key_BracketRight)
    QTest.keyClick(canvas.view, Qt.Key.Key_BracketLeft)
    assert sizes == [12, 14, 12]
    tools.set_brush_size(1)
    tools.shrink_brush()
    assert tools.brush_size == 1
    tools.grow_brush()
    assert tools.brush_size == 2
    tools.set_brush_size(10_000)
    assert tools.brush_size == 512
    assert canvas.brush_cursor.radius() == 256


def test_left_drag_paints_without_panning_but_pans_with_pan_tool(canvas, tools, session, qtbot):
    canvas.zoom_1to1()
    settle(qtbot)
    before = canvas.view_rect()
    positions = line(QPointF(200, 200), QPointF(400, 300), steps=10)
    drag(qtbot, canvas.viewport(), positions)
    assert canvas.view_rect() == before
    assert session.labels.any()

    tools.set_tool("pan")
    painted = session.labels.copy()
    drag(qtbot, canvas.viewport(), positions)
    moved = canvas.view_rect()
    assert moved.x() == pytest.approx(before.x() - 200, abs=1)
    assert moved.y() == pytest.approx(before.y() - 100, abs=1)
    np.testing.assert_array_equal(session.labels, painted)


@pytest.mark.parametrize("button", [Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton])
def test_middle_and_right_drag_pan_with_the_brush(canvas, tools, session, qtbot, button):
    canvas.zoom_1to1()
    settle(qtbot)
    before = canvas.view_rect()
    drag(qtbot, canvas.viewport(), line(QPointF(300, 300), QPointF(250, 220), steps=5), button)
    moved = canvas.view_rect()
    assert moved.x() == pytest.approx(before.x() + 50, abs=1)
    assert moved.y() == pytest.approx(before.y() + 80, abs=1)
    assert not session.labels.any()


def test_space_left_drag_pans(canvas, tools, session, qtbot):
    canvas.zoom_1to1()
    settle(qtbot)
    before = canvas.view_rect()
    canvas.view.setFocus()
    QTest.keyPress(canvas.view, Qt.Key.Key_Space)
    assert canvas.space_held
    drag(qtbot, canvas.viewport(), line(QPointF(300, 300), QPointF(340, 300), steps=5))
    QTest.keyRelease(canvas.view, Qt.Key.Key_Space)
    assert not canvas.space_held
    assert canvas.view_rect().x() == pytest.approx(before.x() - 40, abs=1)
    assert not session.labels.any()


def test_storage_full_is_reported_and_the_edit_kept(canvas, tools, session, project, qtbot,
                                                     monkeypatch):
    def full(*args, **kwargs):
        raise StorageFullError("The disk is full.")

    monkeypatch.setattr(project, "append_edit", full)
    errors: list[str] = []
    tools.error.connect(errors.append)
    drag(qtbot, canvas.viewport(), widget_points(canvas, [(60, 60), (90, 60)]))
    tools.set_tool("fill")
    click(canvas.viewport(), canvas.map_image_to_widget(300, 300))

    assert errors == ["The disk is full."] * 2
    assert session.labels[60, 75] == 1 and session.labels[300, 300] == 1
    assert session.unsaved_count == 2
    np.testing.assert_array_equal(canvas.overlay.display_buffer(), session.labels)


def test_no_session_is_harmless(canvas, qtbot, camera):
    canvas.set_image(camera)
    tools = ToolController(canvas, lambda: None)
    drag(qtbot, canvas.viewport(), [QPointF(100, 100), QPointF(200, 200)])
    tools.set_tool("fill")
    click(canvas.viewport(), QPointF(100, 100))
    assert tools.undo() is None


def test_brush_cursor_follows_the_mouse(canvas, tools, qtbot):
    move(canvas.viewport(), canvas.map_image_to_widget(123, 45))
    assert canvas.brush_cursor.isVisible()
    assert canvas.brush_cursor.pos().x() == pytest.approx(123)
    assert canvas.brush_cursor.radius() == 5
    tools.set_tool("fill")
    assert not canvas.brush_cursor.isVisible()

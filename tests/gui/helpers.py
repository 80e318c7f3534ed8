"""Synthetic mouse input for GUI tests.

``QTest.mouseMove`` sends moves without button state, so a drag made with it looks like hovering.
These helpers build real QMouseEvents (with ``buttons`` held during moves) and deliver them with
``QApplication.sendEvent``, so event filters and QGraphicsView see what a user's drag produces.
Positions are widget coordinates (QPointF keeps sub-pixel precision); for an ImageCanvas send them
to ``canvas.viewport()`` and get them from ``canvas.map_image_to_widget(x, y)``.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication, QWidget

PointLike = QPointF | QPoint | tuple[float, float]

LEFT = Qt.MouseButton.LeftButton
NO_BUTTON = Qt.MouseButton.NoButton
NO_MODIFIER = Qt.KeyboardModifier.NoModifier


def as_point(pos: PointLike) -> QPointF:
    if isinstance(pos, tuple):
        return QPointF(float(pos[0]), float(pos[1]))
    return QPointF(pos)


def send_mouse(
    widget: QWidget, kind: QEvent.Type, pos: PointLike,
    button: Qt.MouseButton = NO_BUTTON, buttons: Qt.MouseButton | None = None,
    modifiers: Qt.KeyboardModifier = NO_MODIFIER,
) -> bool:
    """Deliver one mouse event of ``kind`` at ``pos``; returns whether it was accepted.

    ``buttons`` (the buttons held after the event) defaults to ``button`` for press, move and
    double-click events and to none for a release.
    """
    local = as_point(pos)
    if buttons is None:
        buttons = NO_BUTTON if kind == QEvent.Type.MouseButtonRelease else button
    global_pos = QPointF(widget.mapToGlobal(local))
    event = QMouseEvent(kind, local, global_pos, button, buttons, modifiers)
    return QApplication.sendEvent(widget, event)


def press(widget: QWidget, pos: PointLike, button: Qt.MouseButton = LEFT,
          modifiers: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    send_mouse(widget, QEvent.Type.MouseButtonPress, pos, button, button, modifiers)


def release(widget: QWidget, pos: PointLike, button: Qt.MouseButton = LEFT,
            modifiers: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    send_mouse(widget, QEvent.Type.MouseButtonRelease, pos, button, NO_BUTTON, modifiers)


def move(widget: QWidget, pos: PointLike, buttons: Qt.MouseButton = NO_BUTTON,
         modifiers: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    """Move the mouse to ``pos`` holding ``buttons`` (none: hovering)."""
    send_mouse(widget, QEvent.Type.MouseMove, pos, NO_BUTTON, buttons, modifiers)


def click(widget: QWidget, pos: PointLike, button: Qt.MouseButton = LEFT,
          modifiers: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    press(widget, pos, button, modifiers)
    release(widget, pos, button, modifiers)


def double_click(widget: QWidget, pos: PointLike, button: Qt.MouseButton = LEFT) -> None:
    """What Qt delivers for a double click: press, release, double-click, release."""
    click(widget, pos, button)
    send_mouse(widget, QEvent.Type.MouseButtonDblClick, pos, button, button)
    release(widget, pos, button)


def drag(qtbot, widget: QWidget, points: Iterable[PointLike], button: Qt.MouseButton = LEFT,
         modifiers: Qt.KeyboardModifier = NO_MODIFIER) -> None:
    """Press at the first point, move through the others holding ``button``, release at the last.

    Args:
        qtbot: pytest-qt's fixture (pending events are processed after the release).
        widget: Receiver, e.g. ``canvas.viewport()``.
        points: Two or more positions in widget coordinates.
        button: The button held.
        modifiers: Keyboard modifiers held during the whole drag.
    """
    points = [as_point(p) for p in points]
    if len(points) < 2:
        raise ValueError("a drag needs at least two points")
    press(widget, points[0], button, modifiers)
    for point in points[1:]:
        move(widget, point, button, modifiers)
    release(widget, points[-1], button, modifiers)
    qtbot.wait(1)


def line(start: PointLike, end: PointLike, steps: int) -> list[QPointF]:
    """``steps + 1`` evenly spaced points from ``start`` to ``end`` (for smooth drags)."""
    a, b = as_point(start), as_point(end)
    return [a + (b - a) * (i / steps) for i in range(steps + 1)]

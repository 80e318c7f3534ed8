"""Graphics items drawn over the canvas in image coordinates: the brush circle and the polygon
being drawn (see :mod:`app.canvas.viewer` for the coordinate convention)."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem, QWidget

Point = tuple[float, float]


# -- preview items --------------------------------------------------------------------------------------
def cosmetic_pen(color: QColor, width: float, style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> QPen:
    pen = QPen(color, width, style)
    pen.setCosmetic(True)
    return pen


class BrushCursorItem(QGraphicsItem):
    """Circle of the brush radius around the mouse: a dark 2 px halo under a light 1 px line.

    The pens stay inside the 2-pixel margin QGraphicsView adds to update rectangles, so moving
    the circle leaves no trails at any zoom.
    """

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        self._radius = 1.0
        self._dark = cosmetic_pen(QColor(0, 0, 0, 200), 2.0)
        self._light = cosmetic_pen(QColor(255, 255, 255, 230), 1.0)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_radius(self, radius: float) -> None:
        radius = max(float(radius), 0.5)
        if radius != self._radius:
            self.prepareGeometryChange()
            self._radius = radius

    def radius(self) -> float:
        return self._radius

    def boundingRect(self) -> QRectF:
        r = self._radius
        return QRectF(-r, -r, 2 * r, 2 * r)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        for pen in (self._dark, self._light):
            painter.setPen(pen)
            painter.drawEllipse(self.boundingRect())


class PolygonPreviewItem(QGraphicsItem):
    """The polygon clicked so far, a dashed rubber band to the mouse, a mark on every vertex."""

    MARK = 3.0  # half-size of a vertex mark, in screen pixels

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        self._points: list[Point] = []
        self._mouse: Point | None = None
        self._pad = 1.0
        self._line = cosmetic_pen(QColor(255, 230, 0), 1.5)
        self._band = cosmetic_pen(QColor(255, 230, 0), 1.0, Qt.PenStyle.DashLine)
        self._mark = cosmetic_pen(QColor(0, 0, 0), 1.0)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def set_path(self, points: Sequence[Point], mouse: Point | None, pixel: float) -> None:
        """Show ``points`` and a band to ``mouse``; ``pixel`` = image units per screen pixel."""
        self.prepareGeometryChange()
        self._points = [(float(x), float(y)) for x, y in points]
        self._mouse = None if mouse is None else (float(mouse[0]), float(mouse[1]))
        self._pad = (self.MARK + 2.0) * pixel  # room for the screen-sized vertex marks

    def points(self) -> list[Point]:
        return list(self._points)

    def boundingRect(self) -> QRectF:
        pts = self._points + ([self._mouse] if self._mouse is not None and self._points else [])
        if not pts:
            return QRectF()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        pad = self._pad
        return QRectF(min(xs) - pad, min(ys) - pad,
                      max(xs) - min(xs) + 2 * pad, max(ys) - min(ys) + 2 * pad)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        if not self._points:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        path = QPainterPath(QPointF(*self._points[0]))
        for x, y in self._points[1:]:
            path.lineTo(x, y)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.setPen(self._line)
        painter.drawPath(path)
        if self._mouse is not None:
            painter.setPen(self._band)
            painter.drawLine(QPointF(*self._points[-1]), QPointF(*self._mouse))
        # Marks keep their screen size: draw them untransformed at the mapped vertices.
        transform = painter.transform()
        painter.resetTransform()
        painter.setPen(self._mark)
        for index, (x, y) in enumerate(self._points):
            centre = transform.map(QPointF(x, y))
            first = index == 0  # the closing target: larger and red
            m = self.MARK + (1.5 if first else 0.0)
            painter.setBrush(QColor(255, 80, 80) if first else QColor(255, 230, 0))
            painter.drawRect(QRectF(centre.x() - m, centre.y() - m, 2 * m, 2 * m))
        painter.setTransform(transform)

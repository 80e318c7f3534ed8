"""The image canvas: pyqtgraph view of the image, the label overlay, brush and polygon previews.

Coordinates. Image coordinates put pixel *centres* on integers, as core/annotation/tools.py does:
pixel (row i, column j) covers ``[j - 0.5, j + 0.5) x [i - 0.5, i + 0.5)`` and has centre (x=j, y=i).
pyqtgraph's ImageItem puts pixel (i, j) over ``[j, j+1) x [i, i+1)``, so the image and the overlay
are shifted by (-0.5, -0.5); after that the ViewBox's view coordinates *are* image coordinates and
every item (overlay, brush circle, polygon) is placed in them directly.

Mouse routing. One event filter on the GraphicsView's viewport sees every mouse event before
pyqtgraph does. It tracks the cursor (``cursor_moved``, brush circle) and then offers the event
to the input handler (the ToolController, see :meth:`ImageCanvas.set_input_handler`); an event the
handler consumes never reaches the scene, so a painting tool's left-drag cannot pan. Events it
leaves go to pyqtgraph's ViewBox, subclassed here so that middle- and right-drag pan, left-drag
pans only in pan mode or while Space is held, and the wheel zooms around the cursor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainterPath
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsPathItem,
    QGraphicsSimpleTextItem,
    QLabel,
    QVBoxLayout,
    QWidget,
)

from app.canvas.items import BrushCursorItem, PolygonPreviewItem, cosmetic_pen
from app.canvas.overlay import BBox, LabelOverlayItem
from core.io import auto_levels

Point = tuple[float, float]
MOUSE_EVENTS = (
    QEvent.Type.MouseButtonPress,
    QEvent.Type.MouseMove,
    QEvent.Type.MouseButtonRelease,
    QEvent.Type.MouseButtonDblClick,
)


class CanvasInputHandler(Protocol):
    """What the canvas offers its input events to (the ToolController implements it)."""

    def canvas_mouse_event(self, event: QMouseEvent, x: float, y: float) -> bool:
        """Handle a viewport mouse event at image point (x, y); True consumes it."""

    def canvas_key_event(self, event: QKeyEvent) -> bool:
        """Handle a KeyPress/ShortcutOverride of the view; True consumes (claims) it."""


# -- levels --------------------------------------------------------------------------------------------
def default_levels(image: np.ndarray) -> tuple[float, float]:
    """Display range of an image: 0-255 for 8-bit images, robust percentiles otherwise."""
    if image.dtype == np.uint8:
        return 0.0, 255.0
    return auto_levels(image)  # 0.5/99.5 percentiles of a subsample, NaN-safe


# -- view box ------------------------------------------------------------------------------------------
class _CanvasViewBox(pg.ViewBox):
    """ViewBox whose drags pan: middle always, left only when allowed, right unless a
    window/level handler takes it (volumes: right-drag sets the window, as in radiology)."""

    def __init__(self, left_pans: Callable[[], bool]) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False, defaultPadding=0.0)
        self._left_pans = left_pans
        self.window_level: Callable[[float, float], None] | None = None  # (dx, dy) screen px

    def mouseDragEvent(self, ev, axis=None) -> None:
        button = ev.button()
        if button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton,
                          Qt.MouseButton.RightButton):
            ev.ignore()
            return
        if button == Qt.MouseButton.LeftButton and not self._left_pans():
            ev.ignore()
            return
        ev.accept()
        if button == Qt.MouseButton.RightButton and self.window_level is not None:
            step = ev.screenPos() - ev.lastScreenPos()
            self.window_level(step.x(), step.y())
            return
        delta = self.mapToView(ev.lastPos()) - self.mapToView(ev.pos())
        self.translateBy(x=delta.x(), y=delta.y())
        self.sigRangeChangedManually.emit(self.state["mouseEnabled"])


# -- the canvas -------------------------------------------------------------------------------------------
class ImageCanvas(QWidget):
    """Image view with a label overlay; see the module docstring for coordinates and routing.

    Signals:
        cursor_moved(x, y): The mouse moved over the view; image coordinates (pixel centres at
            integers; the pixel under the cursor is ``(floor(x + 0.5), floor(y + 0.5))``).
        cursor_left(): The mouse left the view.
    """

    cursor_moved = Signal(float, float)
    cursor_left = Signal()
    levels_dragged = Signal(float, float)  # the person changed the window by right-dragging
    slice_scrolled = Signal(int)  # wheel steps (+1 = forward) while slice scrolling is on

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._image: np.ndarray | None = None
        self._levels: tuple[float, float] | None = None
        self._handler: CanvasInputHandler | None = None
        self._pan_mode = False
        self._space_held = False
        self._brush_radius: float | None = None
        self._wheel_slices = False
        self._wheel_rest = 0

        self.view = pg.GraphicsView(self, background=(32, 32, 32))
        self.view_box = _CanvasViewBox(self.left_drag_pans)
        self.view.setCentralItem(self.view_box)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay = LabelOverlayItem()
        # A model's confidence (max class probability) as a heat map: low confidence glows red.
        self.confidence_item = pg.ImageItem(axisOrder="row-major")
        self.confidence_item.setVisible(False)
        self.confidence_item.setOpacity(0.6)
        # What a tool would do if accepted (e.g. interpolated slices), drawn over the labels.
        self.preview_item = pg.ImageItem(axisOrder="row-major")
        self.preview_item.setVisible(False)
        # Optical flow: a colour-coded or magnitude image, and vectors (arrows, point tracks).
        self.flow_item = pg.ImageItem(axisOrder="row-major")
        self.flow_item.setVisible(False)
        self.vector_item = QGraphicsPathItem()
        self.vector_item.setPen(cosmetic_pen(QColor(255, 255, 255, 230), 1.2))
        self.vector_item.setZValue(8)
        self.vector_item.setVisible(False)
        self.brush_cursor = BrushCursorItem()
        self.polygon_preview = PolygonPreviewItem()
        # The linked 3-D cursor of the other views: where their slices cut this one.
        pen = cosmetic_pen(QColor(255, 200, 0, 170), 1.0, Qt.PenStyle.DashLine)
        self.crosshair = (pg.InfiniteLine(angle=90, pen=pen, movable=False),
                          pg.InfiniteLine(angle=0, pen=pen, movable=False))
        for line in self.crosshair:
            line.setZValue(9)
            line.setVisible(False)
            self.view_box.addItem(line, ignoreBounds=True)
        self.view_box.addItem(self.vector_item, ignoreBounds=True)
        # Instance boxes and their "class score" captions.
        self.box_item = QGraphicsPathItem()
        self.box_item.setPen(cosmetic_pen(QColor(255, 255, 255, 220), 1.5))
        self.box_item.setZValue(7)
        self.view_box.addItem(self.box_item, ignoreBounds=True)
        self.strong_box_item = QGraphicsPathItem()  # the selected instances' boxes
        self.strong_box_item.setPen(cosmetic_pen(QColor(255, 230, 0), 2.5))
        self.strong_box_item.setZValue(7)
        self.view_box.addItem(self.strong_box_item, ignoreBounds=True)
        self._captions: list[QGraphicsSimpleTextItem] = []
        for z, item in enumerate((self.image_item, self.flow_item, self.overlay,
                                  self.confidence_item, self.preview_item)):
            item.setPos(-0.5, -0.5)  # pixel centres on integer view coordinates
            item.setZValue(z)
            self.view_box.addItem(item)
        for z, item in enumerate((self.polygon_preview, self.brush_cursor), start=10):
            item.setZValue(z)
            item.setVisible(False)
            self.view_box.addItem(item, ignoreBounds=True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        # Orientation letters at the top, bottom, left and right edges (volumes only).
        self.edge_labels = [QLabel(self.view) for _ in range(4)]
        for label in self.edge_labels:
            label.setStyleSheet("color: rgb(255, 210, 80); font-weight: bold; background: none;")
            label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            label.hide()
        self._viewport = self.view.viewport()  # cached: no C++ call needed to match events
        self._viewport.installEventFilter(self)
        self.view.installEventFilter(self)
        self.view.viewport().setCursor(Qt.CursorShape.CrossCursor)

    # -- image -------------------------------------------------------------------------------------
    def set_image(self, array: np.ndarray, levels: tuple[float, float] | None = None, *,
                  fit_view: bool | None = None) -> None:
        """Show an image: (H, W) grey of any dtype or (H, W, 3|4) RGB(A) uint8/uint16.

        Args:
            array: The pixels (kept by reference for :meth:`value_at`).
            levels: Display range (lo, hi); None = automatic (robust percentiles; 0-255 for
                8-bit colour).
            fit_view: Fit the image in the view; None = only when the image size changed.
        """
        image = np.asarray(array)
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise ValueError(f"expected an (H, W) or (H, W, 3|4) image, got shape {image.shape}")
        if image.dtype == bool:
            image = image.astype(np.uint8)
        old_size = self.image_size()
        self._image = image
        self._levels = tuple(levels) if levels is not None else default_levels(image)
        self.image_item.setImage(image, autoLevels=False, levels=self._levels)
        if fit_view or (fit_view is None and self.image_size() != old_size):
            self.fit()

    def image(self) -> np.ndarray | None:
        return self._image

    def image_size(self) -> tuple[int, int] | None:
        """(width, height) of the image in pixels, or None before any image."""
        if self._image is None:
            return None
        return int(self._image.shape[1]), int(self._image.shape[0])

    def set_levels(self, lo: float, hi: float) -> None:
        self._levels = (float(lo), float(hi))
        self.image_item.setLevels(self._levels)

    def set_geometry(self, aspect: float = 1.0, rows_up: bool = False, cols_left: bool = False,
                     edges: Sequence[str] = ("", "", "", "")) -> None:
        """How image pixels sit on screen: ``aspect`` = displayed width / height of one pixel
        (voxel spacing), row 0 at the bottom when ``rows_up``, column 0 at the right when
        ``cols_left``; ``edges`` are letters for the top/bottom/left/right edges (e.g. A, P, R,
        L). Image coordinates stay array indices: the tools need no change."""
        self.view_box.setAspectLocked(True, ratio=float(aspect))
        self.view_box.invertY(not rows_up)
        self.view_box.invertX(bool(cols_left))
        for label, text in zip(self.edge_labels, edges, strict=True):
            label.setText(text)
            label.adjustSize()
            label.setVisible(bool(text))
        self._place_edge_labels()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._place_edge_labels()

    def _place_edge_labels(self) -> None:
        width, height = self.view.width(), self.view.height()
        top, bottom, left, right = self.edge_labels
        top.move((width - top.width()) // 2, 4)
        bottom.move((width - bottom.width()) // 2, height - bottom.height() - 4)
        left.move(6, (height - left.height()) // 2)
        right.move(width - right.width() - 6, (height - right.height()) // 2)

    def set_slice_scrolling(self, enabled: bool) -> None:
        """The wheel moves through slices (``slice_scrolled``) and Ctrl+wheel zooms, as in
        radiology viewers; off, the wheel zooms."""
        self._wheel_slices = bool(enabled)

    def set_crosshair(self, x: float | None, y: float | None) -> None:
        """Show the linked cursor's lines at column ``x`` and row ``y`` (None hides a line)."""
        for line, value in zip(self.crosshair, (x, y), strict=True):
            if value is None:
                line.setVisible(False)
            else:
                line.setValue(float(value))
                line.setVisible(True)

    def set_preview(self, mask: np.ndarray | None,
                    color: tuple[int, int, int] = (255, 255, 0)) -> None:
        """Show ``mask`` ((H, W) bool: pixels a tool would set) hatched in ``color``; None hides."""
        if mask is None or not np.any(mask):
            self.preview_item.clear()
            self.preview_item.setVisible(False)
            return
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[mask] = (*color, 150)
        stripes = mask & (((np.arange(mask.shape[0])[:, None] + np.arange(mask.shape[1])) % 4)
                          == 0)  # diagonal stripes tell a preview from painted labels
        rgba[stripes] = (255, 255, 255, 220)
        self.preview_item.setImage(rgba, autoLevels=False, levels=(0, 255))
        self.preview_item.setVisible(True)

    def set_flow_image(self, rgba: np.ndarray | None, opacity: float = 0.7) -> None:
        """Show an (H, W, 3|4) uint8 picture of the flow (colour wheel, magnitude) over the
        image and under the labels; None hides it."""
        if rgba is None:
            self.flow_item.clear()
            self.flow_item.setVisible(False)
            return
        self.flow_item.setImage(np.asarray(rgba), autoLevels=False, levels=(0, 255))
        self.flow_item.setOpacity(float(opacity))
        self.flow_item.setVisible(True)

    def flow_visible(self) -> bool:
        return self.flow_item.isVisible()

    def set_vectors(self, segments: np.ndarray | None = None,
                    polylines: Sequence[np.ndarray] = (),
                    color: tuple[int, int, int] = (255, 255, 255), head: float = 0.3) -> None:
        """Draw arrows ``segments`` ((N, 4): x0, y0, x1, y1 in image coordinates, each with a
        head of ``head`` times its length) and open ``polylines`` ((T, 2) points; NaN rows end
        a piece), e.g. point tracks over several frames. Nothing to draw hides the item."""
        path = QPainterPath()
        if segments is not None:
            for x0, y0, x1, y1 in np.asarray(segments, np.float64).reshape(-1, 4):
                path.moveTo(x0, y0)
                path.lineTo(x1, y1)
                dx, dy = x1 - x0, y1 - y0
                if dx or dy:  # two barbs at the tip, at +-30 degrees from the shaft
                    for angle in (math.radians(150), math.radians(-150)):
                        c, s_ = math.cos(angle), math.sin(angle)
                        path.moveTo(x1, y1)
                        path.lineTo(x1 + head * (c * dx - s_ * dy), y1 + head * (s_ * dx + c * dy))
        for line in polylines:
            pen_down = False
            for x, y in np.asarray(line, np.float64).reshape(-1, 2):
                if not (math.isfinite(x) and math.isfinite(y)):
                    pen_down = False
                elif pen_down:
                    path.lineTo(x, y)
                else:
                    path.moveTo(x, y)
                    pen_down = True
        pen = self.vector_item.pen()
        pen.setColor(QColor(*color, 230))
        self.vector_item.setPen(pen)
        self.vector_item.setPath(path)
        self.vector_item.setVisible(not path.isEmpty())

    def set_boxes(self, boxes: Sequence[tuple[float, float, float, float, str]] = (),
                  highlight: Sequence[int] = ()) -> None:
        """Draw boxes (x0, y0, x1, y1 as pixel-edge coordinates of a box of pixels, caption)
        with their captions; the boxes at positions ``highlight`` are drawn in yellow."""
        path, strong = QPainterPath(), QPainterPath()
        for caption in self._captions:
            self.view_box.removeItem(caption)
        self._captions = []
        for index, (x0, y0, x1, y1, text) in enumerate(boxes):
            target = strong if index in highlight else path
            target.addRect(QRectF(x0 - 0.5, y0 - 0.5, x1 - x0, y1 - y0))
            if text:
                caption = QGraphicsSimpleTextItem(text)
                caption.setBrush(QColor(255, 255, 0) if index in highlight
                                 else QColor(255, 255, 255))
                caption.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
                caption.setPos(x0 - 0.5, y0 - 0.5)
                caption.setZValue(8)
                self.view_box.addItem(caption, ignoreBounds=True)
                self._captions.append(caption)
        both = QPainterPath(path)
        both.addPath(strong)
        self.box_item.setPath(path)
        self.strong_box_item.setPath(strong)
        self.box_item.setVisible(not both.isEmpty())

    def box_count(self) -> int:
        """Boxes drawn (for tests): captions or rectangles."""
        return len(self._captions) if self._captions else \
            (self.box_item.path().elementCount() + self.strong_box_item.path().elementCount()) // 5

    def vectors_visible(self) -> bool:
        return self.vector_item.isVisible()

    def preview_visible(self) -> bool:
        return self.preview_item.isVisible()

    def set_window_level_drag(self, enabled: bool) -> None:
        """Right-drag changes the window (right: wider, down: higher level) instead of panning."""
        self.view_box.window_level = self._drag_window_level if enabled else None

    def _drag_window_level(self, dx: float, dy: float) -> None:
        if self._levels is None:
            return
        low, high = self._levels
        width, level = max(high - low, 1e-6), (high + low) / 2.0
        step = max(width, 1.0) / 256.0  # a 256-pixel drag doubles or halves the window
        width = max(width + dx * step, 1e-3)
        level += dy * step
        self.set_levels(level - width / 2.0, level + width / 2.0)
        self.levels_dragged.emit(*self._levels)

    def levels(self) -> tuple[float, float] | None:
        return self._levels

    def value_at(self, x: float, y: float) -> int | float | tuple | None:
        """Image value of the pixel containing image point (x, y); None outside the image.

        A grey image gives a number, a colour image a tuple of channel values.
        """
        pixel = self._pixel_index(x, y, self._image)
        if pixel is None:
            return None
        value = self._image[pixel]
        return tuple(value.tolist()) if value.ndim else value.item()

    def label_at(self, x: float, y: float) -> int | None:
        """Label of the pixel containing image point (x, y); None outside or without labels."""
        labels = self.overlay.labels()
        pixel = self._pixel_index(x, y, labels)
        return None if pixel is None else int(labels[pixel])

    @staticmethod
    def _pixel_index(x: float, y: float, array: np.ndarray | None) -> tuple[int, int] | None:
        if array is None or not (math.isfinite(x) and math.isfinite(y)):
            return None
        col, row = math.floor(x + 0.5), math.floor(y + 0.5)
        if 0 <= row < array.shape[0] and 0 <= col < array.shape[1]:
            return row, col
        return None

    # -- labels ------------------------------------------------------------------------------------
    def set_labels(self, labels2d: np.ndarray | None, palette: np.ndarray | None = None) -> None:
        """Show a label plane (kept by reference: edits made in place show after a refresh)."""
        self.overlay.set_labels(labels2d, palette)

    def refresh_labels(self, bbox: BBox | None = None) -> None:
        """Redraw the labels inside bbox (y0, y1, x0, x1), e.g. ``edit.bbox_2d()``; None = all."""
        self.overlay.refresh(bbox)

    def set_palette(self, palette: np.ndarray) -> None:
        self.overlay.set_palette(palette)

    def set_overlay_opacity(self, opacity: float) -> None:
        self.overlay.set_opacity(opacity)

    def set_outline_mode(self, outline: bool) -> None:
        self.overlay.set_outline_mode(outline)

    def set_overlay_visible(self, visible: bool) -> None:
        self.overlay.setVisible(bool(visible))

    def set_confidence(self, confidence: np.ndarray | None) -> None:
        """Show where a model was unsure: (H, W) probabilities in [0, 1] (None clears it).

        Uncertainty (1 - confidence) is drawn in red with matching alpha, so confident regions
        stay clear and the person's eye goes to what needs checking.
        """
        if confidence is None:
            self.confidence_item.clear()
            self.confidence_item.setVisible(False)
            return
        doubt = np.clip(1.0 - np.asarray(confidence, np.float32), 0.0, 1.0)
        rgba = np.zeros((*doubt.shape, 4), np.uint8)
        rgba[..., 0] = 255
        rgba[..., 1] = (80 * (1.0 - doubt)).astype(np.uint8)
        rgba[..., 3] = (255 * doubt).astype(np.uint8)
        self.confidence_item.setImage(rgba, autoLevels=False, levels=(0, 255))
        self.confidence_item.setVisible(True)

    def confidence_visible(self) -> bool:
        return self.confidence_item.isVisible()

    def overlay_visible(self) -> bool:
        return self.overlay.isVisible()

    # -- view ----------------------------------------------------------------------------------------
    def fit(self) -> None:
        """Show the whole image, as large as the view allows."""
        size = self.image_size()
        if size is not None:
            self.view_box.setRange(QRectF(-0.5, -0.5, size[0], size[1]), padding=0.0)

    def zoom_1to1(self) -> None:
        """One image pixel per screen (logical) pixel, keeping the view centre."""
        centre = self.view_box.viewRect().center()
        width, height = self.view_box.width(), self.view_box.height()
        self.view_box.setRange(
            QRectF(centre.x() - width / 2, centre.y() - height / 2, width, height), padding=0.0
        )

    def zoom_factor(self) -> float:
        """Screen pixels per image pixel."""
        return 1.0 / self.view_box.viewPixelSize()[0]

    def view_rect(self) -> QRectF:
        """The visible part of the image plane, in image coordinates."""
        return self.view_box.viewRect()

    def map_widget_to_image(self, pos: QPointF) -> Point:
        """Image coordinates of a point given in viewport (= canvas) pixel coordinates."""
        scene = self.view.viewportTransform().inverted()[0].map(QPointF(pos))
        point = self.view_box.mapSceneToView(scene)
        return point.x(), point.y()

    def map_image_to_widget(self, x: float, y: float) -> QPointF:
        """Viewport (= canvas) pixel coordinates of image point (x, y)."""
        scene = self.view_box.mapViewToScene(QPointF(x, y))
        return self.view.viewportTransform().map(scene)

    def viewport(self) -> QWidget:
        """The widget that receives the mouse events (send synthetic events here)."""
        return self._viewport

    # -- tools' hooks ----------------------------------------------------------------------------------
    def set_input_handler(self, handler: CanvasInputHandler | None) -> None:
        """Offer every viewport mouse event and view key event to ``handler`` first."""
        self._handler = handler

    def set_pan_mode(self, pan: bool) -> None:
        """Left-drag pans (the pan tool); the cursor shows an open hand."""
        self._pan_mode = bool(pan)
        self._update_cursor_shape()

    def left_drag_pans(self) -> bool:
        return self._pan_mode or self._space_held

    @property
    def space_held(self) -> bool:
        """True while Space is held over the focused canvas (Space+left-drag pans)."""
        return self._space_held

    def set_brush_cursor(self, radius: float | None) -> None:
        """Show a circle of ``radius`` image pixels at the mouse; None hides it."""
        self._brush_radius = None if radius is None else float(radius)
        if radius is None:
            self.brush_cursor.setVisible(False)
        else:
            self.brush_cursor.set_radius(radius)

    def set_polygon_preview(self, points: Sequence[Point], mouse: Point | None = None) -> None:
        """Show the polygon being drawn: ``points`` so far and a rubber band to ``mouse``."""
        pixel = self.view_box.viewPixelSize()[0] if self.view_box.width() > 0 else 1.0
        self.polygon_preview.set_path(points, mouse, pixel)
        self.polygon_preview.setVisible(bool(points))

    def clear_polygon_preview(self) -> None:
        self.set_polygon_preview([], None)

    # -- events --------------------------------------------------------------------------------------
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if watched is self._viewport:
            if kind in MOUSE_EVENTS:
                return self._mouse_event(event)
            if kind == QEvent.Type.Wheel and self._wheel_slices and not (
                    event.modifiers() & Qt.KeyboardModifier.ControlModifier):
                self._scroll_slices(event)
                return True
            if kind == QEvent.Type.Leave:
                self.brush_cursor.setVisible(False)
                self.cursor_left.emit()
        elif watched is self.view:
            if kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease,
                        QEvent.Type.ShortcutOverride):
                return self._key_event(event)
            if kind == QEvent.Type.FocusOut and self._space_held:
                self._space_held = False
                self._update_cursor_shape()
        return super().eventFilter(watched, event)

    def _mouse_event(self, event: QMouseEvent) -> bool:
        x, y = self.map_widget_to_image(event.position())
        if event.type() == QEvent.Type.MouseButtonPress:
            self.view.setFocus(Qt.FocusReason.MouseFocusReason)  # for Space, Enter, Esc, [ ]
        if event.type() == QEvent.Type.MouseMove:
            if self._brush_radius is not None:
                self.brush_cursor.setPos(x, y)
                self.brush_cursor.setVisible(True)
            self.cursor_moved.emit(x, y)
        return self._handler is not None and self._handler.canvas_mouse_event(event, x, y)

    def _scroll_slices(self, event) -> None:
        """One slice per wheel notch (120 units); touchpads' small steps add up."""
        self._wheel_rest += event.angleDelta().y()
        steps = int(self._wheel_rest / 120)
        if steps:
            self._wheel_rest -= steps * 120
            self.slice_scrolled.emit(steps)

    def _key_event(self, event: QKeyEvent) -> bool:
        if event.key() == Qt.Key.Key_Space:
            if event.type() == QEvent.Type.ShortcutOverride:
                event.accept()  # Space is ours while the canvas has focus
                return True
            if not event.isAutoRepeat():
                self._space_held = event.type() == QEvent.Type.KeyPress
                self._update_cursor_shape()
            return True
        if event.type() == QEvent.Type.KeyRelease or self._handler is None:
            return False
        if self._handler.canvas_key_event(event):
            event.accept()
            return True
        return False

    def _update_cursor_shape(self) -> None:
        shape = Qt.CursorShape.OpenHandCursor if self.left_drag_pans() \
            else Qt.CursorShape.CrossCursor
        self._viewport.setCursor(shape)

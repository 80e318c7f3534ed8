"""The label overlay: a label plane drawn as translucent colours, redrawn only where it changed.

pyqtgraph's ImageItem re-renders its whole array on every ``setImage`` (~65 ms for 4096x4096),
which makes a brush lag on large images. This item keeps a uint8 *display buffer* and a QImage in
``Format_Indexed8`` that shares the buffer's memory, with the class palette as colour table. After
an edit only the edit's bounding box of the buffer is recomputed and only that rectangle of the
item is repainted, and :meth:`paint` draws only the exposed rectangle.

Item coordinates: pixel (row i, column j) covers ``[j, j+1) x [i, i+1)``, as in pyqtgraph's
ImageItem; the canvas shifts both by half a pixel so that view coordinates put pixel centres on
integers (see :mod:`app.canvas.viewer`).

Label values above 255 (uint16 labels) share the 255 palette entries: a label ``v > 0`` is shown
with palette colour ``((v - 1) % 255) + 1``, so label 256 looks like label 1, 257 like 2, and so on.
Background (0) is always fully transparent.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QGraphicsObject, QStyleOptionGraphicsItem, QWidget

from core.annotation.classes import palette_rgb

BBox = tuple[int, int, int, int]  # (y0, y1, x0, x1), stops exclusive, as Edit.bbox_2d() gives


def display_indices(labels: np.ndarray) -> np.ndarray:
    """Palette index (uint8) of every label: the label itself up to 255, wrapped above.

    Args:
        labels: Integer labels of any shape.

    Returns:
        uint8 array of the same shape; 0 stays 0, ``v > 0`` becomes ``((v - 1) % 255) + 1``.
    """
    if labels.dtype == np.uint8:
        return labels
    wide = labels.astype(np.int64)
    return np.where(wide > 0, (wide - 1) % 255 + 1, 0).astype(np.uint8)


def outline_mask(labels: np.ndarray) -> np.ndarray:
    """True where a pixel's label differs from one of its 4-neighbours inside ``labels``.

    Neighbours outside the array count as equal, so the image border draws no outline.
    """
    edge = np.zeros(labels.shape, dtype=bool)
    vertical = labels[1:, :] != labels[:-1, :]
    horizontal = labels[:, 1:] != labels[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def full_palette(palette: np.ndarray | None) -> np.ndarray:
    """(256, 3) uint8 table: the given rows first, default (VOC) colours for the rest."""
    table = palette_rgb([])
    if palette is not None:
        rows = np.asarray(palette, dtype=np.uint8)[:256, :3]
        table[: len(rows)] = rows
    return table


OUTLINE_MIN_OPACITY = 0.9


class LabelOverlayItem(QGraphicsObject):
    """Draws a 2D label array as a colour overlay with partial (bounding-box) updates.

    The item keeps a reference to the label array given to :meth:`set_labels`: an EditSession
    changes it in place, and the owner calls :meth:`refresh` with the edit's bounding box.
    """

    def __init__(self, parent: QGraphicsItem | None = None) -> None:
        super().__init__(parent)
        # exposedRect in paint() is only filled in with this flag.
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self._labels: np.ndarray | None = None
        self._display = np.zeros((0, 0), dtype=np.uint8)
        self._qimage: QImage | None = None  # shares self._display's memory
        self._palette = full_palette(None)
        self._opacity = 0.5
        self._outline = False
        self._hidden: set[int] = set()  # palette indices drawn transparent

    # -- data ------------------------------------------------------------------------------------
    def set_labels(self, labels: np.ndarray | None, palette: np.ndarray | None = None) -> None:
        """Show ``labels`` (H, W) integer array; keeps a reference (no copy) to read edits from.

        Args:
            labels: The label plane, or None to show nothing.
            palette: (N, 3) uint8 colours by label index (e.g. ``palette_rgb(classes)``); None
                keeps the current palette.
        """
        if palette is not None:
            self._palette = full_palette(palette)
        if labels is not None and labels.ndim != 2:
            raise ValueError(f"labels must be 2D, got shape {labels.shape}")
        shape = (0, 0) if labels is None else labels.shape
        if shape != self._display.shape:
            self.prepareGeometryChange()
            self._display = np.zeros(shape, dtype=np.uint8)
            self._qimage = self._make_qimage(self._display) if labels is not None else None
        self._labels = labels
        self._apply_color_table()
        self._recompute(0, shape[0], 0, shape[1])
        self.update()

    def labels(self) -> np.ndarray | None:
        """The label array shown (the caller's array, not a copy)."""
        return self._labels

    def display_buffer(self) -> np.ndarray:
        """The uint8 palette indices that are drawn (read-only use; for tests and tools)."""
        return self._display

    def refresh(self, bbox: BBox | None = None) -> None:
        """Re-read the labels inside ``bbox`` (y0, y1, x0, x1), or everywhere, and repaint it."""
        if self._labels is None:
            return
        height, width = self._display.shape
        if bbox is None:
            y0, y1, x0, x1 = 0, height, 0, width
        else:
            y0, y1, x0, x1 = (int(v) for v in bbox)
            if self._outline:  # a changed pixel can turn its neighbours into edges
                y0, y1, x0, x1 = y0 - 1, y1 + 1, x0 - 1, x1 + 1
            y0, x0 = max(y0, 0), max(x0, 0)
            y1, x1 = min(y1, height), min(x1, width)
            if y0 >= y1 or x0 >= x1:
                return
        self._recompute(y0, y1, x0, x1)
        self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    # -- appearance ------------------------------------------------------------------------------
    def set_palette(self, palette: np.ndarray) -> None:
        """New class colours: only the colour table changes."""
        self._palette = full_palette(palette)
        self._apply_color_table()
        self.update()

    def set_opacity(self, opacity: float) -> None:
        """Alpha of every non-background label, 0..1: only the colour table changes."""
        self._opacity = min(max(float(opacity), 0.0), 1.0)
        self._apply_color_table()
        self.update()

    def set_hidden(self, indices: set[int]) -> None:
        """Draw these palette indices transparent (e.g. instances below a score threshold:
        label ``v`` is drawn with index ``display_indices(v)``)."""
        hidden = {int(i) for i in indices if 0 < int(i) < 256}
        if hidden != self._hidden:
            self._hidden = hidden
            self._apply_color_table()
            self.update()

    def opacity_value(self) -> float:
        """The overlay opacity set with :meth:`set_opacity` (QGraphicsItem.opacity is separate)."""
        return self._opacity

    def set_outline_mode(self, outline: bool) -> None:
        """Show only the pixels on a label's edge (4-neighbourhood) instead of filled regions."""
        outline = bool(outline)
        if outline == self._outline:
            return
        self._outline = outline
        self._apply_color_table()  # outlines are drawn more opaque than fills
        self.refresh()

    def outline_mode(self) -> bool:
        return self._outline

    # -- QGraphicsItem -----------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        height, width = self._display.shape
        return QRectF(0, 0, width, height)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:
        if self._qimage is None:
            return
        exposed = option.exposedRect.intersected(self.boundingRect())
        if exposed.isEmpty():
            return
        # Whole pixels only, so source and target rectangles map pixel to pixel.
        x0, y0 = int(np.floor(exposed.left())), int(np.floor(exposed.top()))
        x1, y1 = int(np.ceil(exposed.right())), int(np.ceil(exposed.bottom()))
        rect = QRectF(x0, y0, x1 - x0, y1 - y0)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        painter.drawImage(rect, self._qimage, rect)

    # -- internals ---------------------------------------------------------------------------------
    @staticmethod
    def _make_qimage(buffer: np.ndarray) -> QImage:
        height, width = buffer.shape
        # PySide6 takes the non-const constructor: the QImage reads the numpy memory directly.
        # self._display keeps the buffer alive as long as the image uses it.
        return QImage(buffer, width, height, width, QImage.Format.Format_Indexed8)

    def _apply_color_table(self) -> None:
        if self._qimage is None:
            return
        opacity = self._opacity
        if self._outline and opacity > 0:
            # A one-pixel contour at fill opacity all but vanishes: draw it nearly opaque.
            opacity = max(opacity, OUTLINE_MIN_OPACITY)
        alpha = round(opacity * 255)
        rgb = self._palette.astype(np.uint32)
        argb = (alpha << 24) | (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        argb[0] = 0  # background: fully transparent
        for index in self._hidden:
            argb[index] = 0
        self._qimage.setColorTable([int(v) for v in argb])

    def _recompute(self, y0: int, y1: int, x0: int, x1: int) -> None:
        """Fill the display buffer over rows y0:y1, columns x0:x1 from the labels."""
        labels = self._labels
        if labels is None or y0 >= y1 or x0 >= x1:
            return
        if not self._outline:
            self._display[y0:y1, x0:x1] = display_indices(labels[y0:y1, x0:x1])
            return
        height, width = labels.shape
        # Read one more pixel on each side so edges at the box border are judged correctly.
        ey0, ey1 = max(y0 - 1, 0), min(y1 + 1, height)
        ex0, ex1 = max(x0 - 1, 0), min(x1 + 1, width)
        around = labels[ey0:ey1, ex0:ex1]
        inner = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
        edge = outline_mask(around)[inner]
        self._display[y0:y1, x0:x1] = np.where(edge, display_indices(around[inner]), 0)

"""The timeline under a video: a model's class probabilities over the frames, and the temporal
segments (what happens when) as coloured bands the person creates, resizes and selects.

Two pyqtgraph plots share the frame axis. The upper one draws the top-k classes' per-frame scores
and a line at the shown frame (click or drag it to move through the video). The lower one is the
segment track: a left-drag on an empty stretch creates a segment, dragging a band's edge resizes
it, a click selects it. The widget holds no segments of its own: it draws what it is given and
reports what the person did; :class:`~core.annotation.segments.SegmentTrack` does the editing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QVBoxLayout, QWidget

from core.annotation.segments import Segment

TOP_K = 5
AXIS_WIDTH = 36  # px of the left axes, equal in both plots so that frame x lines up


def label_color(label: str, alpha: int = 255) -> QColor:
    """A stable colour per action label (its hash picks the hue)."""
    hue = (sum(ord(c) * 31 ** i for i, c in enumerate(label)) % 360) / 360.0
    color = QColor.fromHsvF(hue, 0.75, 0.95)
    color.setAlpha(alpha)
    return color


class _TrackViewBox(pg.ViewBox):
    """Left-drag on the track draws a new segment; the wheel and right-drag zoom/pan x only."""

    def __init__(self, owner: TimelineWidget) -> None:
        super().__init__(enableMenu=False)
        self._owner = owner
        self._draft: pg.LinearRegionItem | None = None
        self.setMouseEnabled(x=True, y=False)

    def mouseDragEvent(self, ev, axis=None) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        x0 = self.mapSceneToView(ev.buttonDownScenePos()).x()
        x1 = self.mapSceneToView(ev.scenePos()).x()
        if self._draft is None:
            self._draft = pg.LinearRegionItem((x0, x1), movable=False,
                                              brush=pg.mkBrush(255, 255, 255, 60))
            self.addItem(self._draft)
        self._draft.setRegion((x0, x1))
        if ev.isFinish():
            self.removeItem(self._draft)
            self._draft = None
            self._owner.drew(x0, x1)

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self._owner.clicked_track(self.mapSceneToView(ev.scenePos()).x())
        else:
            super().mouseClickEvent(ev)


class TimelineWidget(QWidget):
    """Signals: ``frame_requested(int)``, ``segment_drawn(start, end)``,
    ``segment_resized(index, start, end)``, ``segment_selected(index or -1)``."""

    frame_requested = Signal(int)
    segment_drawn = Signal(int, int)
    segment_resized = Signal(int, int, int)
    segment_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames = 1
        self.selected = -1
        self.scores_plot = pg.PlotWidget(background=(30, 30, 30))
        self.scores_plot.setMinimumHeight(90)
        self.scores_plot.setMouseEnabled(x=True, y=False)
        self.scores_plot.setYRange(0, 1.02, padding=0)
        self.scores_plot.addLegend(offset=(5, 5), labelTextSize="8pt")
        self.scores_plot.scene().sigMouseClicked.connect(self._scores_clicked)
        self.cursor = pg.InfiniteLine(0, angle=90, movable=True,
                                      pen=pg.mkPen(255, 220, 0, width=2))
        self.cursor.sigDragged.connect(
            lambda line: self.frame_requested.emit(self._frame(line.value())))
        self.scores_plot.addItem(self.cursor)
        self.track_box = _TrackViewBox(self)
        self.track_plot = pg.PlotWidget(viewBox=self.track_box, background=(45, 45, 45))
        self.track_plot.setFixedHeight(56)
        for plot in (self.scores_plot, self.track_plot):  # same width: frames line up
            plot.getAxis("left").setWidth(AXIS_WIDTH)
        self.track_plot.getAxis("left").setStyle(showValues=False)
        self.track_plot.getAxis("left").setTicks([[]])
        self.track_plot.setYRange(0, 1, padding=0)
        self.track_plot.setXLink(self.scores_plot)
        self.track_cursor = pg.InfiniteLine(0, angle=90, movable=False,
                                            pen=pg.mkPen(255, 220, 0, width=1))
        self.track_plot.addItem(self.track_cursor)
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.regions: list[pg.LinearRegionItem] = []
        self.captions: list[pg.TextItem] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.scores_plot, 1)
        layout.addWidget(self.track_plot)

    # -- what to show ---------------------------------------------------------------------------------
    def set_frames(self, frames: int) -> None:
        self.frames = max(int(frames), 1)
        self.scores_plot.setXRange(0, self.frames - 1, padding=0.01)
        self.scores_plot.setLimits(xMin=-1, xMax=self.frames)

    def set_frame(self, frame: int) -> None:
        self.cursor.setValue(frame)
        self.track_cursor.setValue(frame)

    def set_scores(self, scores: np.ndarray | None, labels: Sequence[str] = (),
                   top_k: int = TOP_K) -> list[str]:
        """Draw the ``top_k`` classes with the highest mean score; returns their labels."""
        for curve in self.curves.values():
            self.scores_plot.removeItem(curve)
        self.curves = {}
        legend = self.scores_plot.plotItem.legend
        if legend is not None:
            legend.clear()
        if scores is None or not len(labels):
            return []
        scores = np.asarray(scores, np.float32)
        order = np.argsort(scores.mean(axis=0))[::-1][:top_k]
        frames = np.arange(scores.shape[0])
        for index in order:
            label = labels[int(index)]
            self.curves[label] = self.scores_plot.plot(
                frames, scores[:, index], pen=pg.mkPen(label_color(label), width=2), name=label)
        return list(self.curves)

    def set_segments(self, segments: Sequence[Segment], selected: int = -1) -> None:
        """Draw the segments as bands (the selected one brighter, with draggable edges)."""
        for region in self.regions:
            self.track_box.removeItem(region)
        for caption in self.captions:
            self.track_box.removeItem(caption)
        self.regions, self.captions = [], []
        self.selected = selected
        for index, segment in enumerate(segments):
            chosen = index == selected
            region = pg.LinearRegionItem(
                (segment.start - 0.5, segment.end + 0.5), movable=chosen,
                brush=pg.mkBrush(label_color(segment.label, 200 if chosen else 110)),
                pen=pg.mkPen(255, 255, 0, width=2) if chosen else pg.mkPen(None))
            region.setZValue(10 if chosen else 5)
            region.sigRegionChangeFinished.connect(
                lambda r, i=index: self._region_moved(i, r))
            self.track_box.addItem(region)
            caption = pg.TextItem(segment.label + ("?" if segment.source == "model" else ""),
                                  color=(255, 255, 255), anchor=(0, 0.5))
            caption.setPos(segment.start, 0.5)
            self.track_box.addItem(caption)
            self.regions.append(region)
            self.captions.append(caption)

    # -- what the person did --------------------------------------------------------------------------
    def _frame(self, x: float) -> int:
        return min(max(int(round(x)), 0), self.frames - 1)

    def _scores_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        box = self.scores_plot.plotItem.vb
        if box.sceneBoundingRect().contains(ev.scenePos()):
            self.frame_requested.emit(self._frame(box.mapSceneToView(ev.scenePos()).x()))

    def drew(self, x0: float, x1: float) -> None:
        start, end = sorted((self._frame(x0), self._frame(x1)))
        self.segment_drawn.emit(start, end)

    def clicked_track(self, x: float) -> None:
        frame = self._frame(x)
        for index, region in enumerate(self.regions):
            low, high = region.getRegion()
            if low <= frame <= high:
                self.segment_selected.emit(index)
                return
        self.segment_selected.emit(-1)
        self.frame_requested.emit(frame)

    def _region_moved(self, index: int, region: pg.LinearRegionItem) -> None:
        low, high = region.getRegion()
        start, end = self._frame(low + 0.5), self._frame(high - 0.5)
        self.segment_resized.emit(index, start, max(start, end))

"""The bar under a video: play/pause, step buttons, the frame slider over a marker strip, the
frame number and the time.

The marker strip shows, for every frame that has labels, a tick: blue for frames the person drew,
green for reviewed ones, and for frames propagated along the optical flow a colour from red
(unreliable: few pixels passed the forward-backward check) to yellow-green (reliable), so the
person sees at a glance where to look. Playback follows the wall clock at the video's frame rate
and skips frames it could not show in time instead of falling behind.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPaintEvent
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.project.items import FrameInfo

DRAWN = QColor(60, 130, 255)
REVIEWED = QColor(40, 170, 90)


def reliability_color(reliability: float | None) -> QColor:
    """Red (0) through orange to yellow-green (1) for a propagated frame's reliability."""
    r = 0.0 if reliability is None else min(max(float(reliability), 0.0), 1.0)
    return QColor.fromHsvF(r * 0.25, 0.9, 0.95)


def format_time(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes)}:{rest:06.3f}"


class MarkerStrip(QWidget):
    """A thin strip with a tick per annotated frame, aligned with the slider above it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(8)
        self.setMaximumHeight(8)
        self._count = 1
        self._info: dict[int, FrameInfo] = {}
        self.margin = 6  # the slider groove's inset, so ticks sit under their frame

    def set_frames(self, count: int, info: dict[int, FrameInfo]) -> None:
        self._count, self._info = max(int(count), 1), dict(info)
        self.update()

    def frames(self) -> dict[int, FrameInfo]:
        return dict(self._info)

    def color_of(self, frame: int) -> QColor | None:
        """The tick colour of ``frame`` (None: no labels)."""
        info = self._info.get(frame)
        if info is None:
            return None
        if info.state == "propagated":
            return reliability_color(info.reliability)
        return REVIEWED if info.state == "reviewed" else DRAWN

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(50, 50, 50))
        span = max(self.width() - 2 * self.margin, 1)
        step = span / max(self._count - 1, 1)
        width = max(step, 2.0)
        for frame in self._info:
            color = self.color_of(frame)
            x = self.margin + frame * step - width / 2
            painter.fillRect(QRectF(x, 0, width, self.height()), color)
        painter.end()


class VideoBar(QWidget):
    """Signals ``frame_requested(int)`` when the person moves to a frame (slider, keys, play)."""

    frame_requested = Signal(int)
    playing_changed = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.fps = 25.0
        self.count = 1
        self.frame = 0
        self.play_button = QPushButton("Play")
        self.play_button.setObjectName("play_button")
        self.play_button.setToolTip("Play/pause (K)")
        self.play_button.clicked.connect(self.toggle_play)
        self.back10, self.back1, self.fwd1, self.fwd10 = (
            QPushButton(text) for text in ("-10", "-1", "+1", "+10"))
        for button, delta in ((self.back10, -10), (self.back1, -1), (self.fwd1, 1),
                              (self.fwd10, 10)):
            button.setMaximumWidth(44)
            button.clicked.connect(lambda _c=False, d=delta: self.step(d))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("frame_slider")
        self.slider.valueChanged.connect(self._slider_moved)
        self.strip = MarkerStrip()
        self.jump = QSpinBox()
        self.jump.setObjectName("frame_jump")
        self.jump.setKeyboardTracking(False)
        self.jump.setToolTip("Jump to frame")
        self.jump.valueChanged.connect(lambda v: self.request(v - 1))
        self.time = QLabel("")
        self.time.setMinimumWidth(150)
        track = QVBoxLayout()
        track.setSpacing(0)
        track.addWidget(self.slider)
        track.addWidget(self.strip)
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 4, 2)
        for widget in (self.play_button, self.back10, self.back1, self.fwd1, self.fwd10):
            row.addWidget(widget)
        row.addLayout(track, 1)
        row.addWidget(self.jump)
        row.addWidget(self.time)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._tick)
        self._play_start = (0.0, 0)  # (wall clock, frame) when playback started

    # -- state ---------------------------------------------------------------------------------------
    def set_video(self, count: int, fps: float) -> None:
        self.stop()
        self.count, self.fps = max(int(count), 1), float(fps) if fps and fps > 0 else 25.0
        for widget in (self.slider, self.jump):
            widget.blockSignals(True)
        self.slider.setRange(0, self.count - 1)
        self.jump.setRange(1, self.count)
        self.jump.setSuffix(f" / {self.count}")
        for widget in (self.slider, self.jump):
            widget.blockSignals(False)
        self.show_frame(0)

    def show_frame(self, frame: int) -> None:
        """Display ``frame`` (0-based) as the current one, without emitting."""
        self.frame = int(frame)
        for widget, value in ((self.slider, self.frame), (self.jump, self.frame + 1)):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        total = self.count / self.fps
        self.time.setText(f"{format_time(self.frame / self.fps)} / {format_time(total)}")

    def set_markers(self, info: dict[int, FrameInfo]) -> None:
        self.strip.set_frames(self.count, info)

    # -- moving ----------------------------------------------------------------------------------------
    def request(self, frame: int) -> None:
        frame = min(max(int(frame), 0), self.count - 1)
        if frame != self.frame:
            self.frame_requested.emit(frame)

    def step(self, delta: int) -> None:
        self.stop()
        self.request(self.frame + delta)

    def _slider_moved(self, value: int) -> None:
        self.request(value)

    # -- playback --------------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        return self._timer.isActive()

    def toggle_play(self) -> None:
        if self.playing:
            self.stop()
        else:
            self.play()

    def play(self) -> None:
        if self.playing:
            return
        if self.frame >= self.count - 1:
            self.request(0)  # at the end: play from the start
        self._play_start = (time.perf_counter(), self.frame)
        self._timer.start(max(int(500.0 / self.fps), 1))  # tick at twice the frame rate
        self.play_button.setText("Pause")
        self.playing_changed.emit(True)

    def stop(self) -> None:
        if not self.playing:
            return
        self._timer.stop()
        self.play_button.setText("Play")
        self.playing_changed.emit(False)

    def _tick(self) -> None:
        """Show the frame the wall clock says is due (skipping late ones, never lagging)."""
        started, first = self._play_start
        due = first + int((time.perf_counter() - started) * self.fps)
        if due >= self.count - 1:
            self.request(self.count - 1)
            self.stop()
        elif due != self.frame:
            self.request(due)

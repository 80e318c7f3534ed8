"""The Video panel: optical flow over the frame, and masks carried along it to other frames.

Flow: the flow from the shown frame ``t`` to ``t + k`` (Farneback, DIS, RAFT small/large) as the
Middlebury colour code (with its legend), arrows on a grid or a magnitude heat map, and
Lucas-Kanade point tracks over the last frames. It is computed off the UI thread when the frame
changes, each field once (a :class:`~core.flow.cache.FlowCache` shared with propagation).

Propagation: the shown frame's labels are carried forward or backward N frames (stopping before
a frame the person drew), or the frames between the two keyframes around the shown frame are
filled from both ends. Each propagated frame becomes one undo step of that frame, is marked
"propagated" with its reliability (the share of its pixels whose flow passed the
forward-backward check) and its unreliable pixels are kept to be shown hatched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from app.widgets import double_spin_box, spin_box
from app.worker import Job
from app.workspace import Workspace
from core.errors import SegStudioError

# DIS first: as fast as Farneback and it keeps its accuracy on weakly textured regions, where
# Farneback's polynomial fit underestimates the motion (measured on the astronaut's face: 1.4
# px for a 2 px pan, IoU 0.83 after 10 propagated frames against 1.0 with DIS).
METHODS = (("DIS", "dis"), ("Farneback", "farneback"), ("RAFT small", "raft_small"),
           ("RAFT large", "raft_large"))
MIN_ARROW = 0.5  # px of flow: still points get no arrow (a dot each would hide the frame)
TRACK_HISTORY = 10  # frames of Lucas-Kanade trails drawn behind each point
PERSON_STATES = ("annotated", "reviewed")  # frames propagation never overwrites


@dataclass
class FlowOverlay:
    """What to draw over frame ``frame`` (all None: nothing)."""

    frame: int
    image: np.ndarray | None = None  # RGB(A) picture of the flow
    opacity: float = 0.7
    arrows: np.ndarray | None = None  # (N, 4) x0, y0, x1, y1
    tracks: list[np.ndarray] = field(default_factory=list)
    text: str = ""


class VideoPanel(QWidget):
    """Signals ``overlay_ready(FlowOverlay)`` and ``propagated(list[int])`` (frames written)."""

    overlay_ready = Signal(object)
    propagated = Signal(object)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.flow_job: Job | None = None
        self.propagation_job: Job | None = None
        self._pending_frame: int | None = None
        self._cache: Any = None  # FlowCache, made on first use (keeps torch-free start-up)
        self.unreliable: dict[int, np.ndarray] = {}  # frame -> pixels to check, this session
        self.method = QComboBox()
        self.method.setObjectName("flow_method")
        for text, name in METHODS:
            self.method.addItem(text, name)
        self.step = spin_box(1, 30, prefix="to frame +")
        self.show_color = QCheckBox("Colour code")
        self.show_color.setObjectName("flow_color")
        self.show_arrows = QCheckBox("Arrows")
        self.show_arrows.setObjectName("flow_arrows")
        self.show_magnitude = QCheckBox("Magnitude")
        self.show_magnitude.setObjectName("flow_magnitude")
        self.show_tracks = QCheckBox("Point tracks (Lucas-Kanade)")
        self.show_tracks.setObjectName("flow_tracks")
        self.arrow_step = spin_box(4, 128, 16, suffix=" px grid")
        self.arrow_scale = double_spin_box(0.1, 50.0, 3.0)
        self.arrow_scale.setPrefix("x")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(70)
        self.legend = QLabel()
        self.legend.setToolTip("Direction is hue, speed is saturation (Middlebury colour code)")
        self.flow_status = QLabel("")
        self.flow_status.setWordWrap(True)
        for box in (self.show_color, self.show_arrows, self.show_magnitude, self.show_tracks):
            box.toggled.connect(self._overlay_settings_changed)
        for widget in (self.arrow_step, self.arrow_scale, self.step):
            widget.valueChanged.connect(self._overlay_settings_changed)
        self.method.currentIndexChanged.connect(self._overlay_settings_changed)
        self.opacity.valueChanged.connect(self._overlay_settings_changed)

        self.frames = spin_box(1, 10000, 10, name="propagate_frames")
        self.forward = QPushButton("Propagate forward")
        self.forward.setObjectName("propagate_forward")
        self.backward = QPushButton("Propagate backward")
        self.backward.setObjectName("propagate_backward")
        self.between = QPushButton("Fill between keyframes")
        self.between.setObjectName("propagate_between")
        self.between.setToolTip("Carry the drawn frames before and after this one toward each "
                                "other and blend them")
        self.forward.clicked.connect(lambda: self.propagate(+1))
        self.backward.clicked.connect(lambda: self.propagate(-1))
        self.between.clicked.connect(self.fill_between)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self._cancel)
        self.show_unreliable = QCheckBox("Hatch unreliable pixels")
        self.show_unreliable.setChecked(True)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._layout()

    def _layout(self) -> None:
        flow = QGroupBox("Optical flow")
        form = QFormLayout(flow)
        form.addRow("Method", self.method)
        form.addRow("Between", self.step)
        shows = QVBoxLayout()
        for box in (self.show_color, self.show_arrows, self.show_magnitude, self.show_tracks):
            shows.addWidget(box)
        legend_row = QHBoxLayout()
        legend_row.addLayout(shows)
        legend_row.addWidget(self.legend)
        form.addRow(legend_row)
        arrows = QHBoxLayout()
        arrows.addWidget(self.arrow_step)
        arrows.addWidget(self.arrow_scale)
        form.addRow("Arrows", arrows)
        form.addRow("Opacity", self.opacity)
        form.addRow(self.flow_status)
        carry = QGroupBox("Propagate labels along the flow")
        grid = QFormLayout(carry)
        grid.addRow("Frames", self.frames)
        buttons = QHBoxLayout()
        buttons.addWidget(self.backward)
        buttons.addWidget(self.forward)
        grid.addRow(buttons)
        grid.addRow(self.between)
        grid.addRow(self.show_unreliable)
        row = QHBoxLayout()
        row.addWidget(self.progress)
        row.addWidget(self.cancel)
        grid.addRow(row)
        grid.addRow(self.status)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(flow)
        layout.addWidget(carry)
        layout.addStretch(1)

    # -- flow overlay ----------------------------------------------------------------------------------
    def overlays_wanted(self) -> bool:
        return any(box.isChecked() for box in (self.show_color, self.show_arrows,
                                                self.show_magnitude, self.show_tracks))

    def _overlay_settings_changed(self, *_args) -> None:
        if self.show_color.isChecked() and self.legend.pixmap().isNull():
            self._show_legend()
        self.frame_shown(self.workspace.frame)

    def _show_legend(self) -> None:
        from core.flow.visualize import color_wheel_legend

        rgb = np.ascontiguousarray(color_wheel_legend(72)[..., :3])
        image = QImage(rgb.data, rgb.shape[1], rgb.shape[0], rgb.strides[0],
                       QImage.Format.Format_RGB888)
        self.legend.setPixmap(QPixmap.fromImage(image.copy()))

    def frame_shown(self, frame: int) -> None:
        """The window shows ``frame``: compute its overlay (after the running one, if any)."""
        item = self.workspace.item
        if item is None or item.kind != "video" or self.workspace.video is None:
            return
        if not self.overlays_wanted():
            self.overlay_ready.emit(FlowOverlay(frame))
            return
        if self.flow_job is not None:
            self._pending_frame = frame  # only the latest request matters while scrubbing
            return
        settings = self._settings()
        reader, provider = self.workspace.video, self.provider()
        self.flow_status.setText(f"Computing {self.method.currentText()} flow…")
        self.flow_job = Job(lambda report, cancel: _overlay(reader, provider, frame, settings),
                            self)
        self.flow_job.succeeded.connect(self._overlay_done)
        self.flow_job.failed.connect(self._overlay_failed)
        self.flow_job.start()

    def _settings(self) -> dict[str, Any]:
        return {"k": self.step.value(), "color": self.show_color.isChecked(),
                "arrows": self.show_arrows.isChecked(),
                "magnitude": self.show_magnitude.isChecked(),
                "tracks": self.show_tracks.isChecked(), "arrow_step": self.arrow_step.value(),
                "arrow_scale": self.arrow_scale.value(), "opacity": self.opacity.value() / 100}

    def provider(self):
        """The flow ``flow(t, k)`` of the open video with the chosen method, cached."""
        from core.flow.cache import FlowCache, FlowProvider

        if self._cache is None:
            self._cache = FlowCache(max_mb=512)
        ws = self.workspace
        return FlowProvider(ws.video.frame, self.method.currentData(), cache=self._cache,
                            source_id=f"item {ws.item.id}", count=ws.item.frames)

    def _overlay_done(self, overlay: FlowOverlay) -> None:
        self.flow_job = None
        self.flow_status.setText(overlay.text)
        if overlay.frame == self.workspace.frame:
            self.overlay_ready.emit(overlay)
        self._next_pending()

    def _overlay_failed(self, message: str) -> None:
        self.flow_job = None
        self.flow_status.setText(message)
        self.overlay_ready.emit(FlowOverlay(self.workspace.frame))
        self._next_pending()

    def _next_pending(self) -> None:
        pending, self._pending_frame = self._pending_frame, None
        if pending is not None:
            self.frame_shown(self.workspace.frame)

    # -- propagation -----------------------------------------------------------------------------------
    def _require_video(self):
        ws = self.workspace
        if ws.item is None or ws.item.kind != "video" or ws.session is None:
            raise SegStudioError("Propagation works on videos: open one first.")
        if ws.video is None:
            raise SegStudioError(ws.image_error or "The video cannot be read.")
        if self.propagation_job is not None:
            raise SegStudioError("A propagation is running.")
        return ws

    def propagate(self, direction: int) -> None:
        """Carry the shown frame's labels ``frames`` frames forward (+1) or backward (-1)."""
        try:
            ws = self._require_video()
            start, labels = ws.frame, ws.session.labels.copy()
            if not labels.any():
                raise SegStudioError("This frame has no labels to propagate.")
            last = min(max(start + direction * self.frames.value(), 0), ws.item.frames - 1)
            info = ws.project.frame_info(ws.item.id)
            stop, blocked = last, None
            for frame in range(start + direction, last + direction, direction):
                if frame in info and info[frame].state in PERSON_STATES:
                    stop, blocked = frame - direction, frame
                    break
            if stop == start:
                raise SegStudioError(f"Frame {start + direction + 1} was drawn by you: nothing "
                                     "to propagate into.")
        except SegStudioError as err:
            self.status.setText(str(err))
            return
        provider = self.provider()
        note = f" (stopped before frame {blocked + 1}, which you drew)" if blocked is not None \
            else ""

        def work(report, cancel):
            from core.flow.propagate import propagate

            results = []
            total = abs(stop - start)
            for step in propagate(labels, provider, start, stop):
                if cancel.is_set():
                    return None
                results.append(step)
                report(len(results), total)
            return results

        self._run(work, note)

    def fill_between(self) -> None:
        """Fill the frames between the drawn frames before and after the shown one."""
        try:
            ws = self._require_video()
            here = ws.frame
            drawn = sorted(f for f, i in ws.project.frame_info(ws.item.id).items()
                           if i.state in PERSON_STATES)
            before = [f for f in drawn if f <= here]
            after = [f for f in drawn if f > here]
            if not before or not after:
                raise SegStudioError("Draw a keyframe before (or at) this frame and one after "
                                     "it first.")
            a, b = before[-1], after[0]
            if b - a < 2:
                raise SegStudioError(f"Frames {a + 1} and {b + 1} are neighbours: nothing "
                                     "between them.")
            labels_a = ws.frame_session(a).labels.copy()
            labels_b = ws.frame_session(b).labels.copy()
            ws.frame_session(here)  # keep the shown frame's session the most recent
        except SegStudioError as err:
            self.status.setText(str(err))
            return
        provider = self.provider()

        def work(report, cancel):
            from core.flow.errors import PropagationCancelled
            from core.flow.propagate import propagate_between

            try:
                return propagate_between(labels_a, a, labels_b, b, provider, report=report,
                                         cancel=cancel)
            except PropagationCancelled:
                return None

        self._run(work, f" between frames {a + 1} and {b + 1}")

    def _run(self, work, note: str) -> None:
        self.propagation_job = Job(work, self)
        self.propagation_job.progress.connect(self._on_progress)
        self.propagation_job.succeeded.connect(lambda steps: self._apply(steps, note))
        self.propagation_job.failed.connect(self._failed)
        self._set_running(True)
        self.status.setText(f"Propagating with {self.method.currentText()}…")
        self.propagation_job.start()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _apply(self, steps, note: str) -> None:
        """Each propagated frame: one undo step of its own, marked propagated with its score."""
        self._set_running(False)
        ws = self.workspace
        if steps is None:
            self.status.setText("Propagation cancelled: no frame changed.")
            return
        if ws.item is None or ws.item.kind != "video":
            self.status.setText("The video was closed: propagation dropped.")
            return
        written = []
        try:
            for step in steps:
                session = ws.frame_session(step.frame_index)
                labels = step.labels.astype(session.labels.dtype, copy=False)
                session.replace_plane(labels)
                session.set_frame_state("propagated", float(step.reliability))
                self.unreliable[step.frame_index] = step.unreliable
                written.append(step.frame_index)
            ws.frame_session(ws.frame)  # the shown frame stays the most recent session
        except SegStudioError as err:
            self.status.setText(f"Stopped after {len(written)} frame(s): {err}")
            self.propagated.emit(written)
            return
        scores = [s.reliability for s in steps]
        worst = min(range(len(steps)), key=lambda i: scores[i]) if steps else None
        text = f"Propagated to {len(written)} frame(s){note}."
        if worst is not None:
            text += (f" Least reliable: frame {steps[worst].frame_index + 1} "
                     f"({scores[worst]:.1%} of its pixels consistent).")
        self.status.setText(text)
        self.propagated.emit(written)

    def _failed(self, message: str) -> None:
        self._set_running(False)
        self.status.setText(message)

    def _cancel(self) -> None:
        if self.propagation_job is not None:
            self.propagation_job.cancel()

    def _set_running(self, running: bool) -> None:
        if not running:
            self.propagation_job = None
        for button in (self.forward, self.backward, self.between):
            button.setEnabled(not running)
        self.cancel.setEnabled(running)

    def unreliable_mask(self, frame: int) -> np.ndarray | None:
        """Pixels of ``frame`` to check after a propagation (None: none known or hidden)."""
        if not self.show_unreliable.isChecked():
            return None
        return self.unreliable.get(frame)

    def reset(self) -> None:
        """Another item was opened: forget its unreliable pixels and cached flow."""
        self.unreliable.clear()
        self._cache = None
        self._pending_frame = None

    def shutdown(self) -> None:
        """Stop running jobs (the window closes)."""
        for job in (self.flow_job, self.propagation_job):
            if job is not None:
                job.cancel()
                job.wait()


def _overlay(reader, provider, frame: int, settings: dict[str, Any]) -> FlowOverlay:
    """Compute what to draw over ``frame`` (runs on the worker thread)."""
    from core.flow.visualize import flow_arrows, flow_magnitude_heat, flow_to_color

    overlay = FlowOverlay(frame, opacity=settings["opacity"])
    count = provider.count
    k = settings["k"]
    parts = []
    if settings["color"] or settings["arrows"] or settings["magnitude"]:
        if frame + k < count:
            flow = provider(frame, k)
            toward = f"frame {frame + k + 1}"
        elif frame - k >= 0:  # the last frames: show where they came from
            flow = -np.asarray(provider(frame, -k))
            toward = f"frame {frame - k + 1} (reversed)"
        else:
            return FlowOverlay(frame, text="The video is too short for this step.")
        magnitude = np.hypot(flow[..., 0], flow[..., 1])
        if settings["magnitude"]:
            overlay.image = flow_magnitude_heat(flow)
        if settings["color"]:
            overlay.image = flow_to_color(flow)
        if settings["arrows"]:
            overlay.arrows = flow_arrows(flow, step=settings["arrow_step"],
                                         scale=settings["arrow_scale"],
                                         min_magnitude=MIN_ARROW)
        parts.append(f"Flow to {toward}: mean {magnitude.mean():.2f} px, max "
                     f"{magnitude.max():.2f} px.")
    if settings["tracks"]:
        from core.flow.methods import track_points

        first = max(frame - TRACK_HISTORY, 0)
        frames = [reader.frame(i) for i in range(first, frame + 1)]
        tracks = track_points(frames)
        overlay.tracks = tracks.polylines(len(frames) - 1)
        parts.append(f"{len(overlay.tracks)} of {tracks.num_tracks} points tracked over "
                     f"{len(frames)} frames.")
    overlay.text = " ".join(parts)
    return overlay

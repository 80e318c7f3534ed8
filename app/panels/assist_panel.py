"""The Assist panel: classical, weight-free helpers on the open item's current plane.

"Threshold (Otsu)" writes the selected class on the bright (or dark) pixels that are background
now; "GrabCut" cuts the object out of the box around the class's rough outline, off the UI thread.
Each result is one undo step, and pixels of other classes are never changed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.widgets import spin_box
from app.worker import Job
from app.workspace import Workspace
from core.classical import grabcut, otsu_threshold, remove_small
from core.errors import SegStudioError

BOX_GROWTH = 0.05  # the outline's bounding box grows by 5% of its width/height on each side
GRABCUT_ITERATIONS = 5


@dataclass(frozen=True)
class GrabCutRequest:
    """What a GrabCut run works on, captured on the UI thread when the button is pressed."""

    item_id: int
    plane: tuple[int, ...]
    class_index: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive)


def grown_box(mask: np.ndarray, growth: float = BOX_GROWTH) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1; ends exclusive) of a non-empty mask, grown and clipped."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    dx, dy = math.ceil(growth * (x1 - x0)), math.ceil(growth * (y1 - y0))
    height, width = mask.shape
    return max(0, x0 - dx), max(0, y0 - dy), min(width, x1 + dx), min(height, y1 + dy)


def _with_class(plane: np.ndarray, class_index: int) -> np.ndarray:
    """A copy of ``plane`` in a dtype that can hold ``class_index``."""
    return plane.astype(np.promote_types(plane.dtype, np.min_scalar_type(class_index)))


def _format_threshold(value: float) -> str:
    return f"{value:.1f}" if float(value).is_integer() else f"{value:.4g}"


class AssistPanel(QWidget):
    """Signals ``applied(edit)`` after a result lands on the current item as one undo step.

    Args:
        workspace: The open project and item.
        current_class: Returns the class index selected for painting.
        parent: Qt parent.
    """

    applied = Signal(object)

    def __init__(self, workspace: Workspace, current_class: Callable[[], int],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.current_class = current_class
        self.job: Job | None = None
        self.dark = QCheckBox("dark objects")
        self.dark.setObjectName("otsu_dark")
        self.min_size = spin_box(0, 10_000_000,
                                 suffix=" px", special="keep all", name="otsu_min_size")
        self.otsu_button = QPushButton("Threshold (Otsu)")
        self.otsu_button.setObjectName("run_otsu")
        self.grabcut_button = QPushButton("GrabCut from the class's box")
        self.grabcut_button.setObjectName("run_grabcut")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setTextVisible(False)
        self.status = QLabel("")
        self.status.setObjectName("assist_status")
        self.status.setWordWrap(True)
        self._layout()
        self.otsu_button.clicked.connect(lambda: self._guard(self.run_otsu))
        self.grabcut_button.clicked.connect(lambda: self._guard(self.run_grabcut))

    def _layout(self) -> None:
        otsu = QGroupBox("Threshold")
        form = QFormLayout(otsu)
        form.addRow(self.dark)
        form.addRow("Ignore regions smaller than", self.min_size)
        form.addRow(self.otsu_button)
        cut = QGroupBox("GrabCut")
        cut_layout = QVBoxLayout(cut)
        hint = QLabel("Paint a rough outline of the object with the selected class, then cut it "
                      "out of the outline's box.")
        hint.setWordWrap(True)
        cut_layout.addWidget(hint)
        cut_layout.addWidget(self.grabcut_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(otsu)
        layout.addWidget(cut)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # -- shared --------------------------------------------------------------------------------------
    def _guard(self, action: Callable[[], None]) -> None:
        """Run a button's action; errors become the status text, never a crash."""
        if self.job is not None:
            return
        try:
            action()
        except SegStudioError as err:
            self.status.setText(str(err))

    def _inputs(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The image plane, the label plane and the selected class; raises what is missing."""
        ws = self.workspace
        image, labels = ws.image_plane(), ws.label_plane()
        if ws.project is None or image is None or labels is None:
            raise SegStudioError("Open an image or a project first.")
        if ws.image_error:
            raise SegStudioError(ws.image_error)
        class_index = int(self.current_class())
        if class_index == 0:
            raise SegStudioError("Select a class other than background first.")
        return image, labels, class_index

    def _class_name(self, class_index: int) -> str:
        names = {c.index: c.name for c in self.workspace.classes()}
        return names.get(class_index, f"class {class_index}")

    def _apply(self, new_plane: np.ndarray) -> bool:
        """Replace the current plane as one undo step; False when nothing changed."""
        session = self.workspace.session
        if session.stroke_active:  # never interleave with a drag's pending steps
            session.end_stroke()
        edit = session.replace_plane(new_plane)
        if edit is not None:
            self.applied.emit(edit)
        return edit is not None

    # -- Otsu ----------------------------------------------------------------------------------------
    def run_otsu(self) -> None:
        """Write the selected class on the thresholded pixels that are background now."""
        image, labels, class_index = self._inputs()
        threshold, mask = otsu_threshold(image)
        if self.dark.isChecked():
            mask = ~mask
        if self.min_size.value() > 0:
            mask = remove_small(mask, self.min_size.value())
        target = mask & (labels == 0)
        new_plane = _with_class(labels, class_index)
        new_plane[target] = class_index
        self._apply(new_plane)
        self.status.setText(f"Otsu threshold {_format_threshold(threshold)}: "
                            f"{int(np.count_nonzero(target)):,} pixels set to class "
                            f"'{self._class_name(class_index)}'.")

    # -- GrabCut -------------------------------------------------------------------------------------
    def run_grabcut(self) -> None:
        """Start GrabCut on the grown box around the selected class's pixels (worker thread)."""
        image, labels, class_index = self._inputs()
        painted = labels == class_index
        if not painted.any():
            raise SegStudioError(f"Paint a rough outline of the object with class "
                                 f"'{self._class_name(class_index)}' first.")
        session = self.workspace.session
        request = GrabCutRequest(session.item.id, session.plane, class_index, grown_box(painted))
        self.job = Job(lambda report, cancel: grabcut(image, request.box, GRABCUT_ITERATIONS),
                       self)
        self.job.succeeded.connect(lambda mask: self._on_grabcut(request, mask))
        self.job.failed.connect(self.status.setText)
        self.job.finished.connect(lambda: self._set_running(False))
        self._set_running(True)
        self.status.setText(f"GrabCut on box {request.box}…")
        self.job.start()

    def _on_grabcut(self, request: GrabCutRequest, mask: np.ndarray) -> None:
        """Inside the box the class becomes exactly the mask, except over other classes."""
        session = self.workspace.session
        if session is None or session.item.id != request.item_id \
                or session.plane != request.plane:
            self.status.setText("The item changed while GrabCut ran: its result was dropped.")
            return
        labels, cls = self.workspace.label_plane(), request.class_index
        x0, y0, x1, y1 = request.box
        new_plane = _with_class(labels, cls)
        window = new_plane[y0:y1, x0:x1]  # a view: edits land in new_plane
        inside = mask[y0:y1, x0:x1]
        window[(window == cls) & ~inside] = 0
        window[(window == 0) & inside] = cls
        changed = self._apply(new_plane)
        count = int(np.count_nonzero(window == cls))
        self.status.setText(f"GrabCut: {count:,} pixels of class '{self._class_name(cls)}' in "
                            f"box {request.box}" + ("." if changed else " (unchanged)."))

    def _set_running(self, running: bool) -> None:
        if not running:
            self.job = None
        self.progress.setRange(0, 0 if running else 1)  # (0, 0): busy, no percentage
        self.otsu_button.setEnabled(not running)
        self.grabcut_button.setEnabled(not running)

    def shutdown(self) -> None:
        """Wait for a running GrabCut (the window is closing; cv2 cannot be interrupted)."""
        if self.job is not None:
            self.job.wait()

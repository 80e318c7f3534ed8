"""The 3D panel: tools that work across the slices of a volume (or pages of a stack).

Interpolate the selected class between the slices where it was drawn, fill a value range (e.g.
bone above 300 HU) on this slice or the whole volume, and keep the largest 3D component. Each is
one undo step on the open item; other classes are never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.workspace import Workspace
from core.errors import SegStudioError


class VolumePanel(QWidget):
    """Signals ``applied(edit)`` after a tool changed the open item (one undo step)."""

    applied = Signal(object)

    def __init__(self, workspace: Workspace, current_class: Callable[[], int],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.current_class = current_class
        self.interpolate = QPushButton("Interpolate class between slices")
        self.interpolate.setObjectName("interpolate_slices")
        self.interpolate.clicked.connect(lambda: self._run(self._interpolate))
        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        for box, value in ((self.low, 300.0), (self.high, 3000.0)):
            box.setRange(-1e6, 1e6)
            box.setDecimals(1)
            box.setValue(value)
        self.scope = QComboBox()
        self.scope.addItem("this slice", "slice")
        self.scope.addItem("whole volume", "volume")
        self.fill = QPushButton("Fill range with class")
        self.fill.setObjectName("range_fill")
        self.fill.clicked.connect(lambda: self._run(self._range_fill))
        self.largest = QPushButton("Keep largest 3D component of class")
        self.largest.setObjectName("keep_largest")
        self.largest.clicked.connect(lambda: self._run(self._keep_largest))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        band = QHBoxLayout()
        band.addWidget(self.low)
        band.addWidget(QLabel("to"))
        band.addWidget(self.high)
        form = QFormLayout()
        form.addRow("Values", band)
        form.addRow("On", self.scope)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.interpolate)
        layout.addLayout(form)
        layout.addWidget(self.fill)
        layout.addWidget(self.largest)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _run(self, tool: Callable[[], str]) -> None:
        """Run a tool on the open item; the outcome (or why not) goes to the status line."""
        try:
            if self.workspace.session is None or self.workspace.item is None:
                raise SegStudioError("Open a volume or a stack first.")
            if self.current_class() == 0:
                raise SegStudioError("Select a class other than background.")
            self.status.setText(tool())
        except SegStudioError as err:
            self.status.setText(str(err))

    def _require_volume(self) -> None:
        if self.workspace.item.frames <= 1:
            raise SegStudioError("This tool works across slices: open a volume or a stack.")

    def _interpolate(self) -> str:
        self._require_volume()
        edit = self.workspace.session.interpolate_slices(self.current_class())
        if edit is None:
            return "Draw the class on at least two slices with empty slices between them."
        self.applied.emit(edit)
        return f"Interpolated {edit.count:,} voxels between the drawn slices."

    def _range_fill(self) -> str:
        ws = self.workspace
        low, high = self.low.value(), self.high.value()
        if low > high:
            raise SegStudioError("The lower value must not exceed the upper one.")
        if ws.image is None or ws.image.shape != ws.session.labels.shape:
            raise SegStudioError("Range fill needs one value per pixel: a grey image or volume.")
        on_slice = self.scope.currentData() == "slice" and ws.item.frames > 1
        box = (slice(ws.frame, ws.frame + 1),) if on_slice else None
        edit = ws.session.threshold_fill(ws.image, low, high, self.current_class(), box=box)
        if edit is None:
            return f"No background pixel between {low:g} and {high:g}."
        self.applied.emit(edit)
        return f"Filled {edit.count:,} pixels between {low:g} and {high:g}."

    def _keep_largest(self) -> str:
        self._require_volume()
        edit = self.workspace.session.keep_largest_component(self.current_class())
        if edit is None:
            return "The class has one connected component (or none): nothing removed."
        self.applied.emit(edit)
        return f"Removed {edit.count:,} voxels outside the largest component."

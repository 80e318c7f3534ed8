"""Display settings: label opacity, outline-only, show/hide, contrast and the page of a stack."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QWidget,
)

# Window presets as (level, width) in Hounsfield units, as radiology viewers name them.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "CT lung": (-600.0, 1500.0),
    "CT mediastinum": (50.0, 350.0),
    "CT bone": (400.0, 1800.0),
    "CT brain": (40.0, 80.0),
    "CT abdomen": (40.0, 400.0),
}


def window_to_levels(level: float, width: float) -> tuple[float, float]:
    """(low, high) display range of a window given as level/width."""
    return level - width / 2.0, level + width / 2.0


class DisplayPanel(QWidget):
    """Widgets only: the main window connects their signals to the canvas."""

    opacity_changed = Signal(float)
    outline_changed = Signal(bool)
    overlay_visible_changed = Signal(bool)
    levels_changed = Signal(float, float)
    auto_levels_requested = Signal()
    frame_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setObjectName("opacity_slider")
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.valueChanged.connect(lambda v: self.opacity_changed.emit(v / 100.0))
        self.show_labels = QCheckBox("Show labels")
        self.show_labels.setChecked(True)
        self.show_labels.toggled.connect(self.overlay_visible_changed)
        self.outline = QCheckBox("Outline only")
        self.outline.toggled.connect(self.outline_changed)
        self.level_low = QDoubleSpinBox()
        self.level_high = QDoubleSpinBox()
        for box in (self.level_low, self.level_high):
            box.setRange(-1e9, 1e9)
            box.setDecimals(1)
            box.setKeyboardTracking(False)
            box.valueChanged.connect(self._emit_levels)
        auto = QPushButton("Auto")
        auto.setToolTip("Contrast from the 0.5 and 99.5 percentiles")
        auto.clicked.connect(self.auto_levels_requested)
        self.window_preset = QComboBox()
        self.window_preset.setObjectName("window_preset")
        self.window_preset.addItem("Window preset…", None)
        for name, (level, width) in WINDOW_PRESETS.items():
            self.window_preset.addItem(f"{name} ({level:g}/{width:g})", name)
        self.window_preset.activated.connect(self._apply_preset)
        levels = QHBoxLayout()
        levels.addWidget(self.level_low)
        levels.addWidget(self.level_high)
        levels.addWidget(auto)
        self.frame = QSpinBox()
        self.frame.setObjectName("frame_spin")
        self.frame.valueChanged.connect(lambda page: self.frame_changed.emit(page - 1))
        form = QFormLayout(self)
        form.addRow("Label opacity", self.opacity)
        form.addRow(self.show_labels)
        form.addRow(self.outline)
        form.addRow("Contrast", levels)
        form.addRow("", self.window_preset)
        self.frame_label = QLabel("Page")
        form.addRow(self.frame_label, self.frame)
        self.set_frame_count(1)

    def _apply_preset(self) -> None:
        name = self.window_preset.currentData()
        if name is None:
            return
        low, high = window_to_levels(*WINDOW_PRESETS[name])
        self.show_levels(low, high)
        self.levels_changed.emit(low, high)

    def _emit_levels(self) -> None:
        self.levels_changed.emit(self.level_low.value(), self.level_high.value())

    def show_levels(self, low: float, high: float) -> None:
        """Display levels set elsewhere without echoing them back."""
        for box, value in ((self.level_low, low), (self.level_high, high)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)

    def set_frame_count(self, count: int, noun: str = "Page") -> None:
        """Pages (or slices) are shown counted from 1 ("2 / 5"); ``frame_changed`` gives
        0-based indices."""
        self.frame_label.setText(noun)
        self.frame.blockSignals(True)
        self.frame.setRange(1, max(count, 1))
        self.frame.setSuffix(f" / {max(count, 1)}")
        self.frame.setValue(1)
        self.frame.setEnabled(count > 1)
        self.frame.blockSignals(False)

    def show_frame(self, frame: int) -> None:
        """Display the 0-based ``frame`` without emitting."""
        self.frame.blockSignals(True)
        self.frame.setValue(frame + 1)
        self.frame.blockSignals(False)

"""The central area: one canvas, or three views of a volume (main view plus two smaller ones).

Each view is a :class:`SlicePane`: a header with the view's name, its slice slider and the slice
number, over an :class:`~app.canvas.viewer.ImageCanvas`. The panes hold no state of their own
beyond what they show; the main window tells each which slice it shows and listens to
``slice_requested``.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.canvas.viewer import ImageCanvas


class SlicePane(QWidget):
    """A canvas under a header: view name (a chooser on the main pane), slice slider, number.

    Signals:
        slice_requested(int): The person moved the slider (0-based slice).
        axis_requested(int): The person chose another cut in the main pane's chooser.
    """

    slice_requested = Signal(int)
    axis_requested = Signal(int)

    def __init__(self, canvas: ImageCanvas, chooser: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.canvas = canvas
        self.name = QLabel("")
        self.name.setMinimumWidth(60)
        self.chooser = QComboBox() if chooser else None
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setObjectName("slice_slider")
        self.slider.valueChanged.connect(self.slice_requested)
        self.number = QLabel("")
        self.number.setMinimumWidth(70)
        self.header = QWidget()
        row = QHBoxLayout(self.header)
        row.setContentsMargins(4, 2, 4, 2)
        if self.chooser is not None:
            self.chooser.setObjectName("view_chooser")
            self.chooser.activated.connect(
                lambda i: self.axis_requested.emit(int(self.chooser.itemData(i))))
            row.addWidget(self.chooser)
        else:
            row.addWidget(self.name)
        row.addWidget(self.slider, 1)
        row.addWidget(self.number)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(canvas, 1)
        self.header.hide()

    def set_choices(self, names: list[str], current: int) -> None:
        """Fill the main pane's chooser with the cuts ("Axial", ...) by axis index."""
        if self.chooser is None:
            return
        self.chooser.blockSignals(True)
        self.chooser.clear()
        for axis, name in enumerate(names):
            self.chooser.addItem(name, axis)
        self.chooser.setCurrentIndex(current)
        self.chooser.blockSignals(False)

    def show_slice(self, name: str, index: int, count: int) -> None:
        """Show that this pane shows slice ``index`` (0-based) of ``count`` of the cut ``name``."""
        self.name.setText(name)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(count - 1, 0))
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.number.setText(f"{index + 1} / {count}")
        self.header.show()

    def hide_slices(self) -> None:
        """A plain image: no header."""
        self.header.hide()


class SliceViews(QWidget):
    """The main pane alone, or the main pane beside two smaller panes (three-view layout)."""

    def __init__(self, canvases: list[ImageCanvas], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panes = [SlicePane(canvas, chooser=i == 0) for i, canvas in enumerate(canvases)]
        self.side = QSplitter(Qt.Orientation.Vertical)
        for pane in self.panes[1:]:
            self.side.addWidget(pane)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.panes[0])
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, 2)
        self.splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.splitter)
        self._three = False
        self.side.hide()

    @property
    def three(self) -> bool:
        """True while the three-view layout is shown."""
        return self._three

    def set_three(self, three: bool) -> None:
        self._three = bool(three)
        self.side.setVisible(self._three)
        if self._three:
            width = max(self.width(), 3)
            self.splitter.setSizes([width * 2 // 3, width - width * 2 // 3])

    def visible_panes(self) -> list[SlicePane]:
        return self.panes if self._three else self.panes[:1]

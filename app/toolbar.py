"""The tool bar: tool buttons, brush size and "preserve other labels"."""

from __future__ import annotations

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QCheckBox, QLabel, QToolBar, QWidget

from app.canvas.tools import TOOLS, ToolController
from app.widgets import spin_box

TOOL_TEXT = {"brush": "Brush (B)", "eraser": "Eraser (E)", "fill": "Fill (F)",
             "polygon": "Polygon (P)", "pan": "Pan (H)", "crosshair": "Crosshair (C)",
             "select": "Select (S)"}


class ToolOptionsBar(QToolBar):
    """Mirrors the ToolController's state and edits it; the controller stays the single owner."""

    def __init__(self, tools: ToolController, parent: QWidget | None = None) -> None:
        super().__init__("Tools", parent)
        self.setObjectName("tool_bar")
        self.tools = tools
        group = QActionGroup(self)
        self.tool_actions: dict[str, QAction] = {}
        for name in TOOLS:
            action = QAction(TOOL_TEXT.get(name, name.title()), self)
            action.setCheckable(True)
            action.setObjectName(f"toolbar_{name}")
            action.triggered.connect(lambda _c=False, n=name: tools.set_tool(n))
            group.addAction(action)
            self.addAction(action)
            self.tool_actions[name] = action
        self.addSeparator()
        self.addWidget(QLabel(" Size "))
        self.size_box = spin_box(1, 512, suffix=" px", name="brush_size")
        self.size_box.setToolTip("Brush diameter ([ smaller, ] larger)")
        self.size_box.setValue(tools.brush_size)
        self.size_box.valueChanged.connect(tools.set_brush_size)
        self.addWidget(self.size_box)
        self.preserve = QCheckBox("Preserve other labels")
        self.preserve.setObjectName("preserve_labels")
        self.preserve.setToolTip("Brush paints only background; eraser removes only the selected "
                                 "class (Ctrl+L)")
        self.preserve.toggled.connect(tools.set_preserve_others)
        self.addWidget(self.preserve)
        tools.tool_changed.connect(self._show_tool)
        tools.brush_size_changed.connect(self._show_size)
        self._show_tool(tools.tool)

    def _show_tool(self, name: str) -> None:
        if name in self.tool_actions:
            self.tool_actions[name].setChecked(True)

    def _show_size(self, size: int) -> None:
        self.size_box.blockSignals(True)
        self.size_box.setValue(size)
        self.size_box.blockSignals(False)

"""The list of items in the project with their state; selecting one opens it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from app.workspace import Workspace

STATE_MARKS = {"new": "○", "in_progress": "◐", "done": "●", "needs_review": "⚑"}


class ItemsPanel(QWidget):
    """Items in project order; missing sources are shown in red and say so."""

    item_activated = Signal(int)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.list = QListWidget()
        self.list.setObjectName("item_list")
        self.list.currentRowChanged.connect(self._on_row)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        workspace.items_changed.connect(self.refresh)
        workspace.item_opened.connect(self._follow_current)

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for item in self.workspace.items:
            mark = STATE_MARKS.get(item.state, "?")
            text = f"{mark} {item.name}"
            if item.frames > 1:
                noun = {"volume": "slices", "video": "frames"}.get(item.kind, "pages")
                text += f"  ({item.frames} {noun})"
            row = QListWidgetItem(text)
            row.setToolTip(f"{item.path}\nstate: {item.state.replace('_', ' ')}")
            if item.missing:
                row.setText(text + "  — missing")
                row.setForeground(QBrush(QColor(200, 40, 40)))
                row.setToolTip(f"Source not found: {item.abs_path}")
            self.list.addItem(row)
        self.list.setCurrentRow(self.workspace.index)
        self.list.blockSignals(False)

    def _follow_current(self) -> None:
        self.list.blockSignals(True)
        self.list.setCurrentRow(self.workspace.index)
        self.list.blockSignals(False)

    def _on_row(self, row: int) -> None:
        if row >= 0 and row != self.workspace.index:
            self.item_activated.emit(row)

    def sizeHint(self):
        hint = super().sizeHint()
        hint.setWidth(220)
        return hint



"""The list of items in the project with their state; selecting one opens it."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

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
        self.next_button = QPushButton("Next item to label")
        self.next_button.setObjectName("next_to_label")
        self.next_button.setToolTip("The item not done that the model was least sure about "
                                    "(lowest mean probability of its predicted classes)")
        self.next_button.clicked.connect(self.next_to_label)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        layout.addWidget(self.next_button)
        layout.addWidget(self.status)
        workspace.items_changed.connect(self.refresh)
        workspace.item_opened.connect(self._follow_current)

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        agreement = self._agreement()
        for item in self.workspace.items:
            mark = STATE_MARKS.get(item.state, "?")
            text = f"{mark} {item.name}"
            if item.frames > 1:
                noun = {"volume": "slices", "video": "frames"}.get(item.kind, "pages")
                text += f"  ({item.frames} {noun})"
            if item.id in agreement:  # how much of the model's prediction the person kept
                text += f"  · model Dice {agreement[item.id]:.2f}"
            row = QListWidgetItem(text)
            row.setToolTip(f"{item.path}\nstate: {item.state.replace('_', ' ')}")
            if item.missing:
                row.setText(text + "  — missing")
                row.setForeground(QBrush(QColor(200, 40, 40)))
                row.setToolTip(f"Source not found: {item.abs_path}")
            self.list.addItem(row)
        self.list.setCurrentRow(self.workspace.index)
        self.list.blockSignals(False)

    def _agreement(self) -> dict[int, float]:
        """Dice between each kept model prediction and the item's labels now."""
        from core.train.metrics import agreement_dice

        project = self.workspace.project
        if project is None:
            return {}
        out = {}
        predicted = project.prediction_confidences()
        for item in self.workspace.items:
            if item.id not in predicted:
                continue
            kept = project.load_class_prediction(item.id)
            if kept is None or item.kind == "video":
                continue
            dice = agreement_dice(kept[1], project.load_mask(item))
            if dice is not None:
                out[item.id] = dice
        return out

    def next_to_label(self) -> int | None:
        """Open the item not done whose kept prediction was the least confident."""
        ws = self.workspace
        if ws.project is None:
            self.status.setText("Open a project first.")
            return None
        confidences = ws.project.prediction_confidences()
        candidates = [(confidences[item.id], row) for row, item in enumerate(ws.items)
                      if item.state != "done" and confidences.get(item.id) is not None]
        if not candidates:
            self.status.setText("Run a model on the items not done first (Models > Items not "
                                "done): its confidence ranks them.")
            return None
        confidence, row = min(candidates)
        self.status.setText(f"{ws.items[row].name}: the model was {confidence:.0%} sure on "
                            "average.")
        self.item_activated.emit(row)
        return row

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



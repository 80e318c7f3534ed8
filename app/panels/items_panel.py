"""The list of items in the project with their state; selecting one opens it."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
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
        self._dice_cache: dict[int, tuple] = {}  # item id -> (its predictions' stamp, Dice)
        self._open_parts: tuple | None = None  # (item id, stamp, kept parts) of the open item
        self._open_id: int | None = None
        self._edit_timer = QTimer(self)
        self._edit_timer.setSingleShot(True)
        self._edit_timer.setInterval(300)
        self._edit_timer.timeout.connect(self._update_open_row)
        workspace.items_changed.connect(self.refresh)
        workspace.item_opened.connect(self._follow_current)
        workspace.classes_changed.connect(self._forget)
        workspace.project_changed.connect(self._forget)

    def refresh(self) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        agreement = self._agreement()
        for item in self.workspace.items:
            row = QListWidgetItem(_row_text(item, agreement.get(item.id)))
            row.setToolTip(f"{item.path}\nstate: {item.state.replace('_', ' ')}")
            if item.missing:
                row.setForeground(QBrush(QColor(200, 40, 40)))
                row.setToolTip(f"Source not found: {item.abs_path}")
            self.list.addItem(row)
        self.list.setCurrentRow(self.workspace.index)
        self.list.blockSignals(False)

    def _agreement(self) -> dict[int, float]:
        """Dice between each item's kept model predictions (whole item, frames, slices) and its
        labels now; cached per item until its predictions or its labels may have changed."""
        project = self.workspace.project
        if project is None:
            return {}
        stamps = project.prediction_stamps()
        current = self.workspace.item
        out = {}
        for item in self.workspace.items:
            if item.id not in stamps:
                continue
            if current is not None and item.id == current.id:  # being edited: never cached
                self._dice_cache.pop(item.id, None)
                dice = self._open_item_dice(stamps[item.id])
            else:
                cached = self._dice_cache.get(item.id)
                if cached is None or cached[0] != stamps[item.id]:
                    cached = stamps[item.id], project.prediction_agreement(item)
                    self._dice_cache[item.id] = cached
                dice = cached[1]
            if dice is not None:
                out[item.id] = dice
        return out

    def _open_item_dice(self, stamp) -> float | None:
        """The open item's Dice against the labels being edited (its parts decoded once)."""
        from core.project.predictions import parts_agreement

        ws = self.workspace
        item, session = ws.item, ws.session
        if self._open_parts is None or self._open_parts[:2] != (item.id, stamp):
            self._open_parts = item.id, stamp, ws.project.class_prediction_parts(item.id)
        parts = self._open_parts[2]
        held = session is not None and session.item.id == item.id
        if item.kind == "video":  # the other frames' edits are in the project's journal
            shown = {session.frame: session.labels} if held else {}
            return parts_agreement(parts, frame_labels=lambda f: shown[f] if f in shown
                                   else ws.project.load_mask(item, f))
        return parts_agreement(parts, session.labels if held else ws.project.load_mask(item))

    def labels_edited(self, *_args) -> None:
        """The open item's labels changed: update its model Dice once the editing pauses."""
        self._edit_timer.start()

    def _update_open_row(self) -> None:
        ws = self.workspace
        if ws.project is None or ws.item is None or not 0 <= ws.index < self.list.count():
            return
        stamps = ws.project.prediction_stamps()
        if ws.item.id not in stamps:
            return
        self.list.item(ws.index).setText(
            _row_text(ws.item, self._open_item_dice(stamps[ws.item.id])))

    def _forget(self, *_args) -> None:
        """Labels of items not open may have changed (a class deleted, another project)."""
        self._dice_cache.clear()
        self._open_parts = None

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
                                "done; on a volume or a video, Run on item or Every slice): "
                                "its confidence ranks them.")
            return None
        confidence, row = min(candidates)
        self.status.setText(f"{ws.items[row].name}: the model was {confidence:.0%} sure on "
                            "average.")
        self.item_activated.emit(row)
        return row

    def _follow_current(self) -> None:
        opened = self.workspace.item.id if self.workspace.item is not None else None
        for item_id in (self._open_id, opened):  # the item left was edited: compute it again
            self._dice_cache.pop(item_id, None)
        self._open_id = opened
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


def _row_text(item, dice: float | None) -> str:
    """State mark, name, size, how much of the model's prediction the person kept."""
    text = f"{STATE_MARKS.get(item.state, '?')} {item.name}"
    if item.frames > 1:
        noun = {"volume": "slices", "video": "frames"}.get(item.kind, "pages")
        text += f"  ({item.frames} {noun})"
    if dice is not None:
        text += f"  · model Dice {dice:.2f}"
    return text + ("  — missing" if item.missing else "")

"""Help > Keyboard shortcuts: every shortcut in force, and where to change them."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.settings import settings
from app.shortcuts import DEFAULTS, keys_for


class ShortcutsDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        self.table = QTableWidget(len(DEFAULTS), 3)
        self.table.setObjectName("shortcut_table")
        self.table.setHorizontalHeaderLabels(["Action", "Keys", "Setting id"])
        for row, spec in enumerate(DEFAULTS):
            for col, text in enumerate((spec.text, ", ".join(keys_for(spec.action_id)),
                                        f"shortcuts/{spec.action_id}")):
                self.table.setItem(row, col, QTableWidgetItem(text))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        mouse = QLabel(
            "Mouse: left-drag paints with the brush/eraser; wheel zooms (on a volume or stack "
            "the wheel moves through slices and Ctrl+wheel zooms); middle-drag pans (also "
            "Space+drag), right-drag pans on images and sets the window on volumes. Crosshair "
            "tool: a click points the other views at that voxel. Polygon: click points, double-click, Enter or a click on the "
            "first point closes it; Backspace removes the last point, Esc cancels.")
        mouse.setWordWrap(True)
        where = QLabel(f"Change a shortcut by editing its setting in {settings().fileName()} "
                       "(several keys separated by ';').")
        where.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(mouse)
        layout.addWidget(where)
        layout.addWidget(buttons)
        self.resize(820, 600)

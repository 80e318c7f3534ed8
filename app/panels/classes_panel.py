"""The class palette: pick the class to paint, add, rename, recolour, delete with remap."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QColorDialog,
    QHBoxLayout,
    QInputDialog,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.workspace import Workspace
from core.errors import SegStudioError


def color_icon(color: tuple[int, int, int], size: int = 16) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*color))
    return QIcon(pixmap)


class ClassesPanel(QWidget):
    """List of classes (background first); the selected one is what the brush paints."""

    class_selected = Signal(int)

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.list = QListWidget()
        self.list.setObjectName("class_list")
        self.list.currentRowChanged.connect(self._on_row)
        self.list.itemDoubleClicked.connect(lambda _: self.rename_selected())
        buttons = QHBoxLayout()
        for text, slot in (("Add", self.add_class), ("Rename", self.rename_selected),
                           ("Colour", self.recolor_selected), ("Delete", self.delete_selected)):
            button = QPushButton(text)
            button.setObjectName(f"class_{text.lower()}")
            button.clicked.connect(slot)
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        workspace.classes_changed.connect(self.refresh)

    def refresh(self) -> None:
        current = self.selected_index()
        self.list.blockSignals(True)
        self.list.clear()
        for number, cls in enumerate(self.workspace.classes()):
            key = f"  [{number}]" if 1 <= number <= 9 else ""
            item = QListWidgetItem(color_icon(cls.color), f"{cls.index}: {cls.name}{key}")
            item.setData(Qt.ItemDataRole.UserRole, cls.index)
            self.list.addItem(item)
        self.list.blockSignals(False)
        self.select_index(current if current is not None else 1)

    def selected_index(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    def select_index(self, index: int) -> None:
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == index:
                self.list.setCurrentRow(row)
                return
        if self.list.count():
            self.list.setCurrentRow(min(1, self.list.count() - 1))

    def select_row(self, row: int) -> None:
        """Keys 1-9 select the n-th class of the list (background is row 0)."""
        if 0 <= row < self.list.count():
            self.list.setCurrentRow(row)

    def _on_row(self, row: int) -> None:
        if row >= 0:
            self.class_selected.emit(int(self.list.item(row).data(Qt.ItemDataRole.UserRole)))

    def _guard(self, action) -> None:
        try:
            action()
        except SegStudioError as err:
            QMessageBox.warning(self, "SegStudio", str(err))

    def add_class(self) -> None:
        name, ok = QInputDialog.getText(self, "Add class", "Class name:")
        if ok and name.strip():
            self._guard(lambda: self.select_index(self.workspace.add_class(name.strip()).index))

    def rename_selected(self) -> None:
        index = self.selected_index()
        if index is None:
            return
        old = next(c.name for c in self.workspace.classes() if c.index == index)
        name, ok = QInputDialog.getText(self, "Rename class", "Class name:", text=old)
        if ok and name.strip():
            self._guard(lambda: self.workspace.update_class(index, name=name.strip()))

    def recolor_selected(self) -> None:
        index = self.selected_index()
        if index is None:
            return
        old = next(c.color for c in self.workspace.classes() if c.index == index)
        color = QColorDialog.getColor(QColor(*old), self, "Class colour")
        if color.isValid():
            rgb = (color.red(), color.green(), color.blue())
            self._guard(lambda: self.workspace.update_class(index, color=rgb))

    def delete_selected(self) -> None:
        index = self.selected_index()
        if index is None:
            return
        others = [c for c in self.workspace.classes() if c.index != index]
        names = [f"{c.index}: {c.name}" for c in others]
        choice, ok = QInputDialog.getItem(
            self, "Delete class", "Pixels of the deleted class become:", names, 0, False)
        if not ok:
            return
        replacement = others[names.index(choice)].index
        self._guard(lambda: self.workspace.delete_class(index, replacement))

"""Panels and dialogs one at a time: classes (add, rename, recolour, delete with remap), items,
display settings kept in QSettings, the shortcuts dialog."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QColorDialog, QInputDialog, QPushButton

from app.dialogs.help_dialog import ShortcutsDialog
from app.main_window import MainWindow
from app.panels.classes_panel import ClassesPanel
from app.panels.items_panel import ItemsPanel
from app.settings import recent_projects
from app.shortcuts import DEFAULTS
from app.workspace import Workspace
from core.annotation.tools import PaintRule


@pytest.fixture
def workspace(qtbot, tmp_path: Path, sample_dir: Path):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    ws = Workspace()
    ws.open_paths([folder])
    yield ws
    ws.close()


def button(panel, name: str) -> QPushButton:
    found = panel.findChild(QPushButton, name)
    assert found is not None, name
    return found


def class_rows(panel: ClassesPanel) -> list[str]:
    return [panel.list.item(row).text() for row in range(panel.list.count())]


def test_class_panel_add_rename_recolour(qtbot, workspace, monkeypatch):
    panel = ClassesPanel(workspace)
    qtbot.add_widget(panel)
    panel.refresh()
    assert class_rows(panel) == ["0: background", "1: object  [1]"]

    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("tumour", True))
    button(panel, "class_add").click()
    assert class_rows(panel)[-1] == "2: tumour  [2]"
    assert panel.selected_index() == 2

    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("liver", True))
    button(panel, "class_rename").click()
    assert [c.name for c in workspace.classes()] == ["background", "object", "liver"]

    monkeypatch.setattr(QColorDialog, "getColor", lambda *a, **k: QColor(10, 200, 30))
    button(panel, "class_colour").click()
    assert workspace.classes()[2].color == (10, 200, 30)
    assert tuple(workspace.palette()[2]) == (10, 200, 30)


def test_class_panel_delete_remaps_pixels(qtbot, workspace, monkeypatch):
    panel = ClassesPanel(workspace)
    qtbot.add_widget(panel)
    workspace.add_class("sky")
    session = workspace.session
    session.polygon([(10, 10), (60, 10), (60, 40), (10, 40)], PaintRule(2))
    session.polygon([(100, 100), (140, 100), (140, 140)], PaintRule(1))
    sky = session.labels == 2
    panel.select_index(2)
    # The user picks "1: object" as what the deleted class's pixels become.
    monkeypatch.setattr(QInputDialog, "getItem", lambda *a, **k: ("1: object", True))
    button(panel, "class_delete").click()
    assert [c.name for c in workspace.classes()] == ["background", "object"]
    labels = workspace.session.labels  # a fresh session on the remapped mask
    assert (labels[sky] == 1).all() and not (labels == 2).any()
    stored = workspace.project.load_mask(workspace.item)
    assert np.array_equal(stored, labels)


def test_items_panel_marks_state_and_opens_on_selection(qtbot, workspace):
    panel = ItemsPanel(workspace)
    qtbot.add_widget(panel)
    panel.refresh()
    names = [panel.list.item(r).text() for r in range(panel.list.count())]
    assert names[0] == "○ camera" and "(5 pages)" in names[1]
    with qtbot.waitSignal(panel.item_activated) as signal:
        panel.list.setCurrentRow(3)
    assert signal.args == [3]
    workspace.open_item(3)
    workspace.set_item_state("done")
    assert panel.list.item(3).text() == "● chelsea"


def test_stack_pages_are_edited_separately(qtbot, tmp_path, sample_dir):
    window = MainWindow()
    qtbot.add_widget(window)
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    window.open_paths([str(folder)])
    row = [i.name for i in window.workspace.items].index("camera_stack")
    window._open_item(row)
    frame_box = window.display_panel.frame
    assert frame_box.isEnabled() and frame_box.maximum() == 5 and frame_box.text() == "1 / 5"
    window.display_panel.frame.setValue(3)  # pages are shown counted from 1
    assert window.workspace.frame == 2
    assert window.canvas.image().shape == (160, 160)
    assert np.array_equal(window.canvas.image(), window.workspace.image[2])
    window.workspace.session.polygon([(5, 5), (50, 5), (50, 50)], PaintRule(1))
    labels = window.workspace.session.labels
    assert labels.shape == (5, 160, 160)
    assert labels[2].any() and not labels[[0, 1, 3, 4]].any()
    window.close()


def test_opacity_geometry_and_recent_projects_are_remembered(qtbot, tmp_path, sample_dir):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    first = MainWindow()
    qtbot.add_widget(first)
    first.show()
    first.open_paths([str(folder)])
    first.display_panel.opacity.setValue(80)
    first.resize(720, 520)
    qtbot.waitUntil(lambda: first.width() == 720)
    first.close()
    assert recent_projects()[0] == str(folder / ".segstudio")

    second = MainWindow()
    qtbot.add_widget(second)
    second.show()
    assert second.display_panel.opacity.value() == 80
    assert second.canvas.overlay.opacity_value() == pytest.approx(0.8)
    assert (second.width(), second.height()) == (720, 520)
    second._fill_recent_menu()
    assert [a.text() for a in second.recent_menu.actions()] == [str(folder / ".segstudio")]
    second.close()


def test_shortcuts_dialog_lists_every_shortcut_and_user_overrides(qtbot):
    from app.settings import settings

    settings().setValue("shortcuts/next_item", "N;Space")
    dialog = ShortcutsDialog()
    qtbot.add_widget(dialog)
    rows = {dialog.table.item(r, 2).text(): dialog.table.item(r, 1).text()
            for r in range(dialog.table.rowCount())}
    assert len(rows) == len(DEFAULTS)
    assert rows["shortcuts/undo"] == "Ctrl+Z"
    assert rows["shortcuts/redo"] == "Ctrl+Shift+Z, Ctrl+Y"
    assert rows["shortcuts/next_item"] == "N, Space"
    window = MainWindow()
    qtbot.add_widget(window)
    keys = [k.toString() for k in window.actions_by_id["next_item"].shortcuts()]
    assert keys == ["N", "Space"]


def test_page_keys_step_through_a_stack(qtbot, tmp_path, sample_dir):
    from PySide6.QtCore import Qt

    window = MainWindow()
    qtbot.add_widget(window)
    window.show()
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    window.open_paths([str(folder)])
    window._open_item([i.name for i in window.workspace.items].index("camera_stack"))
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)  # window shortcuts need the active window
    for _ in range(2):
        qtbot.keyClick(window.canvas.view, Qt.Key.Key_Right)
    assert window.workspace.frame == 2 and window.display_panel.frame.text() == "3 / 5"
    qtbot.keyClick(window.canvas.view, Qt.Key.Key_Left)
    assert window.workspace.frame == 1
    assert np.array_equal(window.canvas.image(), window.workspace.image[1])
    window.close()


def test_window_presets_set_ct_levels_on_the_canvas(qtbot, tmp_path, sample_dir):
    from app.panels.display_panel import WINDOW_PRESETS

    window = MainWindow()
    qtbot.add_widget(window)
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    window.open_paths([str(folder)])
    window._open_item([i.name for i in window.workspace.items].index("cell_16bit"))
    combo = window.display_panel.window_preset
    assert WINDOW_PRESETS["CT lung"] == (-600.0, 1500.0)
    combo.setCurrentIndex(combo.findData("CT bone"))
    combo.activated.emit(combo.currentIndex())  # what a user's pick sends
    assert window.canvas.levels() == (-500.0, 1300.0)  # level 400, width 1800
    assert (window.display_panel.level_low.value(),
            window.display_panel.level_high.value()) == (-500.0, 1300.0)
    window.close()

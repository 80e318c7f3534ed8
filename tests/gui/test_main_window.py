"""The whole window driven like a user: open the sample, paint, undo, switch class, export, reopen."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import drag, line
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QMessageBox

from app.main_window import MainWindow
from core.project.store import Project


@pytest.fixture
def sample_copy(tmp_path: Path, sample_dir: Path) -> Path:
    folder = tmp_path / "sample"
    shutil.copytree(sample_dir, folder)
    return folder


@pytest.fixture
def window(qtbot, monkeypatch):
    # Message boxes would block the test: record them instead.
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    win = MainWindow()
    win.shown_messages = shown
    qtbot.add_widget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.wait_exposed(win)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow)  # window shortcuts (keys) need the active window
    return win


def open_item(window: MainWindow, name: str) -> None:
    row = next(i for i, item in enumerate(window.workspace.items) if item.name == name)
    window.items_panel.list.setCurrentRow(row)
    assert window.workspace.item.name == name


def stroke(qtbot, window: MainWindow, start: tuple[float, float], end: tuple[float, float]):
    canvas = window.canvas
    a = canvas.map_image_to_widget(*start)
    b = canvas.map_image_to_widget(*end)
    drag(qtbot, canvas.viewport(), line(a, b, 12))


def key(qtbot, window: MainWindow, text: str, modifier=Qt.KeyboardModifier.NoModifier) -> None:
    code = getattr(Qt.Key, f"Key_{text.upper() if len(text) == 1 else text}")
    qtbot.keyClick(window.canvas.view, code, modifier)


def test_paint_undo_class_keys_export_reopen(qtbot, window, sample_copy, tmp_path):
    assert window.open_paths([str(sample_copy)])
    assert len(window.workspace.items) == 5
    open_item(window, "camera")
    window.tools.set_brush_size(9)

    stroke(qtbot, window, (100, 200), (300, 200))
    labels = window.workspace.session.labels
    assert labels[200, 100:301].tolist() == [1] * 201  # the stroke's spine
    assert labels[200 - 4: 200 + 5, 200].tolist() == [1] * 9  # its width: diameter 9
    assert labels[190, 200] == 0 and labels[210, 200] == 0
    assert len(window.workspace.session.history) == 1  # the whole drag is one undo step

    key(qtbot, window, "z", Qt.KeyboardModifier.ControlModifier)
    assert not labels.any()
    key(qtbot, window, "y", Qt.KeyboardModifier.ControlModifier)
    assert labels[200, 100:301].tolist() == [1] * 201

    window.workspace.add_class("sky", (40, 120, 250))
    key(qtbot, window, "2")  # class keys count from the first row after background
    assert window.tools.class_index == 2
    stroke(qtbot, window, (100, 50), (400, 50))
    assert labels[50, 100:401].tolist() == [2] * 301
    assert labels[200, 150] == 1

    export_dir = tmp_path / "voc"
    window.show_export()
    dialog = window.export_dialog
    dialog.out_dir.setText(str(export_dir))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert dialog.job is not None  # runs on a worker thread
    qtbot.waitUntil(lambda: dialog.job is None, timeout=20000)
    assert "Exported" in dialog.status.text()
    exported = np.array(Image.open(export_dir / "SegmentationClass" / "camera.png"))
    assert np.array_equal(exported, labels)
    assert (export_dir / "JPEGImages" / "camera.jpg").is_file()
    dialog.close()

    window.close()
    with Project.open(sample_copy / ".segstudio") as project:
        item = next(i for i in project.items() if i.name == "camera")
        assert np.array_equal(project.load_mask(item), labels)
        assert {c.name for c in project.classes()} == {"background", "object", "sky"}


def test_reopen_window_shows_saved_strokes_and_next_item_key(qtbot, window, sample_copy):
    window.open_paths([str(sample_copy)])
    open_item(window, "chelsea")
    window.tools.set_brush_size(5)
    stroke(qtbot, window, (50, 60), (150, 60))
    expected = window.workspace.session.labels.copy()
    key(qtbot, window, "d")  # next item
    assert window.workspace.item.name == "coffee"
    window.close()

    again = MainWindow()
    qtbot.add_widget(again)
    again.show()
    again.open_paths([str(sample_copy)])
    open_item(again, "chelsea")
    assert np.array_equal(again.workspace.session.labels, expected)
    assert again.workspace.item.state == "in_progress"
    again.close()


def test_fill_polygon_eraser_preserve_via_keys(qtbot, window, sample_copy):
    window.open_paths([str(sample_copy)])
    open_item(window, "camera")
    canvas = window.canvas
    viewport = canvas.viewport()
    key(qtbot, window, "p")
    assert window.tools.tool == "polygon"
    for x, y in ((20, 20), (120, 20), (120, 80), (20, 80)):
        qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton,
                         pos=canvas.map_image_to_widget(x, y).toPoint())
    key(qtbot, window, "Return")
    labels = window.workspace.session.labels
    assert labels[30:71, 30:111].all() and labels[10, 10] == 0 and labels[90, 60] == 0

    window.workspace.add_class("other")
    key(qtbot, window, "2")
    key(qtbot, window, "l", Qt.KeyboardModifier.ControlModifier)  # preserve other labels
    key(qtbot, window, "b")
    window.tools.set_brush_size(11)
    stroke(qtbot, window, (60, 50), (200, 50))
    assert labels[50, 60] == 1  # class 1 kept under the preserving brush
    assert labels[50, 150] == 2

    key(qtbot, window, "e")
    key(qtbot, window, "1")  # eraser with preserve removes only class 1
    stroke(qtbot, window, (40, 50), (180, 50))
    assert labels[50, 60] == 0 and labels[50, 150] == 2


def test_missing_source_and_bad_files_keep_the_app_up(qtbot, window, sample_copy):
    (sample_copy / "broken.png").write_bytes(b"not a png at all")
    (sample_copy / "empty.jpg").write_bytes(b"")
    assert window.open_paths([str(sample_copy)])
    names = {i.name for i in window.workspace.items}
    assert "broken" not in names and "empty" not in names
    window.close()
    (sample_copy / "coffee.jpg").unlink()
    again = MainWindow()
    qtbot.add_widget(again)
    again.show()
    assert again.open_paths([str(sample_copy)])
    coffee = next(i for i in again.workspace.items if i.name == "coffee")
    assert coffee.missing
    open_item(again, "coffee")
    assert "missing" in again.workspace.image_error
    assert "missing" in again.items_panel.list.currentItem().text()
    again.close()


def test_second_window_on_same_project_is_refused(qtbot, window, sample_copy):
    window.open_paths([str(sample_copy)])
    other = MainWindow()
    qtbot.add_widget(other)
    shown: list[str] = []
    other._show_error = shown.append
    assert not other.open_paths([str(sample_copy / ".segstudio")])
    assert shown and "already open" in shown[0]
    assert other.workspace.project is None
    other.close()
    QApplication.processEvents()


def test_import_dialog_brings_labels_into_another_project(qtbot, window, sample_copy, tmp_path):
    from core.export import export_project

    window.open_paths([str(sample_copy)])
    open_item(window, "coffee")
    window.tools.set_brush_size(15)
    stroke(qtbot, window, (40, 100), (400, 120))
    expected = window.workspace.session.labels.copy()
    window.workspace.session.checkpoint()
    export_project(window.workspace.project, "index", tmp_path / "idx")
    window.close()

    fresh = tmp_path / "fresh"
    shutil.copytree(sample_copy, fresh, ignore=shutil.ignore_patterns(".segstudio"))
    other = MainWindow()
    qtbot.add_widget(other)
    other.show()
    other.open_paths([str(fresh)])
    other.show_import()
    dialog = other.import_dialog
    dialog.format.setCurrentIndex(dialog.format.findData("index"))
    dialog.folder.setText(str(tmp_path / "idx"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=20000)
    assert "Imported 1 masks" in dialog.status.text()
    dialog.reject()
    open_item(other, "coffee")
    assert np.array_equal(other.workspace.session.labels, expected)
    other.close()


def test_status_bar_shows_pixel_value_and_label(qtbot, window, sample_copy):
    from helpers import move

    window.open_paths([str(sample_copy)])
    open_item(window, "cell_16bit")
    image = window.workspace.image
    assert image.dtype == np.uint16
    _low, high = window.canvas.levels()
    assert high > 255  # 16-bit contrast comes from the data, not 0-255
    move(window.canvas.viewport(), window.canvas.map_image_to_widget(123, 45))
    text = window.cursor_label.text()
    assert text.startswith("x 123  y 45")
    assert f"value {int(image[45, 123])}" in text and "label 0 (background)" in text


def test_export_cancel_and_close_while_running(qtbot, window, sample_copy, tmp_path,
                                               monkeypatch):
    import threading

    import core.export
    from core.errors import ExportError

    started = threading.Event()

    def slow_export(project, fmt, out_dir, *, items=None, report=None, cancel=None, **opts):
        started.set()
        for done in range(10_000):
            if cancel.is_set():
                raise ExportError("export cancelled; nothing was written")
            report(done, 10_000)
            cancel.wait(0.01)
        return None

    monkeypatch.setattr(core.export, "export_project", slow_export)
    window.open_paths([str(sample_copy)])
    window.show_export()
    dialog = window.export_dialog
    dialog.out_dir.setText(str(tmp_path / "out"))
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert started.wait(5)
    dialog.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()  # cancels the job
    qtbot.waitUntil(lambda: dialog.job is None, timeout=5000)
    assert "cancelled" in dialog.status.text()
    assert dialog.isVisible()  # Cancel stopped the job; it did not close the dialog

    started.clear()
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert started.wait(5)
    window.close()  # quitting mid-export waits for the worker instead of crashing
    assert dialog.job is None or not dialog.job.running


def test_dropping_files_opens_them_then_adds_to_the_project(qtbot, window, sample_copy,
                                                             tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    def drop(paths: list[Path]) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        event = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime,
                           Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
        window.dropEvent(event)

    drop([sample_copy / "camera.png", sample_copy / "coffee.jpg"])
    assert [i.name for i in window.workspace.items] == ["camera", "coffee"]
    assert window.workspace.project.folder == sample_copy / ".segstudio"
    other = tmp_path / "more"
    other.mkdir()
    shutil.copy(sample_copy / "chelsea.png", other / "cat.png")
    drop([other])  # a folder dropped on an open project joins it
    assert [i.name for i in window.workspace.items] == ["camera", "coffee", "cat"]
    assert window.workspace.project.folder == sample_copy / ".segstudio"


def test_every_panel_tab_shows_its_whole_name(qtbot, window, sample_copy):
    """Seven panels share the right dock: their tabs stand along its edge, each long enough
    for its title (side by side they were cut to two letters)."""
    from PySide6.QtWidgets import QTabBar

    window.resize(1400, 900)
    window.show()
    assert window.open_paths([str(sample_copy)])
    qtbot.waitExposed(window)
    bars = [bar for bar in window.findChildren(QTabBar) if bar.isVisible() and bar.count() >= 7]
    assert len(bars) == 1
    bar = bars[0]
    titles = [bar.tabText(i) for i in range(bar.count())]
    assert titles == ["Display", "Models", "Assist", "3D", "Video", "Instances", "Actions"]
    for i, title in enumerate(titles):
        room = bar.tabRect(i).height()  # the tabs run down the dock's side
        assert room >= bar.fontMetrics().horizontalAdvance(title), title

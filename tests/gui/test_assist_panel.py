"""The Assist panel driven like a user: Otsu threshold and GrabCut on the sample images, each one
undo step that leaves other classes alone; clear messages when something is missing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtWidgets import QDockWidget, QMessageBox

from app.main_window import MainWindow
from core.annotation.tools import PaintRule
from core.classical import grabcut, otsu_threshold, remove_small

CUP_OUTLINE = [(140, 8), (352, 8), (352, 252), (140, 252), (140, 8)]  # around coffee.jpg's cup


@pytest.fixture
def window(qtbot, tmp_path: Path, sample_dir: Path, monkeypatch):
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("camera.png", "coffee.jpg"):
        shutil.copy(sample_dir / name, folder)
    win = MainWindow()
    qtbot.add_widget(win)
    win.show()
    win.open_paths([str(folder)])
    assert [i.name for i in win.workspace.items] == ["camera", "coffee"]
    return win


def add_class(window: MainWindow, name: str) -> int:
    index = window.workspace.add_class(name).index
    window.classes_panel.select_index(index)  # what a click in the class list does
    assert window.tools.class_index == index
    return index


def paint_outline(window: MainWindow, points, radius: float = 3.0) -> None:
    """One brush drag along ``points`` with the selected class, then the canvas refresh."""
    session = window.workspace.session
    rule = window.tools.rule()
    session.begin_stroke(points[0], radius, rule)
    for point in points[1:]:
        session.continue_stroke(point, radius, rule)
    session.end_stroke()
    window.canvas.refresh_labels()


def expected_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The outline's bounding box grown by 5% of its width/height per side, clipped."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    dx, dy = math.ceil(0.05 * (x1 - x0)), math.ceil(0.05 * (y1 - y0))
    return (max(0, x0 - dx), max(0, y0 - dy), min(mask.shape[1], x1 + dx),
            min(mask.shape[0], y1 + dy))


def run_grabcut(qtbot, panel) -> None:
    panel.grabcut_button.click()
    assert panel.job is not None  # on a worker thread: busy bar, buttons off
    assert panel.progress.maximum() == 0
    assert not panel.grabcut_button.isEnabled() and not panel.otsu_button.isEnabled()
    qtbot.waitUntil(lambda: panel.job is None, timeout=60000)
    assert panel.grabcut_button.isEnabled() and panel.otsu_button.isEnabled()
    assert panel.progress.maximum() == 1


def test_assist_is_a_tab_beside_display_and_models(window):
    docks = {d.windowTitle(): d for d in window.findChildren(QDockWidget)}
    tabbed = {d.windowTitle() for d in window.tabifiedDockWidgets(docks["Display"])}
    assert {"Models", "Assist"} <= tabbed
    assert docks["Assist"].widget().widget() is window.assist_panel  # inside its scroll area


def test_otsu_sets_class_on_background_only_as_one_undo_step(qtbot, window):
    ws = window.workspace
    session = ws.session
    other = add_class(window, "sky")
    session.polygon([(0, 0), (200, 0), (200, 120), (0, 120)], window.tools.rule())  # earlier work
    window.classes_panel.select_index(1)
    before = session.labels.copy()
    steps = len(session.history)

    panel = window.assist_panel
    with qtbot.waitSignal(panel.applied, timeout=5000):
        panel.otsu_button.click()

    threshold, mask = otsu_threshold(ws.image)
    expected = before.copy()
    expected[mask & (before == 0)] = 1
    assert np.array_equal(session.labels, expected)
    assert (session.labels[before == other] == other).all()  # the other class stayed
    assert len(session.history) == steps + 1
    count = int(np.count_nonzero(mask & (before == 0)))
    assert panel.status.text() == (f"Otsu threshold {threshold:.1f}: {count:,} pixels set to "
                                   f"class 'object'.")
    assert np.array_equal(window.canvas.overlay.labels(), session.labels)  # shown

    window.undo()
    assert np.array_equal(session.labels, before)
    window.redo()
    assert np.array_equal(session.labels, expected)


def test_otsu_dark_objects_and_min_size(qtbot, window):
    ws = window.workspace
    panel = window.assist_panel
    _, mask = otsu_threshold(ws.image)

    panel.dark.setChecked(True)
    panel.otsu_button.click()
    assert np.array_equal(ws.session.labels == 1, ~mask)
    window.undo()
    assert not ws.session.labels.any()

    panel.min_size.setValue(200)
    panel.otsu_button.click()
    kept = remove_small(~mask, 200)
    assert np.count_nonzero(kept) < np.count_nonzero(~mask)  # there were specks to remove
    assert np.array_equal(ws.session.labels == 1, kept)

    window.undo()
    panel.dark.setChecked(False)
    panel.otsu_button.click()
    assert np.array_equal(ws.session.labels == 1, remove_small(mask, 200))


def test_grabcut_from_a_rough_outline(qtbot, window):
    ws = window.workspace
    ws.open_item(1)  # coffee
    session = ws.session
    cup = add_class(window, "cup")
    saucer = add_class(window, "saucer")  # another class inside the box: never touched
    session.polygon([(160, 220), (200, 220), (200, 245), (160, 245)], window.tools.rule())
    window.classes_panel.select_index(cup)
    paint_outline(window, CUP_OUTLINE)
    before = session.labels.copy()
    box = expected_box(before == cup)
    steps = len(session.history)

    panel = window.assist_panel
    run_grabcut(qtbot, panel)

    reference = grabcut(ws.image, box)
    x0, y0, x1, y1 = box
    in_box = np.zeros(reference.shape, bool)
    in_box[y0:y1, x0:x1] = True
    assert not (reference & ~in_box).any()
    labels = session.labels
    assert np.array_equal(labels == cup, reference & (before != saucer))
    assert np.array_equal(labels == saucer, before == saucer)
    assert not ((labels == cup) & ~in_box).any()  # stays inside the box
    cup_pixels = np.count_nonzero(labels == cup)
    assert 20_000 < cup_pixels < 0.9 * (x1 - x0) * (y1 - y0)  # found an object, not the box
    assert len(session.history) == steps + 1
    assert "GrabCut" in panel.status.text() and "'cup'" in panel.status.text()

    window.undo()
    assert np.array_equal(session.labels, before)


def test_grabcut_without_class_pixels_says_what_to_do(qtbot, window):
    window.workspace.open_item(1)
    panel = window.assist_panel
    steps = len(window.workspace.session.history)
    panel.grabcut_button.click()
    assert panel.job is None
    assert panel.status.text() == "Paint a rough outline of the object with class 'object' first."
    assert len(window.workspace.session.history) == steps


def test_grabcut_error_is_shown_not_raised(qtbot, window):
    ws = window.workspace
    height, width = ws.image.shape[:2]
    ws.session.polygon([(0, 0), (width, 0), (width, height), (0, height)],
                       PaintRule(1))  # the whole image: GrabCut has no background left
    before = ws.session.labels.copy()
    run_grabcut(qtbot, window.assist_panel)
    assert "whole image" in window.assist_panel.status.text()
    assert np.array_equal(ws.session.labels, before)


def test_result_is_dropped_when_the_person_moved_on(qtbot, window):
    ws = window.workspace
    ws.open_item(1)
    paint_outline(window, CUP_OUTLINE)
    panel = window.assist_panel
    panel.grabcut_button.click()
    ws.open_item(0)  # moves on while GrabCut runs
    qtbot.waitUntil(lambda: panel.job is None, timeout=60000)
    assert "dropped" in panel.status.text()
    assert not ws.session.labels.any()


def test_no_project_gives_a_message(qtbot, monkeypatch):
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    win = MainWindow()
    qtbot.add_widget(win)
    panel = win.assist_panel
    for button in (panel.otsu_button, panel.grabcut_button):
        panel.status.setText("")
        button.click()
        assert panel.status.text() == "Open an image or a project first."
        assert panel.job is None


def test_background_class_is_refused(qtbot, window):
    window.classes_panel.select_index(0)
    window.assist_panel.otsu_button.click()
    assert "other than background" in window.assist_panel.status.text()
    assert not window.workspace.session.labels.any()

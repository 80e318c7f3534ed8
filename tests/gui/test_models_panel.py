"""The Models panel driven like a user: run a model on the item, undo it, show confidence, run on
every item, cancel a long run."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtWidgets import QMessageBox

from app.main_window import MainWindow
from core.errors import SegStudioError
from core.project.store import Project


@pytest.fixture
def window(qtbot, tmp_path: Path, sample_dir: Path, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("camera.png", "chelsea.png", "coffee.jpg"):
        shutil.copy(sample_dir / name, folder)
    win = MainWindow()
    qtbot.add_widget(win)
    win.show()
    win.open_paths([str(folder)])
    panel = win.models_panel
    panel.model.setCurrentIndex(panel.model.findData("unet"))
    panel.weights.setCurrentIndex(panel.weights.findData(None))  # untrained: deterministic here
    panel.device.setCurrentText("cpu")
    panel.tile.setValue(256)
    return win


def run_and_wait(qtbot, panel, scope: str, timeout: int = 60000) -> None:
    panel.buttons[scope].click()
    assert panel.job is not None  # on a worker thread, the window stays responsive
    qtbot.waitUntil(lambda: panel.job is None, timeout=timeout)


def test_run_on_item_is_one_undo_step_with_confidence(qtbot, window):
    panel = window.models_panel
    session = window.workspace.session
    window.tools.set_brush_size(9)
    session.polygon([(10, 10), (40, 10), (40, 40)], window.tools.rule())  # earlier work
    before = session.labels.copy()
    steps = len(session.history)

    with qtbot.waitSignal(panel.applied, timeout=60000) as applied:
        panel.buttons["current"].click()
    prediction = applied.args[0]
    labels = window.workspace.session.labels
    assert prediction.labels.shape == labels.shape == (512, 512)
    assert np.array_equal(labels, prediction.labels)
    assert len(window.workspace.session.history) == steps + 1  # one undo step

    # The same cached model run directly gives the same labels: nothing else touched them.
    engine = panel._engine
    loaded = engine.load("unet", weights=None, num_classes=2)
    again = engine.predict(loaded, window.workspace.image)
    assert np.array_equal(again.labels, labels)

    panel.confidence.setChecked(True)
    assert window.canvas.confidence_visible()
    assert 0.5 <= float(prediction.confidence.min()) and float(prediction.confidence.max()) <= 1

    window.undo()
    assert np.array_equal(window.workspace.session.labels, before)
    window.redo()
    assert np.array_equal(window.workspace.session.labels, prediction.labels)


def test_run_on_items_not_done_marks_them_for_review(qtbot, window):
    panel = window.models_panel
    ws = window.workspace
    done_item = ws.items[1]
    ws.open_item(1)
    ws.session.polygon([(5, 5), (30, 5), (30, 30)], window.tools.rule())
    ws.set_item_state("done")
    done_labels = ws.session.labels.copy()
    ws.open_item(0)

    run_and_wait(qtbot, panel, "not_done")
    assert "Predicted 2 item(s)" in panel.status.text()
    states = {i.name: i.state for i in ws.items}
    assert states == {"camera": "needs_review", "chelsea": "done", "coffee": "needs_review"}
    project = ws.project
    assert np.array_equal(project.load_mask(done_item.id), done_labels)  # done is untouched
    coffee = next(i for i in ws.items if i.name == "coffee")
    mask = project.load_mask(coffee)
    assert mask.shape == (coffee.height, coffee.width)
    assert ws.session is not None  # the open item came back


def test_cancel_returns_control_quickly(qtbot, window, monkeypatch):
    panel = window.models_panel
    started = threading.Event()

    def slow_predict(loaded, image, report=None, cancel=None, **kwargs):
        started.set()
        while not cancel.is_set():
            time.sleep(0.01)
        raise SegStudioError("Inference cancelled.")

    engine = panel._engine_for(panel.request("current"))
    monkeypatch.setattr(engine, "predict", slow_predict)
    before = window.workspace.session.labels.copy()
    panel.buttons["current"].click()
    assert started.wait(30)
    t0 = time.perf_counter()
    panel.cancel.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=1000)
    assert time.perf_counter() - t0 < 1.0
    assert "cancelled" in panel.status.text().lower()
    assert np.array_equal(window.workspace.session.labels, before)


def test_bad_checkpoint_is_reported_in_the_panel(qtbot, window, tmp_path):
    panel = window.models_panel
    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_bytes(b"this is not a checkpoint")
    panel.weights.insertItem(panel.weights.count() - 1, str(bad), str(bad))
    panel.weights.setCurrentIndex(panel.weights.findData(str(bad)))
    run_and_wait(qtbot, panel, "current")
    assert "not_a_checkpoint.pt" in panel.status.text()
    assert window.isVisible()


def test_result_lands_on_its_own_item_when_the_person_moved_on(qtbot, window):
    panel = window.models_panel
    ws = window.workspace
    first = ws.item
    with qtbot.waitSignal(panel.applied, timeout=60000):
        panel.buttons["current"].click()
        ws.open_item(2)  # moves on while the model runs
    assert ws.item.name == "coffee"
    assert not ws.session.labels.any()  # the open item was not touched
    with Project.open(ws.project.folder, read_only=True) as view:
        assert view.has_mask(first.id)


def test_published_weights_not_on_this_machine_say_where_to_put_them(qtbot, window,
                                                                      monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    panel = window.models_panel
    panel.model.setCurrentIndex(panel.model.findData("deeplabv3_mobilenet_v3_large"))
    index = panel.weights.findData("deeplabv3_mobilenet_v3_large.coco_voc")
    assert panel.weights.itemText(index).endswith("(not on this machine)")
    panel.weights.setCurrentIndex(index)
    run_and_wait(qtbot, panel, "current")
    text = panel.status.text()
    assert "deeplabv3_mobilenet_v3_large-fc3c493d.pth" in text
    assert str(tmp_path / "torch") in text  # where to place the file
    assert not window.workspace.session.labels.any()

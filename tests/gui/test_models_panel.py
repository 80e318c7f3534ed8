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


# -- volumes: the slice the active view shows, every slice along the active view's axis ---------
Z_STEP = 2.5
DEPTH = 8  # slices of the CT series (each 128 x 128)


def write_varied_series(folder: Path) -> Path:
    """A DICOM series of CT_small.dcm copies, each slice shifted sideways by its own amount, so
    that no two axial slices (and no two rows of a coronal or sagittal slice) are alike."""
    import pydicom
    from dicom_series import write_series

    write_series(folder, [Z_STEP * k for k in range(DEPTH)])
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        k = round(float(ds.ImagePositionPatient[2]) / Z_STEP)
        pixels = ds.pixel_array
        ds.PixelData = np.roll(pixels, 9 * k, axis=1).astype(pixels.dtype).tobytes()
        ds.save_as(path)
    return folder


def spatial_checkpoint(path: Path) -> Path:
    """A small grey U-Net checkpoint whose output depends on the image (an untrained U-Net gives
    one class everywhere): deterministic, no download."""
    from core.models import get_model
    from core.models.loading import save_checkpoint

    kwargs = {"base_channels": 8, "depth": 2}
    torch.manual_seed(1)
    model = get_model("unet", num_classes=2, in_channels=1, **kwargs)
    with torch.no_grad():
        model.head.bias.zero_()
        model.head.weight.mul_(10)
    return save_checkpoint(path, "unet", model, ["background", "tissue"], 1, [0.5], [0.25],
                           model_kwargs=kwargs)


def choose_small_unet(window, folder: Path) -> str:
    """The small U-Net's checkpoint chosen in the Models panel (CPU, 128-pixel tiles)."""
    panel = window.models_panel
    weights = str(spatial_checkpoint(folder / "spatial.pt"))
    panel.model.setCurrentIndex(panel.model.findData("unet"))
    panel.weights.insertItem(panel.weights.count() - 1, weights, weights)
    panel.weights.setCurrentIndex(panel.weights.findData(weights))
    panel.device.setCurrentText("cpu")
    panel.tile.setValue(128)
    return weights


@pytest.fixture
def ct_window(qtbot, tmp_path: Path, monkeypatch):
    """The window with an 8 x 128 x 128 CT volume open and a small checkpoint chosen."""
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    study = write_varied_series(tmp_path / "study")
    win = MainWindow()
    qtbot.add_widget(win)
    win.show()
    win.open_paths([str(study)])
    assert win.workspace.image.shape == (DEPTH, 128, 128)
    win.checkpoint = choose_small_unet(win, tmp_path)
    return win


def model_alone(window):
    """The panel's engine and loaded model, to run the same model by hand."""
    engine = window.models_panel._engine
    return engine, engine.load("unet", weights=window.checkpoint)


def draw_earlier_work(window) -> None:
    """A polygon of class 1 on the active view's slice (work the undo must give back)."""
    from core.annotation.tools import PaintRule

    window.workspace.session.polygon([(10, 2), (100, 3), (60, 6)], PaintRule(1))
    assert window.workspace.session.labels.any()


@pytest.mark.parametrize(("axis", "name"), [(1, "coronal"), (2, "sagittal")])
def test_every_slice_runs_along_the_active_view_as_one_undo_step(qtbot, ct_window, axis, name):
    from app.panels.models_panel import confidence_slice

    window, panel = ct_window, ct_window.models_panel
    ws = window.workspace
    ws.set_view_axis(axis)
    geometry = ws.geometry()
    assert geometry.name == name and geometry.axes[0] == axis
    assert ws.label_plane().shape == (DEPTH, 128)  # superior up: slices run down the rows
    draw_earlier_work(window)
    session = ws.session
    before = session.labels.copy()
    steps = len(session.history)

    texts: list[str] = []
    with qtbot.waitSignal(panel.applied, timeout=60000) as applied:
        panel.buttons["volume"].click()
        panel.job.progress.connect(lambda _d, _t: texts.append(panel.status.text()))
    prediction = applied.args[0]
    assert f"Every {name} slice: 1/128" in texts and f"Every {name} slice: 128/128" in texts
    assert panel.progress.value() == panel.progress.maximum() == 128
    assert panel.status.text().startswith(f"Every {name} slice: unet done on cpu")

    # voxel for voxel what the model gives on each slice along that axis, run by hand
    engine, loaded = model_alone(window)
    image = ws.image
    alone = [engine.predict(loaded, np.take(image, i, axis=axis)) for i in range(128)]
    expected = np.stack([p.labels for p in alone], axis=axis)
    labels = session.labels
    assert labels.shape == expected.shape == (DEPTH, 128, 128)
    assert np.array_equal(labels, expected) and np.array_equal(prediction.labels, expected)
    assert 0.05 < float((labels == 1).mean()) < 0.95  # the model's output varies
    axial = np.stack([engine.predict(loaded, image[z]).labels for z in range(DEPTH)])
    assert not np.array_equal(axial, expected)  # the axis the slices are cut along matters
    assert len(session.history) == steps + 1

    # the confidence of the shown slice, in the view's order, as the model gave it
    shown = ws.position[axis]
    assert np.allclose(confidence_slice(prediction.confidence, ws), alone[shown].confidence)
    assert np.allclose(panel.confidence_plane(), alone[shown].confidence)
    ws.set_view_axis(0)  # the same run seen in the axial view: the axial cut of the volume
    axial_cut = np.stack([p.confidence for p in alone], axis=axis)[ws.position[0]]
    assert np.allclose(confidence_slice(prediction.confidence, ws), axial_cut)
    panel.confidence.setChecked(True)
    ws.set_view_axis(axis)

    window.undo()
    assert np.array_equal(session.labels, before)
    window.redo()
    assert np.array_equal(session.labels, expected)


def test_run_on_item_predicts_the_coronal_slice_shown(qtbot, ct_window):
    window, panel = ct_window, ct_window.models_panel
    ws = window.workspace
    ws.set_view_axis(1)
    ws.set_position(1, 40)
    draw_earlier_work(window)
    session = ws.session
    before = session.labels.copy()
    steps = len(session.history)
    with qtbot.waitSignal(panel.applied, timeout=60000) as applied:
        panel.buttons["current"].click()
    prediction = applied.args[0]
    engine, loaded = model_alone(window)
    alone = engine.predict(loaded, ws.image[:, 40, :])
    assert prediction.labels.shape == (DEPTH, 128)
    assert np.array_equal(prediction.labels, alone.labels)
    labels = session.labels
    assert np.array_equal(labels[:, 40, :], alone.labels)
    changed = labels != before
    assert changed.any() and not changed[:, :40].any() and not changed[:, 41:].any()
    assert len(session.history) == steps + 1
    assert np.array_equal(panel.confidence_plane(), alone.confidence)
    ws.set_position(1, 41)
    assert panel.confidence_plane() is None  # it belongs to slice 40 only
    window.undo()
    assert np.array_equal(session.labels, before)


def test_run_on_item_lands_on_its_slice_when_the_person_moved_to_another(qtbot, ct_window):
    window, panel = ct_window, ct_window.models_panel
    ws = window.workspace
    ws.set_view_axis(2)
    ws.set_position(2, 30)
    session = ws.session
    before = session.labels.copy()
    with qtbot.waitSignal(panel.applied, timeout=60000):
        panel.buttons["current"].click()
        ws.set_position(2, 100)  # moves on while the model runs, then to another view
        ws.set_view_axis(0)
    engine, loaded = model_alone(window)
    alone = engine.predict(loaded, ws.image[:, :, 30]).labels
    labels = session.labels
    assert np.array_equal(labels[:, :, 30], alone) and alone.any()
    changed = labels != before
    assert not changed[:, :, :30].any() and not changed[:, :, 31:].any()
    assert (session.plane, session.axes) == ((ws.position[0],), ws.geometry(0).axes)  # kept
    window.undo()
    assert np.array_equal(session.labels, before)
    window.redo()
    folder = ws.project.folder
    window.close()  # the result was an edit of the session: it is in the saved mask
    with Project.open(folder, read_only=True) as view:
        (item,) = view.items()
        assert np.array_equal(view.load_mask(item)[:, :, 30], alone)


def test_cancel_every_slice_leaves_the_labels_unchanged(qtbot, ct_window, monkeypatch):
    from core.inference.errors import InferenceCancelled

    window, panel = ct_window, ct_window.models_panel
    ws = window.workspace
    ws.set_view_axis(1)
    draw_earlier_work(window)
    session = ws.session
    before = session.labels.copy()
    steps = len(session.history)
    engine = panel._engine_for(panel.request("volume"))
    real_predict = engine.predict
    calls: list[int] = []
    started = threading.Event()

    def predict_then_stall(loaded, image, report=None, cancel=None, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            return real_predict(loaded, image, report=report, cancel=cancel, **kwargs)
        started.set()  # the third slice: wait for Cancel as a long slice would
        while not cancel.is_set():
            time.sleep(0.01)
        raise InferenceCancelled("Inference cancelled.")

    monkeypatch.setattr(engine, "predict", predict_then_stall)
    panel.buttons["volume"].click()
    assert started.wait(30)
    qtbot.waitUntil(lambda: "2/128" in panel.status.text(), timeout=5000)
    panel.cancel.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=5000)
    assert "cancelled" in panel.status.text().lower()
    assert "coronal" in panel.status.text()
    assert np.array_equal(session.labels, before)
    assert len(session.history) == steps
    assert all(button.isEnabled() for button in panel.buttons.values())


def test_model_dice_in_the_item_list_and_next_item_to_label(qtbot, window):
    """After a batch run every item keeps the model's prediction and how sure it was: the list
    shows how much of it the person kept (Dice), and "Next item to label" opens the least sure."""
    panel, ws, items = window.models_panel, window.workspace, window.items_panel
    run_and_wait(qtbot, panel, "not_done")
    confidences = ws.project.prediction_confidences()
    assert set(confidences) == {i.id for i in ws.items}
    assert all(0.5 <= c <= 1.0 for c in confidences.values())
    texts = [items.list.item(row).text() for row in range(items.list.count())]
    assert all(text.endswith("model Dice 1.00") for text in texts)  # nothing corrected yet
    # the person corrects the first item: paint a class-1 square where the model put class 0
    ws.open_item(0)
    model, kept = ws.project.load_class_prediction(ws.items[0].id)
    assert model == "unet" and np.array_equal(kept, ws.session.labels)
    labels = kept.copy()
    labels[100:300, 100:300] = 1 - labels[100:300, 100:300]
    ws.session.replace_plane(labels)
    window._open_item(1)  # leaving the item checkpoints it; the list is refreshed
    from core.train.metrics import agreement_dice

    expected = agreement_dice(kept, labels)
    assert expected < 1.0
    assert items.list.item(0).text().endswith(f"model Dice {expected:.2f}")
    ws.set_item_state("done")
    target = min((confidences[i.id], row) for row, i in enumerate(ws.items)
                 if i.state != "done")[1]
    with qtbot.waitSignal(items.item_activated) as activated:
        items.next_button.click()
    assert activated.args == [target] and "sure on average" in items.status.text()

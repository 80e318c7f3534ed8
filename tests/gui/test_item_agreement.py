"""The item list's "model Dice" and "Next item to label" for volumes and videos: a prediction on
one slice of any view, on every slice or on a video frame is kept, the Dice follows the person's
corrections, and the least sure volume is the next to label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_series import write_series
from helpers import drag, line
from test_models_panel import choose_small_unet

from core.project.predictions import WHOLE_ITEM, PredictedPart

DEPTH = 8  # slices of each CT series (128 x 128 each)


def write_ct(folder: Path, shift: int, scale: float = 1.0) -> Path:
    """A series of CT_small.dcm copies, each slice shifted sideways by ``shift`` pixels per
    slice (no two slices alike) and its intensities scaled (the two volumes differ)."""
    write_series(folder, [2.5 * k for k in range(DEPTH)])
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        k = round(float(ds.ImagePositionPatient[2]) / 2.5)
        pixels = ds.pixel_array
        shifted = np.roll(pixels, shift * k, axis=1) * scale
        ds.PixelData = shifted.astype(pixels.dtype).tobytes()
        ds.save_as(path)
    return folder


@pytest.fixture
def ct_pair(window, tmp_path):
    """The window with two CT volumes in one project (the first open) and the small U-Net."""
    studies = tmp_path / "studies"
    window.open_paths([str(write_ct(studies / "a", 9)), str(write_ct(studies / "b", -5, 0.6))])
    ws = window.workspace
    assert [i.kind for i in ws.items] == ["volume", "volume"]
    assert ws.image.shape == (DEPTH, 128, 128)
    window.weights = choose_small_unet(window, tmp_path)
    return window


def run(qtbot, window, scope: str):
    with qtbot.waitSignal(window.models_panel.applied, timeout=60000) as applied:
        window.models_panel.buttons[scope].click()
    return applied.args[0]


def dice_by_hand(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Mean over the foreground classes in either map of 2|P and T| / (|P| + |T|)."""
    scores = []
    for value in sorted((set(np.unique(prediction)) | set(np.unique(truth))) - {0}):
        p, t = prediction == value, truth == value
        scores.append(2 * int((p & t).sum()) / (int(p.sum()) + int(t.sum())))
    return sum(scores) / len(scores)


def row_text(window, row: int) -> str:
    return window.items_panel.list.item(row).text()


def test_model_dice_of_a_coronal_slice_follows_the_correction(qtbot, ct_pair):
    window = ct_pair
    ws = window.workspace
    window.set_main_axis(1)  # the main view shows coronal slices
    ws.set_position(1, 40)
    assert ws.view_axis == 1 and ws.label_plane().shape == (DEPTH, 128)
    prediction = run(qtbot, window, "current")
    item = ws.item
    predicted = prediction.labels
    assert predicted.shape == (DEPTH, 128) and 0 < predicted.sum() < predicted.size
    model, kept = ws.project.load_class_prediction(item.id, PredictedPart.slice(1, 40))
    assert model == "unet" and np.array_equal(kept, predicted)
    assert ws.project.load_class_prediction(item.id) is None  # not the whole volume
    assert row_text(window, 0).endswith("model Dice 1.00")  # nothing corrected yet
    assert "model Dice" not in row_text(window, 1)  # the other volume was not predicted
    by_hand = float(prediction.confidence.mean())
    assert ws.project.prediction_confidences() == {item.id: pytest.approx(by_hand)}

    # the person paints class 1 across the slice with the brush, where the model put 0 too
    before = ws.session.labels.copy()
    window.tools.set_brush_size(3)
    canvas = window.canvas
    drag(qtbot, canvas.viewport(),
         line(canvas.map_image_to_widget(2, 4), canvas.map_image_to_widget(120, 4), 24))
    labels = ws.session.labels
    changed = labels != before
    assert changed[:, 40, :].any() and not changed[:, :40].any() and not changed[:, 41:].any()
    expected = dice_by_hand(predicted, labels[:, 40, :])
    assert expected < 0.995
    qtbot.waitUntil(lambda: row_text(window, 0).endswith(f"model Dice {expected:.2f}"),
                    timeout=5000)
    window.undo()  # the correction undone: the Dice follows
    qtbot.waitUntil(lambda: row_text(window, 0).endswith("model Dice 1.00"), timeout=5000)
    window.redo()
    window._open_item(1)  # the item left: its Dice is read from the saved labels
    assert row_text(window, 0).endswith(f"model Dice {expected:.2f}")


def test_next_item_to_label_is_the_less_sure_volume(qtbot, ct_pair):
    window = ct_pair
    ws, items = window.workspace, window.items_panel
    window.set_main_axis(2)  # the first volume: one sagittal slice
    ws.set_position(2, 70)
    first = run(qtbot, window, "current")
    window._open_item(1)  # the second volume: every axial slice
    whole = run(qtbot, window, "volume")
    assert whole.labels.shape == (DEPTH, 128, 128)
    a, b = ws.items
    assert ws.project.load_class_prediction(b.id)[1].shape == (DEPTH, 128, 128)
    assert [k.part for k in ws.project.class_prediction_parts(a.id)] == [
        PredictedPart.slice(2, 70)]
    assert [k.part for k in ws.project.class_prediction_parts(b.id)] == [WHOLE_ITEM]

    # the same model run by hand on the same pixels says how sure it was on each
    engine = window.models_panel._engine
    loaded = engine.load("unet", weights=window.weights)
    window._open_item(0)
    sure_a = float(engine.predict(loaded, ws.image[:, :, 70]).confidence.mean())
    window._open_item(1)
    sure_b = float(np.mean([engine.predict(loaded, s).confidence.mean() for s in ws.image]))
    assert ws.project.prediction_confidences() == {a.id: pytest.approx(sure_a),
                                                   b.id: pytest.approx(sure_b)}
    assert abs(sure_a - sure_b) > 1e-3
    less_sure = 0 if sure_a < sure_b else 1
    assert first.labels.shape == (DEPTH, 128)
    assert all(row_text(window, row).endswith("model Dice 1.00") for row in (0, 1))

    with qtbot.waitSignal(items.item_activated) as activated:
        items.next_button.click()
    assert activated.args == [less_sure]
    assert f"{min(sure_a, sure_b):.0%} sure" in items.status.text()
    window._open_item(less_sure)
    ws.set_item_state("done")  # labelled: the other volume is next
    with qtbot.waitSignal(items.item_activated) as activated:
        items.next_button.click()
    assert activated.args == [1 - less_sure]


def test_runs_on_two_video_frames_give_the_video_its_dice_and_rank(qtbot, window, tmp_path):
    import cv2
    from skimage import data

    folder = tmp_path / "frames"
    folder.mkdir()
    camera = data.camera()
    for t in range(6):  # a grey clip panning over scikit-image's camera, 64 x 96
        cv2.imwrite(str(folder / f"f{t}.png"), camera[150:214, 150 + 4 * t:246 + 4 * t])
    window.workspace.open_frames_folder(folder)
    ws = window.workspace
    assert ws.item.kind == "video" and ws.item.frames == 6
    choose_small_unet(window, tmp_path)
    predictions = {}
    for frame in (1, 4):
        window.video_bar.request(frame)
        assert ws.session.frame == frame
        predictions[frame] = run(qtbot, window, "current")
    item = ws.item
    for frame, prediction in predictions.items():
        model, kept = ws.project.load_class_prediction(item.id, PredictedPart.frame(frame))
        assert model == "unet" and np.array_equal(kept, prediction.labels)
        assert prediction.labels.any()
    mean = np.mean([p.confidence.mean() for p in predictions.values()])  # same-size frames
    assert ws.project.prediction_confidences() == {item.id: pytest.approx(mean)}
    assert row_text(window, 0).endswith("model Dice 1.00")
    # the person undoes the model's result on frame 4 (shown): the Dice counts both frames
    window.undo()
    assert not ws.session.labels.any()
    expected = dice_by_hand(np.concatenate([predictions[1].labels, predictions[4].labels]),
                            np.concatenate([predictions[1].labels,
                                            np.zeros_like(predictions[4].labels)]))
    assert expected < 0.995
    qtbot.waitUntil(lambda: row_text(window, 0).endswith(f"model Dice {expected:.2f}"),
                    timeout=5000)

"""Instances in the window, on scikit-image's coins (a real image with real separate objects):
split the class map into instances, select on the canvas, delete/merge/split/new/paint, change
class, hide detections by score, accept, flatten back, undo, and find it all after reopening."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import click, drag, line
from PySide6.QtCore import Qt
from scipy import ndimage
from skimage import data, filters

from core.project.items import Instance
from core.project.store import Project


def coin_mask() -> np.ndarray:
    """The coins, segmented as scikit-image's examples do (Otsu, fill holes, open)."""
    coins = data.coins()
    mask = coins > filters.threshold_otsu(coins)
    mask = ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=2))
    return ndimage.binary_opening(mask, iterations=3)


@pytest.fixture
def coins(window, tmp_path) -> Path:
    path = tmp_path / "coins.png"
    cv2.imwrite(str(path), data.coins())
    assert window.open_paths([str(path)])
    window.workspace.session.replace_plane(coin_mask().astype(np.uint8))
    panel = window.instances_panel
    panel.edit_mode.setChecked(True)
    panel.split_class_map()
    return path


def centre(window, ident: int) -> tuple[float, float]:
    x0, y0, x1, y1 = window.instances_panel._stats[ident].bbox
    labels = window.workspace.instance_session().labels
    ys, xs = np.nonzero(labels == ident)
    k = np.argmin((xs - (x0 + x1) / 2) ** 2 + (ys - (y0 + y1) / 2) ** 2)
    return float(xs[k]), float(ys[k])


def test_split_select_delete_and_undo(qtbot, window, coins):
    ws, panel, canvas = window.workspace, window.instances_panel, window.canvas
    labels = ws.instance_session().labels
    _components, count = ndimage.label(coin_mask(), ndimage.generate_binary_structure(2, 2))
    assert panel.table.rowCount() == count == len(np.unique(labels)) - 1
    # the canvas shows the instance map, one colour per coin, with a box each
    assert canvas.overlay.labels() is labels
    assert canvas.box_count() == count
    window.actions_by_id["tool_select"].trigger()
    target = 5
    x, y = centre(window, target)
    click(canvas.viewport(), canvas.map_image_to_widget(x, y))
    assert panel.selected == [target]
    assert panel.table.selectedItems()[0].data(Qt.ItemDataRole.UserRole) == target
    area = int((labels == target).sum())
    window.actions_by_id["delete_instance"].trigger()
    assert not (labels == target).any() and panel.table.rowCount() == count - 1
    window.undo()
    assert int((ws.instance_session().labels == target).sum()) == area
    assert panel.table.rowCount() == count


def test_merge_split_new_and_paint(qtbot, window, coins):
    ws, panel, canvas = window.workspace, window.instances_panel, window.canvas
    labels = ws.instance_session().labels
    window.actions_by_id["tool_select"].trigger()
    a, b = 3, 4
    click(canvas.viewport(), canvas.map_image_to_widget(*centre(window, a)))
    click(canvas.viewport(), canvas.map_image_to_widget(*centre(window, b)),
          modifiers=Qt.KeyboardModifier.ControlModifier)
    assert panel.selected == [a, b]
    both = int(((labels == a) | (labels == b)).sum())
    panel.buttons["merge"].click()
    assert int((labels == a).sum()) == both and not (labels == b).any()

    # split coin a back with a drag of the select tool across it
    x0, y0, x1, y1 = panel._stats[a].bbox
    panel.select([a])
    middle = (x0 + x1) / 2
    drag(qtbot, canvas.viewport(),
         line(canvas.map_image_to_widget(middle, y0 - 3), canvas.map_image_to_widget(middle,
                                                                                    y1 + 3), 6))
    new = panel.selected[1]
    assert panel.selected[0] == a and (labels == new).any() and (labels == a).any()
    assert int((labels == a).sum() + (labels == new).sum()) == both
    assert ws.project.instances(ws.item.id)[new].class_index == 1

    # a new instance, painted with the brush: only background is painted, not other coins
    window.actions_by_id["new_instance"].trigger()
    fresh = panel.selected[0]
    window.tools.set_tool("brush")
    window.tools.set_brush_size(30)
    before = labels.copy()
    cx, cy = centre(window, 10)
    drag(qtbot, canvas.viewport(),
         line(canvas.map_image_to_widget(cx, cy), canvas.map_image_to_widget(cx + 60, cy), 8))
    painted = (labels == fresh) & (before != fresh)
    assert painted.any() and not (before[painted] != 0).any()  # coin 10 kept its pixels
    assert np.array_equal(labels[before != 0], before[before != 0])


def test_class_score_slider_accept_and_flatten(qtbot, window, coins):
    ws, panel, canvas = window.workspace, window.instances_panel, window.canvas
    item = ws.item
    labels = ws.instance_session().labels
    ids = sorted(int(i) for i in np.unique(labels) if i)
    # pretend a model found them: scores 0.05, 0.10, ...
    ws.project.set_instances(item.id, [Instance(i, 1, round(0.05 * (n + 1), 2), "model")
                                       for n, i in enumerate(ids)])
    panel.refresh()
    ws.add_class("dime")
    panel.select(ids[:2])
    panel.class_box.setCurrentIndex(panel.class_box.findData(2))
    panel.buttons["set_class"].click()
    rows = ws.project.instances(item.id)
    assert rows[ids[0]].class_index == 2 and rows[ids[0]].reviewed
    panel.min_score.setValue(50)  # hide scores below 0.50
    hidden = panel.hidden_ids()
    assert hidden == {i for i in ids if rows[i].score < 0.5}
    assert canvas.box_count() == len(ids) - len(hidden)
    from app.canvas.overlay import display_indices

    drawn = canvas.overlay._qimage.colorTable()
    assert all(drawn[int(display_indices(np.array([i]))[0])] == 0 for i in hidden)
    panel.buttons["accept_all"].click()
    rows = ws.project.instances(item.id)
    assert all(rows[i].reviewed for i in ids if i not in hidden)
    assert not any(rows[i].reviewed for i in hidden if i not in ids[:2])
    panel.buttons["to_classes"].click()
    expected = np.zeros(labels.shape, np.uint8)
    for i in ids:
        expected[labels == i] = rows[i].class_index
    assert np.array_equal(ws.session.labels, expected)
    window.close()
    with Project.open(Path(coins).parent / ".segstudio") as project:
        (stored,) = project.items()
        assert np.array_equal(project.load_mask(stored, layer="instances"), labels)
        assert project.instances(stored.id)[ids[0]].class_index == 2


def test_instance_mode_is_for_images_only(qtbot, window, tmp_path):
    from dicom_series import write_series

    study = write_series(tmp_path / "study", [0.0, 2.5])
    window.open_paths([str(study)])
    panel = window.instances_panel
    panel.edit_mode.setChecked(True)
    assert not panel.active and "single images" in panel.status.text()
    window.actions_by_id["new_instance"].trigger()
    assert "Edit instances" in window.statusBar().currentMessage()


def test_detect_instances_with_mask_rcnn(qtbot, window, tmp_path):
    """An untrained Mask R-CNN (no download possible here) through the real path: model built
    with weights=None, detections become model rows with their scores, one undo step, and the
    prediction is kept to measure corrections later."""
    path = tmp_path / "coffee.png"
    cv2.imwrite(str(path), cv2.resize(data.coffee(), (160, 120))[..., ::-1])
    window.open_paths([str(path)])
    ws, panel = window.workspace, window.instances_panel
    panel.choice.ensure_filled()
    panel.choice.model.setCurrentIndex(panel.choice.model.findData("maskrcnn_resnet50_fpn"))
    panel.choice.weights.setCurrentIndex(0)  # untrained
    panel.score_threshold.setValue(0.0)
    panel.max_detections.setValue(5)
    panel.detect.click()
    assert panel.active  # detecting turns instance mode on
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert "found" in panel.status.text(), panel.status.text()
    labels = ws.instance_session().labels
    rows = ws.project.instances(ws.item.id)
    present = sorted(int(i) for i in np.unique(labels) if i)
    assert all(rows[i].source == "model" and rows[i].score is not None for i in present)
    found = int(panel.status.text().split("found ")[1].split(" ")[0])
    assert len(rows) == found <= 5 and present  # scores of an untrained network pass 0.0
    assert [rows[i].score for i in sorted(rows)] == sorted((r.score for r in rows.values()),
                                                           reverse=True)  # id 1 = best
    kept = ws.project.load_predictions(ws.item.id)
    assert kept is not None and kept[0] == "maskrcnn_resnet50_fpn" and len(kept[1]) == found
    window.undo()
    assert not ws.instance_session().labels.any()


def test_compare_with_the_model_measures_the_corrections(qtbot, window, coins):
    """The kept prediction is what a model said; after the person deletes one instance the
    comparison drops below 1.0 (how much did the person have to fix?)."""
    from core.export.coco import encode_rle

    ws, panel = window.workspace, window.instances_panel
    item = ws.item
    labels = ws.instance_session().labels
    rows = ws.project.instances(item.id)
    results = []
    for ident in sorted(rows):
        mask = labels == ident
        ys, xs = np.nonzero(mask)
        results.append({"image_id": item.id, "category_id": rows[ident].class_index,
                        "segmentation": encode_rle(mask), "score": 0.9,
                        "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1),
                                 float(np.ptp(ys) + 1)]})
    ws.project.save_predictions(item.id, "test model", results)
    panel.buttons["compare"].click()
    assert "mask AP 1.000" in panel.status.text() and "box AP 1.000" in panel.status.text()
    panel.select([sorted(rows)[0]])
    panel.delete_selected()  # the person removes a detection they judge wrong
    panel.buttons["compare"].click()
    ap = float(panel.status.text().split("mask AP ")[1].split(" ")[0])
    assert 0.5 < ap < 1.0


def test_export_and_import_coco_from_the_dialogs(qtbot, window, coins, tmp_path):
    import json

    from PySide6.QtWidgets import QDialog

    ws = window.workspace
    labels = ws.instance_session().labels.copy()
    ws.instance_session().checkpoint()
    window.show_export()
    dialog = window.export_dialog
    dialog.format.setCurrentIndex(dialog.format.findData("coco"))
    assert dialog.polygons.isVisibleTo(dialog) and not dialog.copy_originals.isHidden()
    out = tmp_path / "coco"
    dialog.out_dir.setText(str(out))
    dialog.start()
    qtbot.waitUntil(lambda: "Exported" in dialog.status.text(), timeout=30000)
    data_out = json.loads((out / "annotations" / "instances.json").read_text())
    assert len(data_out["annotations"]) == len(np.unique(labels)) - 1
    dialog.done(QDialog.DialogCode.Accepted)

    # a fresh project imports it back: the same instances
    fresh = tmp_path / "again"
    fresh.mkdir()
    cv2.imwrite(str(fresh / "coins.png"), data.coins())
    window.open_paths([str(fresh / "coins.png")])
    window.show_import()
    importer = window.import_dialog
    importer.format.setCurrentIndex(importer.format.findData("coco"))
    assert importer.skip_bad.isVisibleTo(importer)
    importer.folder.setText(str(out))
    importer.start()
    qtbot.waitUntil(lambda: "Imported" in importer.status.text(), timeout=30000)
    importer.done(QDialog.DialogCode.Accepted)
    qtbot.waitUntil(lambda: window.workspace.session is not None)
    again = window.workspace.project.load_mask(window.workspace.item, layer="instances")
    # the same objects, maybe numbered otherwise
    pairs = {(int(a), int(b)) for a, b in zip(labels.ravel(), again.ravel(), strict=True)}
    assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)


def test_opening_a_video_in_instance_mode_leaves_it(qtbot, window, coins, tmp_path):
    """Instance mode on an image, then a video item opened from the list: the window shows the
    video's class labels (no error), instance mode is left, and the image's instances stay."""
    from sample_clips import copied_clip

    clip = copied_clip(tmp_path)
    panel = window.instances_panel
    count = len(panel._stats)
    assert panel.active and count > 10
    errors = []
    window._show_error = errors.append
    window.workspace.add_paths([clip])  # File > Add to project
    video_row = next(i for i, item in enumerate(window.workspace.items) if item.kind == "video")
    window.items_panel.item_activated.emit(video_row)
    assert window.workspace.item.kind == "video"
    assert errors == []
    assert not panel.active and not panel.edit_mode.isChecked()
    assert window.canvas.image_item.image.shape[:2] == (272, 640)
    image_row = next(i for i, item in enumerate(window.workspace.items) if item.kind == "image")
    window.items_panel.item_activated.emit(image_row)
    panel.edit_mode.setChecked(True)
    assert len(panel._stats) == count

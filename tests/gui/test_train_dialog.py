"""Models > Train: a U-Net trained on the project's corrected items from the dialog, with the
live loss/Dice curves, then offered in the Models panel."""

from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtWidgets import QDialog
from scipy import ndimage
from skimage import data, filters


def test_train_from_the_dialog_and_use_the_model(qtbot, window, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    coins, camera = data.coins()[:128, :128], data.camera()[::4, ::4]
    for name, image in (("coins.png", coins), ("camera.png", camera)):
        cv2.imwrite(str(folder / name), image)
    assert window.open_paths([str(folder)])
    ws = window.workspace
    for row in range(len(ws.items)):
        window._open_item(row)
        image = ws.image
        mask = ndimage.binary_opening(image > filters.threshold_otsu(image), iterations=2)
        ws.session.replace_plane(mask.astype(np.uint8))
        ws.set_item_state("done")
    window.actions_by_id["train"].trigger()
    dialog = window.train_dialog
    dialog.model.setCurrentIndex(dialog.model.findData("unet"))
    dialog.epochs.setValue(2)
    dialog.batch.setValue(2)
    dialog.patch.setValue(64)
    dialog.device.setCurrentText("cpu")
    out = tmp_path / "unet.pt"
    dialog.out.setText(str(out))
    dialog.start()
    qtbot.waitUntil(lambda: "Trained" in dialog.status.text(), timeout=180000)
    assert [row["epoch"] for row in dialog.history] == [1, 2]
    xs, ys = dialog.loss_curve.getData()
    assert list(xs) == [1, 2] and np.all(np.isfinite(ys))
    assert out.exists() and out.with_suffix(".csv").exists()
    weights = window.models_panel.weights
    assert weights.currentData() == str(out)
    assert window.models_panel.model.currentData() == "unet"
    dialog.done(QDialog.DialogCode.Accepted)

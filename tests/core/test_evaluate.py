"""COCO AP of kept model predictions against the corrected instances (pycocotools' COCOeval),
on the coins of scikit-image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from coins_instances import camera_classes, coins_labels, coins_table, make_project, write_images
from test_cli import assert_one_error_line, run_cli

from core.annotation.instances import split_components
from core.export.coco import encode_rle, mask_polygons
from core.metrics import EvaluationError, evaluate_instances
from core.project.store import Project

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def _results(instance_map: np.ndarray, table: dict, skip: tuple[int, ...] = (),
             polygons: bool = False) -> list[dict]:
    """COCO results made from the ground truth itself (score from the id, so they rank)."""
    results = []
    for ident in np.unique(instance_map).tolist():
        if ident == 0 or ident in skip:
            continue
        mask = instance_map == ident
        segmentation = mask_polygons(mask) if polygons else encode_rle(mask)
        results.append({"category_id": table[ident].class_index, "segmentation": segmentation,
                        "score": 0.99 - ident / 1000})
    return results


@pytest.fixture
def ground_truth() -> dict:
    coins = coins_labels()
    camera, rows = split_components(camera_classes())
    return {"coins": (coins, coins_table(coins)), "camera": (camera, {r.id: r for r in rows})}


def test_perfect_predictions_score_one(ground_truth: dict) -> None:
    predictions = {name: _results(*gt) for name, gt in ground_truth.items()}
    result = evaluate_instances(ground_truth, predictions)
    for scores in (result.mask, result.box):
        assert (scores.ap, scores.ap50, scores.ap75) == (1.0, 1.0, 1.0)
    assert set(result.images) == {"coins", "camera"}
    for image in result.images.values():
        assert image.mask.ap == 1.0 and image.box.ap == 1.0
        assert image.ground_truth == image.predictions
    assert result.images["coins"].ground_truth == 25  # the row without pixels is no object
    # polygons tracing the pixels (the coins have no holes) score the same
    polygons = evaluate_instances({"coins": ground_truth["coins"]},
                                  {"coins": _results(*ground_truth["coins"], polygons=True)})
    assert polygons.mask.ap == 1.0


def test_a_missed_instance_lowers_ap(ground_truth: dict) -> None:
    predictions = {"coins": _results(*ground_truth["coins"], skip=(4,)),
                   "camera": _results(*ground_truth["camera"])}
    result = evaluate_instances(ground_truth, predictions)
    assert result.mask.ap < 1.0 and result.box.ap < 1.0 and result.mask.ap50 < 1.0
    assert result.images["coins"].mask.ap < 1.0
    assert result.images["coins"].predictions == 24
    assert result.images["camera"].mask.ap == 1.0


def test_halved_masks_fail_the_strict_thresholds(ground_truth: dict) -> None:
    coins, table = ground_truth["coins"]
    shaved = coins.copy()
    for ident in range(1, 26):  # keep the bottom half of each coin: IoU about 0.5
        rows = np.flatnonzero((coins == ident).any(axis=1))
        top = rows[0] + (rows[-1] - rows[0]) // 2
        shaved[:top][coins[:top] == ident] = 0
    result = evaluate_instances({"coins": (coins, table)}, {"coins": _results(shaved, table)})
    for scores in (result.mask, result.box):
        assert scores.ap75 < 0.05 and scores.ap < 0.2 < 0.5 < scores.ap50


def test_images_without_predictions_and_without_objects(ground_truth: dict) -> None:
    result = evaluate_instances(ground_truth, {"coins": _results(*ground_truth["coins"])})
    assert result.images["camera"].predictions == 0 and result.images["camera"].mask.ap == 0.0
    assert result.mask.ap < 1.0
    empty = evaluate_instances({"x": (np.zeros((5, 5), np.uint32), {})}, {"x": []})
    assert empty.mask.ap is None and empty.images["x"].box.ap is None
    assert empty.to_json()["mask"] == {"ap": None, "ap50": None, "ap75": None}


def test_bad_predictions(ground_truth: dict) -> None:
    with pytest.raises(EvaluationError, match="Predictions for 'other'"):
        evaluate_instances(ground_truth, {"other": []})
    bad = _results(*ground_truth["coins"])
    bad[2]["segmentation"] = encode_rle(np.ones((10, 10), bool))
    with pytest.raises(EvaluationError, match="Prediction 3 of 'coins': its mask is 10x10 but "
                                              "the image is 384x303"):
        evaluate_instances(ground_truth, {"coins": bad})


# -- command line ------------------------------------------------------------------------------
def test_cli_evaluate(tmp_path: Path) -> None:
    with make_project(tmp_path / "project", write_images(tmp_path / "images")) as project:
        folder = project.folder
        items = {item.name: item for item in project.items()}
        coins = items["coins"]
        result = run_cli("evaluate", folder, "--json")
        assert_one_error_line(result, 1, "Nothing to evaluate: no item has kept model "
                                         "predictions")
        labels = coins_labels()
        project.save_predictions(coins.id, "maskrcnn", _results(labels, coins_table(labels)))

    result = run_cli("evaluate", folder, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["images"] == 1 and data["mask"]["ap"] == 1.0 and data["box"]["ap75"] == 1.0
    assert data["per_image"] == [{"image": "coins", "ground_truth": 25, "predictions": 25,
                                  "mask": {"ap": 1.0, "ap50": 1.0, "ap75": 1.0},
                                  "box": {"ap": 1.0, "ap50": 1.0, "ap75": 1.0},
                                  "model": "maskrcnn"}]
    assert data["skipped"] == []

    with Project.open(folder) as project:  # the person deletes a coin the model found
        coins = next(item for item in project.items() if item.name == "coins")
        corrected = project.load_mask(coins, layer="instances")
        corrected[corrected == 7] = 0
        project.save_mask(coins.id, corrected, layer="instances")
    result = run_cli("evaluate", folder)  # a table
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["item", "gt", "pred", "mask", "AP", "AP50", "AP75", "box", "AP",
                                "AP50", "AP75"]
    assert lines[1].split()[:3] == ["coins", "24", "25"]
    assert float(lines[1].split()[3]) < 1.0 and lines[2].startswith("(all)")
    result = run_cli("evaluate", folder, "--items", "done")
    assert_one_error_line(result, 1, "no item marked done has kept model predictions")

"""YOLO segmentation export (Ultralytics layout) on real instances, read back with
read_yolo_labels and filled with OpenCV as Ultralytics does."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from coins_instances import camera_classes, coins_labels, coins_table, make_project, write_images
from PIL import Image
from test_cli import run_cli

from core.annotation.instances import split_components
from core.errors import ImportFormatError
from core.export import export_project
from core.export.coco import NO_INSTANCES
from core.export.yolo import largest_contour, parse_yolo_labels, read_yolo_labels
from core.project.store import Project

YOLO_ID = {1: 0, 2: 1, 5: 2}  # project class -> YOLO class: non-background classes in order


@pytest.fixture
def project(tmp_path: Path):
    project = make_project(tmp_path / "project", write_images(tmp_path / "images"))
    yield project
    project.close()


def _fill(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of a polygon, as Ultralytics rasterises label polygons."""
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [np.rint(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _data_yaml(path: Path) -> dict:
    """The keys of data.yaml (a flat file; PyYAML is not a dependency)."""
    data: dict = {"names": {}}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("  "):
            key, _, value = line.strip().partition(": ")
            data["names"][int(key)] = json.loads(value)
        else:
            key, _, value = line.partition(":")
            if value.strip():
                data[key] = value.strip()
    return data


def test_export_layout_and_polygons(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    result = export_project(project, "yolo", out)
    assert result.count == 1 and result.skipped == [("camera", NO_INSTANCES)]
    assert _data_yaml(out / "data.yaml") == {
        "train": "images", "val": "images", "names": {0: "coin", 1: "big coin", 2: "dark"}}
    assert "path" not in (out / "data.yaml").read_text().replace("# No 'path'", "")
    with Image.open(out / "images" / "coins.jpg") as image:
        assert image.size == (384, 303) and image.mode == "RGB"
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["coins.txt"]

    labels = coins_labels()
    table = coins_table(labels)
    ids = [i for i in np.unique(labels).tolist() if i]
    lines = (out / "labels" / "coins.txt").read_text().splitlines()
    assert len(lines) == len(ids) == 25  # the row without pixels is left out
    for line in lines:
        values = [float(v) for v in line.split()[1:]]
        assert all(0.0 <= v <= 1.0 for v in values)
    parsed = read_yolo_labels(out / "labels" / "coins.txt", 384, 303)
    for ident, (class_id, points) in zip(ids, parsed, strict=True):
        assert class_id == YOLO_ID[table[ident].class_index]
        assert points.shape[1] == 2 and len(points) >= 3
        iou = _iou(_fill(points, labels.shape), labels == ident)
        assert iou >= 0.85, (ident, iou)


def test_from_classes_copy_originals(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    result = export_project(project, "yolo", out, from_classes=True, copy_originals=True)
    assert result.count == 2 and result.skipped == []
    assert sorted(p.name for p in (out / "images").iterdir()) == ["camera.png", "coins.png"]
    expected, rows = split_components(camera_classes())
    parsed = read_yolo_labels(out / "labels" / "camera.txt", 256, 256)
    assert len(parsed) == len(rows) > 10
    covered = 0
    for row, (class_id, points) in zip(rows, parsed, strict=True):
        assert class_id == YOLO_ID[5]
        mask = expected == row.id
        filled = _fill(points, mask.shape)
        assert (filled & mask).sum() >= 0.5 * mask.sum()  # a part of one component at least
        covered += int((filled & mask).sum())
    assert covered >= 0.85 * (expected > 0).sum()  # largest contours: most of the pixels


def test_largest_contour_of_thin_and_tiny_parts() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2, 3] = True
    points = largest_contour(mask)
    assert len(points) == 3 and (points == (3, 2)).all()
    mask[2, 3:7] = True  # a line
    points = largest_contour(mask)
    assert len(points) >= 3
    np.testing.assert_array_equal(_fill(points.astype(float), mask.shape), mask)
    mask[0:2, 0:2] = True  # a square is bigger than the line's zero area
    assert set(map(tuple, largest_contour(mask).tolist())) == {(0, 0), (1, 0), (1, 1), (0, 1)}


@pytest.mark.parametrize(("text", "message"), [
    ("0 0.1 0.2 0.3 1.2 0.5 0.5\n", r"line 1: the coordinate 1.2 \(y of point 2\) is outside "
                                    r"\[0, 1\]"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3\n1 -0.01 0.5 0.5 0.5 0.5 0.9\n", r"line 2: the coordinate "
                                                                 r"-0.01 \(x of point 1\)"),
    ("0 0.1 0.2 0.3 0.4 nan 0.5\n", "outside"),
    ("0 0.1 0.2 0.3 0.4\n", "2 point"),
    ("0 0.1 0.2 0.3 0.4 0.5\n", "5 coordinates"),
    ("1.5 0.1 0.2 0.3 0.4 0.5 0.6\n", "the class '1.5' is not a whole number"),
    ("a 0.1 0.2 0.3 0.4 0.5 0.6\n", "not a list of numbers"),
])
def test_bad_label_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(ImportFormatError, match=message):
        read_yolo_labels(path, 100, 80)


def test_reader_scales_to_pixels(tmp_path: Path) -> None:
    parsed = parse_yolo_labels("\n3 0 0 1 0 0.5 0.5\n\n", 200, 100)
    assert len(parsed) == 1 and parsed[0][0] == 3
    np.testing.assert_allclose(parsed[0][1], [[0, 0], [200, 0], [100, 50]])
    with pytest.raises(ImportFormatError, match="Cannot read"):
        read_yolo_labels(tmp_path / "none.txt", 10, 10)


def test_cli_export(project: Project, tmp_path: Path) -> None:
    folder = project.folder
    project.close()
    out = tmp_path / "yolo"
    result = run_cli("export", folder, "--format", "yolo", "--out", out, "--from-classes")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "yolo" and summary["count"] == 2
    assert (out / "labels" / "camera.txt").is_file() and (out / "images" / "camera.jpg").is_file()

"""A project with real instances: the coins of scikit-image's ``data.coins()``, segmented as its
"Comparing edge-based and region-based segmentation" example does (Sobel elevation map,
watershed from dark and bright markers, holes filled), one instance per connected coin.

Also a class-only item (the camera man, a dark/bright threshold) for the ``from_classes`` option.
Used by tests/core/test_coco.py, test_yolo.py and test_evaluate.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data, filters, segmentation

from core.annotation.classes import LabelClass
from core.project.items import Instance
from core.project.store import Project

CLASSES = [
    LabelClass(0, "background", (0, 0, 0)),
    LabelClass(1, "coin", (230, 25, 75)),
    LabelClass(2, "big coin", (60, 180, 75)),
    LabelClass(5, "dark", (0, 130, 200)),  # indices 3-4 unused: a deleted class leaves a gap
]
BIG = 2000  # pixels: a coin at least this big is a "big coin"
UNUSED_ROW = 999  # an instance row without pixels (erased, kept for undo): never exported


def coins_labels() -> np.ndarray:
    """uint32 instance map of the coins (ids 1..n, raster order)."""
    coins = data.coins()
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    regions = segmentation.watershed(filters.sobel(coins), markers)
    filled = ndimage.binary_fill_holes(regions == 2)
    labels, _count = ndimage.label(filled)
    return labels.astype(np.uint32)


def coins_table(labels: np.ndarray) -> dict[int, Instance]:
    """A class per coin by size, and a mix of sources, scores and review marks."""
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    table = {}
    for ident, area in zip(ids.tolist(), areas.tolist(), strict=True):
        cls = 2 if area >= BIG else 1
        if ident % 3 == 0:
            table[ident] = Instance(ident, cls, score=round(0.5 + ident / 100, 3), source="model")
        else:
            table[ident] = Instance(ident, cls, reviewed=ident % 2 == 0)
    table[UNUSED_ROW] = Instance(UNUSED_ROW, 1)
    return table


def camera_classes() -> np.ndarray:
    """uint8 class map of the camera image: 5 ("dark") where it is dark."""
    camera = data.camera()[::2, ::2]
    return np.where(camera < 60, 5, 0).astype(np.uint8)


def write_images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.coins()).save(folder / "coins.png")
    Image.fromarray(data.camera()[::2, ::2]).save(folder / "camera.png")
    return folder


def make_project(folder: Path, image_dir: Path) -> Project:
    """An open project: "coins" with an instance map and table, "camera" with a class map only."""
    project = Project.create(folder, CLASSES)
    report = project.add_items([image_dir])
    assert not report.skipped
    items = {item.name: item for item in project.items()}
    labels = coins_labels()
    project.save_mask(items["coins"].id, labels, layer="instances")
    project.set_instances(items["coins"].id, coins_table(labels).values())
    project.save_mask(items["camera"].id, camera_classes())
    return project


def canonical(instance_map: np.ndarray) -> np.ndarray:
    """The map with ids renumbered 1, 2, ... in raster order of first appearance."""
    flat = instance_map.reshape(-1)
    ids, first = np.unique(flat, return_index=True)
    order = [int(i) for _, i in sorted(zip(first.tolist(), ids.tolist(), strict=True)) if i]
    lookup = {ident: number for number, ident in enumerate(order, 1)}
    out = np.zeros(instance_map.shape, np.uint32)
    for ident, number in lookup.items():
        out[instance_map == ident] = number
    return out

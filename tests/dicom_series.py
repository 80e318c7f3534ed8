"""Test data: real CT slices (pydicom's CT_small.dcm) copied into DICOM series on disk.

Shared by the core and GUI volume tests (``tests/`` is on sys.path through its conftest).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

Z_POSITIONS = (0.0, 2.5, 5.0, 7.5)


def write_series(folder: Path, positions: Sequence[float] = Z_POSITIONS,
                 series_uid: str | None = None, seed: int = 0) -> Path:
    """One series of CT_small.dcm copies at the given z positions, written in shuffled order
    (file names say nothing about slice order; new SOP UIDs, one shared series UID)."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    order = list(range(len(positions)))
    random.Random(seed).shuffle(order)
    x, y = (float(v) for v in source.ImagePositionPatient[:2])
    for n, k in enumerate(order):
        ds = source.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = [x, y, float(positions[k])]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{series_uid[-6:]}_{n:03d}.dcm")
    return folder


def make_series(folder: Path, series_uid: str | None = None, seed: int = 0) -> Path:
    """Four copies of CT_small.dcm as one series (z = 0, 2.5, 5, 7.5), written shuffled."""
    return write_series(folder, Z_POSITIONS, series_uid, seed)


def draw_labels(project, item_id: int):
    """Two classes drawn on slices 1 and 3 of a 4-slice volume item, saved; returns the mask."""
    from core.annotation.tools import PaintRule, fill_polygon

    labels = project.load_mask(project.item(item_id))
    fill_polygon(labels, [(10, 10), (60, 12), (40, 50)], PaintRule(1), plane=(1,))
    fill_polygon(labels, [(70, 70), (110, 70), (110, 100), (70, 100)], PaintRule(2), plane=(3,))
    assert (labels[1] == 1).any() and (labels[3] == 2).any()
    project.save_mask(item_id, labels)
    return labels


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """segstudio-cli in this process: (exit code, stdout, stderr)."""
    from core import cli

    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

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

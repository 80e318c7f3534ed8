"""Label volumes out of (and back into) SegStudio: DICOM-SEG and per-slice index PNGs.

DICOM-SEG (highdicom, imported lazily) is a BINARY segmentation with one segment per class
present in the labels, numbered 1..N in class order. Each segment keeps its class index in
its TrackingID ("segstudio-class-<index>") and its class name as SegmentLabel, so
:func:`read_dicom_seg` gives back the same class numbers; a SEG written elsewhere, without
those tracking IDs, is read with segment numbers as class numbers.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, ImportFormatError
from core.fsutil import atomic_write_bytes, describe_os_error

SOFTWARE_NAME = "SegStudio"
SOFTWARE_VERSION = "0.1.0"
SEG_SERIES_NUMBER = 300
_TRACKING_PREFIX = "segstudio-class-"
_TRACKING_RE = re.compile(rf"^{re.escape(_TRACKING_PREFIX)}(\d+)$")

RGB = tuple[int, int, int]


# -- DICOM-SEG export --------------------------------------------------------------------------
def export_dicom_seg(labels: np.ndarray, source_datasets: Sequence[Any], classes: dict[int, str],
                     path: str | os.PathLike, colors: dict[int, RGB] | None = None) -> list[int]:
    """Write ``labels`` as a DICOM-SEG object that references ``source_datasets``.

    Args:
        labels: (Z, Y, X) class indices; ``labels[z]`` segments ``source_datasets[z]``.
        source_datasets: The pydicom datasets of the source series, in slice order (pixel
            data is not needed).
        classes: Class index -> name; a class drawn but missing here is called "class <n>".
        path: The .dcm file to write (atomically).
        colors: Optional class index -> (r, g, b) 0..255, stored as the segments' colours.

    Returns:
        The class indices written, in segment order (segment 1 is the first).

    Raises:
        ExportError: Shapes do not match, nothing is drawn, or the file cannot be written.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    _check_source(labels, source_datasets)
    present = [int(v) for v in np.unique(labels) if v != 0]
    if not present:
        raise ExportError("The label volume is empty; there is nothing to export as DICOM-SEG.")
    segment_of = np.zeros(present[-1] + 1, dtype=np.uint16 if len(present) > 255 else np.uint8)
    for number, index in enumerate(present, start=1):
        segment_of[index] = number
    descriptions = [
        _segment_description(hd, number, index, classes.get(index, f"class {index}"),
                             (colors or {}).get(index))
        for number, index in enumerate(present, start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=list(source_datasets),
            pixel_array=segment_of[labels],
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=SOFTWARE_NAME,
            manufacturer_model_name=SOFTWARE_NAME,
            software_versions=SOFTWARE_VERSION,
            device_serial_number="1",
            series_description="SegStudio segmentation",
        )
    except (ValueError, TypeError, AttributeError) as err:
        raise ExportError(f"The DICOM series cannot be segmented as DICOM-SEG: {err}") from err
    buffer = io.BytesIO()
    seg.save_as(buffer)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        raise ExportError(describe_os_error(err, str(path)) + ".") from err
    return present


def _check_source(labels: np.ndarray, source_datasets: Sequence[Any]) -> None:
    if labels.ndim != 3:
        raise ExportError(f"A label volume must be 3D (Z, Y, X), not of shape {labels.shape}.")
    if labels.dtype.kind not in "biu":
        raise ExportError(f"Labels must be integers, not {labels.dtype}.")
    if labels.size and int(labels.min()) < 0:
        raise ExportError("Labels must not be negative.")
    if len(source_datasets) != labels.shape[0]:
        raise ExportError(
            f"The labels have {labels.shape[0]} slices but the series has "
            f"{len(source_datasets)} images."
        )
    for ds in source_datasets:
        if (int(ds.Rows), int(ds.Columns)) != labels.shape[1:]:
            raise ExportError(
                f"Image {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns} (rows x columns) but the "
                f"labels are {labels.shape[1]}x{labels.shape[2]}."
            )


def _segment_description(hd: Any, number: int, index: int, name: str, color: RGB | None) -> Any:
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=name[:64] or f"class {index}",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        tracking_uid=hd.UID(),
        tracking_id=f"{_TRACKING_PREFIX}{index}",
        display_color=hd.color.CIELabColor.from_rgb(*color) if color is not None else None,
    )


# -- DICOM-SEG import --------------------------------------------------------------------------
def read_dicom_seg(path: str | os.PathLike, source_datasets: Sequence[Any]) -> np.ndarray:
    """Read a DICOM-SEG file back as (Z, Y, X) class indices on ``source_datasets``' slices.

    Slices the SEG does not cover read as 0. Overlapping segments are refused (a label map
    holds one class per voxel).

    Raises:
        ImportFormatError: Not a SEG, references none of these images, or size mismatch.
    """
    seg = _read_seg(path)
    uids = [str(ds.SOPInstanceUID) for ds in source_datasets]
    referenced = {str(sop) for _study, _series, sop in seg.get_source_image_uids()}
    covered = [uid for uid in uids if uid in referenced]
    if not covered:
        raise ImportFormatError(
            f"'{Path(path).name}' segments none of the {len(uids)} images of this series."
        )
    rows, columns = int(seg.Rows), int(seg.Columns)
    class_of = _class_lut(seg)
    dtype = np.uint8 if class_of.max(initial=0) <= 255 else np.uint16
    labels = np.zeros((len(uids), rows, columns), dtype=dtype)
    try:
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=covered, combine_segments=True, relabel=False,
            dtype=np.uint16,
        )
    except (ValueError, RuntimeError, KeyError) as err:
        raise ImportFormatError(f"'{Path(path).name}' cannot be read as labels: {err}") from err
    row_of = {uid: z for z, uid in enumerate(uids)}
    for frame, uid in zip(pixels, covered, strict=True):
        labels[row_of[uid]] = class_of[frame]
    return labels


def dicom_seg_classes(path: str | os.PathLike) -> dict[int, str]:
    """Class index -> name (the SegmentLabel) of each segment of a DICOM-SEG file."""
    seg = _read_seg(path)
    names = {}
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        names[_class_index(description, number)] = str(description.segment_label)
    return names


def _read_seg(path: str | os.PathLike) -> Any:
    import highdicom as hd
    from pydicom.errors import InvalidDicomError

    try:
        return hd.seg.segread(path)
    except OSError as err:
        raise ImportFormatError(f"Cannot read {path}: {err.strerror or err}.") from err
    except (InvalidDicomError, ValueError, AttributeError, KeyError) as err:
        raise ImportFormatError(f"'{Path(path).name}' is not a DICOM-SEG file: {err}") from err


def _class_index(description: Any, number: int) -> int:
    match = _TRACKING_RE.match(str(getattr(description, "tracking_id", None) or ""))
    return int(match.group(1)) if match else number


def _class_lut(seg: Any) -> np.ndarray:
    """Segment number -> class index, as an array to index with a frame of segment numbers."""
    numbers = list(seg.segment_numbers)
    lut = np.zeros(max(numbers, default=0) + 1, dtype=np.uint16)
    for number in numbers:
        index = _class_index(seg.get_segment_description(number), number)
        if index > 65535:
            raise ImportFormatError(f"Segment {number} maps to class {index}, above 65535.")
        lut[number] = index
    return lut


# -- per-slice PNGs ----------------------------------------------------------------------------
def export_label_pngs(labels: np.ndarray, folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Write each slice of a (Z, Y, X) label volume as ``folder/<prefix>_<z:04d>.png``.

    Pixel value = class index; every slice is 8-bit, or every one 16-bit when a label is above
    255. Each file is written atomically. Returns the files written, in slice order.
    """
    from core.export.index_png import encode_label_png

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ExportError(f"A label volume must be 3D (Z, Y, X), not of shape {labels.shape}.")
    if labels.dtype.kind not in "biu" or (labels.size and int(labels.min()) < 0):
        raise ExportError("Labels must be non-negative integers.")
    high = int(labels.max(initial=0))
    if high > 65535:
        raise ExportError(f"PNG masks hold at most 16 bits; found label {high}.")
    folder = Path(folder)
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for z, plane in enumerate(labels):
            target = folder / f"{prefix}_{z:04d}.png"
            atomic_write_bytes(target, encode_label_png(plane, high > 255), mode=0o644)
            written.append(target)
    except OSError as err:
        raise ExportError(describe_os_error(err, str(folder)) + ".") from err
    return written

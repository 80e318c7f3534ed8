"""Reading DICOM series (folders, DICOMDIR, single and multi-frame files) into a Volume.

:func:`scan_dicom` reads headers only and groups the files by SeriesInstanceUID for a picker;
:func:`load_series` sorts the slices along the slice normal, applies the modality rescale and
fills one pre-allocated array slice by slice, so a series needs little more memory than its
own size. Anything a user can get wrong ends in a one-sentence
:class:`~core.errors.SegStudioError` naming the file; series are never merged.

pydicom is imported inside the functions that use it so that ``import core.io`` stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CorruptFileError, SegStudioError, UnsupportedFormatError
from core.io.volume import Volume

PathLike = str | os.PathLike[str]
Report = Callable[[int, int], None]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_DEFER_SIZE = "64 KB"
_DUPLICATE_TOLERANCE_MM = 0.01
_GAP_FACTOR = 1.5
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_INT16 = np.iinfo(np.int16)
_UINT16 = np.iinfo(np.uint16)


class SeriesChoiceError(SegStudioError):
    """A path holds several series and the caller did not say which one to open."""

    def __init__(self, message: str, series: list[SeriesInfo]) -> None:
        super().__init__(message)
        self.series = series


@dataclass(frozen=True)
class _Frame:
    """One 2-D image: a single-frame file, or one frame of a multi-frame file."""

    file: Path
    frame: int  # index within its file (0 for a single-frame file)
    rows: int
    columns: int
    position: tuple[float, ...] | None  # ImagePositionPatient (LPS mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient (row dir, column dir)
    pixel_spacing: tuple[float, ...] | None  # (between rows, between columns) mm
    thickness: float | None  # SpacingBetweenSlices, else SliceThickness
    slope: float
    intercept: float
    instance: int
    bits_stored: int
    signed: bool
    samples: int


@dataclass(eq=False)
class SeriesInfo:
    """What the headers say about one series, for a picker list.

    Attributes:
        uid: SeriesInstanceUID.
        modality: "CT", "MR", ... ("" when absent).
        description: SeriesDescription ("" when absent).
        slices: Number of 2-D images (slices of all files plus frames of multi-frame files).
        rows: Rows of the first image.
        columns: Columns of the first image.
        files: The files of the series, in scan order.
        warnings: Problems found while scanning (skipped files), one sentence each.
        meta: StudyInstanceUID, SeriesNumber, PatientPosition when present.
    """

    uid: str
    modality: str
    description: str
    slices: int
    rows: int
    columns: int
    files: list[Path]
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    frames: list[_Frame] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        """One line for a picker: modality, description, size."""
        name = " ".join(p for p in (self.modality, self.description) if p) or self.uid
        return f"{name} ({self.slices} x {self.rows} x {self.columns})"


# --- scanning -----------------------------------------------------------------------------


def is_dicom_path(path: PathLike) -> bool:
    """Cheap test (a few bytes of at most 50 files) of whether a path holds DICOM; never raises."""
    path = Path(path)
    try:
        if path.is_file():
            return path.name.upper() == "DICOMDIR" or _has_dicom_magic(path)
        if path.is_dir():
            for count, child in enumerate(p for p in path.rglob("*") if p.is_file()):
                if count >= 50:
                    return False
                if _has_dicom_magic(child):
                    return True
    except OSError:
        return False
    return False


def scan_dicom(path: PathLike, report: Report | None = None) -> list[SeriesInfo]:
    """Find the DICOM series in a folder (recursively), a DICOMDIR or a single file.

    Only headers are read. Files that are not DICOM, or DICOM without an image (reports,
    DICOMDIR), are skipped and counted in each series' warnings.

    Args:
        path: Folder, DICOMDIR or DICOM file.
        report: Called as ``report(done, total)`` after each file.

    Returns:
        The series, largest first.

    Raises:
        SegStudioError: The path does not exist.
        UnsupportedFormatError: No DICOM image was found.
        CorruptFileError: The DICOMDIR cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    candidates = _candidate_files(path)
    by_uid: dict[str, SeriesInfo] = {}
    skipped: list[str] = []
    for done, file in enumerate(candidates, 1):
        ds, why = _read_header(file)
        if ds is None:
            skipped.append(why)
        else:
            _add_to_series(by_uid, file, ds)
        if report is not None:
            report(done, len(candidates))
    if not by_uid:
        reason = f" ({skipped[0]})" if len(candidates) == 1 and skipped else ""
        raise UnsupportedFormatError(f"No DICOM image was found in '{path}'{reason}.")
    series = sorted(by_uid.values(), key=lambda s: -s.slices)
    if skipped:
        note = f"{len(skipped)} file(s) in '{path}' were skipped, e.g. {skipped[0]}."
        for info in series:
            info.warnings.append(note)
    return series


def _has_dicom_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _candidate_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.name.upper() == "DICOMDIR":
        return _dicomdir_files(path)
    return [path]


def _dicomdir_files(path: Path) -> list[Path]:
    import pydicom
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(pydicom.dcmread(path))
        return [Path(instance.path) for instance in fs]
    except Exception as err:  # pydicom raises many types for a broken DICOMDIR
        raise CorruptFileError(f"The DICOMDIR '{path}' cannot be read: {err}") from None


def _read_header(file: Path) -> tuple[Any, str]:
    """The dataset without pixel data, or (None, why it was skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True, defer_size=_DEFER_SIZE)
    except InvalidDicomError:
        return None, f"'{file}' is not a DICOM file"
    except OSError as err:
        return None, f"'{file}' cannot be read ({err.strerror or err})"
    except Exception:  # a header pydicom cannot parse: truncated or garbage
        return None, f"'{file}' is a damaged DICOM file"
    sop_class = str(getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", ""))
    if sop_class == _DICOMDIR_SOP_CLASS or "Rows" not in ds or "SeriesInstanceUID" not in ds:
        return None, f"'{file}' is a DICOM file without an image"
    return ds, ""


def _add_to_series(by_uid: dict[str, SeriesInfo], file: Path, ds: Any) -> None:
    uid = str(ds.SeriesInstanceUID)
    frames = _frames_of(ds, file)
    info = by_uid.get(uid)
    if info is None:
        meta = {"SeriesInstanceUID": uid}
        for key in ("StudyInstanceUID", "SeriesNumber", "PatientPosition", "PatientID"):
            if ds.get(key) not in (None, ""):
                meta[key] = str(ds.get(key))
        info = by_uid[uid] = SeriesInfo(
            uid=uid,
            modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""),
            slices=0,
            rows=frames[0].rows,
            columns=frames[0].columns,
            files=[],
            meta=meta,
        )
    info.files.append(file)
    info.frames.extend(frames)
    info.slices = len(info.frames)


# --- header fields ------------------------------------------------------------------------


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and all(np.isfinite(numbers)) else None


def _float(value: Any, default: float | None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if np.isfinite(number) else default


def _item(ds: Any, name: str) -> Any:
    """First item of a functional-group sequence, or None."""
    if ds is None or name not in ds or not ds[name].value:
        return None
    return ds[name].value[0]


def _frames_of(ds: Any, file: Path) -> list[_Frame]:
    count = max(1, int(_float(ds.get("NumberOfFrames"), 1) or 1))
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    common = {
        "file": file,
        "rows": int(ds.Rows),
        "columns": int(ds.get("Columns", 0) or 0),
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        "signed": int(ds.get("PixelRepresentation", 0) or 0) == 1,
        "samples": int(ds.get("SamplesPerPixel", 1) or 1),
    }
    frames = []
    for index in range(count):
        own = per_frame[index] if index < len(per_frame) else None
        groups = [g for g in (own, shared) if g is not None]

        def pick(sequence: str, keyword: str, groups: list = groups) -> Any:
            for group in groups:
                item = _item(group, sequence)
                if item is not None and keyword in item:
                    return item.get(keyword)
            return ds.get(keyword)

        position = pick("PlanePositionSequence", "ImagePositionPatient")
        thickness = pick("PixelMeasuresSequence", "SpacingBetweenSlices")
        if _float(thickness, None) is None:
            thickness = pick("PixelMeasuresSequence", "SliceThickness")
        stack_number = pick("FrameContentSequence", "InStackPositionNumber")
        instance = stack_number if per_frame else ds.get("InstanceNumber")
        frames.append(
            _Frame(
                frame=index,
                position=_floats(position, 3) if (per_frame or count == 1) else None,
                orientation=_floats(pick("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                pixel_spacing=_floats(pick("PixelMeasuresSequence", "PixelSpacing"), 2),
                thickness=_float(thickness, None),
                slope=_float(pick("PixelValueTransformationSequence", "RescaleSlope"), 1.0),
                intercept=_float(pick("PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
                instance=int(_float(instance, index + 1)) if count == 1 or per_frame else index + 1,
                **common,
            )
        )
    return frames


# --- geometry -----------------------------------------------------------------------------


@dataclass
class _Geometry:
    frames: list[_Frame]  # kept frames, in slice order
    spacing: tuple[float, float, float]  # (z, y, x) mm
    affine: np.ndarray  # RAS+
    orientation: tuple[float, ...]
    warnings: list[str]


def _geometry(series: SeriesInfo) -> _Geometry:
    """Order the frames along the slice normal and compute spacing and affine (no pixels)."""
    frames = list(series.frames)
    sizes = sorted({(f.rows, f.columns) for f in frames})
    if len(sizes) > 1:
        (r1, c1), (r2, c2) = sizes[0], sizes[-1]
        raise UnsupportedFormatError(
            f"Series '{series.label}' mixes {r1}x{c1} and {r2}x{c2} images "
            f"(e.g. '{frames[0].file}'), so it cannot be stacked into one volume."
        )
    if any(f.samples != 1 for f in frames):
        raise UnsupportedFormatError(
            f"'{frames[0].file}' holds colour images; SegStudio opens greyscale DICOM volumes only."
        )
    warnings: list[str] = []
    orientation = _common_orientation(series, frames)
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    pixel_spacing = frames[0].pixel_spacing
    if pixel_spacing is None:
        pixel_spacing = (1.0, 1.0)
        warnings.append(f"'{frames[0].file}' has no PixelSpacing; 1 mm pixels are assumed.")
    fallback_z = frames[0].thickness or 1.0

    if all(f.position is not None for f in frames):
        depth = np.array([np.dot(f.position, normal) for f in frames])
        order = np.lexsort((np.array([f.instance for f in frames]), depth))
        frames, depth = [frames[i] for i in order], depth[order]
        frames, depth = _drop_duplicates(frames, depth, warnings)
        steps = np.diff(depth)
        z = float(np.median(steps)) if steps.size else fallback_z
        _warn_gaps(steps, z, frames, warnings)
        origin = np.array(frames[0].position)
        if len(frames) > 1:
            step = (np.array(frames[-1].position) - origin) / (len(frames) - 1)
        else:
            step = normal * z
    else:
        frames.sort(key=lambda f: (f.instance, str(f.file), f.frame))
        z = fallback_z
        warnings.append(
            f"Some images of '{series.label}' have no ImagePositionPatient, so slices are "
            f"ordered by InstanceNumber and assumed {z:g} mm apart."
        )
        first = frames[0].position
        origin = np.array(first) if first is not None else np.zeros(3)
        step = normal * z
    lps = np.eye(4)
    lps[:3, 0] = row_dir * pixel_spacing[1]
    lps[:3, 1] = col_dir * pixel_spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = origin
    spacing = (z, float(pixel_spacing[0]), float(pixel_spacing[1]))
    return _Geometry(frames, spacing, _LPS_TO_RAS @ lps, orientation, warnings)


def _common_orientation(series: SeriesInfo, frames: list[_Frame]) -> tuple[float, ...]:
    known = [f.orientation for f in frames if f.orientation is not None]
    if not known:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    for other in known[1:]:
        if not np.allclose(other, known[0], atol=1e-3):
            raise UnsupportedFormatError(
                f"Series '{series.label}' mixes slice orientations ({_iop(known[0])} and "
                f"{_iop(other)}), so it cannot be stacked into one volume."
            )
    return known[0]


def _iop(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _drop_duplicates(
    frames: list[_Frame], depth: np.ndarray, warnings: list[str]
) -> tuple[list[_Frame], np.ndarray]:
    keep = np.ones(len(frames), dtype=bool)
    keep[1:] = np.diff(depth) > _DUPLICATE_TOLERANCE_MM
    dropped = [f for f, k in zip(frames, keep, strict=True) if not k]
    if dropped:
        warnings.append(
            f"{len(dropped)} image(s) share their position with another one and were left out "
            f"(e.g. '{dropped[0].file}')."
        )
    return [f for f, k in zip(frames, keep, strict=True) if k], depth[keep]


def _warn_gaps(steps: np.ndarray, z: float, frames: list[_Frame], warnings: list[str]) -> None:
    gaps = np.flatnonzero(steps > _GAP_FACTOR * z)
    if gaps.size:
        i = int(gaps[0])
        warnings.append(
            f"{gaps.size} gap(s) between slices: {steps[i]:.2f} mm after slice {i} "
            f"('{frames[i].file}') where slices are {z:.2f} mm apart."
        )


# --- pixels -------------------------------------------------------------------------------


def _choose_dtype(frames: list[_Frame]) -> np.dtype:
    """int16 or uint16 when the rescale is integral and its range fits, else float32.

    Signed 16-bit CT with intercept -1024 cannot be proven to fit int16 from the header
    alone; it is read as int16 and promoted to float32 only if a value does not fit.
    """
    if not all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames):
        return np.dtype(np.float32)
    lows, highs = [], []
    for f in frames:
        lo, hi = (-(2 ** (f.bits_stored - 1)), 2 ** (f.bits_stored - 1) - 1) if f.signed else (
            0, 2**f.bits_stored - 1
        )
        ends = (lo * f.slope + f.intercept, hi * f.slope + f.intercept)
        lows.append(min(ends))
        highs.append(max(ends))
    lo, hi = min(lows), max(highs)
    if lo >= _UINT16.min and hi <= _UINT16.max and not (lo >= _INT16.min and hi <= _INT16.max):
        return np.dtype(np.uint16)
    return np.dtype(np.int16)


def _fill(volume: np.ndarray, frames: list[_Frame], report: Report | None) -> np.ndarray:
    """Decode every frame into its slice of ``volume``; returns it (float32 if promoted)."""
    slots: dict[Path, list[tuple[int, int]]] = {}
    for k, f in enumerate(frames):
        slots.setdefault(f.file, []).append((f.frame, k))
    done = 0
    for file, wanted in slots.items():
        targets = dict(wanted)
        for index, plane in _iter_frames(file, sorted(targets)):
            k = targets[index]
            volume = _store(volume, k, plane, frames[k])
            done += 1
            if report is not None:
                report(done, len(frames))
    return volume


def _store(volume: np.ndarray, k: int, plane: np.ndarray, frame: _Frame) -> np.ndarray:
    if plane.shape != volume.shape[1:]:
        raise CorruptFileError(
            f"'{frame.file}' decodes to an image of shape {plane.shape} instead of the "
            f"{volume.shape[1:]} its header announces."
        )
    floating = volume.dtype.kind == "f"
    values = plane.astype(np.float64 if floating else np.int64)
    if frame.slope != 1:
        values *= frame.slope if floating else int(frame.slope)
    if frame.intercept != 0:
        values += frame.intercept if floating else int(frame.intercept)
    if not floating:
        limits = np.iinfo(volume.dtype)
        if values.min() < limits.min or values.max() > limits.max:
            volume = volume.astype(np.float32)  # rare: the only second allocation
    volume[k] = values
    return volume


def _iter_frames(file: Path, indices: list[int]):
    """Yield (frame index, stored values) for the wanted frames of one file."""
    from pydicom.pixels import iter_pixels

    try:
        yield from zip(indices, iter_pixels(file, indices=indices), strict=True)
    except SegStudioError:
        raise
    except Exception as err:  # pydicom raises many types; map them to one sentence
        raise _decode_error(file, err) from None


def _decode_error(file: Path, err: Exception) -> SegStudioError:
    import pydicom

    text = " ".join(str(err).split())
    try:
        ds = pydicom.dcmread(file, stop_before_pixels=False, defer_size=_DEFER_SIZE)
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        syntax = ds.file_meta.get("TransferSyntaxUID")
    except Exception:
        return CorruptFileError(f"'{file}' is truncated or damaged and cannot be read: {text}")
    if not has_pixels:
        return UnsupportedFormatError(f"'{file}' is a DICOM file without pixel data.")
    if "missing dependencies" in text or "no pixel data decoders" in text or (
        isinstance(err, NotImplementedError)
    ):
        name = syntax.name if syntax is not None else "its"
        return UnsupportedFormatError(
            f"'{file}' uses {name} compression, which cannot be decoded here: {text}"
        )
    return CorruptFileError(f"'{file}' is truncated or damaged and cannot be read: {text}")


# --- public loading -----------------------------------------------------------------------


def load_series(
    series: SeriesInfo | PathLike, *, uid: str | None = None, report: Report | None = None
) -> Volume:
    """Read one series into a Volume of real-world values (HU for CT).

    Args:
        series: A SeriesInfo from :func:`scan_dicom`, or a folder, DICOMDIR or file.
        uid: SeriesInstanceUID to open when ``series`` is a path holding several series.
        report: Called as ``report(done, total)`` after each decoded image.

    Raises:
        SeriesChoiceError: The path holds several series and ``uid`` does not pick one.
        UnsupportedFormatError: Mixed image sizes or orientations, colour images, no pixel
            data, or a compression no installed plugin decodes (the message names it).
        CorruptFileError: A file is truncated or damaged.
        ImageTooLargeError: There is not enough memory for the volume.
    """
    info = series if isinstance(series, SeriesInfo) else _pick(Path(series), uid)
    geometry = _geometry(info)
    frames = geometry.frames
    shape = (len(frames), frames[0].rows, frames[0].columns)
    try:
        array = np.empty(shape, dtype=_choose_dtype(frames))
    except MemoryError:
        from core.errors import ImageTooLargeError

        raise ImageTooLargeError(
            f"There is not enough free memory to open series '{info.label}' ({shape})."
        ) from None
    array = _fill(array, frames, report)
    return Volume(
        array=array,
        affine=geometry.affine,
        spacing=geometry.spacing,
        modality=info.modality,
        description=info.description,
        source=[str(f.file) if f.frame == 0 else f"{f.file}#{f.frame}" for f in frames],
        warnings=info.warnings + geometry.warnings,
        meta={**info.meta, "ImageOrientationPatient": list(geometry.orientation)},
    )


def _pick(path: Path, uid: str | None) -> SeriesInfo:
    found = scan_dicom(path)
    if uid is not None:
        for info in found:
            if info.uid == uid:
                return info
        raise SegStudioError(f"There is no series with SeriesInstanceUID {uid} in '{path}'.")
    if len(found) > 1:
        names = "; ".join(f"{s.label} [{s.uid}]" for s in found)
        raise SeriesChoiceError(
            f"{len(found)} series found in '{path}': {names}; pick one to open.", found
        )
    return found[0]


def describe_dicom(path: PathLike) -> dict[str, Any]:
    """JSON-ready summary of the DICOM series under a path, from headers only.

    Returns:
        ``{"path", "kind": "dicom", "series": count, "items": [{"uid", "modality",
        "description", "shape": [Z, Y, X], "spacing": [z, y, x], "orientation": IOP,
        "dtype", "files", "warnings"}, ...]}``; a series that cannot be stacked has
        "shape" None and its reason in "error".
    """
    items = []
    for info in scan_dicom(path):
        item: dict[str, Any] = {
            "uid": info.uid,
            "modality": info.modality,
            "description": info.description,
            "files": len(info.files),
        }
        try:
            geometry = _geometry(info)
        except SegStudioError as err:
            item.update(shape=None, spacing=None, orientation=None, dtype=None, error=str(err))
        else:
            frames = geometry.frames
            item.update(
                shape=[len(frames), frames[0].rows, frames[0].columns],
                spacing=[round(v, 6) for v in geometry.spacing],
                orientation=list(geometry.orientation),
                dtype=str(_choose_dtype(frames)),
            )
            info.warnings.extend(geometry.warnings)
        item["warnings"] = list(info.warnings)
        items.append(item)
    return {"path": str(path), "kind": "dicom", "series": len(items), "items": items}

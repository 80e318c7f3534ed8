"""Describe any file or folder SegStudio can open, as one JSON-ready dict (``info`` command).

Kinds live in a small registry: a later reader (DICOM, NIfTI, video) adds itself with
:func:`register_kind` instead of editing :func:`describe`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import SegStudioError, UnsupportedFormatError
from core.io.images import detect_image_format, is_image_path, read_image_info

Predicate = Callable[[Path], bool]
Describer = Callable[[Path], dict[str, Any]]

_KINDS: list[tuple[Predicate, Describer]] = []


def register_kind(predicate: Predicate, describer: Describer, *, first: bool = False) -> None:
    """Teach :func:`describe` a new kind of file.

    Args:
        predicate: Cheap test (name, a few bytes) of whether ``describer`` handles a path;
            it must not raise.
        describer: Returns the JSON-serialisable description, with at least "path" and
            "kind"; raises a SegStudioError for a file it cannot read.
        first: Try this kind before those already registered (for a kind whose files would
            otherwise be claimed by a broader predicate).
    """
    _KINDS.insert(0 if first else len(_KINDS), (predicate, describer))


def describe(path: str | Path) -> dict[str, Any]:
    """Return a JSON-serialisable description of a file or folder.

    Raises:
        SegStudioError: The path does not exist.
        UnsupportedFormatError: No registered kind handles it.
        CorruptFileError, ImageTooLargeError: From the kind's reader.
    """
    path = Path(path)
    if not path.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    for predicate, describer in _KINDS:
        if predicate(path):
            return describer(path)
    raise UnsupportedFormatError(f"'{path}' is not a file SegStudio can open.")


def _is_image(path: Path) -> bool:
    if not path.is_file():
        return False
    if is_image_path(path):
        return True  # even if its content is wrong: the image reader explains what is wrong
    try:
        return detect_image_format(path) is not None
    except SegStudioError:
        return False


def _describe_image(path: Path) -> dict[str, Any]:
    info = read_image_info(path)
    return {
        "path": str(path),
        "kind": "image",
        "format": info.format,
        "shape": list(info.shape),
        "dtype": info.dtype,
        "channels": info.channels,
        "frames": info.frames,
        "width": info.width,
        "height": info.height,
        "orientation": info.orientation,
    }


def _describe_folder(path: Path) -> dict[str, Any]:
    """Count what a folder holds, without recursing or opening any file (a folder can be
    a whole dataset, and this must stay instant)."""
    try:
        entries = [entry for entry in path.iterdir() if not entry.name.startswith(".")]
    except OSError as err:
        raise SegStudioError(f"'{path}' cannot be listed: {err.strerror or err}.") from None
    files = [entry for entry in entries if entry.is_file()]
    return {
        "path": str(path),
        "kind": "folder",
        "images": sum(1 for entry in files if is_image_path(entry)),
        "files": len(files),
        "folders": sum(1 for entry in entries if entry.is_dir()),
    }


register_kind(Path.is_dir, _describe_folder)
register_kind(_is_image, _describe_image)


# -- volumes: NIfTI files, DICOM files and folders ---------------------------------------------
def _is_nifti(path: Path) -> bool:
    from core.io.nifti import is_nifti_path

    return path.is_file() and is_nifti_path(path)


def _is_dicom(path: Path) -> bool:
    from core.io.dicom import is_dicom_path  # light: pydicom loads only to read

    return is_dicom_path(path)


def _describe_nifti(path: Path) -> dict[str, Any]:
    from core.io.nifti import describe_nifti

    return {"path": str(path), **describe_nifti(path)}


def _describe_dicom(path: Path) -> dict[str, Any]:
    from core.io.dicom import describe_dicom

    return {"path": str(path), **describe_dicom(path)}


# First: before plain folders, and before images (a DICOM preamble may hold a TIFF header).
register_kind(_is_dicom, _describe_dicom, first=True)
register_kind(_is_nifti, _describe_nifti)


# -- videos: MP4, AVI, MOV, MKV, WebM files ----------------------------------------------------
def _is_video(path: Path) -> bool:
    from core.io.video import is_video_path

    return path.is_file() and is_video_path(path)


def _describe_video(path: Path) -> dict[str, Any]:
    from core.io.video import describe_video

    return {"path": str(path), **describe_video(path)}


register_kind(_is_video, _describe_video)

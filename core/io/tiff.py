"""TIFF pages and stacks: header checks and decoding (tifffile, OpenCV's libtiff as fallback).

A multi-page TIFF opens as a stack (D, H, W[, C]); all pages must share size and type.
Reduced-resolution pages (thumbnails, pyramid levels) are not slices and are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import CorruptFileError, UnsupportedFormatError
from core.io.images import (
    _ORIENTATION_TAG,
    ImageInfo,
    _check_size,
    _decode_errors,
    _displayed_size,
    _to_rgb_order,
    _valid_orientation,
)

_TIFF_DTYPES = {"bool": "uint8", "uint8": "uint8", "uint16": "uint16", "float16": "float32",
                "float32": "float32", "float64": "float32"}
_MINISWHITE, _PALETTE, _CMYK = 0, 3, 5  # TIFF photometric interpretations
_PLANAR_SEPARATE = 2


def _tiff_pages(tif: Any) -> list[Any]:
    # Reduced-resolution pages are thumbnails or pyramid levels, not slices of the stack.
    return [page for page in tif.pages if not getattr(page, "is_reduced", False)]


def _tiff_layout(page: Any, path: Path) -> tuple[int, int, int, str]:
    """Return (stored height, stored width, channels, dtype) of one TIFF page."""
    dtype = _TIFF_DTYPES.get(str(page.dtype))
    samples = int(page.samplesperpixel)
    if int(page.photometric) == _PALETTE:
        channels, dtype = 3, "uint8"
    else:
        channels = {1: 1, 2: 4, 3: 3, 4: 4}.get(samples, 0)
    if dtype is None or channels == 0 or page.imagedepth > 1 or int(page.photometric) == _CMYK:
        raise UnsupportedFormatError(
            f"'{path}' stores {samples}-channel {page.dtype} pixels ({page.photometric.name}); "
            "SegStudio reads 8-bit, 16-bit and floating-point grey, RGB and RGBA TIFF images."
        )
    return int(page.imagelength), int(page.imagewidth), channels, dtype


def tiff_info(path: Path) -> ImageInfo:
    import tifffile

    file_size = path.stat().st_size
    with _decode_errors(path, "TIFF"), tifffile.TiffFile(path) as tif:
        pages = _tiff_pages(tif)
        if not pages:
            raise CorruptFileError(f"'{path}' is a TIFF file without any image.")
        layout = _tiff_layout(pages[0], path)
        _check_size(path, layout[1], layout[0], len(pages))
        for number, page in enumerate(pages, start=1):
            other = _tiff_layout(page, path)
            if other != layout:
                raise UnsupportedFormatError(
                    f"'{path}' has pages of different kinds (page 1 is {layout[1]} x "
                    f"{layout[0]} {layout[3]}, page {number} is {other[1]} x {other[0]} "
                    f"{other[3]}), so it cannot be opened as one stack."
                )
            ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
            if max(ends, default=0) > file_size:
                raise CorruptFileError(f"'{path}' is truncated: page {number} is incomplete.")
        tag = pages[0].tags.get(_ORIENTATION_TAG)
        orientation = _valid_orientation(tag.value if tag is not None else 1)
    width, height = _displayed_size(layout[1], layout[0], orientation)
    return ImageInfo(path, "TIFF", width, height, len(pages), layout[2], layout[3], orientation)


def _tiff_page_array(page: Any) -> np.ndarray:
    array = page.asarray()
    photometric = int(page.photometric)
    if int(page.planarconfig) == _PLANAR_SEPARATE and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)
    if photometric == _PALETTE:
        colormap = np.asarray(page.colormap)
        if colormap.max() > 255:  # 16-bit colour map, the norm: keep the high byte
            colormap = colormap >> 8
        return np.ascontiguousarray(colormap.astype(np.uint8).T[array])
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
        return 255 - array if photometric == _MINISWHITE else array
    if photometric == _MINISWHITE and array.dtype.kind == "u":
        array = (2 ** int(page.bitspersample) - 1) - array
    return _to_rgb_order(array) if array.ndim == 3 and array.shape[2] == 2 else array


def load_tiff(info: ImageInfo) -> np.ndarray:
    import tifffile

    stored = _displayed_size(info.width, info.height, info.orientation)  # undo the swap
    colour = (info.channels,) if info.channels > 1 else ()
    out = np.empty((info.frames, stored[1], stored[0], *colour), dtype=info.dtype)
    with _decode_errors(info.path, "TIFF"), tifffile.TiffFile(info.path) as tif:
        pages = _tiff_pages(tif)
        indices = [page.index for page in pages]
        decoded = _fill_with_tifffile(pages, out)
    if not decoded:  # a compression such as LZW, which libtiff inside OpenCV decodes
        _load_tiff_with_cv2(info.path, indices, out)
    return out if info.frames > 1 else out[0]


def _fill_with_tifffile(pages: list[Any], out: np.ndarray) -> bool:
    """Decode every page into ``out``; False when a codec needs the missing imagecodecs."""
    try:
        for index, page in enumerate(pages):
            out[index] = _tiff_page_array(page)
    except ValueError as err:
        if "imagecodecs" not in str(err):
            raise
        return False
    return True


def _load_tiff_with_cv2(path: Path, indices: list[int], out: np.ndarray) -> None:
    import cv2

    with _decode_errors(path, "TIFF"):
        ok, planes = cv2.imdecodemulti(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if not ok or len(planes) <= max(indices):
        raise UnsupportedFormatError(f"'{path}' uses a TIFF compression SegStudio cannot decode.")
    for slot, index in enumerate(indices):
        plane = _to_rgb_order(planes[index])
        if plane.shape != out.shape[1:]:
            raise UnsupportedFormatError(
                f"'{path}' uses a TIFF compression and layout SegStudio cannot decode."
            )
        out[slot] = plane

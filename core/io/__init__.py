"""Reading image files and describing what a path holds.

Heavy decoders (Pillow, OpenCV, tifffile) are imported only when a file is read, so that
importing this package stays fast.
"""

from __future__ import annotations

from core.io.images import (
    MAX_PIXELS,
    SUPPORTED_IMAGE_SUFFIXES,
    ImageData,
    ImageInfo,
    auto_levels,
    detect_image_format,
    is_image_path,
    load_image,
    read_image_info,
)
from core.io.probe import describe, register_kind

__all__ = [
    "MAX_PIXELS",
    "SUPPORTED_IMAGE_SUFFIXES",
    "ImageData",
    "ImageInfo",
    "auto_levels",
    "describe",
    "detect_image_format",
    "is_image_path",
    "load_image",
    "read_image_info",
    "register_kind",
]

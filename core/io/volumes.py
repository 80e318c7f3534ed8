"""Read a project item's pixels, whatever its kind (image, stack or volume)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import SegStudioError
from core.io.volume import Volume


def load_item_volume(item: Any) -> Volume:
    """The Volume of a "volume" item: its DICOM series (extra["series_uid"]) or NIfTI volume
    (extra["volume_index"]).

    Raises:
        SegStudioError: The item is not a volume or its source is missing; reader errors.
    """
    from core.io.dicom import load_series
    from core.io.nifti import is_nifti_path, load_nifti

    if item.kind != "volume":
        raise SegStudioError(f"The item {item.name} is not a volume.")
    if item.source is None:
        raise SegStudioError(f"The source of {item.name} is missing ({item.abs_path}).")
    extra = item.extra or {}
    if is_nifti_path(item.source) and item.source.is_file():
        return load_nifti(item.source, volume_index=extra.get("volume_index"))
    return load_series(item.source, uid=extra.get("series_uid"))


def load_item_pixels(item: Any) -> np.ndarray:
    """The pixels to display for ``item``: the image array, or the (Z, Y, X) volume array."""
    if item.kind == "volume":
        return load_item_volume(item).array
    if item.kind == "video":
        raise SegStudioError(f"{item.name} is a video: read its frames one at a time "
                             "(core.io.video.open_video).")
    from core.io import load_image

    if item.source is None:
        raise SegStudioError(f"The source of {item.name} is missing ({item.abs_path}).")
    return load_image(item.source).array

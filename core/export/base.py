"""What every export and import format shares: results, progress and cancel, samples, pixels.

A *sample* is one 2-D mask as it appears in a dataset: an ordinary item is one sample named like
the item, a stack (multi-page TIFF) gives one sample per frame, named ``<item>_<frame:04d>``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from core.errors import ExportError, ImportFormatError, SegStudioError
from core.project.items import Item
from core.project.store import Project

ReportFn = Callable[[int, int], None]
Skipped = list[tuple[str, str]]

_FRAME_NAME = re.compile(r"(?P<base>.+)_(?P<frame>\d{4,})")


class CancelToken(Protocol):
    """Anything with ``is_set()``, such as a :class:`threading.Event`."""

    def is_set(self) -> bool: ...


@dataclass
class ExportResult:
    """What an export wrote.

    Attributes:
        out_dir: The dataset folder.
        count: Masks written (one per item, one per frame of a stack).
        skipped: ``(sample name, reason)`` for every file that could not be written, such as the
            image of an item whose source is missing (its mask is still exported).
    """

    out_dir: Path
    count: int
    skipped: Skipped = field(default_factory=list)


@dataclass
class ImportResult:
    """What an import did.

    Attributes:
        folder: The dataset folder read.
        imported: Masks written into the project (a stack counts once).
        added_items: Images of the dataset added to the project as new items.
        new_classes: Names of the classes added to the project.
        skipped: ``(file name, reason)`` for masks that matched no item and had no image.
    """

    folder: Path
    imported: int
    added_items: int
    new_classes: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=list)


class Progress:
    """Counts work done, calls ``report(done, total)`` and honours a cancel token."""

    def __init__(self, total: int, report: ReportFn | None = None,
                 cancel: CancelToken | None = None, what: str = "export") -> None:
        self.total = total
        self.done = 0
        self._report = report
        self._cancel = cancel
        self._what = what

    def check(self) -> None:
        """Raise ExportError("<what> cancelled") when the token is set."""
        if self._cancel is not None and self._cancel.is_set():
            raise ExportError(f"{self._what} cancelled")

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self._report is not None:
            self._report(self.done, self.total)

    def start(self) -> None:
        if self._report is not None:
            self._report(0, self.total)


# -- samples -----------------------------------------------------------------------------------
def frame_name(name: str, frame: int) -> str:
    """Name of one frame of a stack in a dataset."""
    return f"{name}_{frame:04d}"


def split_frame_name(name: str) -> tuple[str, int] | None:
    """``("cells", 3)`` for ``"cells_0003"``; None when ``name`` has no frame suffix."""
    match = _FRAME_NAME.fullmatch(name)
    return (match["base"], int(match["frame"])) if match else None


def sample_count(items: list[Item]) -> int:
    return sum(max(item.frames, 1) for item in items)


@dataclass(frozen=True)
class Sample:
    """One 2-D mask to export and where its pixels come from."""

    name: str
    item: Item
    frame: int | None
    labels: np.ndarray


def iter_samples(project: Project, items: list[Item]) -> Iterator[Sample]:
    """The samples of ``items`` in order, loading each item's mask once."""
    for item in items:
        labels = project.load_mask(item)
        if item.frames > 1:
            for frame in range(item.frames):
                yield Sample(frame_name(item.name, frame), item, frame, labels[frame])
        else:
            yield Sample(item.name, item, None, labels)


# -- pixels ----------------------------------------------------------------------------------------
class SourceCache:
    """Loads an item's source image once for all its frames."""

    def __init__(self) -> None:
        self._item_id: int | None = None
        self._array: np.ndarray | None = None

    def rgb8(self, sample: Sample) -> np.ndarray:
        """The sample's image as (H, W, 3) uint8; SegStudioError when it cannot be read."""
        from core.io import load_image

        item = sample.item
        if item.source is None:
            raise SegStudioError("source image missing")
        if self._item_id != item.id:
            self._array, self._item_id = None, None
            self._array = load_image(item.source).array
            self._item_id = item.id
        assert self._array is not None
        plane = self._array[sample.frame] if sample.frame is not None else self._array
        if plane.shape[:2] != sample.labels.shape:
            raise SegStudioError(
                f"source image is {plane.shape[1]}x{plane.shape[0]} now, the mask "
                f"{sample.labels.shape[1]}x{sample.labels.shape[0]}"
            )
        return to_rgb8(plane)


def to_rgb8(plane: np.ndarray) -> np.ndarray:
    """(H, W[, C]) of any dtype -> (H, W, 3) uint8; 16-bit and float are scaled by auto_levels."""
    from core.io import auto_levels

    if plane.dtype != np.uint8:
        lo, hi = auto_levels(plane)
        scaled = (np.nan_to_num(plane.astype(np.float64)) - lo) * (255.0 / (hi - lo))
        plane = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if plane.ndim == 2:
        return np.repeat(plane[:, :, None], 3, axis=2)
    if plane.shape[2] == 1:
        return np.repeat(plane, 3, axis=2)
    return np.ascontiguousarray(plane[:, :, :3])


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image) -> bytes:  # a PIL image; PIL is imported lazily
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def check_max_value(sample: Sample, limit: int, hint: str) -> None:
    """ExportError when the sample holds a label above ``limit``."""
    top = int(sample.labels.max(initial=0))
    if top > limit:
        raise ExportError(f"{sample.name} holds label {top}, above {limit}; {hint}")


def read_label_png(path: Path) -> np.ndarray:
    """Decode a single-channel 8- or 16-bit PNG as label values (no colour conversion)."""
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImportFormatError(f"Cannot read {path}: {err.strerror or err}.") from err
    labels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if labels is None:
        raise ImportFormatError(f"{path} is not a readable PNG.")
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise ImportFormatError(
            f"{path} is not a label mask: expected one 8- or 16-bit channel, found "
            f"{labels.shape[2] if labels.ndim == 3 else 1} channel(s) of {labels.dtype}."
        )
    return labels


def find_image(folder: Path, name: str) -> Path | None:
    """The image ``folder/<name>.<ext>`` with a supported extension, if any."""
    from core.io import is_image_path

    if not folder.is_dir():
        return None
    candidates = sorted(p for p in folder.glob(f"{glob_escape(name)}.*")
                        if p.stem == name and p.is_file() and is_image_path(p))
    return candidates[0] if candidates else None


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)

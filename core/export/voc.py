"""Pascal VOC segmentation layout, as read by torchvision's VOCSegmentation, CVAT and datumaro.

::

    OUT/JPEGImages/<name>.jpg              8-bit RGB JPEG (or the original file, copy_originals)
    OUT/SegmentationClass/<name>.png       palette PNG: pixel value = class index
    OUT/ImageSets/Segmentation/<subset>.txt   one sample name per line
    OUT/labelmap.txt                       CVAT/datumaro class list: "name:r,g,b::" per index

A labelmap line's position is its class index. When the project's indices have gaps (a class was
deleted), the gaps are written as placeholder lines named ``_unused_<index>`` so every later line
keeps its index; the importer skips them.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from core.annotation.classes import LabelClass, palette_rgb, voc_color
from core.errors import ExportError, ImportFormatError, SegStudioError
from core.export.base import (
    Progress,
    Sample,
    Skipped,
    SourceCache,
    check_max_value,
    encode_jpeg,
    encode_png,
    iter_samples,
)
from core.export.importing import Dataset
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

LABELMAP = "labelmap.txt"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"
MASK_DIR = "SegmentationClass"
IMAGE_DIR = "JPEGImages"
SETS_DIR = "ImageSets/Segmentation"
PLACEHOLDER = re.compile(r"_unused_\d+")
JPEG_QUALITY = 95

# The 21 classes of Pascal VOC 2012, used when a dataset has no labelmap.txt.
VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


# -- export ------------------------------------------------------------------------------------
def export_voc(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
               subset: str = "default", copy_originals: bool = False) -> tuple[int, Skipped]:
    """Write ``items`` in the VOC layout into ``stage``; returns (masks written, skipped)."""
    _check_subset(subset)
    classes = project.classes()
    labelmap = labelmap_text(classes)
    palette = palette_rgb(classes).reshape(-1).tolist()
    sources = SourceCache()
    listed: list[str] = []
    skipped: Skipped = []
    count = 0
    for sample in iter_samples(project, items):
        progress.check()
        check_max_value(sample, 255, "VOC masks hold 0-255: export with the index format.")
        stage.write_bytes(f"{MASK_DIR}/{sample.name}.png", _palette_png(sample.labels, palette))
        count += 1
        reason = _write_image(stage, sample, sources, copy_originals)
        if reason is None:
            listed.append(sample.name)
        else:
            reason += f"; its mask was exported but it is left out of {SETS_DIR}/{subset}.txt"
            skipped.append((sample.name, reason))
        progress.advance()
    stage.write_bytes(f"{SETS_DIR}/{subset}.txt", "".join(f"{n}\n" for n in listed).encode(),
                      last=True)
    stage.write_bytes(LABELMAP, labelmap.encode("utf-8"), last=True)
    return count, skipped


def _check_subset(subset: str) -> None:
    if not subset or subset.startswith(".") or re.search(r"[/\\\x00-\x1f]", subset):
        raise ExportError(f"The subset name {subset!r} cannot be a file name; use e.g. 'train'.")


def labelmap_text(classes: list[LabelClass]) -> str:
    """labelmap.txt for ``classes``; ExportError for an index above 255 or an unusable name."""
    by_index = {c.index: c for c in classes}
    for cls in classes:
        if cls.index > 255:
            raise ExportError(
                f"The class {cls.name!r} has index {cls.index}, but VOC masks hold 0-255; "
                "export with the index format instead."
            )
        if not cls.name or re.search(r"[:\n\r]", cls.name) or cls.name.startswith("#") \
                or PLACEHOLDER.fullmatch(cls.name):
            raise ExportError(f"The class name {cls.name!r} cannot be written to {LABELMAP} "
                              "(no ':', line breaks or leading '#'); rename the class.")
    lines = [LABELMAP_HEADER]
    for index in range(max(by_index, default=-1) + 1):
        cls = by_index.get(index)
        if cls is None:
            cls = LabelClass(index, f"_unused_{index}", voc_color(index))
        r, g, b = cls.color
        lines.append(f"{cls.name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"


def _palette_png(labels: np.ndarray, palette: list[int]) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))
    image.putpalette(palette)  # turns the "L" image into "P" with the same pixel values
    return encode_png(image)


def _write_image(stage: StagedDir, sample: Sample, sources: SourceCache,
                 copy_originals: bool) -> str | None:
    """Stage the sample's image; return why it could not be, or None."""
    source = sample.item.source
    if source is None:
        return "source image missing"
    if copy_originals and sample.frame is None:
        stage.copy_file(f"{IMAGE_DIR}/{sample.name}{source.suffix.lower()}", source)
        return None
    try:
        rgb = sources.rgb8(sample)
    except SegStudioError as err:
        return f"source image unreadable ({err})"
    stage.write_bytes(f"{IMAGE_DIR}/{sample.name}.jpg", encode_jpeg(rgb, JPEG_QUALITY))
    return None


# -- import ------------------------------------------------------------------------------------
def read_voc_dataset(folder: Path) -> Dataset:
    """Describe a VOC folder for :func:`core.export.importing.run_import`."""
    mask_dir = folder / MASK_DIR
    if not mask_dir.is_dir():
        raise ImportFormatError(f"{folder} is not a Pascal VOC dataset: it has no {MASK_DIR} "
                                "folder.")
    labelmap = folder / LABELMAP
    if labelmap.is_file():
        classes = parse_labelmap(labelmap)
    else:
        classes = [LabelClass(i, n, voc_color(i)) for i, n in enumerate(VOC_CLASS_NAMES)]
    colors = {c.color: c.index for c in classes}
    masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    return Dataset(folder, classes, masks, folder / IMAGE_DIR,
                   lambda path: read_voc_mask(path, colors))


def parse_labelmap(path: Path) -> list[LabelClass]:
    """Classes of a CVAT/datumaro labelmap.txt; a line's position among the labels is its index."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"Cannot read {path}: {err}.") from err
    classes: list[LabelClass] = []
    index = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, rest = line.partition(":")
        color_text = rest.partition(":")[0].strip()
        name = name.strip()
        if not name:
            raise ImportFormatError(f"{path}, line {number}: a label needs a name.")
        if not PLACEHOLDER.fullmatch(name):
            color = _parse_color(color_text, index, path, number)
            classes.append(LabelClass(index, name, color))
        index += 1
    return classes


def _parse_color(text: str, index: int, path: Path, number: int) -> tuple[int, int, int]:
    if not text:
        return voc_color(index)
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise ImportFormatError(f"{path}, line {number}: the colour {text!r} is not 'r,g,b' "
                                "with values 0-255.")
    return values  # type: ignore[return-value]


def read_voc_mask(path: Path, colors: dict[tuple[int, int, int], int]) -> np.ndarray:
    """Label values of a VOC mask: palette and grey PNGs as indices, RGB through the labelmap."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L", "I;16", "I"):
                return _as_labels(np.array(image), path)
            if mode in ("RGB", "RGBA"):
                return _colors_to_labels(np.array(image.convert("RGB")), colors, path)
    except (OSError, SyntaxError, ValueError) as err:
        raise ImportFormatError(f"{path} is not a readable PNG ({err}).") from err
    raise ImportFormatError(f"{path} has the pixel mode {mode}, which is not a label mask.")


def _as_labels(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.min(initial=0) < 0 or array.max(initial=0) > 65535:
        raise ImportFormatError(f"{path} holds values outside 0-65535.")
    return array.astype(np.uint16)


def _colors_to_labels(rgb: np.ndarray, colors: dict[tuple[int, int, int], int],
                      path: Path) -> np.ndarray:
    keys = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) \
        | rgb[..., 2].astype(np.int32)
    unique, inverse = np.unique(keys, return_inverse=True)
    values = np.empty(unique.shape, np.int64)
    for position, key in enumerate(unique.tolist()):
        color = (key >> 16, (key >> 8) & 255, key & 255)
        if color not in colors:
            raise ImportFormatError(
                f"{path} is a colour mask with the colour {color}, which no label of "
                f"{LABELMAP} has."
            )
        values[position] = colors[color]
    dtype = np.uint16 if values.max(initial=0) > 255 else np.uint8
    return values.astype(dtype)[inverse.reshape(keys.shape)]

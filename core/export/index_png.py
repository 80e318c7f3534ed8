"""The "index" format: plain label PNGs plus a JSON class list, lossless for any class index.

::

    OUT/masks/<name>.png     single channel, pixel value = class index; 8-bit, or 16-bit when
                             the project has a class index above 255 (or the mask a value above)
    OUT/classes.json         {"format": "segstudio-index", "version": 1,
                              "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}]}
    OUT/images/<name>.<ext>  copies of the original images (copy_originals=True)

A stack's frames are ``masks/<name>_<frame:04d>.png``; its original file is copied once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.annotation.classes import LabelClass
from core.errors import ExportError, ImportFormatError
from core.export.base import Progress, Skipped, check_max_value, iter_samples, read_label_png
from core.export.importing import Dataset
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

FORMAT_NAME = "segstudio-index"
FORMAT_VERSION = 1
CLASSES_FILE = "classes.json"
MASK_DIR = "masks"
IMAGE_DIR = "images"


# -- export ------------------------------------------------------------------------------------
def export_index(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
                 copy_originals: bool = False) -> tuple[int, Skipped]:
    """Write ``items`` as label PNGs into ``stage``; returns (masks written, skipped)."""
    classes = project.classes()
    wide = any(c.index > 255 for c in classes)
    skipped: Skipped = []
    count = 0
    copied: set[int] = set()
    for sample in iter_samples(project, items):
        progress.check()
        check_max_value(sample, 65535, "PNG masks hold at most 16 bits.")
        stage.write_bytes(f"{MASK_DIR}/{sample.name}.png", encode_label_png(sample.labels, wide))
        count += 1
        item = sample.item
        if copy_originals and item.id not in copied:
            copied.add(item.id)
            if item.source is None:
                reason = "source image missing; its mask was exported without the image"
                skipped.append((item.name, reason))
            else:
                stage.copy_file(f"{IMAGE_DIR}/{item.name}{item.source.suffix.lower()}",
                                item.source)
        progress.advance()
    stage.write_bytes(CLASSES_FILE, classes_json(classes).encode("utf-8"), last=True)
    return count, skipped


def classes_json(classes: list[LabelClass]) -> str:
    data = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "classes": [c.to_json() for c in classes],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def encode_label_png(labels: np.ndarray, wide: bool) -> bytes:
    """PNG bytes of ``labels``: 8-bit unless ``wide`` or a value needs 16 bits.

    A 16-bit PNG is decoded again and compared, since a silent narrowing anywhere on the way
    would corrupt every class above 255.
    """
    import cv2

    wide = wide or int(labels.max(initial=0)) > 255
    array = np.ascontiguousarray(labels, dtype=np.uint16 if wide else np.uint8)
    ok, encoded = cv2.imencode(".png", array)
    if not ok:
        raise ExportError(f"Encoding a {array.shape[1]}x{array.shape[0]} mask as PNG failed.")
    data = encoded.tobytes()
    if wide:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None or decoded.dtype != np.uint16 or not np.array_equal(decoded, array):
            raise ExportError("A 16-bit mask did not read back identical after PNG encoding.")
    return data


# -- import ------------------------------------------------------------------------------------
def read_index_dataset(folder: Path) -> Dataset:
    """Describe an index-format folder for :func:`core.export.importing.run_import`."""
    classes_path = folder / CLASSES_FILE
    mask_dir = folder / MASK_DIR
    if not classes_path.is_file() or not mask_dir.is_dir():
        raise ImportFormatError(f"{folder} is not an index-format dataset: it needs "
                                f"{CLASSES_FILE} and a {MASK_DIR} folder.")
    classes = parse_classes_json(classes_path)
    masks = sorted(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    return Dataset(folder, classes, masks, folder / IMAGE_DIR, read_label_png)


def parse_classes_json(path: Path) -> list[LabelClass]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ImportFormatError(f"Cannot read {path}: {err}.") from err
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise ImportFormatError(f"{path} must be an object with a \"classes\" list.")
    if data.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ImportFormatError(f"{path} is a {data['format']!r} file, not {FORMAT_NAME!r}.")
    version = data.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ImportFormatError(f"{path} has version {version!r}; this SegStudio reads "
                                f"version {FORMAT_VERSION}. Update SegStudio.")
    classes = []
    for number, entry in enumerate(data["classes"], 1):
        try:
            if not isinstance(entry, dict) or not str(entry.get("name", "")).strip():
                raise ValueError("needs an \"id\" and a non-empty \"name\"")
            classes.append(LabelClass.from_json(entry))
        except (KeyError, TypeError, ValueError) as err:
            detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise ImportFormatError(f"{path}: class {number}: {detail}.") from err
    return classes

"""Importing dataset masks into a project, shared by every import format.

A format only says which classes the dataset has, where its mask files and images are, and how to
decode one mask file into label values. This module then merges the classes, matches every mask to
an item (adding the dataset's image as a new item when no item matches), validates *all* files and
only then writes, so an import either happens completely or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.annotation.classes import LabelClass
from core.errors import ImportFormatError, SegStudioError
from core.export.base import ImportResult, Progress, ReportFn, find_image, split_frame_name
from core.project.items import Item
from core.project.store import Project

if TYPE_CHECKING:
    from core.io import ImageInfo

MaskReader = Callable[[Path], np.ndarray]


@dataclass
class Dataset:
    """What an import format found in a dataset folder.

    Attributes:
        folder: The dataset folder.
        classes: The dataset's classes, with the indices its masks use.
        masks: Mask files; each file's stem is the sample name.
        image_dir: Where the images live (``<image_dir>/<name>.<ext>``).
        read_mask: Decodes one mask file into a 2-D array of the dataset's indices; raises
            ImportFormatError naming the file when it cannot.
    """

    folder: Path
    classes: list[LabelClass]
    masks: list[Path]
    image_dir: Path
    read_mask: MaskReader


@dataclass
class _Target:
    """Where one mask file goes: an item (or a new image to add) and a frame of a stack."""

    mask: Path
    shape: tuple[int, int]
    item: Item | None = None
    new_image: Path | None = None
    frame: int | None = None


def merge_classes(
    project_classes: list[LabelClass], dataset_classes: list[LabelClass]
) -> tuple[list[LabelClass], dict[int, int], list[str]]:
    """Merge the dataset's classes into the project's.

    A class whose name the project knows keeps the project's index (its pixels are renumbered);
    a new name takes the dataset's index, which must be free in the project.

    Returns:
        (merged classes sorted by index, {dataset index: project index} for renumbered classes,
        names of the new classes).

    Raises:
        ImportFormatError: a new class's index is taken by a project class of another name.
    """
    by_name = {c.name: c for c in project_classes}
    by_index = {c.index: c for c in project_classes}
    merged = list(project_classes)
    remap: dict[int, int] = {}
    new_names: list[str] = []
    for cls in dataset_classes:
        known = by_name.get(cls.name)
        if known is not None:
            if known.index != cls.index:
                remap[cls.index] = known.index
            continue
        other = by_index.get(cls.index)
        if other is not None:
            raise ImportFormatError(
                f"The dataset's class {cls.name!r} has index {cls.index}, which the project "
                f"uses for {other.name!r}; rename one of them or renumber the dataset."
            )
        merged.append(cls)
        by_index[cls.index] = by_name[cls.name] = cls
        new_names.append(cls.name)
    return sorted(merged, key=lambda c: c.index), remap, new_names


def check_dataset_classes(classes: list[LabelClass], source: Path) -> None:
    """ImportFormatError when the dataset's class list repeats a name or an index."""
    names: set[str] = set()
    indices: set[int] = set()
    for cls in classes:
        if cls.name in names:
            raise ImportFormatError(f"{source} names the class {cls.name!r} twice.")
        if cls.index in indices:
            raise ImportFormatError(f"{source} gives the index {cls.index} to two classes.")
        if not 0 <= cls.index <= 65535:
            raise ImportFormatError(f"{source}: class {cls.name!r} has index {cls.index}, "
                                    "outside 0-65535.")
        names.add(cls.name)
        indices.add(cls.index)


def renumber(labels: np.ndarray, remap: dict[int, int]) -> np.ndarray:
    """``labels`` with dataset indices replaced by project indices (one lookup table pass)."""
    if not remap:
        return labels
    size = max(int(labels.max(initial=0)), *remap) + 1
    table = np.arange(size, dtype=np.int64)
    for source, target in remap.items():
        table[source] = target
    dtype = np.uint16 if table.max() > 255 else labels.dtype
    return table.astype(dtype)[labels]


def run_import(project: Project, dataset: Dataset, report: ReportFn | None = None) -> ImportResult:
    """Validate every mask of ``dataset`` against ``project``, then write them all."""
    check_dataset_classes(dataset.classes, dataset.folder)
    merged, remap, new_names = merge_classes(project.classes(), dataset.classes)
    targets, skipped = _match_targets(project, dataset)
    progress = Progress(2 * len(targets), report, what="import")
    progress.start()
    for target in targets:  # validate all before writing anything
        labels = dataset.read_mask(target.mask)
        _check_shape(target, labels)
        progress.advance()

    with project.transaction():  # all or nothing, even if the process dies half-way
        if new_names:
            project.set_classes(merged)
        added = _add_images(project, [t for t in targets if t.new_image is not None])
        imported = _write_masks(project, dataset, targets, remap, progress)
    return ImportResult(dataset.folder, imported, added, new_names, skipped)


def _match_targets(project: Project, dataset: Dataset) -> tuple[list[_Target], list]:
    items = {item.name: item for item in project.items()}
    targets: list[_Target] = []
    skipped: list[tuple[str, str]] = []
    for mask in dataset.masks:
        target = _match_item(mask, items) or _match_image(mask, dataset.image_dir)
        if target is None:
            reason = (f"no item named {mask.stem!r} in the project and no image for it in "
                      f"{dataset.image_dir}")
            skipped.append((mask.name, reason))
        else:
            targets.append(target)
    return targets, skipped


def _match_item(mask: Path, items: dict[str, Item]) -> _Target | None:
    """The project item a mask belongs to: same name, or ``<stack>_<frame>`` of a stack."""
    name = mask.stem
    item = items.get(name)
    if item is not None and item.frames <= 1:
        return _Target(mask, (item.height, item.width), item=item)
    frame = split_frame_name(name)
    stack = items.get(frame[0]) if frame else None
    if frame and stack is not None and stack.frames > 1 and frame[1] < stack.frames:
        return _Target(mask, (stack.height, stack.width), item=stack, frame=frame[1])
    if item is not None:  # a stack named exactly like a 2-D mask
        raise ImportFormatError(
            f"{mask} is one 2-D mask but the item {name!r} is a stack of {item.frames} "
            f"frames; name its frames {name}_0000 to {name}_{item.frames - 1:04d}."
        )
    return None


def _match_image(mask: Path, image_dir: Path) -> _Target | None:
    """A dataset image to add for a mask: ``<name>.<ext>``, or the stack ``<base>.<ext>``."""
    image = find_image(image_dir, mask.stem)
    if image is not None:
        info = _image_info(image, mask)
        if info.frames > 1:
            raise ImportFormatError(f"The image {image} for {mask.name} is a stack of "
                                    f"{info.frames} frames; a 2-D mask cannot label it.")
        return _Target(mask, (info.height, info.width), new_image=image)
    frame = split_frame_name(mask.stem)
    image = find_image(image_dir, frame[0]) if frame else None
    if frame is None or image is None:
        return None
    info = _image_info(image, mask)
    if frame[1] >= info.frames:
        return None
    return _Target(mask, (info.height, info.width), new_image=image, frame=frame[1])


def _image_info(image: Path, mask: Path) -> ImageInfo:
    from core.io import read_image_info

    try:
        return read_image_info(image)
    except SegStudioError as err:
        raise ImportFormatError(f"The image {image} for {mask.name} is unusable: {err}") from err


def _check_shape(target: _Target, labels: np.ndarray) -> None:
    if labels.shape != target.shape:
        owner = (target.item.name if target.item is not None else str(target.new_image))
        if target.frame is not None:
            owner += f" (frame {target.frame})"
        raise ImportFormatError(
            f"{target.mask} is {_size(labels.shape)} but {owner} is {_size(target.shape)}; "
            "nothing was imported."
        )


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} (width x height)" if len(shape) == 2 else str(shape)


def _add_images(project: Project, targets: list[_Target]) -> int:
    """Add the dataset images of ``targets`` as items and point each target at its item."""
    if not targets:
        return 0
    paths = list(dict.fromkeys(t.new_image for t in targets if t.new_image is not None))
    report = project.add_items(paths, recursive=False)
    by_path = {Path(item.abs_path): item for item in project.items()}
    for target in targets:
        assert target.new_image is not None
        target.item = by_path.get(target.new_image.absolute())
        if target.item is None:
            reasons = dict(report.skipped)
            reason = reasons.get(str(target.new_image), "the project refused it")
            raise ImportFormatError(f"Could not add {target.new_image}: {reason}")
    return len(report.added_ids)


def _write_masks(project: Project, dataset: Dataset, targets: list[_Target],
                 remap: dict[int, int], progress: Progress) -> int:
    stacks: dict[int, np.ndarray] = {}
    imported: set[int] = set()
    for target in targets:
        item = target.item
        assert item is not None
        labels = renumber(dataset.read_mask(target.mask), remap)
        if target.frame is None:
            project.save_mask(item.id, labels)
        else:
            volume = stacks.get(item.id)
            if volume is None:
                volume = stacks[item.id] = project.load_mask(item).copy()
            if labels.dtype.itemsize > volume.dtype.itemsize:
                volume = stacks[item.id] = volume.astype(labels.dtype)
            volume[target.frame] = labels
        imported.add(item.id)
        progress.advance()
    for item_id, volume in stacks.items():
        project.save_mask(item_id, volume)
    for item_id in imported:
        if project.item(item_id).state == "new":
            project.set_state(item_id, "in_progress")
    return len(imported)

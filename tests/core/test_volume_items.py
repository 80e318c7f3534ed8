"""CT/MR volumes as project items: adding (API and CLI), loading, NIfTI and DICOM-SEG export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_series import draw_labels, make_series, run_cli
from nibabel.testing import data_path
from PIL import Image

from core.export import export_project
from core.export.volume_labels import read_dicom_seg
from core.io.volumes import load_item_pixels, load_item_volume
from core.project.store import Project


@pytest.fixture()
def series(tmp_path: Path) -> Path:
    return make_series(tmp_path / "ct")


def test_add_volume_reads_headers_and_skips_duplicates(tmp_path: Path, series: Path) -> None:
    with Project.create(tmp_path / "proj") as project:
        item = project.add_volume(series)
        assert item.kind == "volume" and item.mask_shape == (4, 128, 128)
        assert item.source == series.resolve()
        uid = pydicom.dcmread(next(series.iterdir())).SeriesInstanceUID
        assert item.extra["series_uid"] == uid
        again = project.add_volume(series, series_uid=uid)
        assert again.id == item.id and len(project.items()) == 1
        volume = load_item_volume(project.item(item.id))
        assert volume.shape == (4, 128, 128)
        assert np.allclose(volume.affine[2, 3] + 3 * volume.affine[2, 2], 7.5)
        assert load_item_pixels(item).shape == (4, 128, 128)


def test_several_series_need_a_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "two"
    make_series(folder / "a", "1.2.3.4.1")
    make_series(folder / "b", "1.2.3.4.2", seed=1)
    proj = tmp_path / "proj"
    Project.create(proj).close()
    code, _, err = run_cli(capsys, "project", "add", proj, folder)
    assert code == 1 and "1.2.3.4.1" in err and "1.2.3.4.2" in err
    code, out, err = run_cli(capsys, "project", "add", proj, folder, "--series", "1.2.3.4.2")
    assert code == 0, err
    assert json.loads(out)["added"] == 1
    with Project.open(proj) as project:
        (item,) = project.items()
        assert item.extra == {"series_uid": "1.2.3.4.2"}


def test_dicom_volume_exports_nifti_and_dicom_seg(tmp_path: Path, series: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    proj = tmp_path / "proj"
    Project.create(proj).close()
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    code, out, err = run_cli(capsys, "project", "add", proj, series, image)
    assert code == 0, err
    assert json.loads(out)["added"] == 2
    with Project.open(proj) as project:
        volume_item = next(i for i in project.items() if i.kind == "volume")
        image_item = next(i for i in project.items() if i.kind == "image")
        assert volume_item.mask_shape == (4, 128, 128)
        labels = draw_labels(project, volume_item.id)
        project.save_mask(image_item.id, np.ones((8, 8), np.uint8))
        affine = load_item_volume(volume_item).affine
        sources = load_item_volume(volume_item).source

    code, out, err = run_cli(capsys, "export", proj, "--format", "nifti", "--out", tmp_path / "nii")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 1
    assert result["skipped"] == [{"name": image_item.name, "reason": "not a volume"}]
    img = nib.load(tmp_path / "nii" / f"{volume_item.name}.nii.gz")
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), labels)
    assert np.allclose(img.affine, affine)
    assert json.loads((tmp_path / "nii" / "classes.json").read_text())["classes"]

    code, out, err = run_cli(capsys, "export", proj, "--format", "dicom-seg", "--out", tmp_path / "seg")
    assert code == 0, err
    assert json.loads(out)["count"] == 1
    datasets = [pydicom.dcmread(f) for f in sources]
    back = read_dicom_seg(tmp_path / "seg" / f"{volume_item.name}.seg.dcm", datasets)
    assert np.array_equal(back, labels)


def test_nifti_item_round_trips(tmp_path: Path) -> None:
    source = tmp_path / "anatomical.nii"
    shutil.copy(Path(data_path) / "anatomical.nii", source)
    with Project.create(tmp_path / "proj") as project:
        item = project.add_volume(source)
        assert item.kind == "volume" and item.extra == {"volume_index": 0}
        volume = load_item_volume(item)
        assert item.mask_shape == volume.shape
        labels = np.zeros(item.mask_shape, np.uint8)
        labels[1:3, 5:20, 10:30] = 3
        project.save_mask(item.id, labels)
        nifti = export_project(project, "nifti", tmp_path / "out")
        assert nifti.count == 1
        seg = export_project(project, "dicom-seg", tmp_path / "seg")
        assert seg.count == 0 and "not a DICOM" in seg.skipped[0][1]
    img = nib.load(tmp_path / "out" / "anatomical.nii.gz")
    assert np.array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), labels)
    assert np.allclose(img.affine, volume.affine)


def test_4d_nifti_needs_a_volume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = Path(data_path) / "example4d.nii.gz"
    count = nib.load(source).shape[3]
    proj = tmp_path / "proj"
    Project.create(proj).close()
    code, _, err = run_cli(capsys, "project", "add", proj, source)
    assert code == 1 and f"{count} volumes" in err
    code, _, err = run_cli(capsys, "project", "add", proj, source, "--volume", "1")
    assert code == 0, err
    with Project.open(proj) as project:
        (item,) = project.items()
        assert item.extra == {"volume_index": 1}
        assert load_item_volume(item).shape == item.mask_shape

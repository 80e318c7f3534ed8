"""Importing a NIfTI label volume into a volume item (API and ``segstudio-cli import``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dicom_series import draw_labels, make_series, run_cli
from PIL import Image

from core.errors import ImportFormatError
from core.export.volume_import import import_label_volume
from core.io.nifti import save_label_nifti
from core.io.volumes import load_item_volume
from core.project.store import Project


def snapshot(proj: Path) -> list[tuple]:
    with Project.open(proj, read_only=True) as project:
        return [(i.id, i.state, project.journal_length(i.id), project.load_mask(i).tobytes())
                for i in project.items()]


@pytest.fixture()
def exported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, np.ndarray, str]:
    """A series, and its drawn labels exported with ``segstudio-cli export --format nifti``."""
    series = make_series(tmp_path / "ct")
    proj = tmp_path / "source"
    with Project.create(proj) as project:
        item = project.add_volume(series)
        labels = draw_labels(project, item.id)
    code, _, err = run_cli(capsys, "export", proj, "--format", "nifti", "--out", tmp_path / "nii")
    assert code == 0, err
    return tmp_path / "nii" / f"{item.name}.nii.gz", labels, item.name


@pytest.fixture()
def fresh(tmp_path: Path) -> Path:
    """A new project holding the same series and a 2D image."""
    proj = tmp_path / "fresh"
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    with Project.create(proj) as project:
        project.add_volume(tmp_path / "ct")
        project.add_items([image])
    return proj


def test_round_trip_into_a_fresh_project(exported, fresh: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, labels, name = exported
    code, out, err = run_cli(capsys, "import", fresh, "--format", "nifti", path, "--item", name)
    assert code == 0, err
    assert json.loads(out) == {"file": str(path), "format": "nifti", "item": name,
                               "labelled_voxels": int(np.count_nonzero(labels))}
    with Project.open(fresh) as project:
        item = next(i for i in project.items() if i.kind == "volume")
        assert np.array_equal(project.load_mask(item), labels)
        assert project.journal_length(item.id) == 1  # one journaled edit
        assert item.state == "in_progress"
        # importing the same labels again changes nothing and journals nothing
        assert import_label_volume(project, item, path) == np.count_nonzero(labels)
        assert project.journal_length(item.id) == 1


def test_wide_labels_and_done_state_kept(exported, fresh: Path) -> None:
    path, _, _ = exported
    with Project.open(fresh) as project:
        item = next(i for i in project.items() if i.kind == "volume")
        project.set_state(item.id, "done")
        wide = np.zeros(item.mask_shape, np.uint16)
        wide[2, 5:9, 7:11] = 300
        save_label_nifti(wide, load_item_volume(item).affine, path.with_name("wide.nii"))
        assert import_label_volume(project, item, path.with_name("wide.nii")) == 16
        back = project.load_mask(item)
        assert back.dtype == np.uint16 and np.array_equal(back, wide)
        assert project.item(item.id).state == "done"


def test_mismatches_are_refused_and_change_nothing(exported, fresh: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _, labels, name = exported
    with Project.open(fresh, read_only=True) as project:
        item = next(i for i in project.items() if i.kind == "volume")
        affine = load_item_volume(item).affine
    small = tmp_path / "small.nii.gz"
    save_label_nifti(labels[:, :64, :], affine, small)
    shifted = tmp_path / "shifted.nii.gz"
    moved = affine.copy()
    moved[:3, 3] += (5.0, 0.0, 0.0)
    save_label_nifti(labels, moved, shifted)
    before = snapshot(fresh)

    code, out, err = run_cli(capsys, "import", fresh, "--format", "nifti", small, "--item", name)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "(4, 64, 128)" in err and "(4, 128, 128)" in err

    code, out, err = run_cli(capsys, "import", fresh, "--format", "nifti", shifted, "--item", name)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "label affine" in err and "volume affine" in err
    assert str(np.round(moved, 4).tolist()) in err and str(np.round(affine, 4).tolist()) in err
    assert snapshot(fresh) == before


def test_image_item_is_not_a_volume(exported, fresh: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = exported
    before = snapshot(fresh)
    code, _, err = run_cli(capsys, "import", fresh, "--format", "nifti", path, "--item", "photo")
    assert code == 1 and "not a volume" in err
    with Project.open(fresh) as project:
        image = next(i for i in project.items() if i.kind == "image")
        with pytest.raises(ImportFormatError, match="not a volume"):
            import_label_volume(project, image, path)
    assert snapshot(fresh) == before


def test_item_option_is_checked(exported, fresh: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path, _, name = exported
    code, out, err = run_cli(capsys, "import", fresh, "--format", "nifti", path)
    assert code == 1 and out == "" and "--item" in err
    code, _, err = run_cli(capsys, "import", fresh, "--format", "nifti", path, "--item", "nope")
    assert code == 1 and "'nope'" in err
    (tmp_path / "voc").mkdir()
    code, _, err = run_cli(capsys, "import", fresh, "--format", "voc", tmp_path / "voc",
                       "--item", name)
    assert code == 1 and "--item applies to the nifti format only" in err
    code, _, err = run_cli(capsys, "import", fresh, "--format", "png", path)
    assert code == 2

"""core.io.probe: the ``info`` description of files and folders, and its kind registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.errors import CorruptFileError, SegStudioError, UnsupportedFormatError
from core.io import describe, probe, register_kind

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "sample"

EXPECTED_SAMPLES = {
    "coffee.jpg": ("JPEG", [341, 512, 3], "uint8", 3, 1),
    "chelsea.png": ("PNG", [300, 451, 3], "uint8", 3, 1),
    "camera.png": ("PNG", [512, 512], "uint8", 1, 1),
    "cell_16bit.tif": ("TIFF", [660, 550], "uint16", 1, 1),
    "camera_stack.tif": ("TIFF", [5, 160, 160], "uint8", 1, 5),
}


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Let a test register kinds without leaking them into other tests."""
    kinds = list(probe._KINDS)
    monkeypatch.setattr(probe, "_KINDS", kinds)
    return kinds


@pytest.mark.parametrize("name", sorted(EXPECTED_SAMPLES))
def test_describe_sample_images(name: str) -> None:
    fmt, shape, dtype, channels, frames = EXPECTED_SAMPLES[name]
    described = describe(SAMPLES / name)
    assert described == {
        "path": str(SAMPLES / name),
        "kind": "image",
        "format": fmt,
        "shape": shape,
        "dtype": dtype,
        "channels": channels,
        "frames": frames,
        "width": shape[-2] if channels > 1 else shape[-1],
        "height": shape[-3] if channels > 1 else shape[-2],
        "orientation": 1,
    }
    assert json.loads(json.dumps(described)) == described


def test_sample_folder_is_small_and_attributed() -> None:
    files = sorted(path.name for path in SAMPLES.iterdir())
    assert files == sorted([*EXPECTED_SAMPLES, "ATTRIBUTION.md"])
    assert sum(path.stat().st_size for path in SAMPLES.iterdir()) < 1_500_000
    attribution = (SAMPLES / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in attribution for name in EXPECTED_SAMPLES)


def test_describe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"  # tmp_path itself may hold fixtures' files
    (folder / "sub").mkdir(parents=True)
    pixels = np.zeros((4, 4), np.uint8)
    for name in ("a.png", "b.JPG", "c.tiff"):
        Image.fromarray(pixels).save(folder / name, format="PNG")
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden.png").write_bytes(b"")
    assert describe(folder) == {
        "path": str(folder), "kind": "folder", "images": 3, "files": 4, "folders": 1,
    }
    assert describe(SAMPLES)["images"] == len(EXPECTED_SAMPLES)


def test_image_found_by_content_despite_its_name(tmp_path: Path) -> None:
    path = tmp_path / "scan.dat"
    Image.fromarray(np.zeros((6, 9, 3), np.uint8)).save(path, format="PNG")
    described = describe(path)
    assert (described["kind"], described["format"], described["shape"]) == ("image", "PNG",
                                                                             [6, 9, 3])


def test_refusals(tmp_path: Path) -> None:
    (tmp_path / "noise.xyz").write_bytes(bytes(range(256)))
    with pytest.raises(UnsupportedFormatError, match="noise.xyz"):
        describe(tmp_path / "noise.xyz")
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "a.gif")
    with pytest.raises(UnsupportedFormatError, match="a.gif"):
        describe(tmp_path / "a.gif")
    (tmp_path / "fake.png").write_text("not a picture")
    with pytest.raises(CorruptFileError, match="fake.png"):
        describe(tmp_path / "fake.png")
    with pytest.raises(SegStudioError, match="does not exist") as caught:
        describe(tmp_path / "missing.png")
    assert "missing.png" in str(caught.value)


def test_register_kind_extends_describe(tmp_path: Path, isolated_registry: list[Any]) -> None:
    path = tmp_path / "volume.fake"
    path.write_bytes(b"FAKE")

    def describe_fake(target: Path) -> dict[str, Any]:
        return {"path": str(target), "kind": "fake", "size": target.stat().st_size}

    with pytest.raises(UnsupportedFormatError):
        describe(path)
    register_kind(lambda target: target.suffix == ".fake", describe_fake)
    assert describe(path) == {"path": str(path), "kind": "fake", "size": 4}


def test_register_kind_first_takes_precedence(isolated_registry: list[Any]) -> None:
    register_kind(lambda target: target.suffix == ".png", lambda t: {"kind": "late"})
    assert describe(SAMPLES / "camera.png")["kind"] == "image"
    register_kind(lambda target: target.suffix == ".png", lambda t: {"kind": "early"}, first=True)
    assert describe(SAMPLES / "camera.png") == {"kind": "early"}


# -- volumes ----------------------------------------------------------------------------------
def test_describe_a_dicom_file_a_dicom_folder_and_a_nifti(tmp_path: Path) -> None:
    import shutil

    import nibabel.testing
    from pydicom.data import get_testdata_file

    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    single = describe(ct)
    assert single["kind"] == "dicom" and single["series"] == 1
    assert single["items"][0]["modality"] == "CT"
    assert single["items"][0]["shape"] == [1, 128, 128]

    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(ct, folder / "IM0001")  # no extension: found by its DICM marker
    (folder / "notes.txt").write_text("not dicom")
    assert describe(folder)["kind"] == "dicom"

    nifti = Path(nibabel.testing.data_path) / "example4d.nii.gz"
    info = describe(nifti)
    assert info["kind"] == "nifti" and info["volumes"] == 2
    assert info["path"] == str(nifti)


def test_a_folder_of_images_is_still_a_folder(sample_dir: Path) -> None:
    assert describe(sample_dir)["kind"] == "folder"

"""DICOM reading on real files from pydicom's test data and series built from real slices."""

from __future__ import annotations

import copy
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from core.errors import CorruptFileError, SegStudioError, UnsupportedFormatError
from core.io.dicom import (
    SeriesChoiceError,
    describe_dicom,
    is_dicom_path,
    load_series,
    scan_dicom,
)
from core.io.volume import Volume

LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])


def data_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return str(path)


def hu(ds: pydicom.Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1))
    intercept = float(ds.get("RescaleIntercept", 0))
    return ds.pixel_array.astype(np.float64) * slope + intercept


def expected_affine(first: pydicom.Dataset, last: pydicom.Dataset, count: int) -> np.ndarray:
    """Independent computation of the RAS affine from the first and last slice headers."""
    iop = np.array([float(v) for v in first.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    p0 = np.array([float(v) for v in first.ImagePositionPatient])
    p1 = np.array([float(v) for v in last.ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_spacing
    lps[:3, 1] = iop[3:] * row_spacing
    lps[:3, 2] = (p1 - p0) / (count - 1)
    lps[:3, 3] = p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_series(
    folder: Path,
    count: int,
    *,
    template: str = "CT_small.dcm",
    step: float = 2.5,
    positions: list[float] | None = None,
    orientation: list[float] | None = None,
    uid: str | None = None,
    seed: int = 0,
) -> list[pydicom.Dataset]:
    """Copy one real slice into ``count`` files written in shuffled order.

    Slice k has z = positions[k] (default k * step) and stored values ``base + k``, so the
    loaded order can be read back from the pixels. Returns the datasets in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(data_file(template))
    base = source.pixel_array
    uid = uid or generate_uid()
    z = positions if positions is not None else [k * step for k in range(count)]
    x0, y0, _ = (float(v) for v in source.ImagePositionPatient)
    written = []
    for k in range(count):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [x0, y0, z[k]]
        if orientation is not None:
            ds.ImageOrientationPatient = orientation
        ds.InstanceNumber = k + 1
        ds.PixelData = (base + k).astype(base.dtype).tobytes()
        written.append(ds)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    for name, k in enumerate(order):
        written[k].save_as(folder / f"{uid[-6:]}_{name:03d}.dcm", enforce_file_format=True)
    return written


# --- real single files --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["693_UNCI.dcm", "CT_small.dcm", "MR_small.dcm"])
def test_single_file_values_spacing_and_origin(name: str) -> None:
    path = data_file(name)
    ds = pydicom.dcmread(path)
    volume = load_series(path)
    assert isinstance(volume, Volume)
    assert volume.shape == (1, ds.Rows, ds.Columns)
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array[0], hu(ds))
    assert volume.spacing[1:] == pytest.approx([float(v) for v in ds.PixelSpacing])
    origin = np.array([float(v) for v in ds.ImagePositionPatient]) * LPS_TO_RAS
    np.testing.assert_allclose(volume.voxel_to_ras([0, 0, 0])[0], origin)
    assert volume.modality == ds.Modality
    assert volume.meta["SeriesInstanceUID"] == ds.SeriesInstanceUID
    assert volume.to_nifti_array().shape == (ds.Columns, ds.Rows, 1)


@pytest.mark.parametrize(
    ("compressed", "plain"),
    [("693_J2KR.dcm", "693_UNCR.dcm"), ("693_J2KI.dcm", "693_UNCI.dcm")],
)
def test_compressed_equals_uncompressed(compressed: str, plain: str) -> None:
    a, b = load_series(data_file(compressed)), load_series(data_file(plain))
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine)


def test_jpeg_lossless_matches_pydicom() -> None:
    path = data_file("JPEG-LL.dcm")
    volume = load_series(path)
    np.testing.assert_array_equal(volume.array[0], hu(pydicom.dcmread(path)))


def test_missing_decoder_names_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    monkeypatch.setattr(JPEG2000LosslessDecoder, "_available", {})
    monkeypatch.setattr(
        JPEG2000LosslessDecoder,
        "_unavailable",
        {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")},
    )
    with pytest.raises(UnsupportedFormatError, match="pylibjpeg-openjpeg") as err:
        load_series(data_file("693_J2KR.dcm"))
    assert "693_J2KR.dcm" in str(err.value)


def test_enhanced_multiframe() -> None:
    path = data_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    volume = load_series(path)
    assert volume.shape == (2, 512, 512)
    # IOP rows run along -x and columns along +y, so the slice normal is -z: the frame with
    # the higher z (frame 1) comes first
    expected = ds.pixel_array.astype(np.int32)[::-1] - 1024
    np.testing.assert_array_equal(volume.array, expected)
    assert volume.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    groups = ds.PerFrameFunctionalGroupsSequence
    for k, group in enumerate(reversed(groups)):
        ipp = [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(volume.voxel_to_ras([0, 0, k])[0], np.array(ipp) * LPS_TO_RAS)
    # IOP row direction is -x (LPS), i.e. +x in RAS
    assert volume.affine[0, 0] == pytest.approx(0.388672)
    assert len(volume.source) == 2


# --- series built from real slices --------------------------------------------------------


def test_shuffled_series_is_sorted_by_position(tmp_path: Path) -> None:
    slices = write_series(tmp_path, 9)
    volume = load_series(tmp_path)
    assert volume.shape == (9, 128, 128)
    for k, ds in enumerate(slices):
        np.testing.assert_array_equal(volume.array[k], hu(ds))
    assert volume.spacing == pytest.approx((2.5, 0.661468, 0.661468))
    np.testing.assert_allclose(volume.affine, expected_affine(slices[0], slices[-1], 9))
    for k in (0, 8):
        ipp = np.array([float(v) for v in slices[k].ImagePositionPatient])
        np.testing.assert_allclose(volume.voxel_to_ras([0, 0, k])[0], ipp * LPS_TO_RAS)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in volume.source]
    assert [int(s.InstanceNumber) for s in sources] == list(range(1, 10))
    assert volume.warnings == []


def test_reversed_slice_normal(tmp_path: Path) -> None:
    # columns run towards -y, so the normal is -z: higher z comes first
    slices = write_series(tmp_path, 6, orientation=[1, 0, 0, 0, -1, 0])
    volume = load_series(tmp_path)
    for j in range(6):
        np.testing.assert_array_equal(volume.array[j], hu(slices[5 - j]))
    np.testing.assert_allclose(volume.affine, expected_affine(slices[5], slices[0], 6))
    last = np.array([float(v) for v in slices[0].ImagePositionPatient]) * LPS_TO_RAS
    np.testing.assert_allclose(volume.voxel_to_ras([0, 0, 5])[0], last)
    assert volume.spacing[0] == pytest.approx(2.5)
    assert np.linalg.det(volume.affine[:3, :3]) != 0


def test_gap_is_reported(tmp_path: Path) -> None:
    write_series(tmp_path, 6, positions=[0, 2, 4, 10, 12, 14])
    volume = load_series(tmp_path)
    assert volume.shape[0] == 6
    assert volume.spacing[0] == pytest.approx(2.0)
    assert any("gap" in w and "6.00 mm" in w for w in volume.warnings)


def test_duplicate_positions_keep_one(tmp_path: Path) -> None:
    write_series(tmp_path, 5, positions=[0, 3, 3, 6, 9])
    volume = load_series(tmp_path)
    assert volume.shape[0] == 4
    assert volume.spacing[0] == pytest.approx(3.0)
    assert any("share their position" in w for w in volume.warnings)


def test_missing_positions_fall_back_to_instance_number(tmp_path: Path) -> None:
    slices = write_series(tmp_path, 4)
    for path in tmp_path.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path)
    volume = load_series(tmp_path)
    for k, ds in enumerate(slices):
        np.testing.assert_array_equal(volume.array[k], hu(ds))
    assert any("InstanceNumber" in w for w in volume.warnings)


def test_mixed_sizes_are_refused(tmp_path: Path) -> None:
    slices = write_series(tmp_path, 3)
    other = pydicom.dcmread(data_file("MR_small.dcm"))
    other.SeriesInstanceUID = slices[0].SeriesInstanceUID
    other.ImagePositionPatient = [0, 0, 50]
    other.save_as(tmp_path / "other.dcm")
    with pytest.raises(UnsupportedFormatError, match="64x64 and 128x128"):
        load_series(tmp_path)


def test_two_series_are_never_merged(tmp_path: Path) -> None:
    write_series(tmp_path, 3, uid="1.2.3.4.111111")
    write_series(tmp_path, 5, uid="1.2.3.4.222222", seed=1)
    found = scan_dicom(tmp_path)
    assert sorted((s.uid, s.slices) for s in found) == [
        ("1.2.3.4.111111", 3),
        ("1.2.3.4.222222", 5),
    ]
    with pytest.raises(SeriesChoiceError, match="2 series found") as err:
        load_series(tmp_path)
    assert len(err.value.series) == 2
    assert load_series(tmp_path, uid="1.2.3.4.111111").shape[0] == 3
    assert load_series(found[0]).shape[0] == 5


def test_non_dicom_files_are_skipped(tmp_path: Path) -> None:
    write_series(tmp_path, 3)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    (found,) = scan_dicom(tmp_path)
    assert found.slices == 3
    assert any("2 file(s)" in w and "skipped" in w for w in found.warnings)
    assert load_series(tmp_path).shape[0] == 3


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    assert not is_dicom_path(tmp_path)
    with pytest.raises(UnsupportedFormatError, match="No DICOM image"):
        scan_dicom(tmp_path)
    with pytest.raises(SegStudioError, match="does not exist"):
        scan_dicom(tmp_path / "missing")


def test_truncated_file(tmp_path: Path) -> None:
    data = Path(data_file("CT_small.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-5000])
    with pytest.raises(CorruptFileError, match="cut.dcm.*truncated"):
        load_series(path)


def test_file_without_pixel_data(tmp_path: Path) -> None:
    ds = pydicom.dcmread(data_file("CT_small.dcm"))
    del ds.PixelData
    path = tmp_path / "nopixels.dcm"
    ds.save_as(path)
    with pytest.raises(UnsupportedFormatError, match="nopixels.dcm.*without pixel data"):
        load_series(path)


def test_dicomdir() -> None:
    dicomdir = Path(data_file("DICOMDIR"))
    assert dicomdir.parent.name == "dicomdirtests"
    assert is_dicom_path(dicomdir)
    found = scan_dicom(dicomdir)
    assert len(found) > 1
    assert sum(len(s.files) for s in found) == len(list(pydicom.fileset.FileSet(dicomdir)))
    (brain,) = [s for s in found if s.description == "Routine Brain"]
    volume = load_series(brain)
    assert volume.shape == (4, 16, 16)
    assert volume.modality == "CT"
    z = [volume.voxel_to_ras([0, 0, k])[0][2] for k in range(4)]
    assert z == sorted(z)  # axial CT with normal +z: ascending
    assert any("gap" in w for w in volume.warnings)


def test_describe_dicom(tmp_path: Path) -> None:
    write_series(tmp_path, 4, step=1.5)
    info = describe_dicom(tmp_path)
    assert info["kind"] == "dicom" and info["series"] == 1
    (item,) = info["items"]
    assert item["shape"] == [4, 128, 128]
    assert item["spacing"] == pytest.approx([1.5, 0.661468, 0.661468])
    assert item["orientation"] == [1, 0, 0, 0, 1, 0]
    assert item["dtype"] == "int16"
    assert item["modality"] == "CT"


def test_memory_is_about_the_volume_size(tmp_path: Path) -> None:
    count = 40
    write_series(tmp_path, count, template="693_UNCI.dcm", step=1.0)
    (series,) = scan_dicom(tmp_path)
    raw = count * 512 * 512 * 2
    tracemalloc.start()
    try:
        volume = load_series(series)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert volume.array.dtype == np.int16 and volume.array.nbytes == raw
    assert peak <= 1.3 * raw + 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for {raw / 2**20} MiB"


@pytest.mark.parametrize(("slope", "dtype"), [(1, np.int16), (0.5, np.float32), (40, np.float32)])
def test_output_dtype_follows_the_rescale(tmp_path: Path, slope: float, dtype: type) -> None:
    slices = write_series(tmp_path / "s", 2)
    for path in (tmp_path / "s").glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = slope
        ds.save_as(path)
    volume = load_series(tmp_path / "s")
    assert volume.array.dtype == dtype  # slope 40 overflows int16: promoted to float32
    for k, ds in enumerate(slices):
        ds.RescaleSlope = slope
        np.testing.assert_allclose(volume.array[k], hu(ds))

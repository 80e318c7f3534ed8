"""NIfTI volumes and label volumes, DICOM-SEG and per-slice PNG export, on real files."""

from __future__ import annotations

import copy
import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from core.errors import ExportError, ImportFormatError, SegStudioError
from core.export.base import read_label_png
from core.export.volume_labels import (
    dicom_seg_classes,
    export_dicom_seg,
    export_label_pngs,
    read_dicom_seg,
)
from core.io.nifti import (
    VolumeIndexRequiredError,
    describe_nifti,
    load_label_nifti,
    load_nifti,
    save_label_nifti,
)
from core.io.probe import describe

NIB_DATA = Path(data_path)
ANATOMICAL = NIB_DATA / "anatomical.nii"       # 3D int16, big-endian, LAS
STANDARD = NIB_DATA / "standard.nii.gz"        # 3D uint8, RAS
EXAMPLE_4D = NIB_DATA / "example4d.nii.gz"     # 4D, 2 volumes
NIFTI2 = NIB_DATA / "example_nifti2.nii.gz"    # NIfTI-2, 4D, 2 volumes


def disk(shape: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


# -- NIfTI volumes -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", [ANATOMICAL, STANDARD])
def test_load_3d_matches_nibabel(path: Path) -> None:
    img = nib.load(path)
    volume = load_nifti(path)
    expected = np.asanyarray(img.dataobj)
    assert volume.array.shape == expected.shape[::-1]
    np.testing.assert_array_equal(volume.array, expected.transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, img.affine)
    zooms = img.header.get_zooms()
    assert volume.spacing == pytest.approx((zooms[2], zooms[1], zooms[0]))
    assert volume.array.dtype.kind in "iu" and volume.array.dtype.isnative
    assert volume.array[0].flags.c_contiguous  # a slice is ready to display as is
    assert volume.source == [str(path)] and volume.warnings == []


def test_4d_refused_without_index_then_picked() -> None:
    with pytest.raises(VolumeIndexRequiredError, match="has 2 volumes; pick one") as info:
        load_nifti(EXAMPLE_4D)
    assert info.value.volumes == 2
    full = np.asanyarray(nib.load(EXAMPLE_4D).dataobj)
    for index in (0, 1, -1):
        volume = load_nifti(EXAMPLE_4D, volume_index=index)
        np.testing.assert_array_equal(volume.array, full[..., index].transpose(2, 1, 0))
    with pytest.raises(SegStudioError, match="volume_index 2 does not exist"):
        load_nifti(EXAMPLE_4D, volume_index=2)


def test_nifti2_volume_pick() -> None:
    img = nib.load(NIFTI2)
    volume = load_nifti(NIFTI2, volume_index=1)
    np.testing.assert_array_equal(
        volume.array, np.asanyarray(img.dataobj)[..., 1].transpose(2, 1, 0)
    )
    np.testing.assert_allclose(volume.affine, img.affine)


def test_nans_replaced_by_minimum_with_warning(tmp_path: Path) -> None:
    data = np.asanyarray(nib.load(ANATOMICAL).dataobj).astype(np.float64)
    data[0, :3, :] = np.nan
    data[1, 1, 1] = -99999.5  # below every real value
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    volume = load_nifti(path)
    assert volume.array.dtype == np.float32
    assert not np.isnan(volume.array).any()
    nan_count = 3 * data.shape[2]
    assert np.count_nonzero(volume.array == -99999.5) == nan_count + 1
    assert len(volume.warnings) == 1
    assert f"had {nan_count:,} NaN voxels, shown as -99999.5" in volume.warnings[0]


def test_all_nan_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "void.nii"
    nib.save(nib.Nifti1Image(np.full((4, 5, 6), np.nan, np.float32), np.eye(4)), path)
    with pytest.raises(SegStudioError, match="no finite value"):
        load_nifti(path)


def test_broken_files_give_clear_errors(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(gzip.compress(ANATOMICAL.read_bytes())[:2000])
    with pytest.raises(SegStudioError):
        load_nifti(truncated)
    with pytest.raises(SegStudioError, match="does not exist"):
        load_nifti(tmp_path / "missing.nii")


def test_describe_reads_header_only() -> None:
    info = describe_nifti(EXAMPLE_4D)
    img = nib.load(EXAMPLE_4D)
    assert info["kind"] == "nifti"
    assert info["shape"] == list(img.shape[:3][::-1])
    assert info["volumes"] == 2
    assert info["orientation"] == "".join(nib.aff2axcodes(img.affine))
    np.testing.assert_allclose(info["affine"], img.affine)
    assert info["dtype"] == str(img.get_data_dtype())
    assert describe_nifti(STANDARD)["orientation"] == "RAS"
    assert describe(STANDARD)["kind"] == "nifti"  # the info command knows NIfTI


# -- NIfTI label volumes -----------------------------------------------------------------------
def test_label_round_trip(tmp_path: Path) -> None:
    volume = load_nifti(ANATOMICAL)
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[10][disk(labels.shape[1:], (20, 15), 6)] = 1
    labels[12:15, 5:9, 3:30] = 7
    folder = tmp_path / "out"
    folder.mkdir()
    path = folder / "labels.nii.gz"
    save_label_nifti(labels, volume.affine, path)
    assert [p.name for p in folder.iterdir()] == ["labels.nii.gz"]  # no temp file left

    img = nib.load(path)
    np.testing.assert_allclose(img.affine, volume.affine)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    assert img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), labels.transpose(2, 1, 0))

    back = load_label_nifti(path, volume)
    assert back.dtype == np.uint8 and back.flags.c_contiguous
    np.testing.assert_array_equal(back, labels)


def test_wide_labels_saved_as_uint16(tmp_path: Path) -> None:
    volume = load_nifti(STANDARD)
    labels = np.zeros(volume.array.shape, np.int32)
    labels[1, 2, 3] = 300
    path = tmp_path / "wide.nii"
    save_label_nifti(labels, volume.affine, path)
    assert nib.load(path).get_data_dtype() == np.uint16
    np.testing.assert_array_equal(load_label_nifti(path, volume), labels)


def test_save_refuses_bad_labels(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    with pytest.raises(ExportError, match="must be 3D"):
        save_label_nifti(np.zeros((4, 4), np.uint8), np.eye(4), tmp_path / "a.nii.gz")
    with pytest.raises(ExportError, match="negative"):
        save_label_nifti(np.full((2, 2, 2), -1, np.int16), np.eye(4), tmp_path / "a.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_label_import_shape_mismatch(tmp_path: Path) -> None:
    volume = load_nifti(ANATOMICAL)
    path = tmp_path / "small.nii.gz"
    save_label_nifti(np.zeros((4, 5, 6), np.uint8), volume.affine, path)
    with pytest.raises(ImportFormatError, match=r"\(4, 5, 6\).*\(25, 41, 33\)"):
        load_label_nifti(path, volume)


def test_label_import_affine_mismatch(tmp_path: Path) -> None:
    volume = load_nifti(ANATOMICAL)
    moved = volume.affine.copy()
    moved[0, 3] += 0.5
    path = tmp_path / "moved.nii.gz"
    save_label_nifti(np.zeros(volume.array.shape, np.uint8), moved, path)
    with pytest.raises(ImportFormatError, match="label affine.*volume affine"):
        load_label_nifti(path, volume)
    # within tolerance: accepted
    nudged = volume.affine.copy()
    nudged[0, 3] += 1e-4
    save_label_nifti(np.zeros(volume.array.shape, np.uint8), nudged, path)
    assert load_label_nifti(path, volume).shape == volume.array.shape


def test_label_import_refuses_fractional_and_negative(tmp_path: Path) -> None:
    volume = load_nifti(STANDARD)
    data = np.zeros(volume.array.shape[::-1], np.float32)
    data[0, 0, 0] = 0.5
    path = tmp_path / "frac.nii"
    nib.save(nib.Nifti1Image(data, volume.affine), path)
    with pytest.raises(ImportFormatError, match="fractional"):
        load_label_nifti(path, volume)
    data = np.zeros(volume.array.shape[::-1], np.int16)
    data[0, 0, 0] = -3
    nib.save(nib.Nifti1Image(data, volume.affine), path)
    with pytest.raises(ImportFormatError, match="negative"):
        load_label_nifti(path, volume)
    data[0, 0, 0] = 4  # whole numbers stored as float are accepted
    nib.save(nib.Nifti1Image(data.astype(np.float32), volume.affine), path)
    assert load_label_nifti(path, volume)[0, 0, 0] == 4


# -- DICOM-SEG ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_series(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """Three slices made from a real CT image: new UIDs, positions 5 mm apart, one series."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    folder = tmp_path_factory.mktemp("ct")
    series_uid = generate_uid()
    origin = [float(v) for v in source.ImagePositionPatient]
    datasets = []
    for z in range(3):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + 5.0 * z]
        ds.save_as(folder / f"ct_{z}.dcm")
        datasets.append(pydicom.dcmread(folder / f"ct_{z}.dcm"))
    return datasets


def two_class_labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[0][disk(shape[1:], (40, 40), 12)] = 2
    labels[2][disk(shape[1:], (80, 70), 20)] = 5
    labels[2][disk(shape[1:], (30, 90), 8)] = 2
    return labels  # slice 1 left empty on purpose


def test_dicom_seg_round_trip(ct_series: list[pydicom.Dataset], tmp_path: Path) -> None:
    import highdicom as hd

    labels = two_class_labels((3, ct_series[0].Rows, ct_series[0].Columns))
    path = tmp_path / "seg.dcm"
    written = export_dicom_seg(labels, ct_series, {2: "liver", 5: "tumour"}, path,
                               colors={2: (255, 0, 0)})
    assert written == [2, 5]

    raw = pydicom.dcmread(path)
    assert raw.Modality == "SEG" and raw.Manufacturer == "SegStudio"
    assert raw.SegmentationType == "BINARY"
    assert [s.SegmentAlgorithmType for s in raw.SegmentSequence] == ["MANUAL", "MANUAL"]
    assert [s.SegmentLabel for s in raw.SegmentSequence] == ["liver", "tumour"]
    referenced = {ref.ReferencedSOPInstanceUID
                  for ref in raw.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert raw.ReferencedSeriesSequence[0].SeriesInstanceUID == ct_series[0].SeriesInstanceUID
    assert referenced == {ds.SOPInstanceUID for ds in ct_series}

    seg = hd.seg.segread(path)
    assert seg.segment_numbers == [1, 2]
    np.testing.assert_array_equal(read_dicom_seg(path, ct_series), labels)
    assert dicom_seg_classes(path) == {2: "liver", 5: "tumour"}


def test_dicom_seg_refusals(ct_series: list[pydicom.Dataset], tmp_path: Path) -> None:
    shape = (3, ct_series[0].Rows, ct_series[0].Columns)
    with pytest.raises(ExportError, match="empty"):
        export_dicom_seg(np.zeros(shape, np.uint8), ct_series, {}, tmp_path / "a.dcm")
    with pytest.raises(ExportError, match="2 slices but the series has 3"):
        export_dicom_seg(np.ones((2, *shape[1:]), np.uint8), ct_series, {}, tmp_path / "a.dcm")
    assert not (tmp_path / "a.dcm").exists()
    path = tmp_path / "seg.dcm"
    export_dicom_seg(two_class_labels(shape), ct_series, {2: "a", 5: "b"}, path)
    other = copy.deepcopy(ct_series)
    for ds in other:
        ds.SOPInstanceUID = generate_uid()
    with pytest.raises(ImportFormatError, match="none of the 3 images"):
        read_dicom_seg(path, other)
    with pytest.raises(ImportFormatError):
        read_dicom_seg(ANATOMICAL, ct_series)


# -- per-slice PNGs ----------------------------------------------------------------------------
@pytest.mark.parametrize("top", [5, 300])
def test_label_pngs(tmp_path: Path, top: int) -> None:
    labels = np.zeros((3, 20, 30), np.uint16)
    labels[1][disk((20, 30), (10, 15), 5)] = top
    files = export_label_pngs(labels, tmp_path / "out", "case")
    assert [f.name for f in files] == ["case_0000.png", "case_0001.png", "case_0002.png"]
    assert sorted(os.listdir(tmp_path / "out")) == [f.name for f in files]
    for z, file in enumerate(files):
        plane = read_label_png(file)
        assert plane.dtype == (np.uint16 if top > 255 else np.uint8)
        np.testing.assert_array_equal(plane, labels[z])

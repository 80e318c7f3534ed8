"""Slice geometry: which anatomical plane each cut of a volume is and how it lies on screen.

Checked on real NIfTI files (nibabel's test data, also re-oriented into all 48 axis orders) and on
DICOM series built from real CT slices, by mapping the voxel centres at the corners of the
displayed slice to RAS+ millimetres with the volume's affine: the screen must show the slice the
way radiology viewers do (axial: anterior up, the patient's right on the left; coronal: superior
up, right on the left; sagittal: superior up, anterior on the left).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_series import make_series
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform
from nibabel.testing import data_path
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from core.io.dicom import load_series
from core.io.nifti import load_nifti
from core.io.orientation import SliceGeometry, slice_geometries
from core.io.volume import Volume

RAS = {"R": 0, "A": 1, "S": 2}
BY_NORMAL = ("sagittal", "coronal", "axial")  # fixed axis mostly along R, A, S
# plane -> (RAS axis that points up on screen, RAS axis that points left on screen)
SCREEN = {"axial": ("A", "R"), "coronal": ("S", "R"), "sagittal": ("S", "A")}
EDGES = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
NIFTI_FILES = ("anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz", "functional.nii",
               "reoriented_anat_moved.nii", "standard.nii.gz")
ALL_AXCODES = [
    tuple(letters[i] for letters, i in zip(perm, flips, strict=True))
    for perm in itertools.permutations((("R", "L"), ("A", "P"), ("S", "I")))
    for flips in itertools.product((0, 1), repeat=3)
]


# -- the check -----------------------------------------------------------------------------------
def _ras(affine: np.ndarray, index: list[int]) -> np.ndarray:
    """RAS+ mm of the centre of voxel ``index`` = (z, y, x) (the affine takes x, y, z)."""
    z, y, x = index
    return affine[:3, :3] @ np.array([x, y, z], np.float64) + affine[:3, 3]


def _corners(geometry: SliceGeometry, shape: tuple[int, ...], affine: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS of the voxel centres drawn at the top-left, top-right and bottom-left of the screen
    for the middle slice: the top row is row 0 unless rows_up, the left column is column 0 unless
    cols_left."""
    axis, row_axis, col_axis = geometry.axes
    rows, cols = shape[row_axis], shape[col_axis]
    top, bottom = (rows - 1, 0) if geometry.rows_up else (0, rows - 1)
    left, right = (cols - 1, 0) if geometry.cols_left else (0, cols - 1)

    def at(row: int, col: int) -> np.ndarray:
        index = [0, 0, 0]
        index[axis], index[row_axis], index[col_axis] = shape[axis] // 2, row, col
        return _ras(affine, index)

    return at(top, left), at(top, right), at(bottom, left)


def check_geometries(volume: Volume) -> tuple[SliceGeometry, ...]:
    """Assert that every cut of ``volume`` is named, spaced and laid out radiologically."""
    shape, affine = volume.shape, volume.affine
    directions = [affine[:3, 2 - a] for a in range(3)]  # array axis a -> its RAS step
    from_affine = slice_geometries(shape, affine)
    given = slice_geometries(shape, affine, volume.spacing)
    assert from_affine == given or all(  # spacing from the affine's norms = the header's
        (a.axes, a.rows_up, a.cols_left, a.name) == (b.axes, b.rows_up, b.cols_left, b.name)
        and a.row_spacing == pytest.approx(b.row_spacing, rel=1e-4)
        and a.col_spacing == pytest.approx(b.col_spacing, rel=1e-4)
        for a, b in zip(from_affine, given, strict=True))
    assert len(given) == 3
    for axis, geometry in enumerate(given):
        assert geometry.axis == axis and geometry.axes[0] == axis
        assert sorted(geometry.axes) == [0, 1, 2]
        _, row_axis, col_axis = geometry.axes
        assert geometry.name == BY_NORMAL[int(np.argmax(np.abs(directions[axis])))]
        assert geometry.edges == EDGES[geometry.name]
        assert geometry.row_spacing == pytest.approx(volume.spacing[row_axis])
        assert geometry.col_spacing == pytest.approx(volume.spacing[col_axis])
        assert geometry.aspect == pytest.approx(volume.spacing[col_axis] / volume.spacing[row_axis])
        assert geometry.slice_shape(shape) == (shape[row_axis], shape[col_axis])

        up, left = (RAS[letter] for letter in SCREEN[geometry.name])
        top_left, top_right, bottom_left = _corners(geometry, shape, affine)
        if shape[row_axis] > 1:
            assert top_left[up] > bottom_left[up], (geometry, "top is not more " + SCREEN[
                geometry.name][0])
        if shape[col_axis] > 1:
            assert top_left[left] > top_right[left], (geometry, "left is not more " + SCREEN[
                geometry.name][1])
        # the rows run along the in-plane axis closest to the screen's vertical direction
        unit_row = directions[row_axis] / np.linalg.norm(directions[row_axis])
        unit_col = directions[col_axis] / np.linalg.norm(directions[col_axis])
        assert abs(unit_row[up]) >= abs(unit_col[up]) - 1e-9, geometry
    return given


# -- NIfTI ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NIFTI_FILES)
def test_nibabel_files_are_laid_out_radiologically(name: str) -> None:
    volume = load_nifti(Path(data_path) / name, volume_index=0)
    check_geometries(volume)


def test_anatomical_nii_gives_the_expected_cuts() -> None:
    """anatomical.nii is LAS with 2 mm voxels: array (Z, Y, X) = (S, A, L)."""
    volume = load_nifti(Path(data_path) / "anatomical.nii", volume_index=0)
    assert nib.aff2axcodes(volume.affine) == ("L", "A", "S")
    axial, coronal, sagittal = check_geometries(volume)
    assert (axial.name, coronal.name, sagittal.name) == ("axial", "coronal", "sagittal")
    # axial (z fixed): rows = y (anterior grows with the row: draw row 0 at the bottom),
    # columns = x (towards the patient's left: left of screen = column 0 = right)
    assert axial.axes == (0, 1, 2) and axial.rows_up and not axial.cols_left
    # coronal (y fixed): rows = z (superior grows: bottom), columns = x
    assert coronal.axes == (1, 0, 2) and coronal.rows_up and not coronal.cols_left
    # sagittal (x fixed): rows = z, columns = y (anterior grows: column 0 on the right)
    assert sagittal.axes == (2, 0, 1) and sagittal.rows_up and sagittal.cols_left
    assert all(g.row_spacing == g.col_spacing == 2.0 for g in (axial, coronal, sagittal))


def test_oblique_anisotropic_example4d() -> None:
    volume = load_nifti(Path(data_path) / "example4d.nii.gz", volume_index=0)
    assert not np.allclose(volume.affine[1, 2], 0)  # really oblique
    axial, coronal, sagittal = check_geometries(volume)
    assert (axial.name, coronal.name, sagittal.name) == ("axial", "coronal", "sagittal")
    assert coronal.row_spacing == pytest.approx(volume.spacing[0])  # 2.2 mm slices
    assert coronal.col_spacing == pytest.approx(volume.spacing[2])
    assert coronal.aspect == pytest.approx(2.0 / 2.2, rel=1e-4)


def _reoriented(tmp_path: Path, name: str, codes: tuple[str, ...]) -> Volume:
    """A nibabel test image with its voxel axes permuted/flipped to ``codes``, read back."""
    img = nib.load(Path(data_path) / name)
    if img.ndim == 4:
        img = nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine)
    moved = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(codes)))
    path = tmp_path / f"{name.split('.')[0]}_{''.join(codes)}.nii"
    nib.save(moved, path)
    volume = load_nifti(path, volume_index=0)
    assert nib.aff2axcodes(volume.affine) == codes
    return volume


@pytest.mark.parametrize("name", ["anatomical.nii", "functional.nii", "example4d.nii.gz"])
def test_every_axis_order_is_laid_out_radiologically(tmp_path: Path, name: str) -> None:
    """The same anatomy stored in all 48 voxel orders: each cut gets the plane its fixed axis
    lies along and the same radiological screen layout."""
    shown: dict[str, set[tuple[float, ...]]] = {"axial": set(), "coronal": set(), "sagittal": set()}
    for codes in ALL_AXCODES:
        volume = _reoriented(tmp_path, name, codes)
        geometries = check_geometries(volume)
        names = sorted(g.name for g in geometries)
        assert names == ["axial", "coronal", "sagittal"], codes
        for g in geometries:
            expected = {"sagittal": "R", "coronal": "A", "axial": "S"}[g.name]
            assert codes[2 - g.axis] in (expected, {"R": "L", "A": "P", "S": "I"}[expected])
            # what the screen shows does not depend on the storage order: the displayed
            # slice spans the same anatomy from top to bottom and from left to right
            top_left, top_right, bottom_left = _corners(g, volume.shape, volume.affine)
            up, left = (RAS[letter] for letter in SCREEN[g.name])
            shown[g.name].add((round(top_left[up] - bottom_left[up], 3),
                               round(top_left[left] - top_right[left], 3)))
    for plane, extents in shown.items():
        assert len(extents) == 1, (plane, extents)  # one screen extent per plane for all 48


# -- DICOM ---------------------------------------------------------------------------------------
def _write_oriented_series(folder: Path, orientation: tuple[float, ...],
                           count: int = 5, step: float = 3.0) -> Path:
    """CT_small.dcm copies acquired with ``orientation`` (ImageOrientationPatient, LPS), stacked
    along its normal ``step`` mm apart, written in shuffled file order."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row_dir, col_dir)
    origin = np.array([float(v) for v in source.ImagePositionPatient])
    folder.mkdir(parents=True)
    uid = generate_uid()
    for n, k in enumerate((3, 0, 4, 1, 2)[:count]):
        ds = source.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [float(v) for v in origin + k * step * normal]
        ds.InstanceNumber = k + 1
        ds.SliceThickness = step
        ds.save_as(folder / f"im{n:03d}.dcm")
    return folder


def test_dicom_axial_series(tmp_path: Path) -> None:
    volume = load_series(make_series(tmp_path / "ct"))
    assert volume.shape == (4, 128, 128)
    axial, coronal, sagittal = check_geometries(volume)
    assert (axial.name, coronal.name, sagittal.name) == ("axial", "coronal", "sagittal")
    # DICOM rows run posterior and columns run to the patient's left: shown as stored
    assert axial.axes == (0, 1, 2) and not axial.rows_up and not axial.cols_left
    # coronal and sagittal: slices are stored inferior -> superior, so row 0 goes to the bottom
    assert coronal.axes == (1, 0, 2) and coronal.rows_up
    assert sagittal.axes == (2, 0, 1) and sagittal.rows_up and not sagittal.cols_left
    pixel = float(pydicom.dcmread(next((tmp_path / "ct").iterdir())).PixelSpacing[0])
    assert axial.row_spacing == axial.col_spacing == pytest.approx(pixel)
    assert coronal.row_spacing == sagittal.row_spacing == pytest.approx(2.5)
    assert coronal.aspect == pytest.approx(pixel / 2.5)


@pytest.mark.parametrize(("orientation", "acquired"), [
    ((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), "sagittal"),
    ((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), "coronal"),
    ((1.0, 0.0, 0.0, 0.0, np.cos(0.35), -np.sin(0.35)), "axial"),  # 20 deg tilt
    ((0.0, np.cos(0.5), np.sin(0.5), 0.0, np.sin(0.5), -np.cos(0.5)), "sagittal"),  # oblique
])
def test_dicom_series_in_other_orientations(tmp_path: Path, orientation: tuple[float, ...],
                                            acquired: str) -> None:
    volume = load_series(_write_oriented_series(tmp_path / "s", orientation))
    assert volume.shape == (5, 128, 128)
    geometries = check_geometries(volume)
    assert geometries[0].name == acquired  # the acquisition plane is the stored slices
    assert sorted(g.name for g in geometries) == ["axial", "coronal", "sagittal"]
    assert volume.spacing[0] == pytest.approx(3.0)  # the slice step, seen in the other cuts
    assert 3.0 in {round(g.row_spacing, 6) for g in geometries[1:]} | {
        round(g.col_spacing, 6) for g in geometries[1:]}
    if acquired == "sagittal" and orientation[1] == 1.0:
        # a plain sagittal acquisition (rows go down = inferior, columns go posterior) is shown
        # exactly as stored
        assert geometries[0].axes == (0, 1, 2)
        assert not geometries[0].rows_up and not geometries[0].cols_left


# -- edge cases ----------------------------------------------------------------------------------
def test_rows_follow_the_direction_closest_to_vertical_not_the_longest_step() -> None:
    """An oblique sagittal cut whose in-plane voxels are very anisotropic: the row axis must be
    the one pointing closer to superior (0.8) even though the other one (0.6 superior) is ten
    times longer per voxel."""
    affine = np.eye(4)
    affine[:3, 0] = (1.0, 0.0, 0.0)  # x: right
    affine[:3, 1] = 5.0 * np.array([0.0, 0.8, 0.6])  # y: mostly anterior, 5 mm
    affine[:3, 2] = 0.5 * np.array([0.0, -0.6, 0.8])  # z: mostly superior, 0.5 mm
    volume = Volume(np.zeros((30, 20, 10), np.int16), affine, (0.5, 5.0, 1.0))
    sagittal = check_geometries(volume)[2]
    assert sagittal.name == "sagittal"
    assert sagittal.axes == (2, 0, 1)
    assert sagittal.row_spacing == 0.5 and sagittal.col_spacing == 5.0


def test_a_stack_without_affine_has_a_plain_layout() -> None:
    geometries = slice_geometries((7, 11, 13))
    assert [g.name for g in geometries] == ["XY", "XZ", "YZ"]
    assert [g.axes for g in geometries] == [(0, 1, 2), (1, 0, 2), (2, 0, 1)]
    assert [g.axis for g in geometries] == [0, 1, 2]
    for g in geometries:
        assert not g.rows_up and not g.cols_left
        assert g.row_spacing == g.col_spacing == g.aspect == 1.0
        assert g.edges == ("", "", "", "")
    assert [g.slice_shape((7, 11, 13)) for g in geometries] == [(11, 13), (7, 13), (7, 11)]


def test_a_stack_with_spacing_keeps_it() -> None:
    xy, xz, yz = slice_geometries((7, 11, 13), spacing=(3.0, 0.5, 0.25))
    assert (xy.row_spacing, xy.col_spacing) == (0.5, 0.25)
    assert (xz.row_spacing, xz.col_spacing) == (3.0, 0.25)
    assert (yz.row_spacing, yz.col_spacing) == (3.0, 0.5)
    assert yz.aspect == pytest.approx(0.5 / 3.0)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf")])
def test_unusable_spacing_counts_as_one(bad: float) -> None:
    xy, xz, _ = slice_geometries((4, 5, 6), spacing=(bad, 2.0, 3.0))
    assert (xy.row_spacing, xy.col_spacing) == (2.0, 3.0)
    assert xz.row_spacing == 1.0
    coronal = slice_geometries((4, 5, 6), np.diag([3.0, 2.0, 1.0, 1.0]), (bad, 2.0, 3.0))[1]
    assert coronal.name == "coronal" and coronal.row_spacing == 1.0


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 4, 5), ()])
def test_a_shape_that_is_not_3d_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        slice_geometries(shape)
    with pytest.raises(ValueError):
        slice_geometries(shape, np.eye(4))

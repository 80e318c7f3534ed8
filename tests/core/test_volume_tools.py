"""Volume tools: slice interpolation, threshold fill on real CT values, 3-D components."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tifffile
from skimage import data

from core.annotation.session import EditSession
from core.annotation.volume_tools import (
    connected_components_3d,
    interpolate_between_slices,
    keep_largest_component,
    remove_small_components_3d,
    threshold_fill,
)
from core.project.store import Project

SHAPE = (11, 64, 64)


def _disk(shape: tuple[int, int], cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _two_disks(r0: float, r1: float, c0=(32, 32), c1=(32, 32)) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels[0][_disk(SHAPE[1:], *c0, r0)] = 1
    labels[10][_disk(SHAPE[1:], *c1, r1)] = 1
    return labels


# -- interpolation ---------------------------------------------------------------------------------
def test_interpolating_disks_of_different_radii_grows_them_monotonically() -> None:
    labels = _two_disks(8, 20)
    original = labels.copy()
    edit = interpolate_between_slices(labels, 1)
    assert edit is not None
    areas = [(labels[z] == 1).sum() for z in range(11)]
    assert all(a < b for a, b in itertools.pairwise(areas))
    radius_5 = np.sqrt(areas[5] / np.pi)
    assert abs(radius_5 - 14) <= 1
    row = np.flatnonzero(labels[5, 32] == 1)  # the diameter through the centre, too
    assert abs((row[-1] - row[0]) / 2 - 14) <= 1
    np.testing.assert_array_equal(labels[0], original[0])  # keys untouched
    np.testing.assert_array_equal(labels[10], original[10])
    assert edit.region[0] == slice(1, 10)  # only the slices in between
    edit.revert(labels)
    np.testing.assert_array_equal(labels, original)


def test_interpolating_a_shifted_disk_moves_its_centroid_linearly() -> None:
    # overlapping keys: shape-based interpolation morphs, it does not translate disjoint shapes
    labels = _two_disks(12, 12, c0=(26, 26), c1=(32, 34))
    interpolate_between_slices(labels, 1)
    for z in range(11):
        ys, xs = np.nonzero(labels[z] == 1)
        t = z / 10
        assert abs(ys.mean() - (26 + 6 * t)) < 0.5
        assert abs(xs.mean() - (26 + 8 * t)) < 0.5


def test_interpolation_keeps_other_classes_and_fills_only_background() -> None:
    labels = _two_disks(12, 12)
    labels[3:8, 28:36, 28:36] = 2
    interpolate_between_slices(labels, 1)
    assert (labels[3:8, 28:36, 28:36] == 2).all()
    assert (labels[5] == 1).sum() > 300


def test_interpolation_along_another_axis_and_preview() -> None:
    labels = np.moveaxis(_two_disks(8, 16), 0, 2).copy()  # keys at x = 0 and x = 10
    original = labels.copy()
    preview = interpolate_between_slices(labels, 1, axis=2, preview=True)
    np.testing.assert_array_equal(labels, original)  # preview leaves labels alone
    assert preview is not None and preview.region[2] == slice(1, 10)
    edit = interpolate_between_slices(labels, 1, axis=-1)
    assert edit is not None and np.array_equal(edit.new, preview.new)
    expected = _two_disks(8, 16)
    interpolate_between_slices(expected, 1)
    np.testing.assert_array_equal(labels, np.moveaxis(expected, 0, 2))


def test_interpolation_needs_two_keys() -> None:
    labels = np.zeros(SHAPE, np.uint8)
    labels[4][_disk(SHAPE[1:], 32, 32, 10)] = 1
    assert interpolate_between_slices(labels, 1) is None
    labels[5][_disk(SHAPE[1:], 32, 32, 10)] = 1
    assert interpolate_between_slices(labels, 1) is None  # adjacent keys: nothing in between


def test_interpolation_between_three_keys_and_a_limited_range() -> None:
    labels = _two_disks(10, 10)
    labels[4][_disk(SHAPE[1:], 32, 32, 4)] = 1
    limited = labels.copy()
    interpolate_between_slices(labels, 1)
    assert all((labels[z] == 1).any() for z in range(11))
    assert (labels[2] == 1).sum() > (labels[3] == 1).sum()  # shrinking toward the small key
    interpolate_between_slices(limited, 1, start=4)  # keys 4 and 10 only
    assert not (limited[1:4] == 1).any()
    assert all((limited[z] == 1).any() for z in range(4, 11))


# -- threshold fill on real CT values --------------------------------------------------------------
@pytest.fixture(scope="module")
def ct_volume() -> np.ndarray:
    pydicom = pytest.importorskip("pydicom")
    path = pydicom.data.get_testdata_file("CT_small.dcm", download=False)
    if path is None:
        pytest.skip("pydicom's CT_small.dcm test file is not installed")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.stack([hu] * 5)


def test_threshold_fill_of_bone_inside_a_box_matches_numpy(ct_volume: np.ndarray) -> None:
    labels = np.zeros(ct_volume.shape, np.uint8)
    labels[:, 60:70, :] = 2  # another class, partly in the box and over bone
    original = labels.copy()
    box = (slice(1, 4), slice(30, 80), slice(20, 90))
    edit = threshold_fill(labels, ct_volume, 300, np.inf, 3, box=box)
    assert edit is not None
    expected = original.copy()
    bone = (ct_volume >= 300) & (original == 0)
    expected[box][bone[box]] = 3
    np.testing.assert_array_equal(labels, expected)
    assert (labels[box] == 3).sum() > 0
    outside = np.ones(labels.shape, bool)
    outside[box] = False
    assert not (labels[outside] == 3).any()
    assert (labels[:, 60:70] == 2).all()  # other class kept
    edit.revert(labels)
    np.testing.assert_array_equal(labels, original)


def test_threshold_fill_overwrite_and_within_mask(ct_volume: np.ndarray) -> None:
    labels = np.zeros(ct_volume.shape, np.uint16)
    labels[:, 60:70, :] = 2
    within = np.zeros(ct_volume.shape, bool)
    within[2, 30:80, 20:90] = True
    edit = threshold_fill(labels, ct_volume, 300, 5000, 300, within=within, overwrite=True)
    assert edit is not None and edit.region[0] == slice(2, 3)
    expected = np.where(within & (ct_volume >= 300) & (ct_volume <= 5000), 300, 0)
    expected[:, 60:70][expected[:, 60:70] == 0] = 2
    np.testing.assert_array_equal(labels, expected)
    assert (labels[2, 60:70] == 300).any()  # overwrite reached the other class
    preview = threshold_fill(labels, ct_volume, -5000, 5000, 7, within=within, preview=True)
    assert preview is not None and not (labels == 7).any()
    assert threshold_fill(labels, ct_volume, 0, 1, 1, within=np.zeros_like(within)) is None


def test_threshold_fill_rejects_a_value_too_large() -> None:
    with pytest.raises(ValueError):
        threshold_fill(np.zeros((2, 3, 3), np.uint8), np.zeros((2, 3, 3)), 0, 1, 300)


# -- 3-D connected components ----------------------------------------------------------------------
def _blobs(diagonal: bool) -> np.ndarray:
    labels = np.zeros((10, 12, 12), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    if diagonal:
        labels[4:6, 4:6, 4:6] = 1  # touches the first blob at one corner only
    else:
        labels[6:9, 6:11, 6:11] = 1
    return labels


def test_components_count_separate_and_corner_touching_blobs() -> None:
    components, count = connected_components_3d(_blobs(diagonal=False), 1)
    assert count == 2 and components.dtype == np.int32 and components.shape == (10, 12, 12)
    assert set(np.unique(components)) == {0, 1, 2}
    assert connected_components_3d(_blobs(diagonal=True), 1, connectivity=26)[1] == 1
    assert connected_components_3d(_blobs(diagonal=True), 1, connectivity=18)[1] == 2
    assert connected_components_3d(_blobs(diagonal=True), 1, connectivity=6)[1] == 2
    assert connected_components_3d(_blobs(diagonal=True), 5)[1] == 0
    with pytest.raises(ValueError):
        connected_components_3d(_blobs(diagonal=True), 1, connectivity=8)


def test_keep_largest_removes_the_small_blob_only() -> None:
    labels = _blobs(diagonal=False)
    labels[0, 10:, 10:] = 2
    original = labels.copy()
    edit = keep_largest_component(labels, 1)
    assert edit is not None and edit.count == 27
    assert not (labels[1:4, 1:4, 1:4] == 1).any()
    assert (labels[6:9, 6:11, 6:11] == 1).all() and (labels[0, 10:, 10:] == 2).all()
    assert keep_largest_component(labels, 1) is None  # one component left
    edit.revert(labels)
    np.testing.assert_array_equal(labels, original)
    assert keep_largest_component(_blobs(diagonal=True), 1) is None  # one under 26-connectivity
    assert keep_largest_component(_blobs(diagonal=True), 1, connectivity=6) is not None


def test_remove_small_components() -> None:
    labels = _blobs(diagonal=False)
    labels[9, 0, 0] = 1
    assert remove_small_components_3d(labels, 1, 1) is None
    edit = remove_small_components_3d(labels, 1, 28)
    assert edit is not None and edit.count == 28
    assert (labels == 1).sum() == 75


# -- session ---------------------------------------------------------------------------------------
def test_session_volume_tools_are_one_undo_step_each(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([data.camera()[:64, :64]] * 11), photometric="minisblack")
    with Project.create(tmp_path / "project") as project:
        item = project.item(project.add_items([path]).added_ids[0])
        session = EditSession(project, item)
        assert session.labels.shape == SHAPE
        session.labels[...] = _two_disks(8, 16)
        start = session.labels.copy()
        assert session.interpolate_slices(1) is not None
        assert len(session.history) == 1
        image = np.stack([data.camera()[:64, :64]] * 11).astype(np.float32)
        assert session.threshold_fill(image, 200, 255, 2, box=(slice(0, 3),)) is not None
        assert len(session.history) == 2
        session.undo()
        session.undo()
        np.testing.assert_array_equal(session.labels, start)
        session.labels[2, 0:3, 0:3] = 1
        assert session.keep_largest_component(1) is not None
        assert session.remove_small_components(1, 10_000) is not None
        assert not (session.labels == 1).any() and len(session.history) == 2
        session.close()
        np.testing.assert_array_equal(project.load_mask(item), session.labels)

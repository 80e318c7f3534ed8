"""Edits as small diffs: apply/revert, journal records, trimming, merging a drag, memory."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from skimage import data

from core.annotation.edits import Edit, diff_region, merge_edits
from core.annotation.tools import PaintRule, paint_segment


@pytest.fixture
def coin_labels() -> np.ndarray:
    """A real label map: the coins photo cut into three classes by grey level."""
    coins = data.coins()
    return np.digitize(coins, [90, 160]).astype(np.uint8)  # 0, 1, 2


def _edit_for(before: np.ndarray, after: np.ndarray) -> Edit:
    region = tuple(slice(0, n) for n in before.shape)
    edit = diff_region(before, after, region)
    assert edit is not None
    return edit


def test_apply_revert_and_inverse_on_a_real_label_map(coin_labels: np.ndarray) -> None:
    before = coin_labels
    after = before.copy()
    after[40:120, 60:200][before[40:120, 60:200] == 1] = 7
    edit = _edit_for(before, after)
    assert edit.count == int((before != after).sum())
    assert set(np.unique(edit.old)) == {1} and set(np.unique(edit.new)) == {7}

    labels = before.copy()
    edit.apply(labels)
    np.testing.assert_array_equal(labels, after)
    edit.apply(labels)  # idempotent
    np.testing.assert_array_equal(labels, after)
    edit.revert(labels)
    np.testing.assert_array_equal(labels, before)

    inverse = edit.inverse()
    np.testing.assert_array_equal(inverse.old, edit.new)
    np.testing.assert_array_equal(inverse.new, edit.old)
    assert inverse.region == edit.region
    labels = after.copy()
    inverse.apply(labels)
    np.testing.assert_array_equal(labels, before)
    inverse.revert(labels)
    np.testing.assert_array_equal(labels, after)


def test_bbox_2d_is_the_last_two_axes_of_the_region() -> None:
    labels = np.zeros((3, 50, 60), np.uint8)
    edit = paint_segment(labels, (20, 10), (30, 12), 2, PaintRule(4), plane=(1,))
    assert edit is not None
    assert edit.region[0] == slice(1, 2)
    y0, y1, x0, x1 = edit.bbox_2d()
    ys, xs = np.nonzero(labels[1])
    assert (y0, y1, x0, x1) == (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)


def _round_trip(edit: Edit) -> Edit:
    record = edit.to_record()
    assert isinstance(record["header"], str)
    assert isinstance(record["changed"], bytes) and isinstance(record["values"], bytes)
    json.loads(record["header"])  # plain JSON, no pickle
    return Edit.from_record(record["header"], record["changed"], record["values"])


def _assert_same_edit(a: Edit, b: Edit) -> None:
    assert a.region == b.region
    assert a.changed.shape == b.changed.shape
    np.testing.assert_array_equal(a.changed, b.changed)
    assert a.old.dtype == b.old.dtype and a.new.dtype == b.new.dtype
    np.testing.assert_array_equal(a.old, b.old)
    np.testing.assert_array_equal(a.new, b.new)


def test_record_round_trip_uint8(coin_labels: np.ndarray) -> None:
    labels = coin_labels.copy()
    before = labels.copy()
    edit = paint_segment(labels, (37.3, 81.6), (140.2, 101.9), 6.5, PaintRule(3))
    assert edit is not None
    # A region whose pixel count is not a multiple of 8 exercises the bit-packing tail.
    assert edit.changed.size % 8 != 0
    decoded = _round_trip(edit)
    _assert_same_edit(edit, decoded)
    fresh = before.copy()
    decoded.apply(fresh)
    np.testing.assert_array_equal(fresh, labels)


def test_record_round_trip_uint16_keeps_values_above_255() -> None:
    before = np.zeros((30, 41), np.uint16)
    before[5:9, 7:30] = 300
    after = before.copy()
    after[3:20, 10:13] = 65535
    after[25, 40] = 1000
    edit = _edit_for(before, after)
    decoded = _round_trip(edit)
    assert decoded.old.dtype == np.uint16
    _assert_same_edit(edit, decoded)
    assert decoded.new.max() == 65535 and 300 in decoded.old
    labels = before.copy()
    decoded.apply(labels)
    np.testing.assert_array_equal(labels, after)
    decoded.revert(labels)
    np.testing.assert_array_equal(labels, before)


def test_record_round_trip_of_a_stack_plane_edit() -> None:
    stack = np.zeros((5, 64, 48), np.uint8)
    stack[2] = np.digitize(data.camera()[::8, ::10][:64, :48], [100]).astype(np.uint8)
    expected = stack.copy()
    edit = paint_segment(stack, (10, 10), (40, 55), 4, PaintRule(9), plane=(3,))
    assert edit is not None and len(edit.region) == 3
    assert edit.region[0] == slice(3, 4)
    decoded = _round_trip(edit)
    _assert_same_edit(edit, decoded)
    decoded.apply(expected)
    np.testing.assert_array_equal(expected, stack)
    # Only plane 3 was touched.
    assert (expected[3] == 9).any() and not (np.delete(expected, 3, axis=0) == 9).any()


def test_diff_region_trims_to_the_changed_bbox_and_offsets_it() -> None:
    before = np.zeros((100, 120), np.uint8)
    after = before.copy()
    after[30:34, 50:53] = 2
    after[40, 70] = 5
    region = (slice(10, 110), slice(200, 320))  # where the block sits in a larger array
    edit = diff_region(before, after, region)
    assert edit is not None
    assert edit.region == (slice(40, 51), slice(250, 271))
    assert edit.changed.shape == (11, 21)
    assert edit.count == 4 * 3 + 1
    assert edit.changed[0, 0] and edit.changed[10, 20] and not edit.changed[5, 5]
    assert sorted(edit.new.tolist()) == [2] * 12 + [5]

    big = np.zeros((130, 330), np.uint8)
    big[region] = before
    edit.apply(big)
    np.testing.assert_array_equal(big[region], after)


def test_diff_region_without_change_is_none() -> None:
    block = data.camera()[:50, :50]
    assert diff_region(block, block.copy(), (slice(0, 50), slice(0, 50))) is None


def test_diff_region_trims_a_3d_block() -> None:
    before = np.zeros((4, 20, 20), np.uint8)
    after = before.copy()
    after[2, 5:7, 8:12] = 1
    edit = diff_region(before, after, (slice(0, 4), slice(0, 20), slice(0, 20)))
    assert edit is not None
    assert edit.region == (slice(2, 3), slice(5, 7), slice(8, 12))


def test_merge_of_an_overlapping_drag_keeps_pre_drag_values(coin_labels: np.ndarray) -> None:
    labels = coin_labels.copy()
    pre = labels.copy()
    rule = PaintRule(5)
    # A drag that goes out and comes back over the same pixels.
    points = [(60, 60), (110, 70), (60, 62), (120, 90)]
    steps = [paint_segment(labels, points[0], points[0], 7, rule)]
    for p0, p1 in itertools.pairwise(points):
        steps.append(paint_segment(labels, p0, p1, 7, rule))
    steps = [s for s in steps if s is not None]
    assert len(steps) >= 3
    merged = merge_edits(steps, labels)
    assert merged is not None
    one_edit = _edit_for(pre, labels)  # the drag as if it were a single edit
    assert merged.region == one_edit.region
    np.testing.assert_array_equal(merged.changed, one_edit.changed)
    np.testing.assert_array_equal(merged.old, pre[merged.region][merged.changed])
    np.testing.assert_array_equal(merged.new, labels[merged.region][merged.changed])
    assert merged.count == sum(s.count for s in steps)  # no pixel changed twice (5 over 5 is a no-op)
    single = pre.copy()
    merged.apply(single)
    np.testing.assert_array_equal(single, labels)
    merged.revert(single)
    np.testing.assert_array_equal(single, pre)


def test_merge_of_a_pixel_painted_twice_keeps_its_first_old_value() -> None:
    labels = np.full((40, 40), 2, np.uint8)
    pre = labels.copy()
    first = paint_segment(labels, (20, 20), (20, 20), 5, PaintRule(3))
    second = paint_segment(labels, (22, 20), (22, 20), 5, PaintRule(4))  # repaints most of it
    assert first is not None and second is not None
    overlap = (labels == 4) & (np.abs(np.arange(40)[None, :] - 20) ** 2
                               + (np.arange(40)[:, None] - 20) ** 2 <= 25)
    assert overlap.sum() > 40  # a real overlap: 2 -> 3 -> 4
    assert set(np.unique(second.old)) == {2, 3}
    merged = merge_edits([first, second], labels)
    assert merged is not None
    assert set(np.unique(merged.old)) == {2}  # the pre-drag value, never the intermediate 3
    assert set(np.unique(merged.new)) == {3, 4}
    assert merged.count == int((labels != pre).sum())
    merged.revert(labels)
    np.testing.assert_array_equal(labels, pre)


def test_merge_drops_pixels_changed_and_changed_back() -> None:
    labels = np.zeros((50, 50), np.uint8)
    labels[:, 25:] = 2
    pre = labels.copy()
    brush = paint_segment(labels, (20, 25), (30, 25), 6, PaintRule(1))
    # The eraser (no preserve) returns the brushed background pixels to 0 and clears class 2 too.
    eraser = paint_segment(labels, (20, 25), (30, 25), 6, PaintRule(0))
    assert brush is not None and eraser is not None
    merged = merge_edits([brush, eraser], labels)
    assert merged is not None
    # Net effect: only the class-2 pixels under the brush went 2 -> 0.
    assert set(np.unique(merged.old)) == {2} and set(np.unique(merged.new)) == {0}
    assert merged.count == int((pre != labels).sum()) < brush.count
    assert merged.region[1].start >= 25  # trimmed to the pixels that really changed


def test_merge_of_nothing_or_a_full_round_trip_is_none() -> None:
    labels = np.zeros((20, 20), np.uint8)
    assert merge_edits([], labels) is None
    there = paint_segment(labels, (5, 5), (5, 5), 3, PaintRule(1))
    back = paint_segment(labels, (5, 5), (5, 5), 3, PaintRule(0))
    assert there is not None and back is not None
    assert merge_edits([there, back], labels) is None


def test_merge_in_a_stack_keeps_the_plane() -> None:
    stack = np.zeros((3, 30, 30), np.uint8)
    steps = [paint_segment(stack, (5, 5), (20, 5), 2, PaintRule(1), plane=(2,)),
             paint_segment(stack, (20, 5), (20, 25), 2, PaintRule(1), plane=(2,))]
    merged = merge_edits([s for s in steps if s is not None], stack)
    assert merged is not None
    assert merged.region[0] == slice(2, 3)
    empty = np.zeros_like(stack)
    merged.apply(empty)
    np.testing.assert_array_equal(empty, stack)


def test_a_stroke_on_a_4k_label_map_stores_far_less_than_the_array() -> None:
    labels = np.zeros((4096, 4096), np.uint8)
    # A diagonal drag across the whole image: its bounding box is nearly the whole image.
    points = [(100 + i * 390, 100 + i * 385) for i in range(11)]
    steps = [paint_segment(labels, points[0], points[0], 8, PaintRule(1))]
    for p0, p1 in itertools.pairwise(points):
        steps.append(paint_segment(labels, p0, p1, 8, PaintRule(1)))
    merged = merge_edits([s for s in steps if s is not None], labels)
    assert merged is not None
    height = merged.region[0].stop - merged.region[0].start
    assert height > 3800  # the bbox really spans the image
    assert merged.nbytes < labels.nbytes / 6
    # A short local stroke costs a tiny fraction.
    local = paint_segment(labels, (2000, 300), (2100, 320), 10, PaintRule(2))
    assert local is not None and local.nbytes < labels.nbytes / 1000

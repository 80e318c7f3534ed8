"""Painting tools: brush/eraser capsules, flood fill, polygon fill, plane replacement."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from skimage import data, measure

from core.annotation.tools import (
    PaintRule,
    fill_polygon,
    flood_fill,
    paint_segment,
    replace_labels,
)


def _disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _distance_to_segment(shape: tuple[int, int], p0: tuple[float, float],
                         p1: tuple[float, float]) -> np.ndarray:
    """Distance of every pixel centre to the segment, by sampling it densely (independent of
    the projection formula the tool uses)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ts = np.linspace(0.0, 1.0, 2001)
    best = np.full(shape, np.inf)
    for t in ts:
        x = p0[0] + t * (p1[0] - p0[0])
        y = p0[1] + t * (p1[1] - p0[1])
        np.minimum(best, np.hypot(xx - x, yy - y), out=best)
    return best


# -- brush / eraser ------------------------------------------------------------------------------
@pytest.mark.parametrize(("cx", "cy", "r"), [(20, 15, 3), (20.3, 15.7, 5.2), (31.5, 30.5, 9.0)])
def test_a_dab_paints_exactly_the_analytic_disc(cx: float, cy: float, r: float) -> None:
    labels = np.zeros((48, 64), np.uint8)
    edit = paint_segment(labels, (cx, cy), (cx, cy), r, PaintRule(3))
    expected = _disc(labels.shape, cx, cy, r)
    np.testing.assert_array_equal(labels == 3, expected)
    assert edit is not None and edit.count == int(expected.sum())
    ys, xs = np.nonzero(expected)
    assert edit.region == (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))


def test_a_radius_3_dab_has_the_gauss_circle_count() -> None:
    labels = np.zeros((20, 20), np.uint8)
    paint_segment(labels, (10, 10), (10, 10), 3, PaintRule(1))
    assert labels.sum() == 29  # lattice points with x^2 + y^2 <= 9


def test_a_tiny_radius_still_paints_the_pixel_under_the_cursor() -> None:
    labels = np.zeros((10, 10), np.uint8)
    paint_segment(labels, (4.2, 6.1), (4.2, 6.1), 0.0, PaintRule(1))
    assert np.argwhere(labels).tolist() == [[6, 4]]


def test_a_capsule_covers_every_pixel_near_the_segment_and_no_other() -> None:
    shape = (70, 100)
    p0, p1 = (10.0, 10.0), (90.0, 61.0)
    labels = np.zeros(shape, np.uint8)
    paint_segment(labels, p0, p1, 1.5, PaintRule(1))
    dist = _distance_to_segment(shape, p0, p1)
    painted = labels == 1
    assert painted[dist <= 1.5 - 1e-3].all()  # no gaps along the segment
    assert not painted[dist > 1.5 + 1e-3].any()
    assert measure.label(painted, connectivity=1).max() == 1


def test_a_fast_drag_in_big_jumps_leaves_no_gaps() -> None:
    labels = np.zeros((200, 200), np.uint8)
    points = [(5, 5), (190, 20), (20, 180), (180, 190)]
    for a, b in itertools.pairwise(points):
        paint_segment(labels, a, b, 1.0, PaintRule(2))
    assert measure.label(labels == 2, connectivity=1).max() == 1
    for a, b in itertools.pairwise(points):
        for t in np.linspace(0, 1, 400):
            x = round(a[0] + t * (b[0] - a[0]))
            y = round(a[1] + t * (b[1] - a[1]))
            assert labels[y, x] == 2, (x, y)


def test_a_dab_at_the_corner_is_clipped_to_the_image() -> None:
    labels = np.zeros((20, 30), np.uint8)
    edit = paint_segment(labels, (1, 2), (1, 2), 5, PaintRule(1))
    np.testing.assert_array_equal(labels == 1, _disc(labels.shape, 1, 2, 5))
    assert edit is not None
    assert edit.region == (slice(0, 8), slice(0, 7))


def test_a_dab_centred_outside_paints_only_its_part_inside() -> None:
    labels = np.zeros((20, 30), np.uint8)
    edit = paint_segment(labels, (-3, 10), (-3, 10), 5, PaintRule(1))
    expected = _disc(labels.shape, -3, 10, 5)
    assert expected.sum() > 0
    np.testing.assert_array_equal(labels == 1, expected)
    assert edit is not None and edit.region[1] == slice(0, 3)  # x = 2 lies on the rim
    edit = paint_segment(labels, (35, 25), (36, 30), 4, PaintRule(2))  # fully outside
    assert edit is None and not (labels == 2).any()
    assert paint_segment(labels, (-10, -10), (-10, -10), 5, PaintRule(2)) is None


def test_a_segment_crossing_the_image_from_outside_to_outside() -> None:
    labels = np.zeros((20, 30), np.uint8)
    paint_segment(labels, (-50, 10), (80, 10), 2, PaintRule(1))
    expected = np.zeros_like(labels, bool)
    expected[8:13, :] = True
    np.testing.assert_array_equal(labels == 1, expected)


@pytest.fixture
def three_classes() -> np.ndarray:
    """Half background, a class-2 block, a class-1 block."""
    labels = np.zeros((40, 40), np.uint8)
    labels[:, 20:30] = 2
    labels[:, 30:] = 1
    return labels


def test_brush_with_preserve_others_leaves_other_classes(three_classes: np.ndarray) -> None:
    labels = three_classes.copy()
    paint_segment(labels, (0, 20), (39, 20), 6, PaintRule(1, preserve_others=True))
    band = _distance_to_segment(labels.shape, (0, 20), (39, 20)) <= 6
    np.testing.assert_array_equal(labels[three_classes == 2], 2)  # untouched
    assert (labels[band & (three_classes == 0)] == 1).all()
    overwrite = three_classes.copy()
    paint_segment(overwrite, (0, 20), (39, 20), 6, PaintRule(1))
    assert (overwrite[band] == 1).all()
    assert (overwrite == 2).sum() < (three_classes == 2).sum()


def test_eraser_with_preserve_removes_only_the_active_class(three_classes: np.ndarray) -> None:
    labels = three_classes.copy()
    rule = PaintRule(0, preserve_others=True, active_class=1)
    edit = paint_segment(labels, (20, 0), (39, 39), 8, rule)
    assert edit is not None
    assert set(np.unique(edit.old)) == {1} and set(np.unique(edit.new)) == {0}
    np.testing.assert_array_equal(labels == 2, three_classes == 2)
    assert (labels == 1).sum() < (three_classes == 1).sum()
    plain = three_classes.copy()
    edit = paint_segment(plain, (20, 0), (39, 39), 8, PaintRule(0))
    assert edit is not None and set(np.unique(edit.old)) == {1, 2}


def test_painting_the_same_value_again_is_no_edit() -> None:
    labels = np.zeros((20, 20), np.uint8)
    assert paint_segment(labels, (5, 5), (9, 9), 3, PaintRule(1)) is not None
    assert paint_segment(labels, (5, 5), (9, 9), 3, PaintRule(1)) is None


# -- flood fill ------------------------------------------------------------------------------------
@pytest.fixture
def diagonal() -> np.ndarray:
    labels = np.zeros((12, 12), np.uint8)
    idx = np.arange(12)
    labels[idx, idx] = 1
    return labels


def test_flood_fill_4_connectivity_is_stopped_by_a_diagonal(diagonal: np.ndarray) -> None:
    labels = diagonal.copy()
    edit = flood_fill(labels, (0, 5), PaintRule(3), connectivity=4)
    yy, xx = np.mgrid[:12, :12]
    np.testing.assert_array_equal(labels == 3, yy > xx)
    assert edit is not None and edit.count == int((yy > xx).sum())


def test_flood_fill_8_connectivity_leaks_through_a_diagonal(diagonal: np.ndarray) -> None:
    labels = diagonal.copy()
    flood_fill(labels, (0, 5), PaintRule(3), connectivity=8)
    np.testing.assert_array_equal(labels == 3, diagonal == 0)


def test_flood_fill_of_a_diagonal_line_itself(diagonal: np.ndarray) -> None:
    four = diagonal.copy()
    flood_fill(four, (4, 4), PaintRule(2), connectivity=4)
    assert np.argwhere(four == 2).tolist() == [[4, 4]]
    eight = diagonal.copy()
    flood_fill(eight, (4, 4), PaintRule(2), connectivity=8)
    np.testing.assert_array_equal(eight == 2, diagonal == 1)


def test_fill_inside_a_ring_of_another_class() -> None:
    labels = np.zeros((80, 80), np.uint8)
    paint_segment(labels, (40, 38), (40, 38), 20, PaintRule(2))
    paint_segment(labels, (40, 38), (40, 38), 16, PaintRule(0))
    ring = labels.copy()
    edit = flood_fill(labels, (41, 37), PaintRule(1))
    np.testing.assert_array_equal(labels == 1, _disc(labels.shape, 40, 38, 16))
    np.testing.assert_array_equal(labels == 2, ring == 2)
    assert edit is not None
    assert edit.region == (slice(22, 55), slice(24, 57))


def test_fill_on_a_real_image_segmentation() -> None:
    coins = data.coins()
    labels = (coins > 110).astype(np.uint8)
    components = measure.label(labels, connectivity=1)
    target = int(np.bincount(components.ravel())[1:].argmax()) + 1
    y, x = np.argwhere(components == target)[0]
    flood_fill(labels, (float(x), float(y)), PaintRule(4), connectivity=4)
    np.testing.assert_array_equal(labels == 4, components == target)


def test_fill_where_the_seed_already_has_the_value_is_none() -> None:
    labels = np.zeros((10, 10), np.uint8)
    labels[2:5, 2:5] = 1
    before = labels.copy()
    assert flood_fill(labels, (3, 3), PaintRule(1)) is None
    assert flood_fill(labels, (-1, 3), PaintRule(2)) is None
    assert flood_fill(labels, (3, 10), PaintRule(2)) is None
    np.testing.assert_array_equal(labels, before)


def test_fill_with_preserve_on_a_uint16_map() -> None:
    labels = np.zeros((30, 30), np.uint16)
    labels[10:20, 10:20] = 700
    edit = flood_fill(labels, (15, 15), PaintRule(1000))
    assert edit is not None and edit.new.dtype == np.uint16
    assert (labels[10:20, 10:20] == 1000).all() and labels.sum() == 100 * 1000


# -- polygon -------------------------------------------------------------------------------------
def test_a_rectangle_polygon_fills_exactly_its_pixel_block() -> None:
    labels = np.zeros((20, 20), np.uint8)
    edit = fill_polygon(labels, [(2, 3), (9, 3), (9, 8), (2, 8)], PaintRule(1))
    expected = np.zeros_like(labels, bool)
    expected[3:9, 2:10] = True  # centres on the edge count
    np.testing.assert_array_equal(labels == 1, expected)
    assert edit is not None and edit.region == (slice(3, 9), slice(2, 10))


def test_a_half_pixel_rectangle_fills_only_the_centres_inside() -> None:
    labels = np.zeros((20, 20), np.uint8)
    fill_polygon(labels, [(2.5, 3.5), (9.5, 3.5), (9.5, 8.5), (2.5, 8.5)], PaintRule(1))
    expected = np.zeros_like(labels, bool)
    expected[4:9, 3:10] = True
    np.testing.assert_array_equal(labels == 1, expected)


def test_a_triangle_with_integer_vertices_matches_picks_theorem() -> None:
    vertices = [(10, 10), (150, 30), (60, 180)]
    labels = np.zeros((200, 200), np.uint8)
    fill_polygon(labels, vertices, PaintRule(1))
    (ax, ay), (bx, by), (cx, cy) = vertices
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2
    boundary = sum(math.gcd(abs(q[0] - p[0]), abs(q[1] - p[1]))
                   for p, q in zip(vertices, vertices[1:] + vertices[:1], strict=True))
    # Pick: interior = A - B/2 + 1; inside-or-on-edge centres = interior + boundary.
    assert labels.sum() == area + boundary / 2 + 1


def test_a_sub_pixel_triangle_area_is_close_to_the_analytic_area() -> None:
    vertices = [(12.3, 8.7), (91.6, 30.2), (40.4, 77.9)]
    labels = np.zeros((100, 100), np.uint8)
    fill_polygon(labels, vertices, PaintRule(1))
    (ax, ay), (bx, by), (cx, cy) = vertices
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2
    assert abs(labels.sum() - area) / area < 0.02
    # Every filled centre is inside the triangle (no outline added around it).
    inside = measure.points_in_poly(np.argwhere(labels)[:, ::-1].astype(float),
                                    np.array(vertices))
    assert inside.all()


def test_a_concave_polygon_leaves_its_notch_empty() -> None:
    labels = np.zeros((30, 30), np.uint8)
    # A "U": the notch between x 10..20 above y 15 stays empty.
    fill_polygon(labels, [(5, 5), (10, 5), (10, 15), (20, 15), (20, 5), (25, 5), (25, 25),
                          (5, 25)], PaintRule(1))
    assert not labels[5:15, 11:20].any()
    assert labels[16:25, 5:26].all() and labels[5:15, 5:11].all()


def test_polygon_with_fewer_than_three_points_is_none() -> None:
    labels = np.zeros((10, 10), np.uint8)
    assert fill_polygon(labels, [], PaintRule(1)) is None
    assert fill_polygon(labels, [(1, 1), (8, 8)], PaintRule(1)) is None
    assert not labels.any()


def test_polygon_partly_or_wholly_outside_the_image() -> None:
    labels = np.zeros((10, 10), np.uint8)
    fill_polygon(labels, [(-5, -5), (5, -5), (5, 5), (-5, 5)], PaintRule(1))
    expected = np.zeros_like(labels, bool)
    expected[:6, :6] = True
    np.testing.assert_array_equal(labels == 1, expected)
    assert fill_polygon(labels, [(20, 20), (30, 20), (25, 30)], PaintRule(2)) is None


# -- planes of a stack -----------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["brush", "fill", "polygon", "replace"])
def test_every_tool_touches_only_its_plane(tool: str) -> None:
    stack = np.zeros((4, 32, 32), np.uint8)
    stack[:, 8:24, 8:24] = 1
    before = stack.copy()
    rule = PaintRule(5)
    if tool == "brush":
        edit = paint_segment(stack, (4, 4), (28, 20), 3, rule, plane=(2,))
    elif tool == "fill":
        edit = flood_fill(stack, (10, 10), rule, plane=(2,))
    elif tool == "polygon":
        edit = fill_polygon(stack, [(1, 1), (30, 2), (16, 30)], rule, plane=(2,))
    else:
        new_plane = np.where(before[2] == 1, 5, 0).astype(np.uint8)
        edit = replace_labels(stack, new_plane, plane=(2,))
    assert edit is not None and edit.region[0] == slice(2, 3)
    np.testing.assert_array_equal(np.delete(stack, 2, axis=0), np.delete(before, 2, axis=0))
    assert (stack[2] == 5).any()
    edit.revert(stack)
    np.testing.assert_array_equal(stack, before)


# -- replacing a whole plane ---------------------------------------------------------------------
def test_replace_labels_is_one_reversible_edit() -> None:
    camera = data.camera()
    labels = np.digitize(camera, [60]).astype(np.uint8)
    before = labels.copy()
    prediction = np.digitize(camera, [60, 150]).astype(np.uint8)
    edit = replace_labels(labels, prediction)
    np.testing.assert_array_equal(labels, prediction)
    assert edit is not None and edit.count == int((before != prediction).sum())
    edit.revert(labels)
    np.testing.assert_array_equal(labels, before)
    assert replace_labels(labels, before.copy()) is None


def test_replace_labels_refuses_a_wrong_shape() -> None:
    labels = np.zeros((10, 12), np.uint8)
    with pytest.raises(ValueError, match="does not match"):
        replace_labels(labels, np.zeros((12, 10), np.uint8))
    assert not labels.any()

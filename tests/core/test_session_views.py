"""Editing a volume seen along any axis: Edit.transposed, EditSession.set_view and
view_labels/plane_labels, and plane_box. The tools on ``labels.transpose(axes)[plane]``,
set_view or close while drawing and apply_edit are in test_session_views_tools.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from volume_views import (
    SHAPE,
    VIEW_IDS,
    VIEWS,
    item,
    project,
    session,
)

from core.annotation.edits import Edit, diff_region
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule

FIXTURES = (project, item, session)  # pytest finds these fixtures by name in this module


# -- Edit.transposed -----------------------------------------------------------------------------
def _random_edit(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.uint8
                 ) -> tuple[np.ndarray, Edit]:
    labels = rng.integers(0, 4, shape).astype(dtype)
    after = labels.copy()
    box = tuple(slice(int(a), int(a) + int(rng.integers(1, n - a + 1)))
                for a, n in ((rng.integers(0, n), n) for n in shape))
    patch = rng.integers(0, 6, after[box].shape).astype(dtype)
    keep = rng.random(patch.shape) < 0.5
    after[box] = np.where(keep, after[box], patch)
    if np.array_equal(after, labels):
        after[tuple(s.start for s in box)] += 1
    edit = diff_region(labels.copy(), after, tuple(slice(0, n) for n in shape))
    assert edit is not None
    return labels, edit


def _same_edit(a: Edit, b: Edit) -> None:
    assert a.region == b.region
    np.testing.assert_array_equal(a.changed, b.changed)
    assert a.old.dtype == b.old.dtype and a.new.dtype == b.new.dtype
    np.testing.assert_array_equal(a.old, b.old)
    np.testing.assert_array_equal(a.new, b.new)


@pytest.mark.parametrize("ndim", [2, 3, 4])
def test_transposed_edit_is_the_same_change_in_the_transposed_array(ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    for trial in range(40):
        shape = tuple(int(n) for n in rng.integers(2, 9, ndim))
        labels, edit = _random_edit(rng, shape, np.uint16 if trial % 3 == 0 else np.uint8)
        edited = labels.copy()
        edit.apply(edited)
        for perm in itertools.permutations(range(ndim)):
            moved = edit.transposed(perm)
            assert moved.count == edit.count
            assert moved.old.dtype == edit.old.dtype
            view = labels.transpose(perm).copy()
            moved.apply(view)
            np.testing.assert_array_equal(view, edited.transpose(perm))
            moved.revert(view)
            np.testing.assert_array_equal(view, labels.transpose(perm))
            # the same region, axes permuted; the same set of (position, old, new) triples
            assert moved.region == tuple(edit.region[a] for a in perm)
            back = moved.transposed(tuple(int(a) for a in np.argsort(perm)))
            _same_edit(back, edit)
            # survives the journal's serialisation in its transposed form
            record = moved.to_record()
            _same_edit(Edit.from_record(record["header"], record["changed"], record["values"]),
                       moved)
            _same_edit(moved.inverse().transposed(tuple(int(a) for a in np.argsort(perm))),
                       edit.inverse())


def test_transposed_identity_is_the_same_edit() -> None:
    _, edit = _random_edit(np.random.default_rng(1), (4, 5, 6))
    assert edit.transposed((0, 1, 2)) is edit
    assert edit.transposed(np.array([0, 1, 2])) is edit


def test_transposed_keeps_the_values_in_c_order_of_the_new_mask() -> None:
    labels = np.zeros((2, 3), np.uint8)
    after = np.array([[1, 2, 0], [3, 0, 4]], np.uint8)
    edit = diff_region(labels, after, (slice(0, 2), slice(0, 3)))
    moved = edit.transposed((1, 0))
    assert moved.region == (slice(0, 3), slice(0, 2))
    np.testing.assert_array_equal(moved.changed, after.T != 0)
    assert moved.new.tolist() == [1, 3, 2, 4]  # column by column of the original
    assert moved.old.tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("axes", [(0, 1), (0, 0, 1), (0, 1, 3), (0, 1, 2, 3), (1, 0)])
def test_transposed_refuses_axes_that_are_not_a_permutation(axes: tuple[int, ...]) -> None:
    _, edit = _random_edit(np.random.default_rng(2), (4, 5, 6))
    with pytest.raises(ValueError):
        edit.transposed(axes)


# -- set_view, view_labels, plane_labels -------------------------------------------------------
@pytest.mark.parametrize(("plane", "axes"), VIEWS, ids=VIEW_IDS)
def test_view_and_plane_labels_are_views_of_the_labels(session: EditSession,
                                                       plane: tuple[int, ...],
                                                       axes: tuple[int, ...]) -> None:
    session.set_view(plane, axes)
    assert (session.plane, session.axes) == (plane, axes)
    view = session.view_labels()
    assert view.shape == tuple(SHAPE[a] for a in axes)
    assert np.shares_memory(view, session.labels)
    flat = session.plane_labels()
    np.testing.assert_array_equal(flat, session.labels.transpose(axes)[plane])
    assert flat.shape == (SHAPE[axes[1]], SHAPE[axes[2]])
    flat[2, 3] = 9  # a view: writes show in the labels
    index = [0, 0, 0]
    index[axes[0]], index[axes[1]], index[axes[2]] = plane[0], 2, 3
    assert session.labels[tuple(index)] == 9


def test_the_default_view_is_the_array_itself(session: EditSession) -> None:
    assert session.axes == (0, 1, 2) and session.plane == ()
    assert session.view_labels() is session.labels
    session.set_view((4,))
    assert session.axes == (0, 1, 2)
    np.testing.assert_array_equal(session.plane_labels(), session.labels[4])
    session.set_view((4,), (1, 0, 2))
    session.set_view((4,), None)  # None goes back to the array's order
    assert session.axes == (0, 1, 2)


@pytest.mark.parametrize("axes", [(0, 1), (0, 0, 2), (1, 2, 3), (0, 1, 2, 3), (-1, 0, 1), ()])
def test_invalid_axes_are_refused_and_change_nothing(session: EditSession,
                                                     axes: tuple[int, ...]) -> None:
    session.set_view((5,), (1, 0, 2))
    session.begin_stroke((4.0, 4.0), 2, PaintRule(5))
    with pytest.raises(ValueError):
        session.set_view((6,), axes)
    assert (session.plane, session.axes) == ((5,), (1, 0, 2))
    assert session.stroke_active  # a refused view change does not end the stroke
    assert len(session.history) == 0




# -- plane_box ---------------------------------------------------------------------------------
def test_plane_box_of_an_edit_on_another_slice_is_none(session: EditSession) -> None:
    session.set_view((5,), (1, 0, 2))
    edit = session.polygon([(2, 2), (10, 2), (10, 8)], PaintRule(5))
    assert edit is not None and session.plane_box(edit) == (2, 9, 2, 11)
    session.set_view((6,), (1, 0, 2))
    assert session.plane_box(edit) is None
    session.set_view((4,), (1, 0, 2))
    assert session.plane_box(edit) is None
    # the same edit seen from the array's own slices 2..8 (rows y = 5 only) and from the side
    session.set_view((2,), None)
    assert session.plane_box(edit) == (5, 6, 2, 11)
    session.set_view((9,), None)
    assert session.plane_box(edit) is None
    session.set_view((10,), (2, 0, 1))
    assert session.plane_box(edit) == (2, 9, 5, 6)
    session.set_view((11,), (2, 0, 1))
    assert session.plane_box(edit) is None


def test_plane_box_of_a_volume_edit_in_every_view(session: EditSession) -> None:
    session.set_view((4,), None)
    session.polygon([(3, 3), (12, 3), (12, 10), (3, 10)], PaintRule(6))
    session.set_view((10,), None)
    session.polygon([(5, 6), (14, 6), (14, 13), (5, 13)], PaintRule(6))
    edit = session.interpolate_slices(6, axis=0)
    assert edit is not None
    full = np.zeros(SHAPE, bool)
    full[edit.region][edit.changed] = True
    for axes in itertools.permutations(range(3)):
        for index in range(SHAPE[axes[0]]):
            session.set_view((index,), axes)
            box = session.plane_box(edit)
            inside = edit.region[axes[0]].start <= index < edit.region[axes[0]].stop
            assert (box is not None) == inside
            if box is None:
                continue
            y0, y1, x0, x1 = box
            assert (y0, y1) == (edit.region[axes[1]].start, edit.region[axes[1]].stop)
            assert (x0, x1) == (edit.region[axes[2]].start, edit.region[axes[2]].stop)
            ys, xs = np.nonzero(full.transpose(axes)[index])
            if ys.size:
                assert y0 <= ys.min() and ys.max() < y1 and x0 <= xs.min() and xs.max() < x1

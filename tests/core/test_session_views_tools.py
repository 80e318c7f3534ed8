"""Editing a volume seen along any axis: the tools on ``labels.transpose(axes)[plane]``,
set_view or close while drawing, and accepting a preview with apply_edit.

The reference for every session tool is the plain 2-D tool of :mod:`core.annotation.tools` run on a
copy of the displayed slice with ``plane=()``: the session must change exactly those pixels of the
volume and nothing else, and record the change in the label array's own (Z, Y, X) order so that
undo, redo and the journal replay it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from volume_views import (
    SHAPE,
    VIEW_IDS,
    VIEWS,
    _check_recorded,
    _initial_labels,
    _journal_replays,
    _only_on_slice,
    _reference,
    item,
    project,
    session,
)

from core.annotation.edits import Edit, diff_region
from core.annotation.session import EditSession
from core.annotation.tools import (
    PaintRule,
    fill_polygon,
    flood_fill,
    paint_segment,
    replace_labels,
)
from core.annotation.volume_tools import interpolate_between_slices
from core.errors import SegStudioError
from core.project.items import Item
from core.project.store import Project

FIXTURES = (project, item, session)  # pytest finds these fixtures by name in this module


# -- tools along other axes ------------------------------------------------------------------
def _drag(session: EditSession, points: list[tuple[float, float]], radius: float,
          rule: PaintRule) -> tuple[Edit | None, list[Edit | None]]:
    steps = [session.begin_stroke(points[0], radius, rule)]
    steps += [session.continue_stroke(p, radius, rule) for p in points[1:]]
    return session.end_stroke(), steps


def _drag_2d(points: list[tuple[float, float]], radius: float, rule: PaintRule
             ) -> Callable[[np.ndarray], Edit | None]:
    def tool(flat: np.ndarray) -> Edit | None:
        before = flat.copy()
        paint_segment(flat, points[0], points[0], radius, rule)
        for a, b in itertools.pairwise(points):
            paint_segment(flat, a, b, radius, rule)
        return diff_region(before, flat.copy(), (slice(0, flat.shape[0]),
                                                 slice(0, flat.shape[1])))
    return tool


DRAG = [(1.0, 2.0), (10.0, 14.0), (24.0, 8.0), (30.0, 22.0)]
RULES = [PaintRule(5), PaintRule(4, preserve_others=True), PaintRule(0),
         PaintRule(0, preserve_others=True, active_class=1)]


@pytest.mark.parametrize(("plane", "axes"), VIEWS, ids=VIEW_IDS)
@pytest.mark.parametrize("rule", RULES, ids=["brush", "brush-preserve", "eraser",
                                             "eraser-preserve"])
def test_a_stroke_changes_exactly_what_the_2d_brush_changes_on_the_slice(
    project: Project, item: Item, session: EditSession, plane: tuple[int, ...],
    axes: tuple[int, ...], rule: PaintRule,
) -> None:
    before = session.labels.copy()
    expected, edit2d = _reference(before, plane, axes, _drag_2d(DRAG, 3.0, rule))
    assert edit2d is not None
    session.set_view(plane, axes)
    merged, steps = _drag(session, DRAG, 3.0, rule)
    np.testing.assert_array_equal(session.labels, expected)
    _only_on_slice(before, session.labels, plane, axes)
    assert merged is not None
    _check_recorded(merged, before, expected, plane, axes, edit2d)
    # each step's edit (for redraw) is in (Z, Y, X) order too, on the slice, and together they
    # cover every changed voxel
    covered = np.zeros(SHAPE, bool)
    for step in steps:
        if step is None:
            continue
        assert len(step.region) == 3 and step.region[axes[0]] == slice(plane[0], plane[0] + 1)
        box = session.plane_box(step)
        assert box is not None
        local = np.zeros(SHAPE, bool)
        local[step.region][step.changed] = True
        covered |= local
        ys, xs = np.nonzero(local.transpose(axes)[plane])
        y0, y1, x0, x1 = box
        assert y0 <= ys.min() and ys.max() < y1 and x0 <= xs.min() and xs.max() < x1
    np.testing.assert_array_equal(covered, before != expected)
    # one undo step, one journal entry; undo restores, redo reapplies, the journal replays
    assert len(session.history) == 1
    assert project.journal_length(item.id) == 1
    assert session.plane_box(merged) == edit2d.bbox_2d()
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    np.testing.assert_array_equal(session.labels, expected)
    _journal_replays(project, item, expected)


@pytest.mark.parametrize(("plane", "axes"), VIEWS, ids=VIEW_IDS)
def test_fill_stays_in_the_slice_and_matches_the_2d_fill(
    project: Project, item: Item, session: EditSession, plane: tuple[int, ...],
    axes: tuple[int, ...],
) -> None:
    before = session.labels.copy()
    session.set_view(plane, axes)
    for seed, rule in [((0.0, 0.0), PaintRule(6)), ((2.0, 1.0), PaintRule(7)),
                       ((1.0, 1.0), PaintRule(4, preserve_others=True))]:
        current = session.labels.copy()
        expected, edit2d = _reference(current, plane, axes,
                                      lambda flat, s=seed, r=rule: flood_fill(flat, s, r))
        edit = session.fill(seed, rule)
        np.testing.assert_array_equal(session.labels, expected)
        if edit2d is None:
            assert edit is None
            continue
        _only_on_slice(current, session.labels, plane, axes)
        _check_recorded(edit, current, expected, plane, axes, edit2d)
        assert session.plane_box(edit) == edit2d.bbox_2d()
    # a fill of the seed's connected region: the slab or ball walls in the slice stop it, and
    # neighbouring slices are never reached
    assert np.array_equal(np.delete(session.labels, plane[0], axes[0]),
                          np.delete(before, plane[0], axes[0]))
    after = session.labels.copy()
    while session.undo() is not None:
        pass
    np.testing.assert_array_equal(session.labels, before)
    while session.redo() is not None:
        pass
    np.testing.assert_array_equal(session.labels, after)
    _journal_replays(project, item, after)


@pytest.mark.parametrize(("plane", "axes"), VIEWS, ids=VIEW_IDS)
def test_polygon_matches_the_2d_polygon(
    project: Project, item: Item, session: EditSession, plane: tuple[int, ...],
    axes: tuple[int, ...],
) -> None:
    points = [(2.0, 3.0), (20.5, 1.0), (23.0, 18.0), (6.0, 21.5)]
    before = session.labels.copy()
    expected, edit2d = _reference(before, plane, axes,
                                  lambda flat: fill_polygon(flat, points, PaintRule(8)))
    assert edit2d is not None
    session.set_view(plane, axes)
    edit = session.polygon(points, PaintRule(8))
    np.testing.assert_array_equal(session.labels, expected)
    _only_on_slice(before, session.labels, plane, axes)
    assert edit is not None
    _check_recorded(edit, before, expected, plane, axes, edit2d)
    assert session.plane_box(edit) == edit2d.bbox_2d()
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    _journal_replays(project, item, expected)


@pytest.mark.parametrize(("plane", "axes"), VIEWS, ids=VIEW_IDS)
def test_replace_plane_replaces_the_displayed_slice(
    project: Project, item: Item, session: EditSession, plane: tuple[int, ...],
    axes: tuple[int, ...],
) -> None:
    before = session.labels.copy()
    rows, cols = SHAPE[axes[1]], SHAPE[axes[2]]
    new_plane = (np.add.outer(np.arange(rows), 2 * np.arange(cols)) % 5).astype(np.uint8)
    expected, edit2d = _reference(before, plane, axes,
                                  lambda flat: replace_labels(flat, new_plane))
    session.set_view(plane, axes)
    edit = session.replace_plane(new_plane)
    assert edit is not None and edit2d is not None
    np.testing.assert_array_equal(session.labels, expected)
    np.testing.assert_array_equal(session.plane_labels(), new_plane)
    _only_on_slice(before, session.labels, plane, axes)
    _check_recorded(edit, before, expected, plane, axes, edit2d)
    with pytest.raises(ValueError):
        session.replace_plane(new_plane.T if rows != cols else new_plane[:-1])
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    _journal_replays(project, item, expected)


def test_replace_plane_above_255_widens_the_labels_in_a_side_view(
    project: Project, item: Item, session: EditSession,
) -> None:
    before = session.labels.copy()
    session.set_view((5,), (2, 0, 1))
    new_plane = np.zeros((SHAPE[0], SHAPE[1]), np.uint16)
    new_plane[3:9, 4:30] = 700
    session.replace_plane(new_plane)
    assert session.labels.dtype == np.uint16
    assert (session.labels[3:9, 4:30, 5] == 700).all()
    np.testing.assert_array_equal(session.labels[:, :, 5], new_plane)
    np.testing.assert_array_equal(np.delete(session.labels, 5, 2), np.delete(before, 5, 2))
    session.begin_stroke((0.0, 0.0), 1.0, PaintRule(1))  # the view follows the new array
    session.end_stroke()
    assert session.labels[0, 0, 5] == 1
    session.undo()
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    session.redo()
    expected = session.labels.copy()
    _journal_replays(project, item, expected)


def test_many_edits_in_all_views_replay_from_the_journal_and_after_close(
    project: Project, item: Item, session: EditSession,
) -> None:
    """Strokes, fills and polygons on the axial, coronal and sagittal slices of one volume,
    compared with the same 2-D tools run slice by slice on a copy."""
    expected = session.labels.copy()
    rng = np.random.default_rng(7)
    for n in range(18):
        plane, axes = VIEWS[n % len(VIEWS)]
        plane = (int(rng.integers(0, SHAPE[axes[0]])),)
        rows, cols = SHAPE[axes[1]], SHAPE[axes[2]]
        points = [(float(rng.uniform(0, cols)), float(rng.uniform(0, rows))) for _ in range(4)]
        rule = RULES[n % len(RULES)] if n % 3 else PaintRule(int(rng.integers(1, 6)))
        session.set_view(plane, axes)
        if n % 3 == 0:
            expected, _ = _reference(expected, plane, axes, _drag_2d(points, 2.5, rule))
            _drag(session, points, 2.5, rule)
        elif n % 3 == 1:
            expected, _ = _reference(expected, plane, axes,
                                     lambda flat, p=points[0], r=rule: flood_fill(flat, p, r))
            session.fill(points[0], rule)
        else:
            expected, _ = _reference(expected, plane, axes,
                                     lambda flat, p=points, r=rule: fill_polygon(flat, p, r))
            session.polygon(points, rule)
        np.testing.assert_array_equal(session.labels, expected)
    assert project.journal_length(item.id) == len(session.history) > 10
    _journal_replays(project, item, expected)
    # undo everything, redo everything: the same volume
    while session.undo() is not None:
        pass
    np.testing.assert_array_equal(session.labels, _initial_labels())
    while session.redo() is not None:
        pass
    np.testing.assert_array_equal(session.labels, expected)
    session.close()
    assert project.journal_length(item.id) == 0
    np.testing.assert_array_equal(EditSession(project, project.item(item.id)).labels, expected)
    folder = project.folder
    project.close()
    with Project.open(folder) as again:
        np.testing.assert_array_equal(again.load_mask(item.id), expected)


def test_a_2d_image_can_be_edited_transposed(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    image = tmp_path / "coins.png"
    Image.fromarray(data.coins()[:60, :90]).save(image)
    with Project.create(tmp_path / "project") as project:
        project.add_items([image])
        item = project.items()[0]
        session = EditSession(project, item)
        assert session.labels.shape == (60, 90)
        session.set_view((), (1, 0))
        assert session.plane_labels().shape == (90, 60)
        edit = session.polygon([(5, 10), (20, 10), (20, 70), (5, 70)], PaintRule(3))
        assert edit is not None and edit.region == (slice(5, 21), slice(10, 71))
        assert session.plane_box(edit) == (10, 71, 5, 21)
        expected = np.zeros((60, 90), np.uint8)
        expected[5:21, 10:71] = 3
        np.testing.assert_array_equal(session.labels, expected)
        _journal_replays(project, item, expected)


# -- set_view while drawing --------------------------------------------------------------------
def test_set_view_commits_a_running_stroke_first(project: Project, item: Item,
                                                 session: EditSession) -> None:
    before = session.labels.copy()
    plane, axes = (5,), (2, 0, 1)
    expected, edit2d = _reference(before, plane, axes, _drag_2d(DRAG[:3], 2.0, PaintRule(5)))
    session.set_view(plane, axes)
    session.begin_stroke(DRAG[0], 2.0, PaintRule(5))
    for p in DRAG[1:3]:
        session.continue_stroke(p, 2.0, PaintRule(5))
    session.set_view(plane, axes)  # the same view: nothing to commit
    assert session.stroke_active and len(session.history) == 0
    session.set_view((6,), (1, 0, 2))
    assert not session.stroke_active
    assert len(session.history) == 1 and project.journal_length(item.id) == 1
    np.testing.assert_array_equal(session.labels, expected)
    # the committed stroke was converted with the view it was drawn in
    undone = session.undo()
    np.testing.assert_array_equal(session.labels, before)
    assert undone is not None
    _check_recorded(undone.inverse(), before, expected, plane, axes, edit2d)
    assert session.redo() is not None
    # the next drag happens in the new view (continue without begin starts a stroke)
    after_first = session.labels.copy()
    second, _ = _reference(after_first, (6,), (1, 0, 2), _drag_2d([(3.0, 3.0), (9.0, 3.0)], 1.5,
                                                                  PaintRule(2)))
    session.continue_stroke((3.0, 3.0), 1.5, PaintRule(2))
    session.continue_stroke((9.0, 3.0), 1.5, PaintRule(2))
    session.end_stroke()
    np.testing.assert_array_equal(session.labels, second)
    assert len(session.history) == 2 and project.journal_length(item.id) == 4
    session.undo()
    np.testing.assert_array_equal(session.labels, after_first)
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.redo()
    session.redo()
    _journal_replays(project, item, second)


def test_close_commits_a_stroke_in_a_side_view(project: Project, item: Item,
                                               session: EditSession) -> None:
    before = session.labels.copy()
    expected, _ = _reference(before, (20,), (1, 0, 2), _drag_2d(DRAG, 2.0, PaintRule(5)))
    session.set_view((20,), (1, 0, 2))
    session.begin_stroke(DRAG[0], 2.0, PaintRule(5))
    for p in DRAG[1:]:
        session.continue_stroke(p, 2.0, PaintRule(5))
    session.close()
    assert not session.stroke_active
    np.testing.assert_array_equal(project.load_mask(item.id), expected)


# -- previews and apply_edit --------------------------------------------------------------------
def _keys(session: EditSession, axis: int) -> None:
    """Class 6 drawn on two slices along ``axis`` (in that view), a gap between them."""
    session.set_view((4,), (axis,) + tuple(a for a in range(3) if a != axis))
    session.polygon([(3, 3), (12, 3), (12, 10), (3, 10)], PaintRule(6))
    session.set_view((12,), session.axes)
    session.polygon([(6, 5), (15, 5), (15, 14), (6, 14)], PaintRule(6))
    session.set_view((0,), None)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_accepted_preview_is_exactly_the_interpolation(
    project: Project, item: Item, session: EditSession, axis: int,
) -> None:
    _keys(session, axis)
    before = session.labels.copy()
    steps = len(session.history)
    preview = session.preview_interpolation(6, axis=axis)
    assert preview is not None
    np.testing.assert_array_equal(session.labels, before)  # a preview changes nothing
    assert len(session.history) == steps
    reference = before.copy()
    assert interpolate_between_slices(reference, 6, axis) is not None
    assert session.apply_edit(preview) is preview
    np.testing.assert_array_equal(session.labels, reference)
    assert len(session.history) == steps + 1
    assert project.journal_length(item.id) == steps + 1
    changed = np.argwhere(before != reference)
    assert ((changed[:, axis] > 4) & (changed[:, axis] < 12)).all()
    # one undo step; the direct tool gives the same result
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.interpolate_slices(6, axis=axis)
    np.testing.assert_array_equal(session.labels, reference)
    session.undo()
    session.redo()
    np.testing.assert_array_equal(session.labels, reference)
    _journal_replays(project, item, reference)


def test_apply_edit_refuses_a_stale_preview_and_changes_nothing(
    project: Project, item: Item, session: EditSession,
) -> None:
    _keys(session, 0)
    before = session.labels.copy()
    preview = session.preview_interpolation(6, axis=0)
    assert preview is not None
    covered = np.argwhere(_mask(preview))
    z, y, x = (int(v) for v in covered[len(covered) // 2])
    # paint one covered voxel in a side view: the preview no longer fits the labels
    session.set_view((x,), (2, 0, 1))
    session.begin_stroke((float(y), float(z)), 0.5, PaintRule(3))
    session.end_stroke()
    assert session.labels[z, y, x] == 3
    stale = session.labels.copy()
    steps, journal = len(session.history), project.journal_length(item.id)
    with pytest.raises(SegStudioError, match="preview again"):
        session.apply_edit(preview)
    np.testing.assert_array_equal(session.labels, stale)
    assert len(session.history) == steps and project.journal_length(item.id) == journal
    # painting the very value the preview would write still counts as a change
    session.undo()
    session.set_view((z,), None)
    session.fill((float(x), float(y)), PaintRule(6))
    with pytest.raises(SegStudioError):
        session.apply_edit(preview)
    # back to the labels the preview was made from: it applies again
    session.undo()
    np.testing.assert_array_equal(session.labels, before)
    session.apply_edit(preview)
    reference = before.copy()
    interpolate_between_slices(reference, 6, 0)
    np.testing.assert_array_equal(session.labels, reference)
    # applied once: a second time is refused
    with pytest.raises(SegStudioError):
        session.apply_edit(preview)
    np.testing.assert_array_equal(session.labels, reference)
    _journal_replays(project, item, reference)


def test_apply_edit_refuses_an_edit_outside_the_labels(session: EditSession) -> None:
    before = session.labels.copy()
    big = np.zeros((SHAPE[0] + 2, SHAPE[1], SHAPE[2]), np.uint8)
    after = big.copy()
    after[-1, 0, 0] = 1
    edit = diff_region(big, after, tuple(slice(0, n) for n in big.shape))
    assert edit is not None
    with pytest.raises(SegStudioError):
        session.apply_edit(edit)
    np.testing.assert_array_equal(session.labels, before)
    assert len(session.history) == 0


def _mask(edit: Edit) -> np.ndarray:
    full = np.zeros(SHAPE, bool)
    full[edit.region][edit.changed] = True
    return full

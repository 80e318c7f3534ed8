"""EditSession: strokes as single undo steps, journaled undo/redo, checkpoints, item state."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from core.annotation import session as session_module
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule, paint_segment
from core.project.store import Project

BRUSH = PaintRule(1)


@pytest.fixture
def project(tmp_path: Path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(data.coins()).save(images / "coins.png")
    proj = Project.create(tmp_path / "project")
    proj.add_items([images / "coins.png"])
    yield proj
    proj.close()


@pytest.fixture
def session(project: Project) -> EditSession:
    return EditSession(project, project.items()[0])


def _drag(session: EditSession, points: list[tuple[float, float]], radius: float = 6,
          rule: PaintRule = BRUSH, end: bool = True) -> None:
    session.begin_stroke(points[0], radius, rule)
    for p in points[1:]:
        session.continue_stroke(p, radius, rule)
    if end:
        session.end_stroke()


def _expected(shape: tuple[int, ...], *drags: tuple[list[tuple[float, float]], float, PaintRule]
              ) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    for points, radius, rule in drags:
        paint_segment(labels, points[0], points[0], radius, rule)
        for a, b in itertools.pairwise(points):
            paint_segment(labels, a, b, radius, rule)
    return labels


def _reopened_mask(project: Project, item_id: int) -> np.ndarray:
    """Close the project and read the mask back the way a new run of the app would."""
    project.close()
    with Project.open(project.folder) as again:
        return again.load_mask(item_id)


DRAG_A = [(40.0, 40.0), (90.0, 60.0), (140.0, 50.0), (120.0, 120.0), (60.0, 100.0)]
DRAG_B = [(200.0, 200.0), (300.0, 250.0)]


def test_a_whole_drag_is_one_undo_step_and_one_journal_entry(session: EditSession) -> None:
    first = session.begin_stroke(DRAG_A[0], 6, BRUSH)
    assert first is not None and session.stroke_active
    steps = [session.continue_stroke(p, 6, BRUSH) for p in DRAG_A[1:]]
    assert all(s is not None for s in steps)  # each step returns its redraw region
    assert session.project.journal_length(session.item.id) == 0  # nothing journaled mid-drag
    merged = session.end_stroke()
    assert merged is not None and not session.stroke_active
    expected = _expected(session.labels.shape, (DRAG_A, 6, BRUSH))
    np.testing.assert_array_equal(session.labels, expected)
    assert merged.count == int(expected.sum())
    assert len(session.history) == 1
    assert session.project.journal_length(session.item.id) == 1
    session.undo()
    assert not session.labels.any()
    assert not session.history.can_undo
    session.redo()
    np.testing.assert_array_equal(session.labels, expected)


def test_continue_without_begin_starts_a_stroke(session: EditSession) -> None:
    session.continue_stroke((50, 50), 5, BRUSH)
    session.continue_stroke((80, 50), 5, BRUSH)
    session.end_stroke()
    np.testing.assert_array_equal(
        session.labels, _expected(session.labels.shape, ([(50, 50), (80, 50)], 5, BRUSH)))
    assert len(session.history) == 1


def test_a_stroke_that_changes_nothing_records_nothing(session: EditSession) -> None:
    assert session.end_stroke() is None  # no stroke at all
    _drag(session, DRAG_B)
    _drag(session, DRAG_B)  # the same pixels again: no change
    assert len(session.history) == 1
    assert session.project.journal_length(session.item.id) == 1


def test_undo_and_redo_are_journaled(session: EditSession, project: Project) -> None:
    _drag(session, DRAG_A)
    _drag(session, DRAG_B, rule=PaintRule(2))
    after_a = _expected(session.labels.shape, (DRAG_A, 6, BRUSH))
    both = _expected(session.labels.shape, (DRAG_A, 6, BRUSH), (DRAG_B, 6, PaintRule(2)))
    inverse = session.undo()
    assert inverse is not None and set(np.unique(inverse.new)) == {0}
    assert project.journal_length(session.item.id) == 3
    np.testing.assert_array_equal(session.labels, after_a)
    item_id = session.item.id
    np.testing.assert_array_equal(_reopened_mask(project, item_id), after_a)

    with Project.open(project.folder) as again:
        resumed = EditSession(again, again.item(item_id))
        np.testing.assert_array_equal(resumed.labels, after_a)
        assert resumed.undo() is None  # the history is per session, not stored
        _drag(resumed, DRAG_B, rule=PaintRule(2))
        resumed.undo()
        resumed.redo()
        np.testing.assert_array_equal(resumed.labels, both)
    with Project.open(project.folder) as again:
        np.testing.assert_array_equal(again.load_mask(item_id), both)


def test_checkpoint_folds_the_journal(session: EditSession, project: Project) -> None:
    _drag(session, DRAG_A)
    _drag(session, DRAG_B, rule=PaintRule(3))
    assert project.journal_length(session.item.id) == 2
    session.checkpoint()
    assert project.journal_length(session.item.id) == 0
    np.testing.assert_array_equal(project.load_mask(session.item.id), session.labels)
    session.undo()  # undo still works across a checkpoint, and is journaled after it
    assert project.journal_length(session.item.id) == 1
    np.testing.assert_array_equal(_reopened_mask(project, session.item.id),
                                  _expected(session.labels.shape, (DRAG_A, 6, BRUSH)))


def test_the_journal_is_checkpointed_automatically(
    session: EditSession, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "CHECKPOINT_EVERY", 4)
    for i in range(3):
        _drag(session, [(20.0 + 30 * i, 20.0), (20.0 + 30 * i, 90.0)])
    assert project.journal_length(session.item.id) == 3
    _drag(session, [(20.0, 200.0), (200.0, 200.0)])
    assert project.journal_length(session.item.id) == 0
    _drag(session, [(300.0, 20.0), (300.0, 200.0)])
    assert project.journal_length(session.item.id) == 1
    np.testing.assert_array_equal(_reopened_mask(project, session.item.id), session.labels)


def test_the_first_edit_moves_the_item_to_in_progress(
    session: EditSession, project: Project
) -> None:
    assert session.item.state == "new"
    _drag(session, DRAG_B, end=False)
    assert project.item(session.item.id).state == "new"  # not before the edit is complete
    session.end_stroke()
    assert session.item.state == "in_progress"
    assert project.item(session.item.id).state == "in_progress"


def test_editing_a_done_item_keeps_its_state(project: Project) -> None:
    item = project.items()[0]
    project.set_state(item.id, "done")
    session = EditSession(project, project.item(item.id))
    session.fill((5, 5), PaintRule(2))
    assert project.item(item.id).state == "done"


def test_close_ends_an_open_stroke_and_checkpoints(session: EditSession, project: Project) -> None:
    _drag(session, DRAG_A, end=False)
    assert session.stroke_active
    session.close()
    assert not session.stroke_active
    assert len(session.history) == 1
    assert project.journal_length(session.item.id) == 0
    expected = _expected(session.labels.shape, (DRAG_A, 6, BRUSH))
    np.testing.assert_array_equal(_reopened_mask(project, session.item.id), expected)


def test_a_new_stroke_while_one_is_open_keeps_the_first(
    session: EditSession, project: Project
) -> None:
    _drag(session, DRAG_A, end=False)  # e.g. a mouse release the view never delivered
    _drag(session, DRAG_B, rule=PaintRule(2))
    expected = _expected(session.labels.shape, (DRAG_A, 6, BRUSH), (DRAG_B, 6, PaintRule(2)))
    np.testing.assert_array_equal(session.labels, expected)
    assert len(session.history) == 2
    np.testing.assert_array_equal(_reopened_mask(project, session.item.id), expected)


def test_one_shot_tools_are_one_step_each(session: EditSession, project: Project) -> None:
    session.fill((5, 5), PaintRule(2))
    assert (session.labels == 2).all()
    session.polygon([(10, 10), (100, 10), (100, 60), (10, 60)], PaintRule(1))
    assert (session.labels[10:61, 10:101] == 1).all()
    prediction = np.digitize(data.coins(), [100, 150]).astype(np.uint8)
    session.replace_plane(prediction)
    np.testing.assert_array_equal(session.labels, prediction)
    assert len(session.history) == 3
    assert project.journal_length(session.item.id) == 3
    session.undo()
    assert (session.labels[10:61, 10:101] == 1).all()
    session.undo()
    assert (session.labels == 2).all()
    assert session.fill((5, 5), PaintRule(2)) is None
    assert session.polygon([(1, 1), (2, 2)], PaintRule(1)) is None
    assert len(session.history) == 1


def test_a_model_result_above_255_widens_the_labels(session: EditSession, project: Project) -> None:
    _drag(session, DRAG_A)
    prediction = np.zeros(session.labels.shape, np.uint16)
    prediction[50:100, 50:150] = 700
    session.replace_plane(prediction)
    assert session.labels.dtype == np.uint16 and session.labels.max() == 700
    session.undo()
    np.testing.assert_array_equal(session.labels,
                                  _expected(session.labels.shape, (DRAG_A, 6, BRUSH)))
    session.redo()
    np.testing.assert_array_equal(_reopened_mask(project, session.item.id), prediction)


def test_strokes_on_a_stack_edit_the_current_plane(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([data.camera()[:128, :160]] * 3), photometric="minisblack")
    with Project.create(tmp_path / "project") as project:
        item = project.item(project.add_items([path]).added_ids[0])
        session = EditSession(project, item)
        assert session.labels.shape == (3, 128, 160)
        session.plane = (1,)
        _drag(session, [(10, 10), (150, 120)], radius=5)
        session.plane = (2,)
        session.fill((0, 0), PaintRule(4))
        assert not session.labels[0].any()
        assert (session.labels[1] == 1).sum() > 0 and not (session.labels[1] == 4).any()
        assert (session.labels[2] == 4).all()
        session.close()
        np.testing.assert_array_equal(project.load_mask(item), session.labels)


def test_max_undo_bounds_the_history(project: Project) -> None:
    session = EditSession(project, project.items()[0], max_undo=3)
    for i in range(5):
        _drag(session, [(20.0 + 40 * i, 20.0), (20.0 + 40 * i, 80.0)])
    assert len(session.history) == 3
    while session.undo() is not None:
        pass
    expected = _expected(session.labels.shape, ([(20.0, 20.0), (20.0, 80.0)], 6, BRUSH),
                         ([(60.0, 20.0), (60.0, 80.0)], 6, BRUSH))
    np.testing.assert_array_equal(session.labels, expected)

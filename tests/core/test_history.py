"""Undo/redo history: long round trips restore every state, bounds by steps and by memory."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest
from skimage import data

from core.annotation.edits import Edit, merge_edits
from core.annotation.history import History
from core.annotation.tools import PaintRule, fill_polygon, flood_fill, paint_segment


def _digest(labels: np.ndarray) -> str:
    return hashlib.sha1(labels.tobytes()).hexdigest()


def _random_edit(labels: np.ndarray, rng: np.random.Generator) -> Edit | None:
    """One user action on ``labels``: a drag, a fill or a polygon, applied in place."""
    height, width = labels.shape
    value = int(rng.integers(0, 6))
    kind = rng.choice(["drag", "drag", "fill", "polygon"])
    if kind == "drag":
        points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height)))
                  for _ in range(int(rng.integers(1, 5)))]
        rule = PaintRule(value, preserve_others=bool(rng.integers(0, 2)),
                         active_class=int(rng.integers(1, 6)))
        radius = float(rng.uniform(1, 12))
        steps = [paint_segment(labels, points[0], points[0], radius, rule)]
        steps += [paint_segment(labels, a, b, radius, rule)
                  for a, b in itertools.pairwise(points)]
        return merge_edits([s for s in steps if s is not None], labels)
    if kind == "fill":
        seed = (float(rng.integers(0, width)), float(rng.integers(0, height)))
        return flood_fill(labels, seed, PaintRule(value), connectivity=int(rng.choice([4, 8])))
    points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(4)]
    return fill_polygon(labels, points, PaintRule(value))


def test_250_steps_undo_and_redo_restore_every_state_exactly() -> None:
    labels = np.digitize(data.coins(), [100, 150]).astype(np.uint8)
    rng = np.random.default_rng(7)
    history = History(max_steps=500)
    digests = [_digest(labels)]
    checkpoints = {0, 1, 57, 123, 200, 249, 250}
    copies = {0: labels.copy()}
    while len(history) < 250:
        edit = _random_edit(labels, rng)
        if edit is None:
            continue
        history.push(edit)
        digests.append(_digest(labels))
        if len(history) in checkpoints:
            copies[len(history)] = labels.copy()
    assert len(set(digests)) > 200  # the states really differ
    final = labels.copy()

    for step in range(250, 0, -1):
        before = labels.copy()
        applied = history.undo(labels)
        assert applied is not None
        assert _digest(labels) == digests[step - 1], f"undo to state {step - 1}"
        if step - 1 in copies:
            np.testing.assert_array_equal(labels, copies[step - 1])
        if step % 50 == 0:  # the returned edit is what was applied: it turns before into after
            check = before.copy()
            applied.apply(check)
            np.testing.assert_array_equal(check, labels)
    assert not history.can_undo and history.undo(labels) is None
    np.testing.assert_array_equal(labels, copies[0])

    for step in range(1, 251):
        assert history.redo(labels) is not None
        assert _digest(labels) == digests[step], f"redo to state {step}"
        if step in copies:
            np.testing.assert_array_equal(labels, copies[step])
    assert not history.can_redo and history.redo(labels) is None
    np.testing.assert_array_equal(labels, final)


def _dab(labels: np.ndarray, x: float, value: int, radius: float = 3) -> Edit:
    edit = paint_segment(labels, (x, 10), (x, 10), radius, PaintRule(value))
    assert edit is not None
    return edit


def test_a_new_edit_clears_redo() -> None:
    labels = np.zeros((20, 60), np.uint8)
    history = History()
    history.push(_dab(labels, 10, 1))
    history.push(_dab(labels, 30, 2))
    history.undo(labels)
    assert history.can_redo
    history.push(_dab(labels, 50, 3))
    assert not history.can_redo and history.redo(labels) is None
    assert (labels == 2).sum() == 0 and (labels == 3).sum() > 0
    history.undo(labels)
    history.undo(labels)
    assert not labels.any()


def test_max_steps_drops_the_oldest() -> None:
    labels = np.zeros((20, 100), np.uint8)
    history = History(max_steps=5)
    states = [labels.copy()]
    for i in range(8):
        history.push(_dab(labels, 5 + 10 * i, i + 1))
        states.append(labels.copy())
    assert len(history) == 5
    for _ in range(5):
        assert history.undo(labels) is not None
    assert history.undo(labels) is None
    np.testing.assert_array_equal(labels, states[3])  # the three oldest steps are gone for good


def test_memory_bound_drops_oldest_but_keeps_newest() -> None:
    labels = np.zeros((20, 200), np.uint8)
    first = _dab(labels, 10, 1)
    size = first.nbytes
    history = History(max_steps=100, max_bytes=3 * size + size // 2)  # room for three dabs
    history.push(first)
    for i in range(1, 6):
        history.push(_dab(labels, 10 + 20 * i, i + 1))
    assert len(history) == 3
    # Undo/redo must keep the byte count right: after a full round trip the budget still holds 3.
    for _ in range(3):
        history.undo(labels)
    for _ in range(3):
        history.redo(labels)
    history.push(_dab(labels, 150, 9))
    assert len(history) == 3

    huge = np.zeros((300, 300), np.uint8)
    big = paint_segment(huge, (150, 150), (150, 150), 120, PaintRule(4))
    assert big is not None and big.nbytes > history.max_bytes
    history.push(big)
    assert len(history) == 1  # everything older went, the newest stays however large
    assert history.undo(huge) is not None
    assert not huge.any()
    assert history.undo(huge) is None


def test_clear_empties_both_stacks() -> None:
    labels = np.zeros((20, 40), np.uint8)
    history = History()
    history.push(_dab(labels, 10, 1))
    history.push(_dab(labels, 30, 1))
    history.undo(labels)
    history.clear()
    assert len(history) == 0 and not history.can_undo and not history.can_redo


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_undo_on_a_stack_plane(dtype: type) -> None:
    stack = np.zeros((3, 40, 40), dtype)
    history = History()
    edit = paint_segment(stack, (5, 5), (35, 30), 4, PaintRule(300 if dtype == np.uint16 else 3),
                         plane=(1,))
    assert edit is not None
    history.push(edit)
    painted = stack.copy()
    history.undo(stack)
    assert not stack.any()
    history.redo(stack)
    np.testing.assert_array_equal(stack, painted)

"""A volume item with something drawn in it, the views to edit it in and checks of the
recorded edits, shared by tests/core/test_session_views*.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from nibabel.testing import data_path

from core.annotation.edits import Edit
from core.annotation.session import EditSession
from core.project.items import Item
from core.project.store import Project

SHAPE = (25, 41, 33)  # anatomical.nii as (Z, Y, X): every axis a different length
VIEWS = [
    ((5,), (1, 0, 2)),  # coronal-like: slice labels[:, 5, :]
    ((5,), (2, 0, 1)),  # sagittal-like: slice labels[:, :, 5]
    ((5,), (0, 1, 2)),  # the array's own order
    ((7,), (2, 1, 0)),  # rows and columns swapped as well
    ((3,), (1, 2, 0)),
    ((9,), (0, 2, 1)),
]
VIEW_IDS = [f"{axes}@{plane[0]}" for plane, axes in VIEWS]


# -- a volume item with something drawn in it ---------------------------------------------------
def _initial_labels() -> np.ndarray:
    """Class 1 in a pattern of blocks, class 2 in a ball and class 3 in a slab across all axes,
    so that every slice has something to erase, fills have walls and preserving rules have
    something to preserve."""
    z, y, x = np.indices(SHAPE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[(z // 5 + y // 5 + x // 5) % 4 == 0] = 1
    labels[(z - 12) ** 2 + (y - 20) ** 2 + (x - 16) ** 2 <= 49] = 2
    labels[:, 14:17, :] = np.where(labels[:, 14:17, :] == 0, 3, labels[:, 14:17, :])
    return labels


@pytest.fixture
def project(tmp_path: Path):
    source = tmp_path / "anatomical.nii"
    shutil.copy(Path(data_path) / "anatomical.nii", source)
    proj = Project.create(tmp_path / "project")
    item = proj.add_volume(source)
    assert item.mask_shape == SHAPE
    proj.save_mask(item.id, _initial_labels())
    yield proj
    proj.close()


@pytest.fixture
def item(project: Project) -> Item:
    return project.items()[0]


@pytest.fixture
def session(project: Project, item: Item) -> EditSession:
    session = EditSession(project, item)
    np.testing.assert_array_equal(session.labels, _initial_labels())
    return session


def _reference(labels: np.ndarray, plane: tuple[int, ...], axes: tuple[int, ...],
               tool: Callable[[np.ndarray], Edit | None]) -> tuple[np.ndarray, Edit | None]:
    """The volume after running a 2-D ``tool`` on a copy of the displayed slice, and its edit."""
    flat = labels.transpose(axes)[plane].copy()
    edit2d = tool(flat)
    expected = labels.copy()
    expected.transpose(axes)[plane] = flat
    return expected, edit2d


def _check_recorded(edit: Edit, before: np.ndarray, after: np.ndarray,
                    plane: tuple[int, ...], axes: tuple[int, ...], edit2d: Edit) -> None:
    """``edit`` is in (Z, Y, X) order, on the fixed slice only, and turns before into after."""
    assert len(edit.region) == 3
    assert edit.region[axes[0]] == slice(plane[0], plane[0] + 1)
    redone = before.copy()
    edit.apply(redone)
    np.testing.assert_array_equal(redone, after)
    edit.revert(redone)
    np.testing.assert_array_equal(redone, before)
    # the same change as the 2-D tool's, seen in the view
    in_view = edit.transposed(axes)
    assert in_view.region[1:] == edit2d.region
    np.testing.assert_array_equal(in_view.changed[0], edit2d.changed)
    np.testing.assert_array_equal(in_view.old, edit2d.old)
    np.testing.assert_array_equal(in_view.new, edit2d.new)


def _only_on_slice(before: np.ndarray, after: np.ndarray, plane: tuple[int, ...],
                   axes: tuple[int, ...]) -> None:
    changed = np.argwhere(before != after)
    assert changed.size, "the tool changed nothing"
    assert (changed[:, axes[0]] == plane[0]).all()


def _journal_replays(project: Project, item: Item, expected: np.ndarray) -> None:
    """A new session (the app after a crash: only the journal since the checkpoint) sees
    ``expected``; so does the reopened project after the session is closed."""
    assert project.journal_length(item.id) > 0
    np.testing.assert_array_equal(EditSession(project, project.item(item.id)).labels, expected)

"""The project store: classes, items, masks, journal, locking, schema, damage and a full disk."""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from core.annotation.classes import LabelClass, default_classes
from core.annotation.edits import diff_region
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule, paint_segment
from core.errors import (
    ProjectError,
    ProjectLockedError,
    SchemaTooNewError,
    SegStudioError,
    StorageFullError,
)
from core.project.schema import SCHEMA_VERSION
from core.project.store import DB_NAME, Project, is_project

REPO_ROOT = Path(__file__).resolve().parents[2]


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """``tmp_path/work`` holding ``images/`` (real photos) beside where the project goes."""
    root = tmp_path / "work"
    _png(root / "images" / "coins.png", data.coins())
    _png(root / "images" / "a" / "camera.png", data.camera())
    _png(root / "images" / "b" / "camera.png", data.camera()[::2, ::2])
    (root / "images" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def project(workspace: Path):
    proj = Project.create(workspace / "project")
    yield proj
    proj.close()


def _item_named(project: Project, name: str):
    return next(i for i in project.items() if i.name == name)


def _add_coins(project: Project, workspace: Path):
    report = project.add_items([workspace / "images" / "coins.png"])
    assert len(report.added_ids) == 1
    return project.item(report.added_ids[0])


# -- opening and closing -------------------------------------------------------------------------
def test_create_open_close(workspace: Path) -> None:
    folder = workspace / "project"
    assert not is_project(folder)
    project = Project.create(folder)
    assert is_project(folder) and (folder / DB_NAME).is_file()
    assert project.classes() == default_classes()
    with pytest.raises(ProjectError, match="already holds"):
        Project.create(folder)
    project.close()
    project.close()  # closing twice is harmless
    with Project.open(folder) as again:
        assert again.classes() == default_classes()
        assert again.items() == []
    with Project.open(folder):  # the with-block released the lock
        pass


def test_open_a_folder_without_project(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="not a SegStudio project"):
        Project.open(tmp_path)


def test_meta_round_trip(project: Project) -> None:
    assert project.meta("export_dir") is None and project.meta("x", "dflt") == "dflt"
    project.set_meta("export_dir", "/data/out")
    project.set_meta("export_dir", "/data/out2")
    assert project.meta("export_dir") == "/data/out2"


# -- classes ---------------------------------------------------------------------------------------
def test_set_and_get_classes(project: Project) -> None:
    classes = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "cell", (255, 0, 0)),
               LabelClass(300, "nucleus", (0, 128, 255))]
    project.set_classes(classes)
    assert project.classes() == classes
    with pytest.raises(ProjectError, match="same index"):
        project.set_classes([LabelClass(1, "a", (1, 1, 1)), LabelClass(1, "b", (2, 2, 2))])
    with pytest.raises(ProjectError, match="between 0 and 65535"):
        project.set_classes([LabelClass(70000, "a", (1, 1, 1))])
    assert project.classes() == classes  # refused changes left the table as it was


def _class_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(seed)
    for value in (1, 2, 2, 3):
        x, y = rng.uniform(0, shape[1]), rng.uniform(0, shape[0])
        paint_segment(labels, (x, y), (x + 30, y + 10), 12, PaintRule(value))
    return labels


def test_delete_class_remaps_every_mask_including_journal_only(
    project: Project, workspace: Path
) -> None:
    project.set_classes([*default_classes(), LabelClass(2, "two", (0, 255, 0)),
                         LabelClass(3, "three", (0, 0, 255))])
    report = project.add_items([workspace / "images"])
    checkpointed, journal_only, untouched = (project.item(i) for i in report.added_ids)

    saved = _class_map(checkpointed.mask_shape, 1)
    project.save_mask(checkpointed.id, saved)
    journaled = _class_map(journal_only.mask_shape, 2)
    region = tuple(slice(0, n) for n in journaled.shape)
    project.append_edit(journal_only.id,
                        diff_region(np.zeros_like(journaled), journaled, region))
    assert project.journal_length(journal_only.id) == 1
    other = np.where(_class_map(untouched.mask_shape, 3) == 2, 3, 0).astype(np.uint8)
    project.save_mask(untouched.id, other)
    assert (saved == 2).any() and (journaled == 2).any() and not (other == 2).any()

    assert project.delete_class(2, replacement=1) == 2
    np.testing.assert_array_equal(project.load_mask(checkpointed), np.where(saved == 2, 1, saved))
    np.testing.assert_array_equal(project.load_mask(journal_only),
                                  np.where(journaled == 2, 1, journaled))
    np.testing.assert_array_equal(project.load_mask(untouched), other)
    assert project.journal_length(journal_only.id) == 0  # folded into a checkpoint
    assert [c.index for c in project.classes()] == [0, 1, 3]

    assert project.delete_class(3) == 3  # default replacement: background
    assert not (project.load_mask(untouched) == 3).any()


def test_delete_class_to_a_missing_replacement_changes_nothing(
    project: Project, workspace: Path
) -> None:
    item = _add_coins(project, workspace)
    labels = _class_map(item.mask_shape, 4)
    project.save_mask(item.id, labels)
    with pytest.raises(ProjectError, match="does not exist"):
        project.delete_class(1, replacement=7)
    np.testing.assert_array_equal(project.load_mask(item), labels)
    assert [c.index for c in project.classes()] == [0, 1]


def test_delete_class_to_a_replacement_above_255_widens_the_mask(
    project: Project, workspace: Path
) -> None:
    project.set_classes([*default_classes(), LabelClass(1000, "big", (9, 9, 9))])
    item = _add_coins(project, workspace)
    labels = _class_map(item.mask_shape, 5)
    project.save_mask(item.id, labels)
    assert project.delete_class(1, replacement=1000) == 1
    loaded = project.load_mask(item)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, np.where(labels == 1, 1000, labels.astype(np.uint16)))


# -- items -----------------------------------------------------------------------------------------
def test_add_items_from_folders_with_unique_names(project: Project, workspace: Path) -> None:
    report = project.add_items([workspace / "images"])
    assert len(report.added_ids) == 3
    assert report.skipped == []  # notes.txt is not an image name: not even considered
    items = project.items()
    assert sorted(i.name for i in items) == ["camera", "camera_2", "coins"]
    assert [i.position for i in items] == [0, 1, 2]
    camera, camera_2 = _item_named(project, "camera"), _item_named(project, "camera_2")
    assert camera.source.parent.name == "a" and camera_2.source.parent.name == "b"
    assert (camera.height, camera.width) == (512, 512)
    assert (camera_2.height, camera_2.width) == (256, 256)
    coins = _item_named(project, "coins")
    assert (coins.height, coins.width, coins.frames) == (303, 384, 1)
    assert coins.mask_shape == (303, 384) and coins.state == "new" and not coins.missing


def test_add_items_skips_duplicates(project: Project, workspace: Path) -> None:
    first = project.add_items([workspace / "images" / "coins.png"])
    again = project.add_items([workspace / "images", workspace / "images" / "coins.png"])
    assert len(first.added_ids) == 1 and len(again.added_ids) == 2
    assert len(project.items()) == 3
    assert project.add_items([workspace / "images"]).added_ids == []
    new = _png(workspace / "images" / "c" / "coins.png", data.coins()[:100])
    report = project.add_items([new])
    assert len(report.added_ids) == 1
    assert project.item(report.added_ids[0]).name == "coins_2"
    assert project.item(report.added_ids[0]).position == 3


def test_add_items_recognises_the_same_file_under_another_spelling(
    project: Project, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    assert len(project.add_items([Path("images") / "coins.png"]).added_ids) == 1
    for spelling in ("images/a/../coins.png", "./images/coins.png",
                     str(workspace / "images" / "." / "coins.png")):
        assert project.add_items([spelling]).added_ids == [], spelling
    assert [i.name for i in project.items()] == ["coins"]


def test_add_items_not_recursive(project: Project, workspace: Path) -> None:
    report = project.add_items([workspace / "images"], recursive=False)
    assert [project.item(i).name for i in report.added_ids] == ["coins"]


def test_relative_paths_survive_moving_the_parent_folder(workspace: Path, tmp_path: Path) -> None:
    with Project.create(workspace / "project") as project:
        project.add_items([workspace / "images"])
        coins = _item_named(project, "coins")
        assert not os.path.isabs(coins.path)
        assert coins.path == os.path.join("..", "images", "coins.png")
        labels = _class_map(coins.mask_shape, 6)
        project.save_mask(coins.id, labels)

    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(workspace, moved)
    shutil.rmtree(workspace)
    with Project.open(moved / "project") as project:
        items = project.items()
        assert len(items) == 3 and not any(i.missing for i in items)
        coins = _item_named(project, "coins")
        assert coins.source == (moved / "images" / "coins.png").resolve()
        np.testing.assert_array_equal(project.load_mask(coins), labels)


def test_a_missing_source_is_flagged_and_the_project_still_opens(workspace: Path) -> None:
    with Project.create(workspace / "project") as project:
        project.add_items([workspace / "images"])
        coins = _item_named(project, "coins")
        project.save_mask(coins.id, _class_map(coins.mask_shape, 7))
    (workspace / "images" / "coins.png").unlink()
    with Project.open(workspace / "project") as project:
        coins = _item_named(project, "coins")
        assert coins.missing and coins.source is None
        assert not _item_named(project, "camera").missing
        np.testing.assert_array_equal(project.load_mask(coins), _class_map(coins.mask_shape, 7))


@pytest.mark.parametrize("content", [b"", b"just some text\n"])
def test_an_unreadable_file_is_skipped_with_a_reason(
    project: Project, workspace: Path, content: bytes
) -> None:
    _add_coins(project, workspace)
    before_items = project.items()
    bad = workspace / "images" / "broken.png"
    bad.write_bytes(content)
    text = workspace / "images" / "notes.txt"
    report = project.add_items([bad, text, workspace / "images" / "nope.png"])
    assert report.added_ids == []
    reasons = dict(report.skipped)
    assert set(reasons) == {str(bad), str(text), str(workspace / "images" / "nope.png")}
    assert all(isinstance(r, str) and r for r in reasons.values())
    assert "empty" in reasons[str(bad)] or "PNG" in reasons[str(bad)]
    assert "format" in reasons[str(text)]
    assert "no such file" in reasons[str(workspace / "images" / "nope.png")]
    assert project.items() == before_items


def test_set_state_validates(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    for state in ("in_progress", "done", "needs_review", "new", "done"):
        project.set_state(item.id, state)
        assert project.item(item.id).state == state
    with pytest.raises(ProjectError, match="Unknown item state 'finished'"):
        project.set_state(item.id, "finished")
    assert project.item(item.id).state == "done"
    with pytest.raises(ProjectError, match="no item"):
        project.item(9999)


def test_remove_item_drops_its_mask_and_journal(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    project.save_mask(item.id, _class_map(item.mask_shape, 8))
    edit = diff_region(np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8),
                       (slice(0, 2), slice(0, 2)))
    project.append_edit(item.id, edit)
    assert project.has_mask(item.id)
    project.remove_item(item.id)
    assert project.items() == []
    assert not project.has_mask(item.id) and project.journal_length(item.id) == 0


# -- masks -----------------------------------------------------------------------------------------
def test_mask_round_trip_uint8_and_uint16(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    assert not project.has_mask(item.id)
    empty = project.load_mask(item)
    assert empty.shape == (303, 384) and empty.dtype == np.uint8 and not empty.any()

    labels = _class_map(item.mask_shape, 9)
    project.save_mask(item.id, labels)
    assert project.has_mask(item.id)
    loaded = project.load_mask(item.id)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, labels)
    loaded[0, 0] = 99  # the loaded array is a writable copy
    np.testing.assert_array_equal(project.load_mask(item), labels)

    wide = labels.astype(np.uint16) * 1000
    project.save_mask(item.id, wide)
    loaded = project.load_mask(item)
    assert loaded.dtype == np.uint16 and loaded.max() == 3000
    np.testing.assert_array_equal(loaded, wide)


def test_mask_round_trip_of_a_stack(project: Project, workspace: Path) -> None:
    stack_path = workspace / "images" / "stack.tif"
    tifffile.imwrite(stack_path, np.stack([data.camera()[:100, :120]] * 4),
                     photometric="minisblack")
    report = project.add_items([stack_path])
    item = project.item(report.added_ids[0])
    assert item.frames == 4 and item.mask_shape == (4, 100, 120)
    assert project.load_mask(item).shape == (4, 100, 120)
    labels = np.zeros(item.mask_shape, np.uint8)
    paint_segment(labels, (10, 10), (100, 90), 6, PaintRule(2), plane=(1,))
    paint_segment(labels, (50, 20), (20, 80), 4, PaintRule(1), plane=(3,))
    project.save_mask(item.id, labels)
    np.testing.assert_array_equal(project.load_mask(item), labels)


def test_journal_replay_equals_the_labels_in_memory(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    session = EditSession(project, item)
    rng = np.random.default_rng(11)
    for i in range(12):
        points = [(float(rng.uniform(0, 384)), float(rng.uniform(0, 303))) for _ in range(4)]
        rule = PaintRule(int(rng.integers(0, 4)), preserve_others=bool(i % 2), active_class=2)
        session.begin_stroke(points[0], 9, rule)
        for p in points[1:]:
            session.continue_stroke(p, 9, rule)
        session.end_stroke()
        if i == 5:
            session.checkpoint()  # half checkpoint, half journal
    assert project.journal_length(item.id) == 6
    session.fill((5.0, 5.0), PaintRule(3))
    session.polygon([(300, 10), (380, 40), (320, 120)], PaintRule(2))
    session.undo()
    np.testing.assert_array_equal(project.load_mask(item), session.labels)
    project.close()
    with Project.open(project.folder) as reopened:
        np.testing.assert_array_equal(reopened.load_mask(item.id), session.labels)


def test_a_journal_that_widens_to_uint16_replays(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    base = _class_map(item.mask_shape, 12)
    project.save_mask(item.id, base)  # a uint8 checkpoint
    session = EditSession(project, item)
    prediction = base.astype(np.uint16)
    prediction[100:150, 100:200] = 4000
    session.replace_plane(prediction)
    assert session.labels.dtype == np.uint16
    loaded = project.load_mask(item)
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, prediction)


# -- locking ---------------------------------------------------------------------------------------
def test_a_second_open_in_the_same_process_is_refused(project: Project) -> None:
    with pytest.raises(ProjectLockedError) as info:
        Project.open(project.folder)
    message = str(info.value)
    assert "already open" in message and f"process {os.getpid()}" in message
    assert str(project.folder) in message
    project.set_meta("still", "usable")  # the first handle was not disturbed
    assert project.meta("still") == "usable"
    project.close()
    with Project.open(project.folder) as again:
        assert again.meta("still") == "usable"


_OPEN_IN_CHILD = textwrap.dedent("""
    import sys
    from core.errors import ProjectLockedError
    from core.project.store import Project
    try:
        project = Project.open(sys.argv[1])
    except ProjectLockedError as err:
        print("LOCKED:", err)
        sys.exit(3)
    print("OPENED", len(project.items()))
    project.close()
""")


def _open_in_child(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _OPEN_IN_CHILD, str(folder)], cwd=REPO_ROOT,
                          check=False,
                          capture_output=True, text=True, timeout=60)


def test_a_second_open_from_another_process_is_refused(project: Project) -> None:
    child = _open_in_child(project.folder)
    assert child.returncode == 3, child.stderr
    assert "already open in another SegStudio" in child.stdout
    assert f"process {os.getpid()}" in child.stdout
    project.close()
    child = _open_in_child(project.folder)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "OPENED 0"


# -- schema and damage -----------------------------------------------------------------------------
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_newer_schema_is_refused_and_left_untouched(workspace: Path, journal_mode: str) -> None:
    folder = workspace / "project"
    Project.create(folder).close()
    db_path = folder / DB_NAME
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA journal_mode={journal_mode}")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    content, mtime = db_path.read_bytes(), db_path.stat().st_mtime_ns

    for _ in range(2):  # the refusal released the lock: the second try is refused the same way
        with pytest.raises(SchemaTooNewError, match="newer SegStudio") as info:
            Project.open(folder)
        assert f"schema {SCHEMA_VERSION + 1}" in str(info.value)
    assert db_path.read_bytes() == content
    assert db_path.stat().st_mtime_ns == mtime
    assert not (folder / (DB_NAME + "-wal")).exists()


def test_a_corrupt_database_is_a_project_error(workspace: Path) -> None:
    folder = workspace / "project"
    Project.create(folder).close()
    db_path = folder / DB_NAME
    garbage = np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes()
    db_path.write_bytes(garbage)
    for _ in range(2):
        with pytest.raises(ProjectError, match="damaged") as info:
            Project.open(folder)
        assert not isinstance(info.value, sqlite3.Error)
        assert isinstance(info.value, SegStudioError)
    assert db_path.read_bytes() == garbage


def test_a_database_damaged_past_its_header_fails_with_project_errors(
    workspace: Path
) -> None:
    folder = workspace / "project"
    with Project.create(folder) as project:
        item = _add_coins(project, workspace)
        noise = np.random.default_rng(1).integers(0, 256, item.mask_shape, dtype=np.uint8)
        project.save_mask(item.id, noise)  # a database of many pages
    db_path = folder / DB_NAME
    size = db_path.stat().st_size
    assert size > 16 * 4096
    with db_path.open("r+b") as fh:  # keep the header page, scramble the rest
        fh.seek(4096)
        fh.write(np.random.default_rng(2).integers(0, 256, size - 4096, np.uint8).tobytes())
    try:
        project = Project.open(folder)  # the header is fine: it may open...
    except ProjectError:
        return
    with project:  # ...but every read then fails with a message, never a raw sqlite error
        for read in (project.items, project.classes, lambda: project.load_mask(item.id),
                     lambda: project.journal_length(item.id), lambda: project.has_mask(item.id)):
            with pytest.raises(ProjectError, match="damaged"):
                read()
        with pytest.raises(ProjectError):
            project.set_meta("a", "b")


# -- a full disk -----------------------------------------------------------------------------------
def _stroke(session: EditSession, points: list[tuple[float, float]], radius: float,
            rule: PaintRule) -> None:
    session.begin_stroke(points[0], radius, rule)
    for p in points[1:]:
        session.continue_stroke(p, radius, rule)


def _replay(labels: np.ndarray, points: list[tuple[float, float]], radius: float,
            rule: PaintRule) -> None:
    paint_segment(labels, points[0], points[0], radius, rule)
    for a, b in itertools.pairwise(points):
        paint_segment(labels, a, b, radius, rule)


def test_a_full_disk_keeps_the_edit_queued_and_saves_it_later(
    project: Project, workspace: Path
) -> None:
    item = _add_coins(project, workspace)
    # Incompressible old values make the journal record need new database pages.
    noise = np.random.default_rng(3).integers(0, 256, item.mask_shape, dtype=np.uint8)
    project.save_mask(item.id, noise)
    session = EditSession(project, project.item(item.id))
    expected = noise.copy()

    db = project._db  # simulate a full disk: the database may not grow past its current size
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert db.execute(f"PRAGMA max_page_count = {pages}").fetchone()[0] == pages

    first = [(60.0, 60.0), (160.0, 120.0), (250.0, 90.0)]
    _stroke(session, first, 30, PaintRule(7))
    with pytest.raises(StorageFullError, match="full") as info:
        session.end_stroke()
    assert isinstance(info.value, ProjectError)
    _replay(expected, first, 30, PaintRule(7))
    assert session.unsaved_count == 1
    np.testing.assert_array_equal(session.labels, expected)
    assert project.journal_length(item.id) == 0  # nothing half-written
    assert session.history.can_undo and not session.stroke_active

    db.execute("PRAGMA max_page_count = 1073741823")  # space was freed
    second = [(300.0, 250.0), (200.0, 280.0)]
    _stroke(session, second, 25, PaintRule(8))
    assert session.end_stroke() is not None
    _replay(expected, second, 25, PaintRule(8))
    assert session.unsaved_count == 0
    assert project.journal_length(item.id) == 2
    np.testing.assert_array_equal(session.labels, expected)

    project.close()
    with Project.open(project.folder) as reopened:
        np.testing.assert_array_equal(reopened.load_mask(item.id), expected)
        assert reopened.item(item.id).state == "in_progress"


def test_create_with_an_empty_class_list_keeps_it_empty(tmp_path: Path) -> None:
    with Project.create(tmp_path / "p", classes=[]) as project:
        assert project.classes() == []


def test_the_background_class_cannot_be_deleted(project: Project) -> None:
    with pytest.raises(ProjectError, match="background"):
        project.delete_class(0)
    assert project.classes()[0].index == 0


def test_a_read_only_open_works_while_another_holds_the_lock(
    project: Project, workspace: Path
) -> None:
    item = _add_coins(project, workspace)
    labels = np.zeros(item.mask_shape, np.uint8)
    labels[10:40, 20:60] = 1
    project.save_mask(item.id, labels)
    with Project.open(project.folder, read_only=True) as viewer:
        assert viewer.read_only
        assert np.array_equal(viewer.load_mask(viewer.item(item.id)), labels)
        with pytest.raises(ProjectError, match="read-only"):
            viewer.set_state(item.id, "done")
    assert project.item(item.id).state != "done"


def test_a_transaction_is_all_or_nothing(project: Project, workspace: Path) -> None:
    item = _add_coins(project, workspace)
    labels = np.ones(item.mask_shape, np.uint8)
    with pytest.raises(RuntimeError), project.transaction():
        project.set_state(item.id, "done")
        project.save_mask(item.id, labels)
        raise RuntimeError("crash half-way")
    assert project.item(item.id).state == "new"
    assert not project.has_mask(item.id)
    with project.transaction():
        project.set_state(item.id, "done")
        project.save_mask(item.id, labels)
    assert project.item(item.id).state == "done"
    assert np.array_equal(project.load_mask(item.id), labels)


def test_an_empty_database_file_is_reported_as_damaged(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "project.sqlite").write_bytes(b"")
    with pytest.raises(ProjectError, match="empty"):
        Project.open(folder)

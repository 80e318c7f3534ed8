"""A project: one folder holding a SQLite database of classes, items, masks and an edit journal.

Crash safety: every completed stroke is appended to the ``journal`` table in its own transaction
(WAL mode), and a mask is the last checkpoint blob plus the journal entries after it. Journal
entries store absolute new values, so replaying them is idempotent, and a checkpoint writes the
blob and drops the item's journal in one transaction: a SIGKILL at any moment leaves either the old
or the new state, never a mix. No pickle anywhere: masks are zlib-compressed raw arrays with their
shape and dtype in plain columns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core.annotation.classes import LabelClass, default_classes
from core.annotation.edits import Edit
from core.errors import ProjectError, StorageFullError
from core.project.items import (
    ITEM_STATES,
    AddReport,
    Item,
    check_frame,
    item_from_row,
    plan_new_items,
    plan_video,
    plan_volume,
)
from core.project.lock import ProjectLock
from core.project.records import ProjectRecords
from core.project.schema import SCHEMA_VERSION, check_version, migrate

DB_NAME = "project.sqlite"


def is_project(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a SegStudio project folder."""
    return (Path(folder) / DB_NAME).is_file()


class Project(ProjectRecords):
    """An open project. Use :meth:`create` or :meth:`open`; close it (or use ``with``).

    All methods are thread-safe (one connection guarded by a lock), so a worker thread may export
    while the UI thread journals strokes.
    """

    def __init__(self, folder: Path, db: sqlite3.Connection, lock: ProjectLock | None) -> None:
        self.folder = folder
        self._db = db
        self._lock = lock  # None: opened read-only
        self._mutex = threading.RLock()
        self._batch_depth = 0  # > 0 inside transaction(): writes join the open transaction

    # -- opening and closing -------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | os.PathLike, classes: list[LabelClass] | None = None) -> Project:
        """Create a new project in ``folder`` (created if missing; must not hold a project)."""
        folder = Path(folder).absolute()
        if is_project(folder):
            raise ProjectError(f"{folder} already holds a SegStudio project; open it instead.")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ProjectError(f"Cannot create the project folder {folder}: {err.strerror}.") from err
        project = cls._connect(folder)
        project.set_classes(default_classes() if classes is None else classes)
        return project

    @classmethod
    def open(cls, folder: str | os.PathLike, read_only: bool = False) -> Project:
        """Open an existing project, refusing one held by another process or from a newer schema.

        Args:
            folder: The project folder.
            read_only: Look without taking the lock (e.g. ``segstudio-cli info`` while the GUI
                has the project open); every write then fails with ProjectError.
        """
        folder = Path(folder).absolute()
        if not is_project(folder):
            raise ProjectError(f"{folder} is not a SegStudio project (no {DB_NAME} inside).")
        if (folder / DB_NAME).stat().st_size == 0:
            raise ProjectError(f"The project database in {folder} is empty (damaged).")
        return cls._connect_read_only(folder) if read_only else cls._connect(folder)

    @classmethod
    def _connect_read_only(cls, folder: Path) -> Project:
        uri = (folder / DB_NAME).as_uri() + "?mode=ro"
        try:
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if check_version(db, str(folder)) < SCHEMA_VERSION:
                db.close()
                raise ProjectError(f"The project {folder} has an older schema; open it once "
                                   "with SegStudio to upgrade it.")
        except sqlite3.DatabaseError as err:
            raise ProjectError(f"The project database in {folder} is damaged: {err}.") from err
        return cls(folder, db, None)

    @classmethod
    def _connect(cls, folder: Path) -> Project:
        lock = ProjectLock(folder)
        try:
            lock.acquire()
        except OSError as err:
            raise ProjectError(f"Cannot open the project {folder}: {err.strerror}.") from err
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(folder / DB_NAME, check_same_thread=False, isolation_level=None)
            # Refuse a newer schema before anything writes: switching to WAL rewrites the header.
            check_version(db, str(folder))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes in WAL
            db.execute("PRAGMA foreign_keys=ON")
            migrate(db, str(folder))
        except BaseException as err:
            if db is not None:
                db.close()  # a refused project must not stay open (and keep its -wal file)
            lock.release()
            if isinstance(err, sqlite3.DatabaseError):
                raise ProjectError(
                    f"The project database in {folder} is damaged: {err}."
                ) from err
            raise
        return cls(folder, db, lock)

    def close(self) -> None:
        with self._mutex:
            if self._lock is None:
                self._db.close()
            elif self._lock.held:
                self._db.close()
                self._lock.release()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        return self._lock is None

    @contextmanager
    def transaction(self) -> Iterator[Project]:
        """Group several writes (e.g. a whole import) into one all-or-nothing transaction."""
        with self._write():
            self._batch_depth += 1
            try:
                yield self
            finally:
                self._batch_depth -= 1

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; disk-full and I/O errors become clear, typed errors."""
        with self._mutex:
            if self._batch_depth:  # the enclosing transaction() commits or rolls back
                yield self._db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as err:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(err, sqlite3.OperationalError) and "full" in str(err):
                    raise StorageFullError(
                        f"The disk holding {self.folder} is full: the last change was not saved "
                        "(it is kept in memory). Free some space; SegStudio retries on the next save."
                    ) from err
                if isinstance(err, sqlite3.OperationalError) and "readonly" in str(err):
                    raise ProjectError(f"The project {self.folder} was opened read-only.") from err
                if isinstance(err, sqlite3.DatabaseError):
                    raise ProjectError(f"Saving to {self.folder} failed: {err}.") from err
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._mutex, self._reading():
            return self._db.execute(sql, args).fetchall()

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Reads of a damaged database (it may open fine and fail later) become ProjectError."""
        try:
            yield
        except sqlite3.ProgrammingError:
            raise  # misuse (e.g. a closed project) is a bug, not damage
        except (sqlite3.DatabaseError, zlib.error) as err:
            raise ProjectError(f"The project database in {self.folder} is damaged: {err}.") from err

    # -- classes ---------------------------------------------------------------------------------
    def classes(self) -> list[LabelClass]:
        rows = self._read("SELECT idx, name, color FROM classes ORDER BY idx")
        return [LabelClass(i, n, tuple(json.loads(c))) for i, n, c in rows]

    def set_classes(self, classes: Iterable[LabelClass]) -> None:
        """Replace the class table (masks untouched; see :meth:`delete_class` for removals)."""
        classes = list(classes)
        indices = [c.index for c in classes]
        if len(set(indices)) != len(indices):
            raise ProjectError("Two classes share the same index.")
        if any(not 0 <= i <= 65535 for i in indices):
            raise ProjectError("Class indices must lie between 0 and 65535.")
        with self._write() as db:
            db.execute("DELETE FROM classes")
            db.executemany(
                "INSERT INTO classes (idx, name, color) VALUES (?, ?, ?)",
                [(c.index, c.name, json.dumps(list(c.color))) for c in classes],
            )

    def delete_class(self, index: int, replacement: int = 0) -> int:
        """Remove class ``index`` and relabel its pixels in every mask as ``replacement``.

        Journals are folded into the masks first so the remap is one transaction. Returns the
        number of items whose masks changed.
        """
        if index == 0:
            raise ProjectError("The background class (0) cannot be deleted.")
        classes = [c for c in self.classes() if c.index != index]
        if replacement != 0 and replacement not in {c.index for c in classes}:
            raise ProjectError(f"Cannot remap to class {replacement}: it does not exist.")
        changed_items = 0
        with self._write() as db:
            for item in self.items():
                labels = self._load_mask_locked(item)
                if labels is None or not (labels == index).any():
                    continue
                if replacement > np.iinfo(labels.dtype).max:
                    labels = labels.astype(np.uint16)  # classes go up to 65535
                labels[labels == index] = replacement
                self._store_mask_locked(db, item.id, labels)
                changed_items += 1
            for item in self.items():
                changed_frames = 0
                for frame in self.annotated_frames(item.id) if item.kind == "video" else []:
                    labels = self._load_mask_locked(item, frame)
                    if labels is None or not (labels == index).any():
                        continue
                    if replacement > np.iinfo(labels.dtype).max:
                        labels = labels.astype(np.uint16)
                    labels[labels == index] = replacement
                    self._store_mask_locked(db, item.id, labels, frame)
                    changed_frames += 1
                changed_items += changed_frames > 0
            if replacement:  # instances of the class join the replacement class
                db.execute("UPDATE instances SET class_idx = ? WHERE class_idx = ?",
                           (replacement, index))
            else:  # they lose their class: their rows go, their pixels are no instance
                db.execute("DELETE FROM instances WHERE class_idx = ?", (index,))
            db.execute("DELETE FROM classes WHERE idx = ?", (index,))
        return changed_items

    # -- items -----------------------------------------------------------------------------------
    def items(self) -> list[Item]:
        rows = self._read(f"SELECT {Item.COLUMNS} FROM items ORDER BY position, id")
        return [item_from_row(self.folder, row) for row in rows]

    def item(self, item_id: int) -> Item:
        rows = self._read(f"SELECT {Item.COLUMNS} FROM items WHERE id = ?", (item_id,))
        if not rows:
            raise ProjectError(f"The project has no item {item_id}.")
        return item_from_row(self.folder, rows[0])

    def add_items(self, paths: Iterable[str | os.PathLike], recursive: bool = True) -> AddReport:
        """Add image files (folders are expanded); unreadable files are reported, not added."""
        existing = self.items()
        report, rows = plan_new_items(self.folder, paths, existing, recursive)
        with self._write() as db:
            start = max((i.position for i in existing), default=-1) + 1
            for offset, row in enumerate(rows):
                cur = db.execute(
                    "INSERT INTO items (name, path, abs_path, kind, height, width, frames, "
                    "position) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, start + offset),
                )
                report.added_ids.append(int(cur.lastrowid))
        return report

    def add_volume(self, path: str | os.PathLike, *, series_uid: str | None = None,
                   volume_index: int | None = None) -> Item:
        """Add a CT/MR volume (DICOM folder/file/DICOMDIR, or .nii/.nii.gz) as one item.

        Only headers are read. Adding the same path with the same series/volume again returns
        the existing item.

        Raises:
            SeriesChoiceError: Several DICOM series and no ``series_uid``.
            VolumeIndexRequiredError: A 4D NIfTI and no ``volume_index``.
            SegStudioError: Not a volume, missing or unreadable.
        """
        existing = self.items()
        found, row = plan_volume(self.folder, path, existing, series_uid=series_uid,
                                 volume_index=volume_index)
        if found is not None:
            return found
        return self._append_item(row, existing)

    def add_video(self, path: str | os.PathLike) -> Item:
        """Add a video file (mp4/avi/mov/mkv/webm) or a folder of frames as one item; adding
        the same path again returns the existing item."""
        existing = self.items()
        found, row = plan_video(self.folder, path, existing)
        if found is not None:
            return found
        return self._append_item(row, existing)

    def _append_item(self, row: tuple, existing: list[Item]) -> Item:
        """Insert a planned volume/video row (name, path, abs_path, kind, height, width,
        frames, extra) at the end of the item list."""
        with self._write() as db:
            start = max((i.position for i in existing), default=-1) + 1
            cur = db.execute(
                "INSERT INTO items (name, path, abs_path, kind, height, width, frames, extra, "
                "position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, start),
            )
        return self.item(int(cur.lastrowid))

    def set_state(self, item_id: int, state: str) -> None:
        if state not in ITEM_STATES:
            raise ProjectError(f"Unknown item state {state!r}; use one of {', '.join(ITEM_STATES)}.")
        with self._write() as db:
            db.execute("UPDATE items SET state = ? WHERE id = ?", (state, item_id))

    def remove_item(self, item_id: int) -> None:
        with self._write() as db:
            db.execute("DELETE FROM items WHERE id = ?", (item_id,))

    # -- masks -----------------------------------------------------------------------------------
    # An image, stack or volume has one mask (table masks + journal). A video has one mask per
    # annotated frame (frame_masks + frame_journal, keyed by frame): pass ``frame``.
    def load_mask(self, item: Item | int, frame: int | None = None,
                  layer: str = "class") -> np.ndarray:
        """The item's (or one video frame's) current labels (checkpoint + journal), zeros if
        never edited. ``layer`` "instances": the instance map (uint32 ids) instead of the class
        map (images only)."""
        item = self.item(item) if isinstance(item, int) else item
        check_frame(item, frame)
        _check_layer(frame, layer)
        with self._mutex, self._reading():
            labels = self._load_mask_locked(item, frame, layer)
        if labels is None:
            dtype = np.uint32 if layer == "instances" else np.uint8
            return np.zeros(item.mask_shape, dtype)
        return labels

    def has_mask(self, item_id: int, frame: int | None = None, layer: str = "class") -> bool:
        """Whether the item (or the video frame) has labels stored. A video's frames count only
        when ``frame`` is given: see :meth:`annotated_frames`."""
        masks, journal, key = self._tables(frame, layer)
        args = (item_id,) if frame is None else (item_id, frame)
        rows = self._read(
            f"SELECT (SELECT COUNT(*) FROM {masks} WHERE {key}) "
            f"+ (SELECT COUNT(*) FROM {journal} WHERE {key})",
            args + args,
        )
        return rows[0][0] > 0

    def annotated_frames(self, item_id: int) -> list[int]:
        """The frames of a video that have labels stored, ascending."""
        rows = self._read(
            "SELECT frame FROM frame_masks WHERE item_id = ? UNION "
            "SELECT frame FROM frame_journal WHERE item_id = ? ORDER BY frame",
            (item_id, item_id),
        )
        return [int(r[0]) for r in rows]

    def append_edit(self, item_id: int, edit: Edit, dtype: np.dtype | None = None,
                    frame: int | None = None, layer: str = "class") -> None:
        """Journal one completed edit durably (one transaction)."""
        record = edit.to_record()
        _check_layer(frame, layer)
        with self._write() as db:
            if frame is None:
                journal = "instance_journal" if layer == "instances" else "journal"
                db.execute(
                    f"INSERT INTO {journal} (item_id, header, changed, vals) VALUES (?, ?, ?, ?)",
                    (item_id, record["header"], record["changed"], record["values"]),
                )
            else:
                db.execute(
                    "INSERT INTO frame_journal (item_id, frame, header, changed, vals) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (item_id, frame, record["header"], record["changed"], record["values"]),
                )

    def journal_length(self, item_id: int, frame: int | None = None,
                       layer: str = "class") -> int:
        _masks, journal, key = self._tables(frame, layer)
        args = (item_id,) if frame is None else (item_id, frame)
        return self._read(f"SELECT COUNT(*) FROM {journal} WHERE {key}", args)[0][0]

    def save_mask(self, item_id: int, labels: np.ndarray, frame: int | None = None,
                  layer: str = "class") -> None:
        """Checkpoint: store ``labels`` as the item's (frame's) mask and drop its journal,
        atomically."""
        _check_layer(frame, layer)
        with self._write() as db:
            self._store_mask_locked(db, item_id, labels, frame, layer)

    @staticmethod
    def _tables(frame: int | None, layer: str = "class") -> tuple[str, str, str]:
        if layer == "instances":
            return "instance_masks", "instance_journal", "item_id = ?"
        if frame is None:
            return "masks", "journal", "item_id = ?"
        return "frame_masks", "frame_journal", "item_id = ? AND frame = ?"

    def _store_mask_locked(self, db: sqlite3.Connection, item_id: int, labels: np.ndarray,
                           frame: int | None = None, layer: str = "class") -> None:
        data = zlib.compress(np.ascontiguousarray(labels).tobytes(), 3)
        shape, dtype = json.dumps(list(labels.shape)), labels.dtype.str
        if frame is None:
            masks, journal, _key = self._tables(None, layer)
            db.execute(
                f"INSERT OR REPLACE INTO {masks} (item_id, shape, dtype, data) "
                "VALUES (?, ?, ?, ?)", (item_id, shape, dtype, data),
            )
            db.execute(f"DELETE FROM {journal} WHERE item_id = ?", (item_id,))
        else:
            db.execute(
                "INSERT OR REPLACE INTO frame_masks (item_id, frame, shape, dtype, data) "
                "VALUES (?, ?, ?, ?, ?)", (item_id, frame, shape, dtype, data),
            )
            db.execute("DELETE FROM frame_journal WHERE item_id = ? AND frame = ?",
                       (item_id, frame))

    def _load_mask_locked(self, item: Item, frame: int | None = None,
                          layer: str = "class") -> np.ndarray | None:
        masks, journal, key = self._tables(frame, layer)
        args = (item.id,) if frame is None else (item.id, frame)
        rows = self._db.execute(f"SELECT shape, dtype, data FROM {masks} WHERE {key}",
                                args).fetchall()
        records = self._db.execute(
            f"SELECT header, changed, vals FROM {journal} WHERE {key} ORDER BY seq", args
        ).fetchall()
        if rows:
            shape, dtype, data = rows[0]
            raw = np.frombuffer(zlib.decompress(data), dtype=np.dtype(dtype))
            labels = raw.reshape(json.loads(shape)).copy()
        elif records:
            labels = np.zeros(item.mask_shape, np.uint32 if layer == "instances" else np.uint8)
        else:
            return None
        for header, changed, vals in records:
            edit = Edit.from_record(header, changed, vals)
            if edit.new.dtype.itemsize > labels.dtype.itemsize:
                labels = labels.astype(edit.new.dtype)
            edit.apply(labels)
        return labels

    # -- metadata ----------------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _check_layer(frame: int | None, layer: str) -> None:
    if layer not in ("class", "instances"):
        raise ProjectError(f"Unknown label layer {layer!r}; use 'class' or 'instances'.")
    if layer == "instances" and frame is not None:
        raise ProjectError("Video frames have class maps only; instances are per image.")

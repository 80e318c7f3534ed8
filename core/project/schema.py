"""SQLite schema of a project and its migrations.

The schema version lives in ``PRAGMA user_version``. A project from an older SegStudio is migrated
step by step inside one transaction; one from a newer SegStudio is refused, never "downgraded".
"""

from __future__ import annotations

import sqlite3

from core.errors import SchemaTooNewError

SCHEMA_VERSION = 6

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (
    idx INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    color TEXT NOT NULL
);
CREATE TABLE items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    abs_path TEXT NOT NULL,
    kind TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    frames INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL DEFAULT 'new',
    position INTEGER NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE masks (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    header TEXT NOT NULL,
    changed BLOB NOT NULL,
    vals BLOB NOT NULL
);
CREATE INDEX journal_item ON journal(item_id, seq);
"""

# Version 2: videos keep one mask per annotated frame (a 10-minute video has 18,000 frames:
# one array for all of them would not fit in memory), with the frame's own journal, and what
# each frame's labels are (drawn by the person, propagated along the optical flow, reviewed).
_V2 = """
CREATE TABLE frame_masks (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    frame INTEGER NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (item_id, frame)
);
CREATE TABLE frame_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    frame INTEGER NOT NULL,
    header TEXT NOT NULL,
    changed BLOB NOT NULL,
    vals BLOB NOT NULL
);
CREATE INDEX frame_journal_item ON frame_journal(item_id, frame, seq);
CREATE TABLE frame_info (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    frame INTEGER NOT NULL,
    state TEXT NOT NULL,
    reliability REAL,
    PRIMARY KEY (item_id, frame)
);
"""

# Version 3: instance segmentation. An item may have, beside its class map, an instance map
# (uint32 ids, journaled like the class map) and a table of its instances (class, model score,
# who made it, reviewed by the person).
_V3 = """
CREATE TABLE instance_masks (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE instance_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    header TEXT NOT NULL,
    changed BLOB NOT NULL,
    vals BLOB NOT NULL
);
CREATE INDEX instance_journal_item ON instance_journal(item_id, seq);
CREATE TABLE instances (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    inst_id INTEGER NOT NULL,
    class_idx INTEGER NOT NULL,
    score REAL,
    source TEXT NOT NULL,
    reviewed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, inst_id)
);
CREATE TABLE instance_predictions (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    data BLOB NOT NULL
);
"""

# Version 4: temporal labels of videos (segments of frames with an action label) and the last
# per-frame action scores a model gave (the timeline shows them without running it again).
_V4 = """
CREATE TABLE segments (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    start_frame INTEGER NOT NULL,
    end_frame INTEGER NOT NULL,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    score REAL,
    PRIMARY KEY (item_id, start_frame)
);
CREATE TABLE action_scores (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    labels TEXT NOT NULL,
    shape TEXT NOT NULL,
    data BLOB NOT NULL
);
"""

# Version 5: what a semantic model last predicted on an item, untouched by the corrections (how
# much did the person fix?), and how sure it was (mean winning probability: what to label next).
_V5 = """
CREATE TABLE class_predictions (
    item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    confidence REAL
);
"""

# Version 6: a prediction is kept per part of an item: the whole item (an image, a stack, a whole
# volume), one frame of a video, or one slice of a volume across an array axis ("z", "y", "x"),
# with when it was made (where parts overlap, the newest wins). Version 5's predictions were of
# whole items: they are kept as such, their time unknown (NULL).
_V6 = """
CREATE TABLE part_predictions (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    part TEXT NOT NULL,
    position INTEGER NOT NULL,
    model TEXT NOT NULL,
    shape TEXT NOT NULL,
    dtype TEXT NOT NULL,
    data BLOB NOT NULL,
    confidence REAL,
    created REAL,
    PRIMARY KEY (item_id, part, position)
);
INSERT INTO part_predictions (item_id, part, position, model, shape, dtype, data, confidence,
                              created)
    SELECT item_id, 'item', 0, model, shape, dtype, data, confidence, NULL
    FROM class_predictions;
DROP TABLE class_predictions;
"""

# Migration i is the SQL that turns a database of version i into version i + 1.
MIGRATIONS: dict[int, str] = {0: _V1, 1: _V2, 2: _V3, 3: _V4, 4: _V5, 5: _V6}


def check_version(db: sqlite3.Connection, folder: str) -> int:
    """The schema version of ``db`` (read only); SchemaTooNewError when newer than ours."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"The project {folder} was saved by a newer SegStudio (schema {version}; this "
            f"version reads up to {SCHEMA_VERSION}). Update SegStudio to open it."
        )
    return version


def migrate(db: sqlite3.Connection, folder: str) -> None:
    """Bring ``db`` to :data:`SCHEMA_VERSION`, or refuse a newer one."""
    version = check_version(db, folder)
    while version < SCHEMA_VERSION:
        script = f"BEGIN;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        try:
            db.executescript(script)
        except sqlite3.Error:
            db.rollback()
            raise
        version += 1

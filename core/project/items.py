"""Items of a project (one source image each) and how new ones are planned from user paths."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import SegStudioError

ITEM_STATES = ("new", "in_progress", "done", "needs_review")


@dataclass(frozen=True)
class Item:
    """One annotatable source in a project.

    Attributes:
        id: Database id.
        name: Unique name used for exported files (the file stem, de-duplicated).
        path: Source path as stored (relative to the project folder where possible).
        abs_path: Absolute path at the time it was added (fallback when the relative one breaks).
        kind: "image" (later kinds: "volume", "video").
        height, width, frames: Size of the source; frames > 1 for stacks (multi-page TIFF).
        state: One of :data:`ITEM_STATES`.
        position: Order in the item list.
        source: The resolved absolute path to read (None when the source is missing).
    """

    COLUMNS = "id, name, path, abs_path, kind, height, width, frames, state, position"

    id: int
    name: str
    path: str
    abs_path: str
    kind: str
    height: int
    width: int
    frames: int
    state: str
    position: int
    source: Path | None

    @property
    def missing(self) -> bool:
        """True when the source image cannot be found any more."""
        return self.source is None

    @property
    def mask_shape(self) -> tuple[int, ...]:
        if self.frames > 1:
            return (self.frames, self.height, self.width)
        return (self.height, self.width)


def item_from_row(folder: Path, row: tuple) -> Item:
    """Build an :class:`Item` from a database row, resolving its source path."""
    item_id, name, path, abs_path, kind, height, width, frames, state, position = row
    return Item(
        int(item_id), name, path, abs_path, kind, int(height), int(width), int(frames), state,
        int(position), resolve_source(folder, path, abs_path),
    )


def resolve_source(folder: Path, path: str, abs_path: str) -> Path | None:
    """First existing of: path relative to the project, the stored absolute path."""
    for candidate in (folder / path, Path(abs_path)):
        if candidate.is_file():
            return candidate.resolve()
    return None


def stored_path(folder: Path, source: Path) -> str:
    """Path to store for ``source``: relative to the project when they share a parent folder."""
    source = source.absolute()
    try:
        common = Path(os.path.commonpath([folder, source]))
    except ValueError:  # different drives on Windows
        return str(source)
    if common == Path(common.anchor):
        return str(source)
    return os.path.relpath(source, folder)


@dataclass
class AddReport:
    """What :meth:`Project.add_items` did: ids added, and (path, reason) of files skipped."""

    added_ids: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def expand_paths(paths: Iterable[str | os.PathLike], recursive: bool,
                 report: AddReport) -> list[Path]:
    """Files to consider: listed files plus the supported images inside listed folders."""
    from core.io import is_image_path

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                pattern = "**/*" if recursive else "*"
                found = sorted(p for p in path.glob(pattern) if p.is_file() and is_image_path(p)
                               and ".segstudio" not in p.parts)
            except OSError as err:
                report.skipped.append((str(path), f"cannot read the folder: {err.strerror}"))
                continue
            if not found and not os.access(path, os.R_OK | os.X_OK):
                report.skipped.append((str(path), "cannot read the folder: permission denied"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            report.skipped.append((str(path), "no such file or folder"))
    return files


def plan_new_items(folder: Path, paths: Iterable[str | os.PathLike],
                   existing: list[Item], recursive: bool) -> tuple[AddReport, list[tuple]]:
    """Read the headers of new files and build the rows to insert; duplicates are skipped."""
    from core.io import read_image_info

    report = AddReport()
    known = {_normalized(Path(i.abs_path)) for i in existing}
    names = {i.name for i in existing}
    rows = []
    for path in expand_paths(paths, recursive, report):
        source = _normalized(path)  # "imgs/../imgs/a.png" is the same file as "imgs/a.png"
        if source in known:
            continue
        try:
            info = read_image_info(source)
        except SegStudioError as err:
            report.skipped.append((str(path), str(err)))
            continue
        known.add(source)
        name = _unique_name(source.stem, names)
        names.add(name)
        rows.append((name, stored_path(folder, source), str(source), "image",
                     info.height, info.width, info.frames))
    return report, rows


def _normalized(path: Path) -> Path:
    """Absolute path with "." and ".." folded away (symlinks are kept as the user named them)."""
    return Path(os.path.normpath(path.absolute()))


def _unique_name(stem: str, taken: set[str]) -> str:
    name, n = stem, 2
    while name in taken:
        name = f"{stem}_{n}"
        n += 1
    return name

"""Items of a project (one source image each) and how new ones are planned from user paths."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import SegStudioError

ITEM_STATES = ("new", "in_progress", "done", "needs_review")
# What a video frame's labels are: drawn (or corrected) by the person, carried along the
# optical flow and not looked at yet, or propagated and then accepted by the person.
FRAME_STATES = ("annotated", "propagated", "reviewed")


@dataclass(frozen=True)
class FrameInfo:
    """One annotated video frame: its state and, when propagated, the share of its propagated
    pixels whose flow passed the forward-backward check (1.0 = fully reliable)."""

    state: str
    reliability: float | None = None


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
        extra: Kind-specific facts from the ``extra`` JSON column (for volumes: "series_uid"
            or "volume_index"); unknown keys are kept.
    """

    COLUMNS = "id, name, path, abs_path, kind, height, width, frames, state, position, extra"

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
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def missing(self) -> bool:
        """True when the source image cannot be found any more."""
        return self.source is None

    @property
    def mask_shape(self) -> tuple[int, ...]:
        """Shape of the label array: (frames, H, W) for stacks and volumes; (H, W) for images
        and for *one frame* of a video (a video stores a mask per annotated frame)."""
        if self.kind == "video":
            return (self.height, self.width)
        if self.frames > 1 or self.kind == "volume":
            return (self.frames, self.height, self.width)
        return (self.height, self.width)


def item_from_row(folder: Path, row: tuple) -> Item:
    """Build an :class:`Item` from a database row, resolving its source path."""
    item_id, name, path, abs_path, kind, height, width, frames, state, position, extra = row
    return Item(
        int(item_id), name, path, abs_path, kind, int(height), int(width), int(frames), state,
        int(position), resolve_source(folder, path, abs_path, kind), parse_extra(extra),
    )


def parse_extra(text: str | None) -> dict:
    """The ``extra`` JSON column as a dict ({} when empty or damaged)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def resolve_source(folder: Path, path: str, abs_path: str, kind: str = "image") -> Path | None:
    """First existing of: path relative to the project, the stored absolute path.

    Volumes (a DICOM series) and videos (a folder of frames) may come from a folder; images
    need a file.
    """
    for candidate in (folder / path, Path(abs_path)):
        if candidate.is_file() or (kind in ("volume", "video") and candidate.is_dir()):
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


def plan_volume(folder: Path, path: str | os.PathLike, existing: list[Item], *,
                series_uid: str | None = None,
                volume_index: int | None = None) -> tuple[Item | None, tuple | None]:
    """Plan one volume item from a DICOM folder/file/DICOMDIR or a NIfTI file (headers only).

    Returns ``(existing_item, None)`` for a duplicate (same path and same series/volume), else
    ``(None, row)`` with row = (name, path, abs_path, "volume", height, width, frames, extra).

    Raises:
        SeriesChoiceError: Several DICOM series and no ``series_uid``.
        VolumeIndexRequiredError: A 4D NIfTI and no ``volume_index``.
        SegStudioError: Not a volume, missing, unreadable.
    """
    from core.io.dicom import SeriesChoiceError, is_dicom_path, scan_dicom
    from core.io.nifti import VolumeIndexRequiredError, describe_nifti, is_nifti_path

    source = _normalized(Path(path))
    if not source.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    extra: dict = {}
    if is_nifti_path(source) and source.is_file():
        info = describe_nifti(source)
        volumes = int(info["volumes"])
        if volume_index is None and volumes > 1:
            raise VolumeIndexRequiredError(source, volumes)
        index = 0 if volume_index is None else int(volume_index)
        if not -volumes <= index < volumes:
            raise SegStudioError(f"'{source}' has {volumes} volumes; there is no volume {index}.")
        index %= volumes
        frames, height, width = (int(v) for v in info["shape"])
        extra["volume_index"] = index
        key = ("volume_index", index)
    elif is_dicom_path(source):
        found = scan_dicom(source)
        if series_uid is not None:
            chosen = [s for s in found if s.uid == series_uid]
            if not chosen:
                raise SegStudioError(
                    f"There is no series with SeriesInstanceUID {series_uid} in '{source}'.")
            info = chosen[0]
        elif len(found) > 1:
            names = "; ".join(f"{s.label} [{s.uid}]" for s in found)
            raise SeriesChoiceError(
                f"{len(found)} series found in '{source}': {names}; pick one with its "
                "SeriesInstanceUID.", found)
        else:
            info = found[0]
        frames, height, width = info.slices, info.rows, info.columns
        extra["series_uid"] = info.uid
        key = ("series_uid", info.uid)
    else:
        raise SegStudioError(f"'{source}' is neither a DICOM series nor a NIfTI file.")
    for item in existing:
        if item.kind == "volume" and _normalized(Path(item.abs_path)) == source \
                and item.extra.get(key[0]) == key[1]:
            return item, None
    stem = source.name
    for suffix in (".nii.gz", ".nii"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    name = _unique_name(stem or "volume", {i.name for i in existing})
    return None, (name, stored_path(folder, source), str(source), "volume", height, width,
                  frames, json.dumps(extra))


@dataclass(frozen=True)
class Instance:
    """One object of an item's instance map.

    Attributes:
        id: Its value in the instance map (uint32, > 0; 0 is no instance).
        class_index: The project class it belongs to.
        score: The model's confidence when a model found it; None when the person drew it.
        source: "person" or "model".
        reviewed: The person accepted it.
    """

    id: int
    class_index: int
    score: float | None = None
    source: str = "person"
    reviewed: bool = False


def plan_video(folder: Path, path: str | os.PathLike,
               existing: list[Item]) -> tuple[Item | None, tuple | None]:
    """Plan one video item from a video file or a folder of frames (the container is opened
    and its frame count verified, nothing decoded in full).

    Returns ``(existing_item, None)`` for a video added before, else ``(None, row)`` with
    row = (name, path, abs_path, "video", height, width, frames, extra).
    """
    from core.io.video import describe_video

    source = _normalized(Path(path))
    if not source.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    for item in existing:
        if item.kind == "video" and _normalized(Path(item.abs_path)) == source:
            return item, None
    info = describe_video(source)
    extra = {"fps": float(info["fps"]), "codec": info.get("codec", ""),
             "warnings": list(info.get("warnings", []))}
    name = _unique_name(source.stem if source.is_file() else source.name or "video",
                        {i.name for i in existing})
    return None, (name, stored_path(folder, source), str(source), "video", int(info["height"]),
                  int(info["width"]), int(info["frames"]), json.dumps(extra))


def check_frame(item: Item, frame: int | None) -> None:
    """A video's labels are per frame: ``frame`` is required for one and refused otherwise."""
    if item.kind == "video":
        if frame is None:
            raise SegStudioError(f"{item.name} is a video: its labels are stored per frame.")
        if not 0 <= frame < item.frames:
            raise SegStudioError(f"{item.name} has frames 0-{item.frames - 1}; there is no "
                                 f"frame {frame}.")
    elif frame is not None:
        raise SegStudioError(f"{item.name} is not a video: it has no per-frame labels.")

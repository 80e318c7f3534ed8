"""The "actions" format: temporal labels of video items (segments of frames with an action label).

::

    OUT/actions.csv            video,start_frame,end_frame,start_s,end_s,label,source,score
    OUT/activitynet.json       {"version": "VERSION 1.3", "database": {video: {"subset":
                                 "training", "duration": s, "fps": f, "frames": n, "url": "",
                                 "annotations": [{"segment": [start_s, end_s], "label": ...}]}}}
    OUT/classes.txt            the action labels, one per line: line k (from 0) is class id k
    OUT/clips.txt              one line per segment: "<video path> <start> <end> <class id>"
    OUT/mmaction2_clips.txt    one line per segment: "<video> <start> <frames> <class id>"

Frames are numbered from 0 and a segment's ``start..end`` are both included. Times are seconds
from the start of the video: a segment covers ``[start / fps, (end + 1) / fps)`` (the start of its
first frame to the end of its last), with the frame rate the video reader gives (stored with the
item); at a variable frame rate the times are approximate (``activitynet.json`` then says so in the
video's ``"note"``).

``actions.csv``: ``video`` is the item's name; ``source`` ("person", or "model" for a proposal
not yet touched) and ``score`` (the model's, empty for a person's) are SegStudio's own columns.
``activitynet.json`` is the ground-truth layout of ActivityNet 1.3 (``"subset"`` is always
"training"); an annotation of a model proposal also holds ``"source"`` and ``"score"``.

The clip lists give one training clip per segment, whitespace-separated as video classification
training scripts read them:

* ``clips.txt``: the video file's absolute path, the first and the last frame (0-based, both
  included) and the class id. PyTorchVideo-style and custom loaders take the path and the frame
  range; ``classes.txt`` names the ids;
* ``mmaction2_clips.txt``: mmaction2's ``RawframeDataset`` with ``with_offset=True``
  (``frame_dir offset total_frames label``): the item's name as the frame folder, the first frame
  as the offset and the segment's length in frames. Extract the frames with mmaction2's
  ``tools/data/build_rawframes.py`` (``<name>/img_00001.jpg`` is frame 0; the dataset's default
  ``start_index=1`` and ``filename_tmpl='img_{:05}.jpg'`` fit) and set ``data_prefix`` to their
  folder.

A path or name holding whitespace cannot be written in a whitespace-separated list: its lines are
left out of both lists (listed as skipped; the CSV and JSON hold them).

The import (:func:`import_actions`) reads ``actions.csv`` (or any CSV with the columns ``video``,
``label`` and ``start_frame``/``end_frame`` or ``start_s``/``end_s``; frames win when both are
given) or an ActivityNet-style JSON, or a folder holding either. A video is matched to a video
item by the item's name, else by its file name (``bikes.mp4``, a path's last part, or the name
without its suffix). Seconds become frames with the video's frame rate: ``start = round(start_s *
fps)``, ``end = round(end_s * fps) - 1`` (at least ``start``); at a variable frame rate the result
is approximate and the import says so in :attr:`ActionImportResult.notes`. Labels the project's
action vocabulary lacks are added to it (listed in ``new_classes``).

Every entry is checked before anything is written: an unknown video, a segment that starts after
it ends, starts before frame 0 or ends past the last frame, a missing label, a number that is not
one, a segment overlapping another of the same video (a track holds one action per frame) -- the
first bad entry aborts the import with a message that names it (:class:`BadEntryError`), unless
``skip_bad=True``: then the bad entries are left out and listed in ``skipped``. The segments of
each video the file names then replace that video's segments, all videos in one transaction.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.annotation.segments import SEGMENT_SOURCES, Segment
from core.errors import ImportFormatError, SegStudioError
from core.export.base import ImportResult, Progress, ReportFn, Skipped
from core.export.coco_import import BadEntryError, Problems
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

CSV_FILE = "actions.csv"
JSON_FILE = "activitynet.json"
CLASSES_FILE = "classes.txt"
CLIPS_FILE = "clips.txt"
MMACTION_FILE = "mmaction2_clips.txt"
CSV_COLUMNS = ("video", "start_frame", "end_frame", "start_s", "end_s", "label", "source",
               "score")
ACTIVITYNET_VERSION = "VERSION 1.3"
SUBSET = "training"
NOT_A_VIDEO = "not a video (the actions format exports the segments of video items)"
NO_SEGMENT = "no action segment"
VARIABLE_RATE = "variable frame rate"

__all__ = [
    "ActionImportResult", "BadEntryError", "export_actions", "find_actions_file",
    "frames_to_seconds", "import_actions", "items_with_segments", "read_actions",
    "seconds_to_frames",
]


# -- times --------------------------------------------------------------------------------------------
def frames_to_seconds(start: int, end: int, fps: float) -> tuple[float, float]:
    """``(start_s, end_s)`` of frames ``start..end``: the start of the first frame to the end of
    the last, rounded to microseconds."""
    return round(start / fps, 6), round((end + 1) / fps, 6)


def seconds_to_frames(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """Frames ``(start, end)`` (both included) of the times ``[start_s, end_s)``; the inverse of
    :func:`frames_to_seconds`. A segment shorter than a frame keeps one frame."""
    start = round(start_s * fps)
    return start, max(start, round(end_s * fps) - 1)


@dataclass(frozen=True)
class _VideoInfo:
    fps: float
    variable: bool


def _video_info(item: Item) -> _VideoInfo:
    """The frame rate the reader gave when the video was added (read again if not stored)."""
    warnings = [str(w) for w in item.extra.get("warnings", [])]
    fps = item.extra.get("fps")
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        from core.io.video import open_video

        if item.source is None:
            raise SegStudioError("its frame rate is unknown and the video is missing")
        with open_video(item.source, max_cache_mb=0, prefetch=False) as reader:
            fps, warnings = reader.fps, list(reader.warnings)
    return _VideoInfo(float(fps), any(VARIABLE_RATE in w for w in warnings))


def _approximate_note(item: Item, fps: float) -> str:
    return (f"{item.name}: variable frame rate: times and frames were converted at "
            f"{fps:g} fps and are approximate")


# -- export -------------------------------------------------------------------------------------------
def items_with_segments(project: Project) -> list[Item]:
    """The video items that have action segments: the default export."""
    return [item for item in project.items()
            if item.kind == "video" and project.load_segments(item.id)]


def export_actions(project: Project, items: list[Item], stage: StagedDir,
                   progress: Progress) -> tuple[int, Skipped]:
    """Write the segments of the video ``items`` (see the module docstring); returns
    (segments written, skipped)."""
    skipped: Skipped = []
    rows: list[tuple[Item, Segment, float]] = []
    database: dict[str, Any] = {}
    for item in items:
        progress.check()
        if item.kind != "video":
            skipped.append((item.name, NOT_A_VIDEO))
            continue
        segments = project.load_segments(item.id)
        if not segments:
            skipped.append((item.name, NO_SEGMENT))
            progress.advance()
            continue
        try:
            info = _video_info(item)
        except SegStudioError as err:
            skipped.append((item.name, str(err)))
            progress.advance()
            continue
        database[item.name] = _activitynet_video(item, segments, info)
        rows.extend((item, segment, info.fps) for segment in segments)
        progress.advance()
    labels = _class_list(project.action_labels(), (segment.label for _, segment, _ in rows))
    class_id = {label: index for index, label in enumerate(labels)}
    clips, mmaction = [], []
    for item, segment, _ in rows:
        path = Path(item.source or item.abs_path).as_posix()
        entry = f"{item.name} frames {segment.start}-{segment.end}"
        if any(c.isspace() for c in path):
            skipped.append((entry, f"{CLIPS_FILE}: the path {path!r} holds whitespace"))
        else:
            clips.append(f"{path} {segment.start} {segment.end} {class_id[segment.label]}")
        if any(c.isspace() for c in item.name):
            skipped.append((entry, f"{MMACTION_FILE}: the name {item.name!r} holds whitespace"))
        else:
            mmaction.append(f"{item.name} {segment.start} {segment.length} "
                            f"{class_id[segment.label]}")
    stage.write_bytes(CSV_FILE, _csv_text(rows).encode("utf-8"))
    document = {"version": ACTIVITYNET_VERSION, "database": database}
    stage.write_bytes(JSON_FILE, (json.dumps(document, indent=2, ensure_ascii=False) + "\n")
                      .encode("utf-8"))
    stage.write_bytes(CLIPS_FILE, _lines(clips), last=True)
    stage.write_bytes(MMACTION_FILE, _lines(mmaction), last=True)
    stage.write_bytes(CLASSES_FILE, _lines(labels), last=True)
    return len(rows), skipped


def _class_list(vocabulary: list[str], used: Iterable[str]) -> list[str]:
    """The vocabulary, then the labels segments use that it lacks (in order of use)."""
    return list(dict.fromkeys([*vocabulary, *used]))


def _lines(lines: list[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _csv_text(rows: list[tuple[Item, Segment, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item, segment, fps in rows:
        start_s, end_s = frames_to_seconds(segment.start, segment.end, fps)
        writer.writerow([item.name, segment.start, segment.end, f"{start_s:.6f}",
                         f"{end_s:.6f}", segment.label, segment.source,
                         "" if segment.score is None else repr(float(segment.score))])
    return buffer.getvalue()


def _activitynet_video(item: Item, segments: list[Segment], info: _VideoInfo) -> dict[str, Any]:
    annotations = []
    for segment in segments:
        entry: dict[str, Any] = {"segment": list(frames_to_seconds(segment.start, segment.end,
                                                                     info.fps)),
                                 "label": segment.label}
        if segment.source != "person":
            entry["source"] = segment.source
        if segment.score is not None:
            entry["score"] = float(segment.score)
        annotations.append(entry)
    video: dict[str, Any] = {"subset": SUBSET, "duration": round(item.frames / info.fps, 6),
                             "fps": info.fps, "frames": item.frames, "url": "",
                             "annotations": annotations}
    if info.variable:
        video["note"] = _approximate_note(item, info.fps)
    return video


# -- import -------------------------------------------------------------------------------------------
@dataclass
class ActionImportResult(ImportResult):
    """:class:`ImportResult` of the actions import: ``imported`` counts videos whose segments
    were written, ``new_classes`` the labels added to the action vocabulary.

    Attributes:
        segments: Segments written.
        notes: What the user should know (approximate times at a variable frame rate, new
            labels), one sentence each.
    """

    segments: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class _Entry:
    """One segment of the file: where it came from and what it says."""

    name: str  # "row 4 (bikes)" or "bikes annotation 2"
    video: str
    label: str
    frames: tuple[int, int] | None = None  # exact, from the CSV
    seconds: tuple[float, float] | None = None
    source: str = "person"
    score: float | None = None


def find_actions_file(path: Path) -> Path:
    """The file of ``path``: the file itself, or in a folder ``actions.csv``, else
    ``activitynet.json``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ImportFormatError(f"{path} does not exist.")
    for name in (CSV_FILE, JSON_FILE):
        if (path / name).is_file():
            return path / name
    raise ImportFormatError(f"{path} holds neither {CSV_FILE} nor {JSON_FILE}; give the CSV or "
                            "JSON file itself.")


def read_actions(path: Path, problems: Problems) -> list[_Entry]:
    """The entries of a CSV or ActivityNet JSON file; file-level errors raise
    ImportFormatError, bad entries go to ``problems``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"Cannot read {path}: {err}.") from err
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _read_json(text, path, problems)
    return _read_csv(text, path, problems)


def _read_csv(text: str, path: Path, problems: Problems) -> list[_Entry]:
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip() for c in reader.fieldnames or [] if c}
    by_frames = {"start_frame", "end_frame"} <= columns
    by_seconds = {"start_s", "end_s"} <= columns
    if "video" not in columns or "label" not in columns or not (by_frames or by_seconds):
        raise ImportFormatError(
            f"{path} is not an actions CSV: it needs a header with the columns video, label and "
            f"start_frame, end_frame (or start_s, end_s); found {', '.join(sorted(columns)) or 'none'}.")
    entries = []
    for row in reader:
        values = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else ""
                  for k, v in row.items()}
        if not any(values.values()):
            continue  # a blank line
        name = f"row {reader.line_num} ({values.get('video') or '?'})"
        try:
            entry = _Entry(name, values["video"], values["label"])
            if by_frames and (values.get("start_frame") or values.get("end_frame")):
                entry.frames = (_whole(values["start_frame"], "start_frame"),
                                _whole(values["end_frame"], "end_frame"))
            elif by_seconds:
                entry.seconds = (_number(values["start_s"], "start_s"),
                                 _number(values["end_s"], "end_s"))
            else:
                raise ValueError("start_frame and end_frame are empty")
            entry.source = values.get("source") or "person"
            entry.score = _number(values["score"], "score") if values.get("score") else None
        except ValueError as err:
            problems.bad(name, str(err))
            continue
        entries.append(entry)
    return entries


def _read_json(text: str, path: Path, problems: Problems) -> list[_Entry]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ImportFormatError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, "
                                f"column {err.colno}.") from err
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(database, dict):
        raise ImportFormatError(f"{path} is not an ActivityNet-style file: its top level must be "
                                "an object with a \"database\" object of videos.")
    entries = []
    for video, info in database.items():
        annotations = info.get("annotations") if isinstance(info, dict) else None
        if not isinstance(annotations, list):
            problems.bad(f"video {video}", "a video needs a list \"annotations\"")
            continue
        for number, annotation in enumerate(annotations, 1):
            name = f"{video} annotation {number}"
            try:
                if not isinstance(annotation, dict):
                    raise ValueError("an annotation must be an object")
                segment = annotation.get("segment")
                if not (isinstance(segment, list) and len(segment) == 2):
                    raise ValueError("\"segment\" must be [start_s, end_s]")
                label = annotation.get("label")
                entry = _Entry(name, str(video), label.strip() if isinstance(label, str) else "")
                entry.seconds = (_number(segment[0], "the segment's start"),
                                 _number(segment[1], "the segment's end"))
                entry.source = str(annotation.get("source") or "person")
                score = annotation.get("score")
                entry.score = None if score is None else _number(score, "score")
            except ValueError as err:
                problems.bad(name, str(err))
                continue
            entries.append(entry)
    return entries


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


def _whole(value: Any, what: str) -> int:
    number = _number(value, what)
    if number != int(number):
        raise ValueError(f"{what} must be a whole frame number, not {value!r}")
    return int(number)


class _VideoMatcher:
    """Finds the video item an entry names: its name, else its file name."""

    def __init__(self, items: list[Item]) -> None:
        self.videos = [item for item in items if item.kind == "video"]

    def match(self, key: str) -> Item:
        """The item, or ValueError saying why none or several."""
        key = key.strip()
        if not key:
            raise ValueError("the video is not named")
        by_name = [item for item in self.videos if item.name == key]
        if len(by_name) == 1:
            return by_name[0]
        last = Path(key.replace("\\", "/")).name
        stem = Path(last).stem
        for test in (lambda item: Path(item.abs_path).name == last,
                     lambda item: item.name == stem or Path(item.abs_path).stem == stem):
            found = [item for item in self.videos if test(item)]
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                names = ", ".join(item.name for item in found)
                raise ValueError(f"{key!r} could be any of the videos {names}; name the item")
        raise ValueError(f"the project has no video item named {key!r}")


def import_actions(project: Project, path: str | Path, report: ReportFn | None = None, *,
                   skip_bad: bool = False) -> ActionImportResult:
    """Import temporal labels from a CSV or ActivityNet-style JSON (see the module docstring).

    Args:
        project: The open project.
        path: The CSV or JSON file, or a folder holding ``actions.csv`` / ``activitynet.json``.
        report: Called as ``report(done, total)``.
        skip_bad: Leave bad entries out (listed in ``skipped``) instead of importing nothing.

    Returns:
        ActionImportResult: ``imported`` = videos whose segments were replaced.

    Raises:
        BadEntryError: the first bad entry (without ``skip_bad``); nothing was written.
        ImportFormatError: the file is neither an actions CSV nor an ActivityNet-style JSON.
    """
    source = find_actions_file(Path(path).absolute())
    problems = Problems(source, skip_bad)
    entries = read_actions(source, problems)
    matcher = _VideoMatcher(project.items())
    progress = Progress(len(entries) + 1, report, what="import")
    progress.start()
    notes: list[str] = []
    infos: dict[int, _VideoInfo] = {}
    by_video: dict[int, list[tuple[_Entry, Segment]]] = {}
    for entry in entries:
        checked = _check_entry(entry, matcher, infos, notes, problems)
        if checked is not None:
            item, segment = checked
            pairs = by_video.setdefault(item.id, [])
            if _overlap_free(pairs, entry, segment, problems):
                pairs.append((entry, segment))
        progress.advance()
    vocabulary = project.action_labels()
    used = [segment.label for pairs in by_video.values() for _, segment in pairs]
    labels = _class_list(vocabulary, used)
    new_labels = labels[len(vocabulary):]
    if new_labels:
        notes.append(f"added to the action labels: {', '.join(new_labels)}")
    by_video = {item_id: pairs for item_id, pairs in by_video.items() if pairs}
    with project.transaction():  # all or nothing, even if the process dies half-way
        if new_labels:
            project.set_action_labels(labels)
        for item_id, pairs in by_video.items():
            project.save_segments(item_id, sorted((s for _, s in pairs), key=lambda s: s.start))
            if project.item(item_id).state == "new":
                project.set_state(item_id, "in_progress")
    progress.advance()
    written = sum(len(pairs) for pairs in by_video.values())
    return ActionImportResult(source, len(by_video), 0, new_labels, problems.skipped,
                              segments=written, notes=notes)


def _check_entry(entry: _Entry, matcher: _VideoMatcher, infos: dict[int, _VideoInfo],
                 notes: list[str], problems: Problems) -> tuple[Item, Segment] | None:
    """(video item, segment) of a good entry; None (reported) for a bad one."""
    try:
        if not entry.label:
            raise ValueError("the label is empty")
        if entry.source not in SEGMENT_SOURCES:
            raise ValueError(f"the source must be one of {', '.join(SEGMENT_SOURCES)}, not "
                             f"{entry.source!r}")
        item = matcher.match(entry.video)
        if entry.frames is not None:
            start, end = entry.frames
        else:
            assert entry.seconds is not None
            start_s, end_s = entry.seconds
            if start_s > end_s:
                raise ValueError(f"it starts at {start_s:g} s, after it ends ({end_s:g} s)")
            if start_s < 0:
                raise ValueError(f"it starts at {start_s:g} s, before the video")
            info = infos.get(item.id)
            if info is None:
                try:
                    info = infos[item.id] = _video_info(item)
                except SegStudioError as err:
                    raise ValueError(f"the video {item.name}: {err}") from err
                if info.variable:
                    notes.append(_approximate_note(item, info.fps))
            start, end = seconds_to_frames(start_s, end_s, info.fps)
        if start > end:
            raise ValueError(f"it starts at frame {start}, after it ends (frame {end})")
        if start < 0:
            raise ValueError(f"it starts at frame {start}, before the video")
        if end >= item.frames:
            where = (f"frame {end}" if entry.seconds is None
                     else f"{entry.seconds[1]:g} s (frame {end})")
            raise ValueError(f"it ends at {where}, past the end of {item.name} "
                             f"({item.frames} frames, 0-{item.frames - 1})")
    except ValueError as err:
        problems.bad(entry.name, str(err))
        return None
    return item, Segment(start, end, entry.label, entry.source, entry.score)


def _overlap_free(kept: list[tuple[_Entry, Segment]], entry: _Entry, segment: Segment,
                  problems: Problems) -> bool:
    for other_entry, other in kept:
        if segment.start <= other.end and other.start <= segment.end:
            problems.bad(entry.name, f"frames {segment.start}-{segment.end} overlap "
                                     f"{other_entry.name} (frames {other.start}-{other.end}); "
                                     "a video holds one action per frame")
            return False
    return True

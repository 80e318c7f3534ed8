"""The "frames" format: the labels of video items, one index PNG per frame, in a folder per video.

::

    OUT/classes.json                    the class table (as the index format writes it)
    OUT/<item>/masks/<frame:06d>.png    single channel, pixel value = class index; 8-bit, or
                                        16-bit when the project has a class index above 255 (or
                                        the mask a value above), as in the index format
    OUT/<item>/frames/<frame:06d>.png   the decoded frame as RGB (copy_originals=True)
    OUT/<item>/frames.json              {"format": "segstudio-frames", "version": 1, "name",
                                         "source", "fps", "width", "height", "frame_count",
                                         "codec", "exported": "annotated" | "all",
                                         "frames": [{"frame": 3, "labelled": true,
                                                     "state": "annotated", "reliability": null,
                                                     "mask": "masks/000003.png",
                                                     "image": "frames/000003.png"}, ...]}

``video_frames="annotated"`` (the default) writes the frames that have labels;
``"all"`` writes every frame, those without labels as zeros (``"labelled": false``,
``"state": null``). A frame's ``state`` is "annotated" (drawn by a person), "propagated"
(carried along the optical flow; ``reliability`` is the share of its pixels whose flow passed
the forward-backward check) or "reviewed".

Items that are not videos are skipped with the reason :data:`NOT_A_VIDEO`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ExportError, SegStudioError
from core.export.base import Progress, Sample, Skipped, check_max_value
from core.export.index_png import CLASSES_FILE, classes_json, encode_label_png
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

FORMAT_NAME = "segstudio-frames"
FORMAT_VERSION = 1
MASK_DIR = "masks"
FRAME_DIR = "frames"
INFO_FILE = "frames.json"
VIDEO_FRAMES = ("annotated", "all")
NOT_A_VIDEO = "not a video (the frames format exports video items; use index or voc)"


def check_video_frames(video_frames: str) -> str:
    if video_frames not in VIDEO_FRAMES:
        raise ExportError(f"video_frames must be one of {', '.join(VIDEO_FRAMES)}; got "
                          f"{video_frames!r}.")
    return video_frames


def frames_to_write(project: Project, item: Item, video_frames: str = "annotated") -> list[int]:
    """The frames of a video item the export writes (none for other items)."""
    if item.kind != "video":
        return []
    if check_video_frames(video_frames) == "all":
        return list(range(item.frames))
    return [f for f in project.annotated_frames(item.id) if 0 <= f < item.frames]


def frame_sample_count(project: Project, items: list[Item], video_frames: str = "annotated") -> int:
    """Masks the frames export of ``items`` writes (its progress total)."""
    return sum(len(frames_to_write(project, item, video_frames)) for item in items)


def export_frames(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
                  copy_originals: bool = False,
                  video_frames: str = "annotated") -> tuple[int, Skipped]:
    """Write the frame labels of the video ``items`` into ``stage``; returns (masks, skipped)."""
    check_video_frames(video_frames)
    classes = project.classes()
    wide = any(c.index > 255 for c in classes)
    skipped: Skipped = []
    count = 0
    for item in items:
        progress.check()
        if item.kind != "video":
            skipped.append((item.name, NOT_A_VIDEO))
            continue
        frames = frames_to_write(project, item, video_frames)
        if not frames:
            skipped.append((item.name, "no annotated frame"))
            continue
        count += _export_video(project, item, frames, stage, progress, wide, copy_originals,
                               video_frames, skipped)
    stage.write_bytes(CLASSES_FILE, classes_json(classes).encode("utf-8"), last=True)
    return count, skipped


def _export_video(project: Project, item: Item, frames: list[int], stage: StagedDir,
                  progress: Progress, wide: bool, copy_originals: bool, video_frames: str,
                  skipped: Skipped) -> int:
    labelled = set(project.annotated_frames(item.id))
    info = project.frame_info(item.id)
    reader, problem = _open_source(project, item) if copy_originals else (None, None)
    if problem is not None:
        skipped.append((item.name, f"{problem}; its masks were exported without the frames"))
    blank: bytes | None = None  # the PNG of an unlabelled frame, encoded once
    entries = []
    try:
        for frame in frames:
            progress.check()
            if frame in labelled:
                labels = project.load_mask(item, frame)
                check_max_value(Sample(f"{item.name} frame {frame}", item, frame, labels), 65535,
                                "PNG masks hold at most 16 bits.")
                data = encode_label_png(labels, wide)
            else:
                if blank is None:
                    blank = encode_label_png(np.zeros(item.mask_shape, np.uint8), wide)
                data = blank
            mask = f"{MASK_DIR}/{frame:06d}.png"
            stage.write_bytes(f"{item.name}/{mask}", data)
            state = info.get(frame)
            entry: dict[str, Any] = {
                "frame": frame,
                "labelled": frame in labelled,
                "state": state.state if state else ("annotated" if frame in labelled else None),
                "reliability": state.reliability if state else None,
                "mask": mask,
            }
            if reader is not None:
                image = f"{FRAME_DIR}/{frame:06d}.png"
                try:
                    stage.write_bytes(f"{item.name}/{image}", _encode_rgb(reader.frame(frame)))
                    entry["image"] = image
                except SegStudioError as err:
                    skipped.append((f"{item.name} frame {frame}", f"cannot decode it: {err}"))
            entries.append(entry)
            progress.advance()
    finally:
        if reader is not None:
            reader.close()
    stage.write_bytes(f"{item.name}/{INFO_FILE}",
                      _info_json(item, entries, video_frames).encode("utf-8"))
    return len(entries)


def _info_json(item: Item, entries: list[dict[str, Any]], video_frames: str) -> str:
    data = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": item.name,
        "source": str(item.source or item.abs_path),
        "fps": item.extra.get("fps"),
        "width": item.width,
        "height": item.height,
        "frame_count": item.frames,
        "codec": item.extra.get("codec", ""),
        "exported": video_frames,
        "frames": entries,
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def video_source(project: Project, item: Item) -> Path | None:
    """The video file or folder of frames of ``item`` (None when it is gone)."""
    return item.source


def _open_source(project: Project, item: Item) -> tuple[Any, str | None]:
    """An open reader of the item's video, or None and why not."""
    from core.io.video import open_video

    source = video_source(project, item)
    if source is None:
        return None, "source video missing"
    try:
        reader = open_video(source, max_cache_mb=64, fps=item.extra.get("fps"))
    except SegStudioError as err:
        return None, f"cannot read the source video: {err}"
    if (reader.width, reader.height) != (item.width, item.height):
        reader.close()
        return None, (f"the source video is {reader.width}x{reader.height} now, the item "
                      f"{item.width}x{item.height}")
    return reader, None


def _encode_rgb(rgb: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ExportError(f"Encoding a {rgb.shape[1]}x{rgb.shape[0]} frame as PNG failed.")
    return data.tobytes()

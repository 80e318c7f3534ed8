"""Action training data (imports torch; load it lazily): clips cut from labelled video segments
(a project's, or an exported actions folder's), and the loader that decodes and prepares them as
the model's input.

Each segment is cut into clips as inference cuts videos (:func:`segment_clips`:
:func:`core.inference.clips.clip_windows` over the segment's frames: ``T`` frames ``stride``
apart, windows side by side, the last one ending on the segment's last frame; a segment shorter
than a clip repeats its last frame). The stride defaults to the model's sampling rate
(``round(video fps / spec.fps)``), as in :func:`core.inference.clips.classify_video`.

Sources:

* :func:`action_dataset_from_project`: every video item's segments; labels in the order of
  ``Project.action_labels()``;
* :func:`action_dataset_from_folder`: what ``segstudio-cli export --format actions`` writes
  (``actions.csv``, ``classes.txt``, ``clips.txt``), or any CSV with the columns ``video``,
  ``label`` and ``start_frame``/``end_frame`` or ``start_s``/``end_s`` (seconds become frames
  with the video's frame rate, as the actions import converts them), or an ActivityNet-style
  JSON (:func:`core.export.actions.read_actions` reads them). A video is found by the absolute
  path ``clips.txt`` gives for its segments, else as a path (absolute, or relative to the
  folder), else as a file or frame folder of that name in the folder (a video suffix added when
  the name has none). Labels follow ``classes.txt`` (class id k is line k), else sorted.

A segment whose video is missing or unreadable, whose label is unknown or whose frames lie
outside the video is left out and listed in :attr:`ActionDataset.skipped` with the reason.

:class:`ClipLoader` prepares a clip as :func:`~core.inference.clips.classify_video` does:
frames resized and centre-cropped (:func:`~core.inference.clips.preprocess_frame`), scaled to
[0, 1] and normalised; ``"clip"`` (3, T, H, W), ``"frames"`` (T, 3, H, W), and for
``"two_stream"`` models the pair (rgb (3, H, W): the window's middle frame, flow (2L, H, W): the
DIS optical flow between its consecutive sampled frames, each field as
:func:`~core.inference.clips.preprocess_flow` makes it, zero between repeated frames). A flipped
clip is mirrored left-right; its flow's horizontal components change sign.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import ImportFormatError, SegStudioError
from core.train.common import TrainError

CLIP_INPUTS = ("clip", "frames", "two_stream")
FLOW_CACHE_MB = 256  # raw flow fields kept between epochs (two-stream models)
REQUIRED = ("video", "label")  # the columns of a temporal-label CSV, with frames or seconds
FRAME_COLUMNS = ("start_frame", "end_frame")
SECOND_COLUMNS = ("start_s", "end_s")


# -- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSample:
    """One training clip: ``frames`` of the video ``video`` (a segment's ``group``)."""

    video: str  # path
    frames: tuple[int, ...]
    label: int
    group: int  # the segment it comes from (the split keeps a segment's clips together)


@dataclass
class ActionDataset:
    """Clips with their label index into ``labels``."""

    labels: list[str]
    clips: list[ClipSample]
    spec: Any  # the ClipSpec the clips were cut for
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def groups(self) -> int:
        return len({c.group for c in self.clips})


def model_clip_spec(model: str, frames: int | None = None, **model_kwargs: Any) -> Any:
    """The model's ClipSpec, with ``frames`` per clip when the model does not fix them."""
    from core.models.action_specs import clip_spec

    spec = clip_spec(model, **model_kwargs)
    if frames is not None and frames != spec.frames:
        if spec.fixed_frames:
            raise TrainError(f"{model} takes exactly {spec.frames} frames per clip.")
        if frames < spec.min_frames:
            raise TrainError(f"{model} needs at least {spec.min_frames} frames per clip.")
        spec = replace(spec, frames=int(frames))
    return spec


def segment_clips(video: str, start: int, end: int, label: int, group: int, spec: Any,
                  stride: int) -> list[ClipSample]:
    """The clips of the segment ``start..end`` (frames, both included) of ``video``: the windows
    :func:`core.inference.clips.clip_windows` cuts its frames into (``spec.frames`` frames
    ``stride`` apart; a segment shorter than a clip repeats its last frame)."""
    from core.inference.clips import clip_windows

    return [ClipSample(video, tuple(start + f for f in window.frame_indices), label, group)
            for window in clip_windows(end - start + 1, int(spec.frames), int(stride))]


def _segment_problem(start: int, end: int, frame_count: int) -> str | None:
    """Why frames ``start..end`` cannot be cut from a video of ``frame_count`` frames; None
    when they can."""
    if start > end:
        return f"segment {start}-{end}: it starts after it ends"
    if start < 0:
        return f"segment {start}-{end}: it starts before the video (frame 0)"
    if end >= frame_count:
        return (f"segment {start}-{end}: it ends past the end of the video ({frame_count} "
                f"frames, 0-{frame_count - 1})")
    return None


def _video_facts(path: str | Path) -> tuple[float, int]:
    """(fps, frame count) of a video; SegStudioError / OSError when it cannot be read."""
    from core.io.video import open_video

    with open_video(path, max_cache_mb=0, prefetch=False) as reader:
        return float(reader.fps), int(reader.frame_count)


def _check_input(spec: Any) -> None:
    layout = getattr(spec, "input", "clip")
    if layout not in CLIP_INPUTS:
        raise TrainError(f"Unknown clip input layout {layout!r}; expected one of "
                         f"{', '.join(CLIP_INPUTS)}.")


# -- a project -------------------------------------------------------------------------------------
def action_dataset_from_project(project: Any, spec: Any, stride: int | None = None
                                ) -> ActionDataset:
    """The clips of every labelled segment of ``project`` (open Project or folder)."""
    from core.inference.clips import default_stride
    from core.project.store import Project

    if not isinstance(project, Project):
        with Project.open(project, read_only=True) as opened:
            return action_dataset_from_project(opened, spec, stride)
    _check_input(spec)
    labels = project.action_labels()
    index = {label: i for i, label in enumerate(labels)}
    clips: list[ClipSample] = []
    skipped: list[tuple[str, str]] = []
    group = 0
    for item in project.items():
        if item.kind != "video":
            continue
        segments = project.load_segments(item.id)
        if not segments:
            continue
        if item.source is None:
            skipped.append((item.name, "its video is missing"))
            continue
        try:
            fps, count = _video_facts(item.source)
        except (SegStudioError, OSError) as err:
            skipped.append((item.name, str(err)))
            continue
        step = stride or default_stride(spec, fps)
        for segment in segments:
            problem = _segment_problem(segment.start, segment.end, count)
            if problem is None and segment.label not in index:
                problem = (f"segment {segment.start}-{segment.end}: label {segment.label!r} is "
                           "not in the vocabulary")
            if problem is not None:
                skipped.append((item.name, problem))
                continue
            clips.extend(segment_clips(str(item.source), segment.start, segment.end,
                                       index[segment.label], group, spec, step))
            group += 1
    return ActionDataset(labels, clips, spec, skipped, str(project.folder))


# -- an exported folder ----------------------------------------------------------------------------
def action_dataset_from_folder(folder: str | Path, spec: Any, stride: int | None = None
                               ) -> ActionDataset:
    """The clips of every segment of an exported actions folder, or of a temporal-label CSV /
    ActivityNet-style JSON file (see the module docstring).

    Raises:
        TrainError: no segment could be cut into clips (the message says why), or the CSV lacks
            required columns (named).
    """
    from core.export.actions import CLASSES_FILE, find_actions_file, read_actions
    from core.export.coco_import import Problems
    from core.inference.clips import default_stride

    _check_input(spec)
    path = Path(folder).expanduser().absolute()
    try:
        source = find_actions_file(path)
    except ImportFormatError as err:
        raise TrainError(f"No labelled segment to train on in {path}: {err} Export one with "
                         "segstudio-cli export --format actions.") from None
    root = source.parent
    _check_columns(source)
    problems = Problems(source, skip_bad=True)
    try:
        entries = read_actions(source, problems)
    except ImportFormatError as err:
        raise TrainError(str(err)) from None
    skipped: list[tuple[str, str]] = list(problems.skipped)
    classes_file = root / CLASSES_FILE
    if classes_file.is_file():
        labels = _read_lines(classes_file)
    else:
        labels = sorted({entry.label for entry in entries if entry.label})
    index = {label: i for i, label in enumerate(labels)}
    by_video: dict[str, list[Any]] = {}
    for entry in entries:
        by_video.setdefault(entry.video, []).append(entry)
    listed = _listed_paths(root, by_video, index)
    clips: list[ClipSample] = []
    group = 0
    for video, video_entries in by_video.items():
        found = _find_video(video, root, listed.get(video))
        if isinstance(found, str):
            skipped.append((video, found))
            continue
        try:
            fps, count = _video_facts(found)
        except (SegStudioError, OSError) as err:
            skipped.append((video, str(err)))
            continue
        step = stride or default_stride(spec, fps)
        for entry in video_entries:
            start, end = _entry_frames(entry, fps)
            problem = _segment_problem(start, end, count)
            if problem is None and not entry.label:
                problem = f"segment {start}-{end}: the label is empty"
            elif problem is None and entry.label not in index:
                problem = f"segment {start}-{end}: label {entry.label!r} is not in {CLASSES_FILE}"
            if problem is not None:
                skipped.append((video, problem))
                continue
            clips.extend(segment_clips(str(found), start, end, index[entry.label], group, spec,
                                       step))
            group += 1
    if not clips:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3])
        raise TrainError(f"No labelled segment to train on in {source}"
                         + (f" ({reasons}{'; ...' if len(skipped) > 3 else ''})." if reasons
                            else ": it lists no segment."))
    return ActionDataset(labels, clips, spec, skipped, str(source))


def _check_columns(source: Path) -> None:
    """A CSV's header holds ``video``, ``label`` and the frame or second columns; TrainError
    naming the missing ones otherwise (JSON files are left to the reader)."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise TrainError(f"Cannot read {source}: {err}.") from None
    if source.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return
    header = next(csv.reader(io.StringIO(text)), [])
    columns = {c.strip() for c in header if c.strip()}
    missing = [c for c in REQUIRED if c not in columns]
    if not (set(FRAME_COLUMNS) <= columns or set(SECOND_COLUMNS) <= columns):
        missing.append(f"{' and '.join(c for c in FRAME_COLUMNS if c not in columns)} (or "
                       f"{' and '.join(c for c in SECOND_COLUMNS if c not in columns)})")
    if missing:
        raise TrainError(
            f"{source} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: "
            "temporal labels need video, label and start_frame, end_frame (or start_s, end_s in "
            f"seconds); its header has {', '.join(header) or 'nothing'}.")


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise TrainError(f"Cannot read {path}: {err}.") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _entry_frames(entry: Any, fps: float) -> tuple[int, int]:
    """An entry's frames (the CSV's, else its seconds at the video's frame rate)."""
    from core.export.actions import seconds_to_frames

    if entry.frames is not None:
        return int(entry.frames[0]), int(entry.frames[1])
    start_s, end_s = entry.seconds
    if start_s > end_s:  # kept as it is: _segment_problem names it
        return round(start_s * fps), round(end_s * fps) - 1
    return seconds_to_frames(start_s, end_s, fps)


def _listed_paths(root: Path, by_video: dict[str, list[Any]],
                  index: dict[str, int]) -> dict[str, Path]:
    """The absolute path ``clips.txt`` gives each video: the path whose lines (``path start end
    class``) are exactly the video's segments (by file name among several such paths)."""
    from core.export.actions import CLIPS_FILE

    if not (root / CLIPS_FILE).is_file():
        return {}
    by_path: dict[str, list[tuple[int, int, int]]] = {}
    for line in _read_lines(root / CLIPS_FILE):
        parts = line.split()
        if len(parts) == 4 and all(p.lstrip("-").isdigit() for p in parts[1:]):
            by_path.setdefault(parts[0], []).append((int(parts[1]), int(parts[2]),
                                                     int(parts[3])))
    listed = {}
    for video, entries in by_video.items():
        if any(e.frames is None or e.label not in index for e in entries):
            continue
        wanted = [(int(e.frames[0]), int(e.frames[1]), index[e.label]) for e in entries]
        paths = [p for p, lines in by_path.items() if lines == wanted]
        if len(paths) > 1:
            paths = [p for p in paths if video in (Path(p).name, Path(p).stem)]
        if len(paths) == 1:
            listed[video] = Path(paths[0])
    return listed


def _find_video(video: str, root: Path, listed: Path | None) -> Path | str:
    """The video file (or frame folder) of ``video``; a string saying where it was looked for
    when there is none."""
    from core.io.video import VIDEO_SUFFIXES

    named = Path(video.replace("\\", "/")).expanduser()
    candidates = [listed] if listed is not None else []
    candidates += [named] if named.is_absolute() else [root / named]
    if not named.suffix and not named.is_absolute():
        candidates += [root / f"{named}{suffix}" for suffix in sorted(VIDEO_SUFFIXES)]
    for candidate in candidates:
        if candidate is not None and candidate.exists():
            return candidate
    looked = [str(c) for c in candidates[:3]]
    return (f"the video was not found (looked for {', '.join(looked)}"
            f"{', ...' if len(candidates) > 3 else ''})")


# -- loading ---------------------------------------------------------------------------------------
class ClipLoader:
    """Decodes and prepares clips (keeps one reader per video open; :meth:`close` them)."""

    def __init__(self, spec: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        _check_input(spec)
        self.spec = spec
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(3, 1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(3, 1, 1, 1)
        self._readers: dict[str, Any] = {}
        self._flows: dict[str, Any] = {}
        self._flow_cache: Any = None

    def _reader(self, video: str) -> Any:
        from core.io.video import open_video

        reader = self._readers.get(video)
        if reader is None:
            reader = self._readers[video] = open_video(video, prefetch=False)
        return reader

    def _flow(self, video: str) -> Any:
        """``flow(t, k)`` of a video: DIS with its default parameters, as ``classify_video``'s
        provider (one cache shared by the videos)."""
        from core.flow import FlowCache, FlowProvider

        provider = self._flows.get(video)
        if provider is None:
            reader = self._reader(video)
            if self._flow_cache is None:
                self._flow_cache = FlowCache(FLOW_CACHE_MB)
            provider = self._flows[video] = FlowProvider(
                reader.frame, "dis", cache=self._flow_cache, source_id=video,
                count=reader.frame_count)
        return provider

    def clip(self, sample: ClipSample, flip: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(3, T, H, W) for ``"clip"`` models, (T, 3, H, W) for ``"frames"`` ones, (rgb
        (3, H, W), flow (2L, H, W)) for ``"two_stream"`` ones."""
        from core.inference.clips import preprocess_frame

        if self.spec.input == "two_stream":
            return self._two_stream(sample, flip)
        reader = self._reader(sample.video)
        frames = np.stack([preprocess_frame(reader.frame(i), self.spec) for i in sample.frames])
        if flip:
            frames = frames[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        return x.permute(1, 0, 2, 3).contiguous() if self.spec.input == "frames" else x

    def _two_stream(self, sample: ClipSample, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The window's middle frame and its flow stack, as ``classify_video`` feeds them."""
        from core.inference.clips import ClipWindow, flow_pairs, preprocess_flow, preprocess_frame

        window = ClipWindow(sample.frames[0], tuple(sample.frames))
        rgb = preprocess_frame(self._reader(sample.video).frame(window.centre), self.spec)
        flow = self._flow(sample.video)
        zero = np.zeros((2, *self.spec.size), np.float32)
        stack = np.concatenate([zero if t1 == t else preprocess_flow(flow(t, t1 - t), self.spec)
                                for t, t1 in flow_pairs(window)])  # (2L, h, w)
        if flip:
            rgb = rgb[:, ::-1]
            stack = stack[:, :, ::-1].copy()
            stack[0::2] *= -1.0  # mirrored motion: dx changes sign
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
        x = (x - self.mean[:, 0]) / self.std[:, 0]
        return x, torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))

    def batch(self, samples: Sequence[ClipSample], rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor | tuple[torch.Tensor, ...], torch.Tensor]:
        """(x, y): x the stacked clips (a tuple of stacked tensors for two-stream models: call
        ``module(*x)``), y the label indices; each clip flipped with probability 1/2 when ``rng``
        is given."""
        flips = [bool(rng.random() < 0.5) if rng is not None else False for _ in samples]
        clips = [self.clip(s, f) for s, f in zip(samples, flips, strict=True)]
        y = torch.tensor([s.label for s in samples], dtype=torch.int64)
        if clips and isinstance(clips[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*clips, strict=True)), y
        return torch.stack(clips), y  # type: ignore[arg-type]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._flows.clear()
        self._flow_cache = None

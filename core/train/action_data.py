"""Action training data (imports torch; load it lazily): clips cut from a project's labelled
video segments, and the loader that decodes and prepares them as the model's input.

Each segment is cut into clips as inference cuts videos
(:func:`core.inference.clips.clip_windows` over the segment's frames: ``T`` frames ``stride``
apart, windows side by side, the last one ending on the segment's last frame; a segment shorter
than a clip repeats its last frame). The stride defaults to the model's sampling rate
(``round(video fps / spec.fps)``), as in :func:`core.inference.clips.classify_video`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from core.errors import SegStudioError
from core.train.common import TrainError


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


def action_dataset_from_project(project: Any, spec: Any, stride: int | None = None
                                ) -> ActionDataset:
    """The clips of every labelled segment of ``project`` (open Project or folder)."""
    from core.inference.clips import clip_windows, default_stride
    from core.io.video import open_video
    from core.project.store import Project

    if not isinstance(project, Project):
        with Project.open(project, read_only=True) as opened:
            return action_dataset_from_project(opened, spec, stride)
    if spec.input == "two_stream":
        raise TrainError("Two-stream models are not trained here (they need optical flow).")
    labels = project.action_labels()
    index = {label: i for i, label in enumerate(labels)}
    clips, skipped = [], []
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
            with open_video(item.source, prefetch=False) as reader:
                fps = float(reader.fps)
        except (SegStudioError, OSError) as err:
            skipped.append((item.name, str(err)))
            continue
        step = stride or default_stride(spec, fps)
        for segment in segments:
            if segment.label not in index:
                skipped.append((item.name, f"segment {segment.start}-{segment.end}: label "
                                           f"{segment.label!r} is not in the vocabulary"))
                continue
            length = segment.end - segment.start + 1
            for window in clip_windows(length, spec.frames, step):
                frames = tuple(segment.start + f for f in window.frame_indices)
                clips.append(ClipSample(str(item.source), frames, index[segment.label], group))
            group += 1
    return ActionDataset(labels, clips, spec, skipped, str(project.folder))


class ClipLoader:
    """Decodes and prepares clips (keeps one reader per video open; :meth:`close` them)."""

    def __init__(self, spec: Any, mean: Sequence[float], std: Sequence[float]) -> None:
        self.spec = spec
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(3, 1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(3, 1, 1, 1)
        self._readers: dict[str, Any] = {}

    def clip(self, sample: ClipSample, flip: bool = False) -> torch.Tensor:
        """(3, T, H, W) for ``"clip"`` models, (T, 3, H, W) for ``"frames"`` ones."""
        from core.inference.clips import preprocess_frame
        from core.io.video import open_video

        reader = self._readers.get(sample.video)
        if reader is None:
            reader = self._readers[sample.video] = open_video(sample.video, prefetch=False)
        frames = np.stack([preprocess_frame(reader.frame(i), self.spec) for i in sample.frames])
        if flip:
            frames = frames[:, :, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        return x.permute(1, 0, 2, 3).contiguous() if self.spec.input == "frames" else x

    def batch(self, samples: Sequence[ClipSample], rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        flips = [bool(rng.random() < 0.5) if rng is not None else False for _ in samples]
        x = torch.stack([self.clip(s, f) for s, f in zip(samples, flips, strict=True)])
        return x, torch.tensor([s.label for s in samples], dtype=torch.int64)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

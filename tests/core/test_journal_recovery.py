"""Crash safety for real: a child process paints, is killed with SIGKILL, the parent reopens.

The child and the parent build the same strokes from :func:`stroke_plan` (the child gets its
source code), so the parent knows what the mask must hold after the first M completed strokes.
"""

from __future__ import annotations

import inspect
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from core.annotation.tools import PaintRule, paint_segment
from core.project.store import DB_NAME, Project

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX only")

REPO_ROOT = Path(__file__).resolve().parents[2]


def stroke_plan(i: int, width: int, height: int) -> tuple[list, float, int, bool]:
    """Stroke ``i``: its points, radius, value and preserve flag (deterministic)."""
    rng = random.Random(1000 + i)
    points = [(rng.uniform(-10, width + 10), rng.uniform(-10, height + 10))
              for _ in range(rng.randint(1, 5))]
    return points, rng.uniform(1.5, 14.0), rng.randint(0, 4), rng.random() < 0.3


_CHILD = textwrap.dedent("""
    import random
    import sys
    import time

    from core.annotation.session import EditSession
    from core.annotation.tools import PaintRule
    from core.project.store import Project

    {plan}

    folder, count, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    project = Project.open(folder)
    session = EditSession(project, project.items()[0])
    height, width = session.labels.shape

    def paint(i, end=True):
        points, radius, value, preserve = stroke_plan(i, width, height)
        rule = PaintRule(value, preserve_others=preserve, active_class=1)
        session.begin_stroke(points[0], radius, rule)
        for point in points[1:]:
            session.continue_stroke(point, radius, rule)
        if end:
            session.end_stroke()

    print("READY", flush=True)
    for i in range(count):
        paint(i)
        if mode == "checkpoint" or (mode == "mixed" and i == 2):
            session.checkpoint()
        print(f"STROKE {{i}} DONE", flush=True)
    paint(count, end=False)  # a drag in progress when the process dies
    print("MIDSTROKE", flush=True)
    time.sleep(120)
""").format(plan=inspect.getsource(stroke_plan))


@pytest.fixture
def project_folder(tmp_path: Path) -> Path:
    image = tmp_path / "coins.png"
    Image.fromarray(data.coins()).save(image)
    folder = tmp_path / "project"
    with Project.create(folder) as project:
        project.add_items([image])
    return folder


def _expected_masks(shape: tuple[int, int], count: int) -> list[np.ndarray]:
    """Masks after 0, 1, ..., count strokes, replayed with the tools on zeros."""
    labels = np.zeros(shape, np.uint8)
    masks = [labels.copy()]
    height, width = shape
    for i in range(count):
        points, radius, value, preserve = stroke_plan(i, width, height)
        rule = PaintRule(value, preserve_others=preserve, active_class=1)
        paint_segment(labels, points[0], points[0], radius, rule)
        for a, b in itertools.pairwise(points):
            paint_segment(labels, a, b, radius, rule)
        masks.append(labels.copy())
    return masks


def _start_child(folder: Path, count: int, mode: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(folder), str(count), mode], cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = child.stdout.readline()
    if line.strip() != "READY":
        child.kill()
        raise AssertionError(f"child did not start: {line!r} {child.stderr.read()}")
    return child


def _kill(child: subprocess.Popen) -> list[str]:
    """SIGKILL the child; return the rest of what it printed.

    Read through ``child.stdout`` itself, not ``communicate(timeout=...)``: that reads the raw
    pipe and would skip lines the earlier ``readline`` already buffered.
    """
    os.kill(child.pid, signal.SIGKILL)
    rest = child.stdout.read()  # the child is dead: this ends at EOF
    child.stderr.read()
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return rest.splitlines()


def _reopen(folder: Path) -> tuple[np.ndarray, int]:
    """Reopen after the crash (the kernel dropped the child's lock): mask and journal length."""
    with Project.open(folder) as project:
        item = project.items()[0]
        labels = project.load_mask(item)
        journal = project.journal_length(item.id)
    raw = sqlite3.connect(folder / DB_NAME)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        raw.close()
    return labels, journal


def test_a_kill_mid_stroke_keeps_exactly_the_completed_strokes(project_folder: Path) -> None:
    strokes = 6
    child = _start_child(project_folder, strokes, "mixed")
    try:
        done = 0
        while done < strokes:
            line = child.stdout.readline()
            assert line.strip() == f"STROKE {done} DONE", (line, child.stderr.read())
            done += 1
        assert child.stdout.readline().strip() == "MIDSTROKE"
    finally:
        rest = _kill(child)
    assert rest == []
    labels, journal = _reopen(project_folder)
    expected = _expected_masks(labels.shape, strokes + 1)
    np.testing.assert_array_equal(labels, expected[strokes])
    assert not np.array_equal(expected[strokes], expected[strokes + 1])  # the drag was real
    assert journal == strokes - 3  # the checkpoint after stroke 2 folded the first three


def _kill_at_random(folder: Path, seed: int, mode: str, count: int,
                    max_delay: float) -> None:
    child = _start_child(folder, count, mode)
    try:
        time.sleep(random.Random(seed).uniform(0.0, max_delay))
    finally:
        lines = _kill(child)
    done = [line for line in lines if line.endswith("DONE")]
    assert done == [f"STROKE {i} DONE" for i in range(len(done))]
    printed = len(done)
    assert printed < count, "the kill came too late to test anything; raise count"
    labels, _ = _reopen(folder)
    expected = _expected_masks(labels.shape, printed + 1)
    # The stroke being painted when the kill came may or may not have been committed.
    matches = [m for m in (printed, printed + 1) if np.array_equal(labels, expected[m])]
    assert matches, f"mask matches no prefix around {printed} completed strokes (seed {seed})"


def test_a_kill_at_a_random_point_of_a_stroke_loop(project_folder: Path) -> None:
    _kill_at_random(project_folder, seed=1, mode="loop", count=2000, max_delay=0.4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_kills_at_random_points_of_a_stroke_loop(project_folder: Path, seed: int) -> None:
    # More than CHECKPOINT_EVERY strokes, so late kills also land in automatic checkpoints.
    _kill_at_random(project_folder, seed=seed, mode="loop", count=2000, max_delay=0.6)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_kill_during_a_checkpoint_loop(project_folder: Path, seed: int) -> None:
    _kill_at_random(project_folder, seed=seed, mode="checkpoint", count=2000, max_delay=0.4)

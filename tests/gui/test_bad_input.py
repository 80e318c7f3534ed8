"""Bad input in the window: each gets a clear message, the app stays up, nothing is lost."""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import drag, line
from PySide6.QtWidgets import QMessageBox

from app.main_window import MainWindow
from core.project.store import Project


@pytest.fixture
def messages(monkeypatch) -> list[str]:
    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _parent, _title, text, *a, **k:
                        shown.append(text))
    return shown


@pytest.fixture
def window(qtbot, messages):
    win = MainWindow()
    qtbot.add_widget(win)
    win.resize(1000, 700)
    win.show()
    qtbot.wait_exposed(win)
    return win


def huge_png(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A real PNG header announcing width x height, with a tiny (truncated) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)))
    return path


def bad_files(folder: Path, sample_dir: Path) -> dict[str, Path]:
    folder.mkdir()
    good = (sample_dir / "chelsea.png").read_bytes()
    jpeg = (sample_dir / "coffee.jpg").read_bytes()
    files = {
        "zero": folder / "zero.png",
        "truncated_png": folder / "cut.png",
        "truncated_jpeg": folder / "cut.jpg",
        "text": folder / "notes.png",
        "unsupported": folder / "drawing.gif",
        "huge": folder / "huge.png",
    }
    files["zero"].write_bytes(b"")
    files["truncated_png"].write_bytes(good[: len(good) // 2])
    files["truncated_jpeg"].write_bytes(jpeg[: len(jpeg) // 3])
    files["text"].write_text("this is not an image\n")
    files["unsupported"].write_bytes(b"GIF89a" + bytes(100))
    huge_png(files["huge"])
    return files


@pytest.mark.parametrize("kind", ["zero", "truncated_png", "truncated_jpeg", "text",
                                  "unsupported", "huge"])
def test_each_bad_file_is_refused_with_a_clear_message(qtbot, window, messages, tmp_path,
                                                       sample_dir, kind):
    files = bad_files(tmp_path / "bad", sample_dir)
    window.open_paths([str(files[kind])])
    assert window.isVisible()
    assert window.workspace.items == []
    assert len(messages) == 1
    text = messages[0]
    assert files[kind].name in text  # the message names the file
    assert "Traceback" not in text
    expected = {"zero": "empty", "truncated_png": "truncated", "truncated_jpeg": "truncated",
                "text": "not", "unsupported": "GIF", "huge": "40000"}[kind]
    assert expected.lower() in text.lower()


def test_a_folder_mixing_good_and_bad_files_opens_the_good_ones(qtbot, window, messages,
                                                                 tmp_path, sample_dir):
    folder = tmp_path / "mixed"
    bad_files(folder, sample_dir)
    shutil.copy(sample_dir / "camera.png", folder)
    window.open_paths([str(folder)])
    assert [i.name for i in window.workspace.items] == ["camera"]
    assert "5 file(s) could not be added" in messages[0]  # the .gif is no image: not listed
    assert window.workspace.session is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_reported(qtbot, window, messages, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0)
    try:
        window.open_paths([str(folder)])
    finally:
        folder.chmod(0o755)
    assert messages and "locked" in messages[0]


def test_a_folder_that_cannot_hold_a_project_is_reported(qtbot, window, messages, tmp_path,
                                                        sample_dir, monkeypatch):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    (folder / ".segstudio").write_text("a file where the project folder would go")
    window.open_paths([str(folder)])
    assert window.workspace.project is None
    assert messages and ".segstudio" in messages[0]


def test_a_project_from_a_newer_segstudio_is_refused(qtbot, window, messages, tmp_path,
                                                     sample_dir):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    with Project.create(folder / ".segstudio") as project:
        project.add_items([folder / "camera.png"])
    db = sqlite3.connect(folder / ".segstudio" / "project.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = (folder / ".segstudio" / "project.sqlite").read_bytes()
    window.open_paths([str(folder)])
    assert window.workspace.project is None
    assert messages and "newer SegStudio" in messages[0]
    assert (folder / ".segstudio" / "project.sqlite").read_bytes() == before


def test_disk_full_keeps_edits_in_memory_and_saves_them_later(qtbot, window, messages,
                                                              tmp_path, sample_dir):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    window.open_paths([str(folder)])
    canvas = window.canvas
    project = window.workspace.project
    item = window.workspace.item
    # Noise under the strokes: their journal records cannot be compressed and need new pages.
    noise = np.random.default_rng(5).integers(0, 256, item.mask_shape, dtype=np.uint8)
    project.save_mask(item.id, noise)
    window._open_item(window.workspace.index)
    session = window.workspace.session
    window.tools.set_brush_size(25)

    # Make the database full for real: no page may be added any more.
    pages = project._db.execute("PRAGMA page_count").fetchone()[0]
    project._db.execute(f"PRAGMA max_page_count = {pages}")
    points = line(canvas.map_image_to_widget(20, 30), canvas.map_image_to_widget(300, 30), 10)
    drag(qtbot, canvas.viewport(), points)
    assert messages and "full" in messages[0]
    assert session.unsaved_count == 1
    assert (session.labels[30, 20:301] == 1).all()  # the stroke is still there
    assert "NOT SAVED" in window.windowTitle()
    assert window.isVisible()

    project._db.execute("PRAGMA max_page_count = 1073741823")  # space is back
    points = line(canvas.map_image_to_widget(20, 90), canvas.map_image_to_widget(300, 90), 10)
    drag(qtbot, canvas.viewport(), points)
    assert session.unsaved_count == 0
    assert "NOT SAVED" not in window.windowTitle()
    expected = session.labels.copy()
    window.close()
    with Project.open(folder / ".segstudio") as reopened:
        assert np.array_equal(reopened.load_mask(reopened.item(item.id)), expected)

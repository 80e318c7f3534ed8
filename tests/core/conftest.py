"""Fixtures shared by the core tests that touch model weights."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME (torch.hub.get_dir() reads it on every call): the real cache is
    never read nor written."""
    import torch

    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called set_dir
    return home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connection attempt is recorded and refused."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def restore_opencv_log_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI sets OpenCV's log variables (setdefault) in this process: the test runs with
    them set as the CLI sets them and they are undone afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("restore_opencv_log_env")``."""
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "ERROR")

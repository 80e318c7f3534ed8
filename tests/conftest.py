"""Shared fixtures: keep every test away from the user's home and catch leaked windows.

Core tests must never load Qt, so PySide6 is imported only inside fixtures, and only for tests
that use Qt (``qtbot``/``qapp``, directly or through another fixture) or when Qt is loaded
already. (pytest-qt itself imports PySide6 when the plugin loads, so whether core stays Qt-free
is checked in a fresh interpreter by tests/test_architecture.py, not in this process.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything can import Qt: no display is needed, and none is opened on a developer's desk.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO_ROOT = Path(__file__).resolve().parent.parent


def _uses_qt(request: pytest.FixtureRequest) -> bool:
    # fixturenames is the test's whole fixture closure, so indirect users of qtbot count too;
    # a test that builds QSettings or widgets without them is covered once Qt is loaded.
    names = request.fixturenames
    return "qtbot" in names or "qapp" in names or "PySide6.QtCore" in sys.modules


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout the tests run from."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dir(repo_root: Path) -> Path:
    """The bundled sample images (``resources/sample``)."""
    return repo_root / "resources" / "sample"


@pytest.fixture(autouse=True)
def xdg_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the XDG base folders into ``tmp_path`` so no test reads or writes the real ones."""
    base = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(base / "state"))
    return base


@pytest.fixture(autouse=True)
def settings_tmp(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """Store QSettings of Qt tests as INI files under ``tmp_path``; a no-op for core tests.

    Qt caches its settings folders on first use, so the XDG variables alone would not do.
    Returns the settings folder, or None when Qt is not in use.
    """
    if not _uses_qt(request):
        return None
    from PySide6.QtCore import QSettings

    folder = tmp_path / "qsettings"
    folder.mkdir(exist_ok=True)
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    # QSettings(organization, application) always uses NativeFormat, an INI file on Linux.
    for settings_format in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
            QSettings.setPath(settings_format, scope, str(folder))
    return folder


@pytest.fixture(autouse=True)
def fail_on_leaked_windows(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a Qt test that leaves a visible top-level window behind, after closing it.

    pytest-qt closes the widgets registered with ``qtbot.add_widget`` before fixtures are torn
    down, so only windows the test forgot about are still visible here.
    """
    yield
    if not _uses_qt(request):
        return
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    app.processEvents()
    leaked = [widget for widget in QApplication.topLevelWidgets() if widget.isVisible()]
    if not leaked:
        return
    descriptions = [
        f"{type(widget).__name__}({widget.objectName() or widget.windowTitle()!r})"
        for widget in leaked
    ]
    for widget in leaked:
        widget.close()
        widget.deleteLater()
    app.processEvents()
    pytest.fail(
        "top-level windows left open (register them with qtbot.add_widget): "
        + ", ".join(descriptions)
    )


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """Torch on two threads (this machine's cores) for the test, then as it was: training tests
    on more threads than cores only wait for each other. Use with
    ``pytestmark = pytest.mark.usefixtures("two_torch_threads")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)

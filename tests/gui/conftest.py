"""Fixtures of the GUI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def window(qtbot, monkeypatch):
    """The main window, shown (1200x800), with warning boxes silenced (their text goes to the
    status bar too, where tests read it)."""
    from PySide6.QtWidgets import QMessageBox

    from app.main_window import MainWindow

    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    win = MainWindow()
    qtbot.add_widget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.wait_exposed(win)
    return win

"""Menu and toolbar actions of the main window, built from the shortcut table."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

from app.shortcuts import DEFAULTS, keys_for

TEXTS = {spec.action_id: spec.text for spec in DEFAULTS}


def make_action(window: QMainWindow, action_id: str, slot: Callable[[], None],
                text: str | None = None, checkable: bool = False) -> QAction:
    """An action with its shortcut(s) from the user's config, registered on the window."""
    action = QAction(text or TEXTS.get(action_id, action_id), window)
    action.setObjectName(f"action_{action_id}")
    action.setShortcuts([QKeySequence(k) for k in keys_for(action_id)])
    action.setCheckable(checkable)
    if checkable:
        action.toggled.connect(lambda _checked: slot())
    else:
        action.triggered.connect(lambda _checked=False: slot())
    window.addAction(action)
    return action


def add_menu(window: QMainWindow, title: str, actions: list[QAction | None]) -> QMenu:
    menu = window.menuBar().addMenu(title)
    for action in actions:
        if action is None:
            menu.addSeparator()
        else:
            menu.addAction(action)
    return menu

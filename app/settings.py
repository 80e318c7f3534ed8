"""User settings kept in QSettings: recent projects, window geometry, overlay opacity, shortcuts."""

from __future__ import annotations

from PySide6.QtCore import QSettings

MAX_RECENT = 10


def settings() -> QSettings:
    return QSettings("SegStudio", "SegStudio")


def recent_projects() -> list[str]:
    value = settings().value("recent_projects", [])
    if isinstance(value, str):  # QSettings returns a lone string for one-element lists
        value = [value]
    return [str(v) for v in value or []]


def remember_project(folder: str) -> None:
    recent = [folder] + [p for p in recent_projects() if p != folder]
    settings().setValue("recent_projects", recent[:MAX_RECENT])


def value(key: str, default: object, kind: type) -> object:
    raw = settings().value(key, default)
    try:
        if kind is bool and isinstance(raw, str):
            return raw.lower() in ("1", "true", "yes")
        return kind(raw)
    except (TypeError, ValueError):
        return default


def set_value(key: str, data: object) -> None:
    settings().setValue(key, data)

"""Shared by the GUI benchmarks: counts a widget's paint events, to check that every timed step
is really drawn (once)."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject


class PaintCounter(QObject):
    """Install as an event filter on a viewport; ``count`` is the number of paints seen."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False

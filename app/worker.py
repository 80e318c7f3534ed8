"""Run long core jobs off the UI thread, with progress and cancel.

The core takes plain callbacks (``report(done, total)`` and a cancel token with ``is_set()``) and
knows nothing of Qt; :class:`Job` adapts them to signals and runs the function on a QThread.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from core.errors import SegStudioError


class Job(QObject):
    """A function ``fn(report=..., cancel=...)`` run on its own thread.

    Signals are delivered on the thread that owns the Job (the UI thread).
    """

    progress = Signal(int, int)
    succeeded = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, fn: Callable[..., Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.cancel_token = threading.Event()
        self._thread = QThread()
        self._runner = _Runner(fn, self.cancel_token)
        self._runner.moveToThread(self._thread)
        self._thread.started.connect(self._runner.run)
        self._runner.progress.connect(self.progress)
        # Quit the thread from the worker side, so wait() never needs the UI thread's loop.
        self._runner.done.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._runner.done.connect(self._on_done)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self.cancel_token.set()

    @property
    def running(self) -> bool:
        return self._thread.isRunning()

    def wait(self, msecs: int = 30000) -> bool:
        return self._thread.wait(msecs)

    @Slot(bool, object)
    def _on_done(self, ok: bool, payload: object) -> None:
        self._thread.wait()
        if ok:
            self.succeeded.emit(payload)
        else:
            self.failed.emit(str(payload))
        self.finished.emit()


class _Runner(QObject):
    progress = Signal(int, int)
    done = Signal(bool, object)

    def __init__(self, fn: Callable[..., Any], cancel: threading.Event) -> None:
        super().__init__()
        self._fn = fn
        self._cancel = cancel

    @Slot()
    def run(self) -> None:
        try:
            result = self._fn(report=lambda d, t: self.progress.emit(int(d), int(t)),
                              cancel=self._cancel)
        except SegStudioError as err:
            self.done.emit(False, str(err))
        except Exception as err:  # a bug: still report it in the window, never crash
            traceback.print_exc()
            self.done.emit(False, f"Unexpected error: {err!r}")
        else:
            self.done.emit(True, result)


class JobControls(QObject):
    """One job at a time behind a run button, a Cancel button, a progress bar and a status
    label (the panels that run a model share this wiring)."""

    def __init__(self, owner: QObject, run_button, cancel_button, progress, status) -> None:
        super().__init__(owner)
        self.job: Job | None = None
        self._run, self._cancel, self._progress, self._status = (run_button, cancel_button,
                                                                 progress, status)
        cancel_button.setEnabled(False)
        cancel_button.clicked.connect(self.cancel)

    @property
    def running(self) -> bool:
        return self.job is not None

    def start(self, work: Callable[..., Any], text: str,
              succeeded: Callable[[Any], None]) -> None:
        """Run ``work(report=, cancel=)``; ``succeeded(result)`` on the UI thread after it."""
        self.job = Job(work, self)
        self.job.progress.connect(self._show_progress)
        self.job.succeeded.connect(lambda result: (self._finish(), succeeded(result)))
        self.job.failed.connect(lambda message: (self._finish(), self._status.setText(message)))
        self._run.setEnabled(False)
        self._cancel.setEnabled(True)
        self._status.setText(text)
        self.job.start()

    def _show_progress(self, done: int, total: int) -> None:
        self._progress.setMaximum(max(total, 1))
        self._progress.setValue(done)

    def _finish(self) -> None:
        self.job = None
        self._run.setEnabled(True)
        self._cancel.setEnabled(False)

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def shutdown(self) -> None:
        """Cancel and wait (the window closes)."""
        if self.job is not None:
            self.job.cancel()
            self.job.wait()

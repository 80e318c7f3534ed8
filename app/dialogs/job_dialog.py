"""A dialog that runs one core job off the UI thread with a progress bar, a status line and
Cancel: the base of the export and import dialogs (and of later model and training dialogs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.worker import Job

Button = QDialogButtonBox.StandardButton


class JobDialog(QDialog):
    """Subclasses fill :attr:`form`, call :meth:`run_job` from :meth:`start` and describe the
    result in :meth:`describe_result`.

    Args:
        title: Window title.
        action: Text of the button that starts the job ("Export", "Import").
        cancellable: Whether Cancel stops a running job (an all-or-nothing import is not).
    """

    def __init__(self, title: str, action: str, cancellable: bool = True,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.cancellable = cancellable
        self.job: Job | None = None
        self.result_summary: Any = None
        self.form = QFormLayout()
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(Button.Ok | Button.Cancel)
        self.buttons.button(Button.Ok).setText(action)
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(self.form)
        self.extra = QVBoxLayout()
        layout.addLayout(self.extra)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

    def folder_row(self, label: str, edit: QLineEdit, caption: str) -> None:
        """Add ``edit`` with a Browse… button that picks a folder."""
        browse = QPushButton("Browse…")

        def choose() -> None:
            folder = QFileDialog.getExistingDirectory(self, caption, edit.text())
            if folder:
                edit.setText(folder)

        browse.clicked.connect(choose)
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(browse)
        self.form.addRow(label, row)

    # -- subclass hooks ------------------------------------------------------------------------------
    def start(self) -> None:
        raise NotImplementedError

    def describe_result(self, result: Any) -> str:
        raise NotImplementedError

    # -- running -------------------------------------------------------------------------------------
    def run_job(self, fn: Callable[..., Any], running_text: str) -> None:
        """Run ``fn(report=..., cancel=...)`` on a worker thread."""
        self.job = Job(fn, self)
        self.job.progress.connect(self._on_progress)
        self.job.succeeded.connect(self._on_success)
        self.job.failed.connect(self._on_failure)
        self.buttons.button(Button.Ok).setEnabled(False)
        self.status.setText(running_text)
        self.job.start()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _on_success(self, result: Any) -> None:
        self.result_summary = result
        self.status.setText(self.describe_result(result))
        self._finish()

    def _on_failure(self, message: str) -> None:
        self.status.setText(message)
        self._finish()

    def _finish(self) -> None:
        self.job = None
        self.buttons.button(Button.Ok).setEnabled(True)
        self.buttons.button(Button.Cancel).setText("Close")

    def reject(self) -> None:
        """Cancel a running job first; close only when nothing runs."""
        if self.job is None:
            super().reject()
        elif self.cancellable:
            self.job.cancel()
            self.status.setText("Cancelling…")

    def closeEvent(self, event) -> None:
        if self.job is not None:
            if self.cancellable:
                self.job.cancel()
            self.job.wait()
            self.job = None  # stopped: QDialog's closeEvent may now reject() and hide us
        super().closeEvent(event)

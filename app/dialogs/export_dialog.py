"""File > Export labels: pick a format and a folder, run the export off the UI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
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
from core.project.store import Project

FORMATS = (("voc", "Pascal VOC segmentation (palette PNG + JPEG)"),
           ("index", "Index PNG (one uint8/uint16 PNG per item + classes.json)"))


class ExportDialog(QDialog):
    """Runs ``core.export.export_project`` in a :class:`Job` with progress and Cancel."""

    def __init__(self, project: Project, default_dir: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export labels")
        self.project = project
        self.job: Job | None = None
        self.result_summary: object = None
        self.format = QComboBox()
        self.format.setObjectName("export_format")
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.out_dir = QLineEdit(default_dir)
        self.out_dir.setObjectName("export_dir")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out_dir)
        row.addWidget(browse)
        self.only_done = QCheckBox("Only items marked done")
        self.copy_originals = QCheckBox("Copy original images instead of converting to JPEG")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Output folder", row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.only_done)
        layout.addWidget(self.copy_originals)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(560, 240)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Export to folder", self.out_dir.text())
        if folder:
            self.out_dir.setText(folder)

    def start(self) -> None:
        """Start the export job (the dialog stays open and shows progress)."""
        from core.export import export_project

        out = self.out_dir.text().strip()
        if not out:
            self.status.setText("Choose an output folder.")
            return
        fmt = self.format.currentData()
        items = None
        if self.only_done.isChecked():
            items = [i for i in self.project.items() if i.state == "done"]
        options = {"copy_originals": True} if self.copy_originals.isChecked() and fmt == "voc" \
            else {}

        def run(report, cancel):
            return export_project(self.project, fmt, Path(out), items=items, report=report,
                                  cancel=cancel, **options)

        self.job = Job(run, self)
        self.job.progress.connect(self._on_progress)
        self.job.succeeded.connect(self._on_success)
        self.job.failed.connect(self._on_failure)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        self.status.setText("Exporting…")
        self.job.start()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _on_success(self, result) -> None:
        self.result_summary = result
        skipped = getattr(result, "skipped", [])
        text = f"Exported {getattr(result, 'count', '?')} masks to {self.out_dir.text()}."
        if skipped:
            text += f" {len(skipped)} skipped: " + "; ".join(str(s) for s in skipped[:3])
        self.status.setText(text)
        self._finish()

    def _on_failure(self, message: str) -> None:
        self.status.setText(message)
        self._finish()

    def _finish(self) -> None:
        self.job = None
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)
        self.buttons.button(QDialogButtonBox.StandardButton.Cancel).setText("Close")

    def reject(self) -> None:
        """Cancel a running export first; close only when nothing runs."""
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling…")
        else:
            super().reject()

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job.wait()
            self.job = None  # stopped: QDialog's closeEvent may now reject() and hide us
        super().closeEvent(event)

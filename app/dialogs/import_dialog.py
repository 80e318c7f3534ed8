"""File > Import labels: read a VOC or index-PNG dataset folder into the open project."""

from __future__ import annotations

from PySide6.QtWidgets import (
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

from app.dialogs.export_dialog import FORMATS
from app.worker import Job
from core.project.store import Project


class ImportDialog(QDialog):
    """Runs ``core.export.import_dataset`` in a :class:`Job`; the project is validated first,
    so a bad dataset changes nothing."""

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import labels")
        self.project = project
        self.job: Job | None = None
        self.result_summary: object = None
        self.format = QComboBox()
        for key, text in FORMATS:
            self.format.addItem(text, key)
        self.folder = QLineEdit()
        self.folder.setObjectName("import_dir")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Close)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        self.buttons.accepted.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Format", self.format)
        form.addRow("Dataset folder", row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(560, 200)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder", self.folder.text())
        if folder:
            self.folder.setText(folder)

    def start(self) -> None:
        from core.export import import_dataset

        folder, fmt = self.folder.text().strip(), self.format.currentData()
        if not folder:
            self.status.setText("Choose the dataset folder.")
            return

        def run(report, cancel):
            return import_dataset(self.project, fmt, folder, report=report)

        self.job = Job(run, self)
        self.job.progress.connect(lambda d, t: (self.progress.setMaximum(max(t, 1)),
                                                self.progress.setValue(d)))
        self.job.succeeded.connect(self._on_success)
        self.job.failed.connect(self._on_failure)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(False)
        self.status.setText("Importing…")
        self.job.start()

    def _on_success(self, result) -> None:
        self.result_summary = result
        text = (f"Imported {result.imported} masks, added {result.added_items} items and "
                f"{len(result.new_classes)} classes.")
        if result.skipped:
            text += f" {len(result.skipped)} skipped: " + "; ".join(
                f"{name}: {why}" for name, why in result.skipped[:3])
        self.status.setText(text)
        self.job = None

    def _on_failure(self, message: str) -> None:
        self.status.setText(message)
        self.job = None
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(True)

    def reject(self) -> None:
        if self.job is None:  # an import is all-or-nothing: let it finish
            super().reject()

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.wait()  # finish the transaction rather than kill it
            self.job = None
        super().closeEvent(event)

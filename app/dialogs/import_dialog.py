"""File > Import labels: read a VOC or index-PNG dataset folder into the open project."""

from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QWidget

from app.dialogs.export_dialog import format_box
from app.dialogs.job_dialog import JobDialog
from core.project.store import Project


class ImportDialog(JobDialog):
    """Runs ``core.export.import_dataset``: every mask is validated before anything is written,
    and the writes are one transaction, so the job is not cancellable half-way."""

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__("Import labels", "Import", cancellable=False, parent=parent)
        self.project = project
        self.format = format_box()
        self.folder = QLineEdit()
        self.folder.setObjectName("import_dir")
        self.form.addRow("Format", self.format)
        self.folder_row("Dataset folder", self.folder, "Dataset folder")
        self.resize(560, 200)

    def start(self) -> None:
        from core.export import import_dataset

        folder, fmt = self.folder.text().strip(), self.format.currentData()
        if not folder:
            self.status.setText("Choose the dataset folder.")
            return

        def run(report, cancel):
            return import_dataset(self.project, fmt, folder, report=report)

        self.run_job(run, "Importing…")

    def describe_result(self, result) -> str:
        text = (f"Imported {result.imported} masks, added {result.added_items} items and "
                f"{len(result.new_classes)} classes.")
        if result.skipped:
            text += f" {len(result.skipped)} skipped: " + "; ".join(
                f"{name}: {why}" for name, why in result.skipped[:3])
        return text

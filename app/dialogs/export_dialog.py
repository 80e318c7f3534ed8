"""File > Export labels: pick a format and a folder, run the export off the UI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QWidget

from app.dialogs.job_dialog import JobDialog
from core.project.store import Project

FORMATS = (("voc", "Pascal VOC segmentation (palette PNG + JPEG)"),
           ("index", "Index PNG (one uint8/uint16 PNG per item + classes.json)"))


def format_box() -> QComboBox:
    box = QComboBox()
    for key, text in FORMATS:
        box.addItem(text, key)
    return box


class ExportDialog(JobDialog):
    """Runs ``core.export.export_project`` with progress and Cancel."""

    def __init__(self, project: Project, default_dir: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__("Export labels", "Export", cancellable=True, parent=parent)
        self.project = project
        self.format = format_box()
        self.format.setObjectName("export_format")
        self.out_dir = QLineEdit(default_dir)
        self.out_dir.setObjectName("export_dir")
        self.form.addRow("Format", self.format)
        self.folder_row("Output folder", self.out_dir, "Export to folder")
        self.only_done = QCheckBox("Only items marked done")
        self.copy_originals = QCheckBox("Copy original images instead of converting to JPEG")
        self.extra.addWidget(self.only_done)
        self.extra.addWidget(self.copy_originals)
        self.resize(560, 240)

    def start(self) -> None:
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

        self.run_job(run, "Exporting…")

    def describe_result(self, result) -> str:
        text = f"Exported {result.count} masks to {self.out_dir.text()}."
        if result.skipped:
            text += f" {len(result.skipped)} skipped: " + "; ".join(
                f"{name}: {why}" for name, why in result.skipped[:3])
        return text

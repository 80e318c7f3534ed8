"""File > Export labels: pick a format and a folder, run the export off the UI thread."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QCheckBox, QComboBox, QLineEdit, QWidget

from app.dialogs.job_dialog import JobDialog
from core.project.store import Project

FORMATS = (("voc", "Pascal VOC segmentation (palette PNG + JPEG)"),
           ("index", "Index PNG (one uint8/uint16 PNG per item + classes.json)"),
           ("coco", "COCO instances (JSON, RLE or polygons; + model predictions)"),
           ("yolo", "YOLO segmentation (Ultralytics txt polygons + data.yaml)"),
           ("nifti", "NIfTI label volumes (volumes, with their affine)"),
           ("dicom-seg", "DICOM-SEG (volumes from DICOM series)"),
           ("frames", "Video frames (index PNG per annotated frame)"),
           ("actions", "Temporal action labels (CSV, ActivityNet JSON, clip lists)"))
IMPORT_FORMATS = (("voc", "Pascal VOC segmentation folder"),
                  ("index", "Index PNG folder (+ classes.json)"),
                  ("coco", "COCO instances (folder or JSON file)"),
                  ("actions", "Temporal action labels (CSV or ActivityNet JSON)"))


def format_box(formats: tuple[tuple[str, str], ...] = FORMATS) -> QComboBox:
    box = QComboBox()
    for key, text in formats:
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
        self.copy_originals = QCheckBox("Copy the original images")
        self.polygons = QCheckBox("Polygons instead of RLE (COCO)")
        self.from_classes = QCheckBox("Items without instances: one per connected component")
        for box in (self.only_done, self.copy_originals, self.polygons, self.from_classes):
            self.extra.addWidget(box)
        self.format.currentIndexChanged.connect(self._show_options)
        self._show_options()
        self.resize(600, 280)

    def _show_options(self) -> None:
        """Offer only the options the chosen format takes."""
        from core.export import export_options

        options = export_options(self.format.currentData())
        for name, box in (("copy_originals", self.copy_originals), ("polygons", self.polygons),
                          ("from_classes", self.from_classes)):
            box.setVisible(name in options)

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
        from core.export import export_options

        accepted = export_options(fmt)
        options = {name: box.isChecked() for name, box in (
            ("copy_originals", self.copy_originals), ("polygons", self.polygons),
            ("from_classes", self.from_classes)) if name in accepted}

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

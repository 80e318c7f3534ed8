"""File > Import labels: read a VOC, index-PNG or COCO dataset into the open project, or a NIfTI
label volume onto the open volume item."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QFileDialog, QLineEdit, QPushButton, QWidget

from app.dialogs.export_dialog import IMPORT_FORMATS, format_box
from app.dialogs.job_dialog import JobDialog
from core.project.items import Item
from core.project.store import Project


class ImportDialog(JobDialog):
    """Runs ``core.export.import_dataset``: every mask is validated before anything is written,
    and the writes are one transaction, so the job is not cancellable half-way."""

    def __init__(self, project: Project, volume_item: Item | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Import labels", "Import", cancellable=False, parent=parent)
        self.project = project
        self.volume_item = volume_item
        self.format = format_box(IMPORT_FORMATS)
        self.folder = QLineEdit()
        self.folder.setObjectName("import_dir")
        self.form.addRow("Format", self.format)
        self.folder_row("Dataset folder" if volume_item is None else "Folder or NIfTI file",
                        self.folder, "Dataset folder")
        if volume_item is not None:  # a label volume goes onto the volume that is open
            self.format.addItem(f"NIfTI label volume onto {volume_item.name}", "nifti")
            choose_file = QPushButton("NIfTI file…")
            choose_file.clicked.connect(self._choose_nifti)
            self.form.addRow("", choose_file)
        self.skip_bad = QCheckBox("Skip bad entries and import the rest")
        self.extra.addWidget(self.skip_bad)
        self.format.currentIndexChanged.connect(
            lambda _i: self.skip_bad.setVisible(self.format.currentData() in ("coco", "actions")))
        self.skip_bad.setVisible(False)
        self.resize(560, 240)

    def _choose_nifti(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Label volume", "",
                                              "NIfTI (*.nii *.nii.gz);;All files (*)")
        if path:
            self.folder.setText(path)
            self.format.setCurrentIndex(self.format.findData("nifti"))

    def start(self) -> None:
        from core.export import import_dataset

        folder, fmt = self.folder.text().strip(), self.format.currentData()
        if not folder:
            self.status.setText("Choose the dataset folder.")
            return

        def run(report, cancel):
            if fmt == "nifti":
                from core.export.volume_import import import_label_volume

                return import_label_volume(self.project, self.volume_item, folder)
            options = {"skip_bad": self.skip_bad.isChecked()} \
                if fmt in ("coco", "actions") else {}
            return import_dataset(self.project, fmt, folder, report=report, **options)

        self.run_job(run, "Importing…")

    def describe_result(self, result) -> str:
        if isinstance(result, int):  # a label volume
            return f"Imported {result:,} labelled voxels onto {self.volume_item.name}."
        text = (f"Imported {result.imported} masks, added {result.added_items} items and "
                f"{len(result.new_classes)} classes.")
        if result.skipped:
            text += f" {len(result.skipped)} skipped: " + "; ".join(
                f"{name}: {why}" for name, why in result.skipped[:3])
        return text

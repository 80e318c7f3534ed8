"""Choosing a model and its weights: the two combo boxes the Models and Instances panels share.

The weights list offers "untrained" (random weights: for testing), the model's published weights
(marked when they are not on this machine: SegStudio never downloads behind the person's back)
and a checkpoint file picked from disk.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QComboBox, QFileDialog, QWidget

from core.errors import SegStudioError
from core.models import list_models, model_info

CHECKPOINT = "__checkpoint__"


class ModelChoice:
    """``model`` and ``weights`` combo boxes for the registered models of ``task``.

    Args:
        task: Registry task ("semantic", "instance", ...).
        parent: Parent of the file dialog.
        report: Where to say that a family's weights could not be listed.
    """

    def __init__(self, task: str, parent: QWidget, report: Callable[[str], None],
                 lazy: bool = False) -> None:
        self._parent = parent
        self._report = report
        self.model = QComboBox()
        self.model.setObjectName("model_combo" if task == "semantic" else f"{task}_model_combo")
        for name in list_models(task):
            self.model.addItem(name, name)
            self.model.setItemData(self.model.count() - 1, model_info(name).paper, 3)
        self.weights = _LazyCombo(self.ensure_filled)
        self.weights.setObjectName("weights_combo" if task == "semantic"
                                   else f"{task}_weights_combo")
        self.model.currentIndexChanged.connect(lambda _i: self.fill_weights())
        self.weights.activated.connect(self._maybe_browse)
        self._filled = False
        if lazy:  # listing the weights imports the family (torch): when first looked at
            self.weights.addItem("(open to list the weights)", None)
        else:
            self.fill_weights()

    def ensure_filled(self) -> None:
        if not self._filled:
            self.fill_weights()

    def fill_weights(self) -> None:
        """Untrained, the model's published weights (importing its family, hence torch), a file."""
        self._filled = True
        self.weights.clear()
        self.weights.addItem("Untrained (random weights: for testing)", None)
        name = self.model.currentData()
        try:
            published = model_info(name).weights() if name else {}
        except Exception as err:  # a broken family must not break the panel
            published = {}
            self._report(f"Could not list the weights of {name}: {err}")
        if published:
            from core.models.loading import cached_weights_path  # torch: already loaded

            for key, record in published.items():
                where = "" if cached_weights_path(record) else "  (not on this machine)"
                self.weights.addItem(f"{key}{where}", key)
        self.weights.addItem("Checkpoint file…", CHECKPOINT)
        if published:
            self.weights.setCurrentIndex(1)

    def _maybe_browse(self) -> None:
        if self.weights.currentData() != CHECKPOINT:
            return
        path, _ = QFileDialog.getOpenFileName(self._parent, "Model checkpoint", "",
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.weights.insertItem(self.weights.count() - 1, path, path)
            self.weights.setCurrentIndex(self.weights.count() - 2)
        else:
            self.weights.setCurrentIndex(0)

    def chosen_weights(self) -> str | None:
        """The weights chosen (None: untrained); raises when "Checkpoint file…" is left."""
        self.ensure_filled()
        weights = self.weights.currentData()
        if weights == CHECKPOINT:
            raise SegStudioError("Choose a checkpoint file first.")
        return weights


class _LazyCombo(QComboBox):
    """A combo box that fills itself (``before_popup``) when first opened."""

    def __init__(self, before_popup: Callable[[], None]) -> None:
        super().__init__()
        self._before_popup = before_popup

    def showPopup(self) -> None:
        self._before_popup()
        super().showPopup()

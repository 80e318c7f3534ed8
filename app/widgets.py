"""Small widget builders the panels and dialogs share."""

from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QSpinBox


def spin_box(low: int, high: int, value: int | None = None, *, step: int | None = None,
             prefix: str | None = None, suffix: str | None = None, special: str | None = None,
             name: str | None = None) -> QSpinBox:
    """A QSpinBox over ``low..high`` at ``value`` (``special``: the text shown at ``low``)."""
    box = QSpinBox()
    _configure(box, low, high, value, step, prefix, suffix, special, name)
    return box


def double_spin_box(low: float, high: float, value: float | None = None, *,
                    step: float | None = None, decimals: int | None = None,
                    prefix: str | None = None, suffix: str | None = None,
                    special: str | None = None, name: str | None = None) -> QDoubleSpinBox:
    """A QDoubleSpinBox over ``low..high`` at ``value`` (``decimals`` are set before the range,
    which they round)."""
    box = QDoubleSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)
    _configure(box, low, high, value, step, prefix, suffix, special, name)
    return box


def _configure(box: QSpinBox | QDoubleSpinBox, low, high, value, step, prefix, suffix, special,
               name) -> None:
    if name is not None:
        box.setObjectName(name)
    box.setRange(low, high)
    if step is not None:
        box.setSingleStep(step)
    if prefix is not None:
        box.setPrefix(prefix)
    if suffix is not None:
        box.setSuffix(suffix)
    if special is not None:
        box.setSpecialValueText(special)
    if value is not None:
        box.setValue(value)

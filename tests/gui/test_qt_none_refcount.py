"""Regression test for PySide6-Essentials 6.12.0 on Python 3.11.

That release drops one reference to ``None`` on every Qt call that returns nothing; after a
few thousand calls the interpreter frees ``None`` and aborts with "none_dealloc". Python 3.12
made ``None`` immortal, so only 3.11 is hit, and pyproject.toml pins PySide6 below 6.12 there.
"""

from __future__ import annotations

import gc
import importlib.metadata
import sys
from collections.abc import Callable

import pytest
from PySide6.QtCore import QCoreApplication, QObject, QTimer
from PySide6.QtWidgets import QApplication, QWidget

CALLS = 10_000
# Unrelated interpreter churn moves None's count by a handful; the bug moves it by CALLS.
TOLERANCE = 100


def _process_events_calls(_owner: QObject) -> Callable[[], None]:
    return QCoreApplication.processEvents


def _widget_update_calls(_owner: QObject) -> Callable[[], None]:
    widget = QWidget()  # never shown; the bound method keeps it alive for the test
    return widget.update


def _timer_calls(owner: QObject) -> Callable[[], None]:
    timer = QTimer(owner)

    def start_stop() -> None:
        timer.start(60_000)
        timer.stop()

    return start_stop


def _set_object_name_calls(owner: QObject) -> Callable[[], None]:
    target = QObject(owner)
    return lambda: target.setObjectName("segstudio")


@pytest.mark.parametrize(
    "make_call",
    [_process_events_calls, _widget_update_calls, _timer_calls, _set_object_name_calls],
    ids=["processEvents", "QWidget.update", "QTimer.start-stop", "QObject.setObjectName"],
)
def test_void_qt_calls_keep_none_alive(
    qapp: QApplication, make_call: Callable[[QObject], Callable[[], None]]
) -> None:
    owner = QObject()
    call = make_call(owner)
    call()  # let one-time caches (method wrappers, signatures) settle before measuring
    gc.collect()
    before = sys.getrefcount(None)

    for _ in range(CALLS):
        call()
    gc.collect()
    after = sys.getrefcount(None)

    assert before - after < TOLERANCE, f"None lost {before - after} references in {CALLS} calls"


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal on Python >= 3.12")
def test_pyside6_below_6_12_on_python_3_11() -> None:
    version = importlib.metadata.version("PySide6-Essentials")
    major_minor = tuple(int(part) for part in version.split(".")[:2])

    assert major_minor < (6, 12), f"PySide6-Essentials {version} aborts on Python 3.11"

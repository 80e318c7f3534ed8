"""Architecture rules: ``core`` stays free of Qt and of ``app``; heavy libraries load lazily.

Each check imports in a fresh interpreter, because this test process may already have loaded
Qt for other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Top-level packages core must never load: the GUI toolkits and the GUI package.
FORBIDDEN_IN_CORE = frozenset({"PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6", "app"})
TORCH = frozenset({"torch", "torchvision"})
# The only core modules that may import torch when imported: model families, the inference
# engine, RAFT optical flow and the training loop, which the registry, core.flow, core.train
# and the GUI load on demand.
# Everything else (the registry, weights records, inference errors, core.flow itself) must
# list and describe models and compute OpenCV flow without torch.
TORCH_MODULES = ("core.models.", "core.inference.", "core.flow.raft", "core.train.loop",
                 "core.train.common", "core.train.instances", "core.train.actions",
                 "core.train.action_data", "core.train.distributed", "core.train.ddp_worker",
                 "core.train.runner")
TORCH_FREE_EXCEPTIONS = frozenset(
    {"core.models.registry", "core.models.weights", "core.inference.errors"})
HEAVY_FOR_APP_START = TORCH

# Imports the modules named on the command line, then every module of core, and prints what
# it imported and what ended up in sys.modules as one JSON line.
_CORE_PROBE = r"""
import importlib, json, pkgutil, sys

def reraise(name):
    raise  # walk_packages calls this inside its "except ImportError" block

skip = tuple(json.loads(sys.argv[1]))  # module prefixes not to import
for extra in sys.argv[2:]:
    importlib.import_module(extra)
import core
imported = ["core"]
for info in pkgutil.walk_packages(core.__path__, "core.", onerror=reraise):
    if info.name.startswith(skip):
        continue
    importlib.import_module(info.name)
    imported.append(info.name)
print(json.dumps({"core_file": core.__file__, "imported": imported, "loaded": sorted(sys.modules)}))
"""

# Start the GUI as a user does (window shown, sample folder opened, an item displayed).
_APP_MAIN_PROBE = r"""
import json, shutil, sys, tempfile
import app.main
from app.main import create_app
from app.main_window import MainWindow
qapp = create_app(sys.argv[:1])
window = MainWindow()
window.show()
folder = tempfile.mkdtemp()
shutil.copytree(sys.argv[1], folder + "/sample")
assert window.open_paths([folder + "/sample"]), "the sample did not open"
qapp.processEvents()
assert window.workspace.session is not None
window.close()
print(json.dumps({"loaded": sorted(sys.modules)}))
"""


def _run_probe(source: str, *args: str) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    result = subprocess.run(
        [sys.executable, "-c", source, *args],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"probe failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _forbidden(loaded: list[str], forbidden: frozenset[str]) -> list[str]:
    return sorted(name for name in loaded if name.split(".")[0] in forbidden)


def _core_modules_on_disk() -> set[str]:
    names = set()
    for path in (REPO_ROOT / "core").rglob("*.py"):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.add(".".join(parts))
    return names


def _torch_modules() -> list[str]:
    """Prefixes of the modules allowed to load torch (skipped by the torch-free probe)."""
    return [m for m in _core_modules_on_disk()
            if m.startswith(TORCH_MODULES) and m not in TORCH_FREE_EXCEPTIONS]


def test_core_imports_no_qt_or_app() -> None:
    report = _run_probe(_CORE_PROBE, "[]")

    assert Path(report["core_file"]).resolve().is_relative_to(REPO_ROOT), report["core_file"]
    imported = set(report["imported"])
    # Guards against a probe that silently walked nothing (and so could never fail).
    assert len(imported) >= 3, f"only imported {sorted(imported)}"
    missing = _core_modules_on_disk() - imported
    assert not missing, (
        f"modules under core/ the walk did not import (folder without __init__.py?): "
        f"{sorted(missing)}"
    )
    forbidden = _forbidden(report["loaded"], FORBIDDEN_IN_CORE)
    assert forbidden == [], f"importing core loaded {forbidden}"


def test_core_outside_models_and_inference_never_imports_torch() -> None:
    heavy = _torch_modules()
    report = _run_probe(_CORE_PROBE, json.dumps(heavy))

    assert {"core.models", "core.models.registry", "core.cli", "core.inference", "core.flow",
            "core.flow.methods", "core.flow.propagate", "core.train", "core.train.data",
            "core.train.metrics", "core.cli_train"} <= set(report["imported"])
    assert len(report["imported"]) >= 20
    loaded = _forbidden(report["loaded"], TORCH)
    assert loaded == [], f"importing core (without {heavy}) loaded {loaded}"


def test_torch_probe_detects_a_torch_import() -> None:
    report = _run_probe(_CORE_PROBE, "[]", "core.models.unet")

    assert "torch" in report["loaded"]


def test_core_probe_detects_a_qt_import() -> None:
    # The check above must be able to fail: the same probe sees Qt when something loads it.
    report = _run_probe(_CORE_PROBE, "[]", "PySide6.QtCore")

    assert "PySide6.QtCore" in _forbidden(report["loaded"], FORBIDDEN_IN_CORE)


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.is_file(), f"{lint_imports} is missing; pip install import-linter"

    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        check=False,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"


def test_gui_start_up_does_not_import_torch() -> None:
    report = _run_probe(_APP_MAIN_PROBE, str(REPO_ROOT / "resources" / "sample"))
    assert "app.main_window" in report["loaded"]

    heavy = _forbidden(report["loaded"], HEAVY_FOR_APP_START)
    assert heavy == [], f"importing app.main loaded {heavy}; import it where it is needed"

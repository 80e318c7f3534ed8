"""Where SegStudio's bundled files (icons, desktop entry, sample images) live.

The ``resources/`` folder sits beside the ``core`` package at the repository root. That holds
for a source checkout and for an editable install (``pip install -e .``), which imports ``core``
straight from the checkout. A regular wheel does not ship the folder; asking for it there raises
a clear :class:`~core.errors.SegStudioError` instead of handing out a path that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import SegStudioError

# The folder that holds the ``core`` package; a module constant so tests can point it elsewhere.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent

# A file every real resources folder has; it tells ours apart from any other "resources" folder
# that happens to sit in site-packages.
_MARKER = "segstudio.desktop"

ICON_FORMATS = ("svg", "png")


def resources_dir() -> Path:
    """Return the absolute path of SegStudio's ``resources`` folder.

    Raises:
        SegStudioError: the folder is missing, e.g. SegStudio was installed from a wheel
            rather than from a source checkout.
    """
    candidate = _PACKAGE_PARENT / "resources"
    if not (candidate / _MARKER).is_file():
        raise SegStudioError(
            f"SegStudio's resources folder was not found at {candidate}; "
            "run SegStudio from a source checkout or an editable install (pip install -e .)."
        )
    return candidate


def sample_dir() -> Path:
    """Return the folder of bundled sample images (``resources/sample``)."""
    return resources_dir() / "sample"


def icon_path(ext: str = "svg") -> Path:
    """Return the application icon in the given format.

    Args:
        ext: ``"svg"`` (scalable) or ``"png"`` (256x256).

    Raises:
        ValueError: ``ext`` is not one of :data:`ICON_FORMATS`.
        SegStudioError: the resources folder or the icon file is missing.
    """
    ext = ext.lower().lstrip(".")
    if ext not in ICON_FORMATS:
        raise ValueError(f"icon format must be one of {ICON_FORMATS}, not {ext!r}")
    path = resources_dir() / "icons" / f"segstudio.{ext}"
    if not path.is_file():
        raise SegStudioError(f"The SegStudio icon {path} is missing from the resources folder.")
    return path

"""Install SegStudio into the Linux desktop menu (XDG desktop entry and hicolor icons).

The template ``resources/segstudio.desktop`` says ``Exec=segstudio %F``; a menu started from a
desktop session often has a different PATH than the shell that installed SegStudio (a venv is
rarely on it), so the installed entry names the launcher by its absolute path instead.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from core.errors import SegStudioError
from core.fsutil import atomic_write_bytes
from core.resources import icon_path, resources_dir

APP_ID = "segstudio"
DESKTOP_GROUP = "[Desktop Entry]"

# Characters that force an Exec argument into double quotes (Desktop Entry spec, "The Exec key").
_EXEC_RESERVED = frozenset(" \t\n\"'\\><~|&;$*?#()`")
# Inside double quotes these must be preceded by a backslash.
_EXEC_ESCAPED_IN_QUOTES = frozenset('"`$\\')


def quote_exec_argument(arg: str) -> str:
    """Return ``arg`` written as one argument of a desktop entry's ``Exec`` value.

    The spec layers two encodings: the argument is first quoted (double quotes when it holds a
    reserved character, with double quote, backtick, dollar and backslash escaped by a backslash
    inside), then the whole value is escaped as a desktop-entry string, which doubles every
    backslash again. A literal ``%`` is written ``%%`` so that it is not taken for a field code.

    Raises:
        SegStudioError: ``arg`` contains a control character, which no Exec value can carry.
    """
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in arg):
        raise SegStudioError(f"The path {arg!r} contains a control character; choose another.")
    arg = arg.replace("%", "%%")
    if any(char in _EXEC_RESERVED for char in arg):
        escaped = "".join("\\" + c if c in _EXEC_ESCAPED_IN_QUOTES else c for c in arg)
        arg = f'"{escaped}"'
    return arg.replace("\\", "\\\\")


def default_data_home() -> Path:
    """Return ``$XDG_DATA_HOME``, or ``~/.local/share`` when it is unset or not absolute."""
    value = os.environ.get("XDG_DATA_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "share"


def find_launcher() -> str:
    """Return the absolute path of the ``segstudio`` launcher of this installation.

    The launcher beside the running interpreter comes first: it belongs to the environment that
    runs this code even when that environment's ``bin`` folder is not on PATH, while
    ``shutil.which`` could find another installation.

    Raises:
        SegStudioError: no launcher was found.
    """
    beside_python = Path(sys.executable).parent / APP_ID
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return os.path.abspath(beside_python)
    on_path = shutil.which(APP_ID)
    if on_path:
        return os.path.abspath(on_path)
    raise SegStudioError(
        "The segstudio launcher was not found next to Python or on PATH; "
        "install SegStudio with pip first, or name the launcher explicitly."
    )


def render_desktop_entry(template: str, launcher: str) -> str:
    """Return ``template`` with ``Exec`` (and ``TryExec``) pointing at ``launcher``.

    The arguments after the program in the template's ``Exec`` (e.g. ``%F``) are kept.

    Raises:
        SegStudioError: the template has no ``Exec`` key in its ``[Desktop Entry]`` group.
    """
    lines = template.splitlines()
    in_main_group = False
    exec_index = None
    try_exec_index = None
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            in_main_group = stripped == DESKTOP_GROUP
        elif in_main_group and stripped.startswith("Exec="):
            exec_index = index
        elif in_main_group and stripped.startswith("TryExec="):
            try_exec_index = index
    if exec_index is None:
        raise SegStudioError("The desktop entry template has no Exec key; the checkout is damaged.")

    _, _, arguments = lines[exec_index].strip().removeprefix("Exec=").partition(" ")
    program = quote_exec_argument(launcher)
    lines[exec_index] = f"Exec={program} {arguments}".rstrip()
    # TryExec is a plain string: the menu hides the entry once the launcher is gone.
    try_exec_line = "TryExec=" + launcher.replace("\\", "\\\\")
    if try_exec_index is None:
        lines.insert(exec_index, try_exec_line)
    else:
        lines[try_exec_index] = try_exec_line
    return "\n".join(lines) + "\n"


def install_desktop_entry(
    data_home: Path | None = None, exec_path: str | None = None
) -> dict[str, Path]:
    """Install the desktop entry and icons so SegStudio shows up in the application menu.

    Writes ``<data_home>/applications/segstudio.desktop`` (mode 0o755) and the icons under
    ``<data_home>/icons/hicolor/{scalable,256x256}/apps/``. Every file is written to a temporary
    name and renamed into place, so a reader never sees half a file; running it again rewrites
    the same bytes.

    Args:
        data_home: the XDG data folder; defaults to :func:`default_data_home`.
        exec_path: the launcher to put in ``Exec``; defaults to :func:`find_launcher`.

    Returns:
        The written files under the keys ``"desktop_entry"``, ``"icon_svg"`` and ``"icon_png"``.

    Raises:
        SegStudioError: the launcher, the resources or the target folder is unusable.
    """
    data_home = Path(os.path.abspath(data_home or default_data_home()))
    launcher = _resolve_launcher(exec_path)
    template = (resources_dir() / f"{APP_ID}.desktop").read_text(encoding="utf-8")
    entry = render_desktop_entry(template, launcher)

    icons_root = data_home / "icons" / "hicolor"
    written = {
        "icon_svg": icons_root / "scalable" / "apps" / f"{APP_ID}.svg",
        "icon_png": icons_root / "256x256" / "apps" / f"{APP_ID}.png",
        "desktop_entry": data_home / "applications" / f"{APP_ID}.desktop",
    }
    try:
        # Icons first, so the menu never shows the entry without its icon.
        _write_atomically(written["icon_svg"], icon_path("svg").read_bytes(), 0o644)
        _write_atomically(written["icon_png"], icon_path("png").read_bytes(), 0o644)
        _write_atomically(written["desktop_entry"], entry.encode("utf-8"), 0o755)
    except OSError as err:
        reason = err.strerror or str(err)
        raise SegStudioError(
            f"Could not install the desktop entry into {data_home}: {reason}."
        ) from err
    return written


def _resolve_launcher(exec_path: str | None) -> str:
    if exec_path is None:
        return find_launcher()
    launcher = os.path.abspath(os.path.expanduser(exec_path))
    if not os.path.isfile(launcher):
        raise SegStudioError(f"The launcher {launcher} does not exist.")
    return launcher


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data, mode)

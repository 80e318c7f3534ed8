"""Installing the XDG desktop entry and icons, and finding the bundled resources."""

from __future__ import annotations

import configparser
import os
import stat
import struct
import sys
from pathlib import Path

import pytest

import core.resources
from core.desktop import (
    default_data_home,
    find_launcher,
    install_desktop_entry,
    quote_exec_argument,
)
from core.errors import SegStudioError
from core.resources import icon_path, resources_dir

_STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def _make_launcher(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "segstudio"
    launcher.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    launcher.chmod(0o755)
    return launcher


def _read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # desktop entry keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def _split_exec(value: str) -> list[str]:
    """Decode an Exec value the way a launcher does (string escapes, then quoting, then %%)."""
    unescaped, index = [], 0
    while index < len(value):
        if value[index] == "\\" and index + 1 < len(value):
            unescaped.append(_STRING_ESCAPES[value[index + 1]])
            index += 2
        else:
            unescaped.append(value[index])
            index += 1
    args: list[str] = []
    current: str | None = None
    quoted = escaped = False
    for char in "".join(unescaped):
        if quoted and escaped:
            current, escaped = current + char, False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted, current = not quoted, current or ""
        elif char == " " and not quoted:
            if current is not None:
                args.append(current)
            current = None
        else:
            current = (current or "") + char
    if current is not None:
        args.append(current)
    return [arg.replace("%%", "%") for arg in args]


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_install_writes_entry_and_icons(tmp_path: Path) -> None:
    launcher = _make_launcher(tmp_path / "bin")
    data_home = tmp_path / "share"

    written = install_desktop_entry(data_home=data_home, exec_path=str(launcher))

    entry_path = written["desktop_entry"]
    assert entry_path == data_home / "applications" / "segstudio.desktop"
    entry = _read_entry(entry_path)
    program, *arguments = _split_exec(entry["Exec"])
    assert program == str(launcher) and os.access(program, os.X_OK)
    assert arguments == ["%F"]
    assert entry["TryExec"] == str(launcher)
    assert entry["Type"] == "Application"
    assert entry["Name"] == "SegStudio"
    assert entry["Terminal"] == "false"
    assert entry["StartupWMClass"] == "segstudio"
    assert "inode/directory" in entry["MimeType"].split(";")
    assert stat.S_IMODE(entry_path.stat().st_mode) == 0o755


def test_icon_resolves_and_matches_bundled_files(tmp_path: Path) -> None:
    launcher = _make_launcher(tmp_path / "bin")
    data_home = tmp_path / "share"

    written = install_desktop_entry(data_home=data_home, exec_path=str(launcher))

    icon_name = _read_entry(written["desktop_entry"])["Icon"]
    found = sorted(data_home.glob(f"icons/hicolor/*/apps/{icon_name}.*"))
    assert found == sorted([written["icon_png"], written["icon_svg"]])
    assert written["icon_svg"] == data_home / "icons/hicolor/scalable/apps/segstudio.svg"
    assert written["icon_png"] == data_home / "icons/hicolor/256x256/apps/segstudio.png"
    assert written["icon_svg"].read_bytes() == icon_path("svg").read_bytes()
    assert written["icon_png"].read_bytes() == icon_path("png").read_bytes()
    assert _png_size(written["icon_png"]) == (256, 256)


def test_reinstall_is_idempotent_and_leaves_no_temp_files(tmp_path: Path) -> None:
    launcher = _make_launcher(tmp_path / "bin")
    data_home = tmp_path / "share"

    first = install_desktop_entry(data_home=data_home, exec_path=str(launcher))
    first_bytes = {key: path.read_bytes() for key, path in first.items()}
    second = install_desktop_entry(data_home=data_home, exec_path=str(launcher))

    assert second == first
    assert {key: path.read_bytes() for key, path in second.items()} == first_bytes
    on_disk = sorted(path for path in data_home.rglob("*") if path.is_file())
    assert on_disk == sorted(first.values())


def test_default_target_is_xdg_data_home(tmp_path: Path, xdg_tmp: Path) -> None:
    launcher = _make_launcher(tmp_path / "bin")

    written = install_desktop_entry(exec_path=str(launcher))

    assert written["desktop_entry"] == xdg_tmp / "data" / "applications" / "segstudio.desktop"


def test_relative_xdg_data_home_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "relative/share")
    monkeypatch.setenv("HOME", str(tmp_path))

    assert default_data_home() == tmp_path / ".local" / "share"


def test_launcher_path_with_special_characters_round_trips(tmp_path: Path) -> None:
    launcher = _make_launcher(tmp_path / "my apps" / 'a "b" $HOME 100% `x` back\\slash')

    written = install_desktop_entry(data_home=tmp_path / "share", exec_path=str(launcher))

    assert _split_exec(_read_entry(written["desktop_entry"])["Exec"]) == [str(launcher), "%F"]


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("/usr/bin/segstudio", "/usr/bin/segstudio"),
        ("/opt/seg studio/segstudio", '"/opt/seg studio/segstudio"'),
        ("/opt/a$b/segstudio", '"/opt/a\\\\$b/segstudio"'),
        ("/opt/100%/segstudio", "/opt/100%%/segstudio"),
    ],
)
def test_quote_exec_argument(arg: str, expected: str) -> None:
    assert quote_exec_argument(arg) == expected


def test_quote_exec_argument_rejects_control_characters() -> None:
    with pytest.raises(SegStudioError):
        quote_exec_argument("/opt/seg\nstudio")


def test_find_launcher_prefers_the_one_beside_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = _make_launcher(tmp_path / "venv" / "bin")
    monkeypatch.setattr(sys, "executable", str(launcher.parent / "python"))

    assert find_launcher() == str(launcher)


def test_find_launcher_without_any_launcher_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(SegStudioError, match="launcher"):
        find_launcher()


def test_missing_exec_path_fails(tmp_path: Path) -> None:
    with pytest.raises(SegStudioError, match="does not exist"):
        install_desktop_entry(data_home=tmp_path / "share", exec_path=str(tmp_path / "nope"))


def test_unwritable_target_fails_with_segstudio_error(tmp_path: Path) -> None:
    launcher = _make_launcher(tmp_path / "bin")
    blocker = tmp_path / "share"
    blocker.write_text("a file where a folder should be", encoding="utf-8")

    with pytest.raises(SegStudioError, match="Could not install"):
        install_desktop_entry(data_home=blocker, exec_path=str(launcher))


def test_resources_dirs_point_into_the_checkout(repo_root: Path, sample_dir: Path) -> None:
    assert resources_dir() == repo_root / "resources"
    assert core.resources.sample_dir() == sample_dir
    assert icon_path().suffix == ".svg"
    assert icon_path("PNG").is_file()
    with pytest.raises(ValueError):
        icon_path("gif")


def test_resources_dir_outside_a_checkout_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core.resources, "_PACKAGE_PARENT", tmp_path)

    with pytest.raises(SegStudioError, match="resources folder"):
        resources_dir()
    with pytest.raises(SegStudioError):
        core.resources.sample_dir()

"""segstudio-cli run as a real process: output, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from core import cli
from core.annotation.tools import PaintRule, fill_polygon, paint_segment
from core.export import EXPORT_FORMATS, IMPORT_FORMATS
from core.project.store import Project

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES_JSON = [
    {"id": 0, "name": "background", "color": [0, 0, 0]},
    {"id": 1, "name": "object", "color": [200, 30, 30]},
    {"id": 2, "name": "cell", "color": [30, 200, 30]},
]


def run_cli(*args: str | Path, script: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter (or the installed console script)."""
    command = ([str(Path(sys.executable).parent / "segstudio-cli")] if script
               else [sys.executable, "-m", "core.cli"])
    result = subprocess.run([*command, *map(str, args)], cwd=REPO_ROOT, env=dict(os.environ),
                            capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int,
                          text: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segstudio-cli: error: "), result.stderr
    assert text in lines[0]


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(data.camera()[::2, ::2]).save(folder / "camera.png")
    Image.fromarray(data.coffee()[::2, ::2]).save(folder / "coffee.jpg", quality=92)
    return folder


@pytest.fixture
def annotated_project(tmp_path: Path, image_dir: Path) -> Path:
    """A project made with the CLI, masks painted like a user would, closed again."""
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classes": CLASSES_JSON}))
    folder = tmp_path / "project"
    assert run_cli("project", "create", folder, "--classes", classes).returncode == 0
    assert run_cli("project", "add", folder, image_dir).returncode == 0
    with Project.open(folder) as project:
        for item in project.items():
            labels = np.zeros(item.mask_shape, np.uint8)
            paint_segment(labels, (12, 15), (90, 70), 7, PaintRule(1))
            fill_polygon(labels, [(50, 80), (120, 90), (70, 130)], PaintRule(2))
            project.save_mask(item.id, labels)
        project.set_state(project.items()[0].id, "done")
    return folder


def _masks(folder: Path) -> dict[str, np.ndarray]:
    with Project.open(folder) as project:
        return {item.name: project.load_mask(item) for item in project.items()}


# -- info ------------------------------------------------------------------------------------------
def test_info_on_sample_images(sample_dir: Path) -> None:
    samples = sorted(p for p in sample_dir.iterdir() if p.suffix in {".png", ".jpg", ".tif"})
    assert len(samples) >= 3
    for path in samples:
        result = run_cli("info", path)
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        assert info["kind"] == "image" and info["width"] > 0 and info["height"] > 0
        with Image.open(path) as image:
            assert (info["width"], info["height"]) == image.size
        if path.name == "camera_stack.tif":
            assert info["frames"] == 5


def test_info_on_a_project(annotated_project: Path) -> None:
    result = run_cli("info", annotated_project)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "project" and summary["items"] == 2
    assert summary["states"] == {"done": 1, "new": 1} and summary["missing"] == 0
    assert [c["name"] for c in summary["classes"]] == ["background", "object", "cell"]


def test_info_on_empty_png(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_one_error_line(run_cli("info", empty), 1, "empty")


def test_info_on_missing_path(tmp_path: Path) -> None:
    assert_one_error_line(run_cli("info", tmp_path / "nope.png"), 1, "does not exist")


def test_installed_console_script(sample_dir: Path) -> None:
    result = run_cli("info", sample_dir / "camera.png", script=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["width"] == 512


# -- project -------------------------------------------------------------------------------------
def test_project_create_add_list(tmp_path: Path, image_dir: Path) -> None:
    (image_dir / "broken.png").write_bytes(b"")
    (image_dir / "sub").mkdir()
    Image.fromarray(data.camera()[:50, :60]).save(image_dir / "sub" / "crop.png")
    folder = tmp_path / "p"
    created = run_cli("project", "create", folder)
    assert created.returncode == 0 and json.loads(created.stdout)["classes"] == 2

    added = run_cli("project", "add", folder, image_dir, "--no-recursive")
    assert added.returncode == 1  # something was skipped
    assert json.loads(added.stdout) == {"added": 2, "skipped": 1}
    assert added.stderr.splitlines() == [
        f"skipped {image_dir / 'broken.png'}: '{image_dir / 'broken.png'}' is empty (0 bytes)."
    ]
    again = run_cli("project", "add", folder, image_dir / "sub")
    assert again.returncode == 0 and json.loads(again.stdout) == {"added": 1, "skipped": 0}

    listing = run_cli("project", "list", folder)
    assert listing.returncode == 0
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["camera", "coffee", "crop"]
    assert rows[2] | {"id": 0} == {
        "id": 0, "name": "crop", "state": "new", "missing": False,
        "path": str(image_dir / "sub" / "crop.png"), "width": 60, "height": 50, "frames": 1,
    }


@pytest.mark.parametrize(("content", "message"), [
    ("[", "Cannot read the classes file"),
    ('{"classes": []}', "non-empty list"),
    ('[{"id": 0}]', 'needs an "id" and a "name"'),
    ('[{"id": -1, "name": "x"}]', "0-65535"),
    ('[{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]', "the id 0 is used by two classes"),
    ('[{"id": 0, "name": "a"}, {"id": 1, "name": "a"}]', "the name 'a' is used by two"),
    ('[{"id": 0, "name": "a", "color": [1, 2]}]', "colour must be three values"),
])
def test_project_create_rejects_bad_classes(tmp_path: Path, content: str, message: str) -> None:
    classes = tmp_path / "classes.json"
    classes.write_text(content)
    result = run_cli("project", "create", tmp_path / "p", "--classes", classes)
    assert_one_error_line(result, 1, message)
    assert not (tmp_path / "p").exists()


# -- export / import ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["voc", "index"])
def test_export_then_import_round_trip(annotated_project: Path, tmp_path: Path,
                                       fmt: str) -> None:
    out = tmp_path / "out"
    args = ["--copy-originals"] + (["--subset", "train"] if fmt == "voc" else [])
    exported = run_cli("export", annotated_project, "--format", fmt, "--out", out, *args)
    assert exported.returncode == 0, exported.stderr
    summary = json.loads(exported.stdout)
    assert summary == {"out": str(out), "format": fmt, "count": 2, "skipped": []}
    assert exported.stderr == ""  # no progress bar: stderr is not a terminal
    if fmt == "voc":
        assert (out / "ImageSets/Segmentation/train.txt").read_text() == "camera\ncoffee\n"

    fresh = tmp_path / "fresh"
    assert run_cli("project", "create", fresh).returncode == 0
    imported = run_cli("import", fresh, "--format", fmt, out)
    assert imported.returncode == 0, imported.stderr
    result = json.loads(imported.stdout)
    assert (result["imported"], result["added_items"], result["new_classes"]) == (2, 2, ["cell"])
    before, after = _masks(annotated_project), _masks(fresh)
    assert sorted(before) == sorted(after)
    for name, labels in before.items():
        assert np.array_equal(after[name], labels), name


def test_export_only_done_items(annotated_project: Path, tmp_path: Path) -> None:
    result = run_cli("export", annotated_project, "--format", "index", "--out", tmp_path / "o",
                     "--items", "done")
    assert result.returncode == 0 and json.loads(result.stdout)["count"] == 1
    assert sorted(p.name for p in (tmp_path / "o/masks").iterdir()) == ["camera.png"]


def test_bad_format_is_a_usage_error(annotated_project: Path, tmp_path: Path) -> None:
    result = run_cli("export", annotated_project, "--format", "cityscapes", "--out",
                     tmp_path / "o")
    assert result.returncode == 2 and "invalid choice: 'cityscapes'" in result.stderr
    assert not (tmp_path / "o").exists()
    assert run_cli("export", annotated_project).returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_nonexistent_project(tmp_path: Path) -> None:
    result = run_cli("export", tmp_path / "nope", "--format", "voc", "--out", tmp_path / "o")
    assert_one_error_line(result, 1, f"{tmp_path / 'nope'} does not exist")
    (tmp_path / "plain").mkdir()
    result = run_cli("project", "list", tmp_path / "plain")
    assert_one_error_line(result, 1, "is not a SegStudio project")


def test_project_locked_by_another_process(annotated_project: Path, tmp_path: Path) -> None:
    """Writing commands are refused while another process has the project open; reading
    commands (info, list, export) still work, as the GUI may have it open."""
    out = tmp_path / "voc"
    run_cli("export", annotated_project, "--format", "voc", "--out", out)
    with Project.open(annotated_project) as project:
        before = {i.name: project.load_mask(i) for i in project.items()}
        result = run_cli("import", annotated_project, "--format", "voc", out)
        assert_one_error_line(result, 1, "already open")
        assert str(os.getpid()) in result.stderr
        result = run_cli("project", "add", annotated_project, tmp_path / "voc" / "JPEGImages")
        assert_one_error_line(result, 1, "already open")

        info = run_cli("info", annotated_project)
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["items"] == len(before)
        listed = run_cli("project", "list", annotated_project)
        assert listed.returncode == 0 and len(listed.stdout.splitlines()) == len(before)
        again = run_cli("export", annotated_project, "--format", "index", "--out", tmp_path / "i")
        assert again.returncode == 0, again.stderr
        for name, labels in before.items():
            if labels.any():
                exported = np.array(Image.open(tmp_path / "i" / "masks" / f"{name}.png"))
                assert np.array_equal(exported, labels)


def test_import_errors_are_one_line(annotated_project: Path, tmp_path: Path) -> None:
    result = run_cli("import", annotated_project, "--format", "voc", tmp_path)
    assert_one_error_line(result, 1, "not a Pascal VOC dataset")


def test_install_desktop(xdg_tmp: Path) -> None:
    result = run_cli("install-desktop")
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 3 and all(p.is_file() for p in paths)
    assert all(p.is_relative_to(xdg_tmp / "data") for p in paths)


# -- in process ------------------------------------------------------------------------------------
def test_formats_match_the_registry() -> None:
    assert set(cli.FORMATS) == set(EXPORT_FORMATS)
    assert set(cli.IMPORT_FORMATS) == set(IMPORT_FORMATS)


def test_unexpected_error_asks_for_a_report(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str],
                                            sample_dir: Path) -> None:
    def broken(args: object) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert cli.main(["info", str(sample_dir / "camera.png")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "please report" in err and "ZeroDivisionError" in err


def test_progress_bar_draws_on_a_terminal() -> None:
    class Terminal:
        text = ""

        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

    terminal = Terminal()
    bar = cli._ProgressBar("export voc", terminal, width=10)  # type: ignore[arg-type]
    bar(0, 4)
    bar(2, 4)
    bar.close()
    assert terminal.text == "\rexport voc [----------] 0/4\rexport voc [#####-----] 2/4\n"

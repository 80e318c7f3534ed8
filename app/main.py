"""Entry point of the GUI: ``segstudio [PATH ...]`` (images, folders or a project folder)."""

from __future__ import annotations

import argparse
import sys
import traceback

from PySide6.QtGui import QGuiApplication, QIcon
from PySide6.QtWidgets import QApplication, QMessageBox


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="segstudio", description="SegStudio annotation tool")
    parser.add_argument("paths", nargs="*", help="images, folders of images or a project folder")
    return parser.parse_args(argv)


def install_excepthook(window_getter) -> None:
    """Show unexpected errors in the window instead of letting the app die."""

    def hook(kind, value, tb) -> None:
        traceback.print_exception(kind, value, tb)
        window = window_getter()
        if window is not None and QApplication.instance() is not None:
            QMessageBox.critical(window, "SegStudio: unexpected error",
                                 f"{kind.__name__}: {value}\n\nYour annotations are saved; "
                                 "please report this error.")

    sys.excepthook = hook


def create_app(argv: list[str]) -> QApplication:
    app = QApplication.instance() or QApplication(argv)
    app.setApplicationName("SegStudio")
    app.setOrganizationName("SegStudio")
    QGuiApplication.setDesktopFileName("segstudio")
    try:
        from core.resources import icon_path

        app.setWindowIcon(QIcon(str(icon_path("png"))))
    except Exception:
        pass
    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    app = create_app(sys.argv[:1])
    from app.main_window import MainWindow

    window = MainWindow()
    install_excepthook(lambda: window)
    window.show()
    if args.paths:
        window.open_paths(args.paths)
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())

"""Writing files so that a reader never sees half of one, and an export is all or nothing.

:func:`atomic_write_bytes` replaces one file. :class:`StagedDir` collects the files of a whole
export in a hidden folder inside the destination and moves them into place only when every one of
them was written; a full disk, a cancel or a bug on the way removes the staging folder and leaves
the destination as it was. Staging inside the destination keeps every move on one file system, so
``os.replace`` is a rename, never a copy.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Self

from core.errors import ExportError

STAGING_PREFIX = ".segstudio-export-"
_COPY_CHUNK = 1 << 20
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` by ``data``: a temporary file in the same folder, fsync'ed, then renamed.

    Args:
        path: The file to write.
        data: Its new content.
        mode: Permission bits to give the file (None: the temporary file's 0o600).

    Raises:
        OSError: the folder is not writable or the disk is full; ``path`` is then unchanged.
    """
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        _write_synced(Path(temp_name), [data])
        if mode is not None:
            os.chmod(temp_name, mode)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def _write_synced(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` and fsync it (the one place every staged byte goes through)."""
    with open(path, "wb") as handle:
        handle.writelines(chunks)
        handle.flush()
        os.fsync(handle.fileno())


def _read_chunks(source: Path) -> Iterator[bytes]:
    with open(source, "rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            yield chunk


def describe_os_error(err: OSError, what: str) -> str:
    """One sentence for ``err`` raised while writing ``what``."""
    if err.errno in _DISK_FULL:
        return f"disk full while writing {what}"
    return f"cannot write {what}: {err.strerror or err}"


class StagedDir:
    """Stage the files of one export and move them into ``dest`` all together.

    Usage::

        with StagedDir(out_dir) as stage:
            stage.write_bytes("masks/a.png", data)
            stage.write_bytes("classes.json", manifest, last=True)

    On a clean exit every staged file replaces its namesake in ``dest`` (files written with
    ``last=True``, such as manifests and list files, go last, so a reader that finds them finds
    everything they name); other files already in ``dest`` are kept. On any exception the staging
    folder is removed, ``dest`` is left as it was (and removed again if this created it and it is
    empty), and an ``OSError`` becomes an :class:`~core.errors.ExportError`.
    """

    def __init__(self, dest: str | os.PathLike) -> None:
        self.dest = Path(dest).absolute()
        self.staging: Path | None = None
        self._files: dict[str, bool] = {}  # relative path -> last
        self._created_dest = False
        self._current = ""

    # -- writers ---------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes, *, last: bool = False) -> None:
        """Stage ``data`` as ``dest/rel`` (``rel`` uses forward slashes)."""
        target = self._claim(rel, last)
        _write_synced(target, [data])

    def copy_file(self, rel: str, source: str | os.PathLike, *, last: bool = False) -> None:
        """Stage a copy of the file ``source`` as ``dest/rel``."""
        target = self._claim(rel, last)
        _write_synced(target, _read_chunks(Path(source)))

    def _claim(self, rel: str, last: bool) -> Path:
        if self.staging is None:
            raise RuntimeError("StagedDir used outside its with-block")
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            raise ValueError(f"staged path must be relative and inside the folder: {rel!r}")
        rel = "/".join(parts)
        if rel in self._files:
            raise ExportError(
                f"Two exported files would both be written as {rel}; rename one of the items."
            )
        self._files[rel] = last
        self._current = rel
        target = self.staging.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @property
    def staged_files(self) -> list[str]:
        """Relative paths staged so far, in the order they were written."""
        return list(self._files)

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        if self.dest.exists() and not self.dest.is_dir():
            raise ExportError(f"{self.dest} exists and is not a folder; choose another output.")
        self._current = str(self.dest)
        try:
            if not self.dest.exists():
                self.dest.mkdir(parents=True)
                self._created_dest = True
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.dest))
        except OSError as err:
            self._remove_created_dest()
            raise ExportError(describe_os_error(err, str(self.dest)) + ".") from err
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            try:
                self._commit()
            except OSError as err:
                self._discard(failed=True)
                raise self._export_error(err) from err
            except BaseException:
                self._discard(failed=True)
                raise
            self._discard(failed=False)
            return
        self._discard(failed=True)
        if isinstance(exc, OSError):
            raise self._export_error(exc) from exc

    def _export_error(self, err: OSError) -> ExportError:
        return ExportError(
            f"{describe_os_error(err, self._current)} in {self.dest}; nothing was exported."
        )

    def _commit(self) -> None:
        """Move every staged file into ``dest``; on failure put ``dest`` back as it was."""
        assert self.staging is not None
        order = [r for r, last in self._files.items() if not last]
        order += [r for r, last in self._files.items() if last]
        backup = self.staging / ".segstudio-replaced"
        done: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
        created_dirs: list[Path] = []
        try:
            for rel in order:
                self._current = rel
                target = self.dest.joinpath(*rel.split("/"))
                created_dirs += _make_parents(target.parent, self.dest)
                saved = None
                if target.exists() or target.is_symlink():
                    if target.is_dir():
                        raise ExportError(f"{target} is a folder; cannot write a file there.")
                    saved = backup.joinpath(*rel.split("/"))
                    saved.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(target, saved)
                done.append((target, saved))
                os.replace(self.staging.joinpath(*rel.split("/")), target)
            _sync_dir(self.dest)
        except BaseException:
            _roll_back(done, created_dirs)
            raise

    def _discard(self, failed: bool) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        if failed:
            self._remove_created_dest()

    def _remove_created_dest(self) -> None:
        """Remove ``dest`` again when this created it and it is still empty."""
        if self._created_dest:
            with contextlib.suppress(OSError):
                self.dest.rmdir()


def _make_parents(folder: Path, root: Path) -> list[Path]:
    """Create ``folder`` (inside ``root``); return the folders created, deepest last."""
    missing = []
    while folder != root and not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _roll_back(done: list[tuple[Path, Path | None]], created_dirs: list[Path]) -> None:
    """Undo a partial commit: remove moved-in files, restore the ones they replaced."""
    for target, saved in reversed(done):
        with contextlib.suppress(OSError):
            if saved is not None:
                os.replace(saved, target)
            elif target.exists():
                target.unlink()
    for folder in reversed(created_dirs):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _sync_dir(folder: Path) -> None:
    """fsync a folder so the renames into it survive a power cut (POSIX only, best effort)."""
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


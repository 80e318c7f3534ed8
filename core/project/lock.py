"""An exclusive lock on a project folder, released by the OS when the process dies.

Uses ``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on a lock file: unlike a PID file, a lock
held by a process killed with SIGKILL disappears with it, so a crash never blocks reopening.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from core.errors import ProjectLockedError

LOCK_NAME = "project.lock"


class ProjectLock:
    """Holds the lock file of ``folder`` open and locked until :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise ProjectLockedError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise ProjectLockedError(
                f"The project {self.path.parent} is already open in another SegStudio "
                f"({holder}); close it there first."
            )
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0) if hasattr(os, "pwrite") else os.write(fd, info)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"process {data.get('pid', '?')} on {data.get('host', '?')}"
    except (OSError, ValueError):
        return "another process"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

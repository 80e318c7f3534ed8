"""Error types for everything a user can get wrong or the machine can refuse.

Every error a user can cause derives from :class:`SegStudioError`; its message is one plain
sentence meant to be shown as-is (CLI: one line on stderr; GUI: a message box). Anything else
that escapes is a bug.
"""

from __future__ import annotations


class SegStudioError(Exception):
    """Base class of user-facing errors; ``str(err)`` is the message to show."""


class UnsupportedFormatError(SegStudioError):
    """The file is not in a format SegStudio reads."""


class CorruptFileError(SegStudioError):
    """The file claims a supported format but cannot be decoded (empty, truncated, garbage)."""


class ImageTooLargeError(SegStudioError):
    """The image header announces more pixels than SegStudio agrees to allocate."""


class ProjectError(SegStudioError):
    """A project folder cannot be created, opened or written."""


class ProjectLockedError(ProjectError):
    """Another process already has the project open."""


class SchemaTooNewError(ProjectError):
    """The project was written by a newer SegStudio whose schema this version does not know."""


class StorageFullError(ProjectError):
    """The disk (or the database) is full; the write did not happen and nothing was damaged."""


class ExportError(SegStudioError):
    """An export could not be completed; nothing half-written was left behind."""


class ImportFormatError(SegStudioError):
    """A dataset folder to import is malformed or does not match the project."""

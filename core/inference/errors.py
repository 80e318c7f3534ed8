"""Errors of model inference; every one is a :class:`~core.errors.SegStudioError` to show as-is."""

from __future__ import annotations

from core.errors import SegStudioError


class InferenceError(SegStudioError):
    """A model run could not be done (bad input, unusable model output, no device)."""


class InferenceCancelled(InferenceError):  # noqa: N818 - the name the brief and callers use
    """The user cancelled the run; nothing was produced."""


class DeviceUnavailableError(InferenceError):
    """The device asked for (``"cuda"``, ``"mps"``) does not exist on this machine."""


class InferenceOutOfMemoryError(InferenceError):
    """Even the smallest tiles on the CPU did not fit in memory."""


class ChannelMismatchError(InferenceError):
    """The image's channels cannot be adapted to the channels the model expects."""

"""Errors of loading model weights (all user-facing :class:`~core.errors.SegStudioError`)."""

from __future__ import annotations

from core.errors import SegStudioError


class WeightsNotFoundError(SegStudioError):
    """A weights file that was named does not exist."""


class OfflineWeightsError(WeightsNotFoundError):
    """Published weights are not on this machine and the network may not be used."""


class WeightsMismatchError(SegStudioError):
    """The weights are for another architecture, class count or number of input channels."""


class UnsafeCheckpointError(SegStudioError):
    """The file holds Python objects that could run code when loaded; it was not loaded."""


class ChecksumError(SegStudioError):
    """A file's sha256 differs from the one published for those weights."""

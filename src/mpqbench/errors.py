"""Exceptions that the CLI reports as one clear line (no traceback)."""

from __future__ import annotations


class MpqbenchError(Exception):
    """Base class of mpqbench's own runtime failures (not programming errors)."""


class TrainingDiverged(MpqbenchError):
    """The loss became NaN or infinite; training stopped before writing anything."""


class CheckpointCorrupt(MpqbenchError):
    """A checkpoint failed its checksum or could not be read."""


__all__ = ["CheckpointCorrupt", "MpqbenchError", "TrainingDiverged"]

"""Typed exceptions. The CLI turns every ``PhenogenError`` into one readable line and exit code 2.

Messages name the file, the record, the field or the position, and say what to do.
"""

from __future__ import annotations

__all__ = [
    "PhenogenError",
    "ConfigError",
    "InputError",
    "SequenceError",
    "DataError",
    "CheckpointError",
    "ExternalToolError",
    "NetworkError",
]


class PhenogenError(Exception):
    """Base class of every error phenogen raises on purpose (a user mistake or bad input)."""


class ConfigError(PhenogenError):
    """A configuration file, key or value is invalid."""


class InputError(PhenogenError):
    """A file or argument given by the user cannot be used (missing, empty, wrong format)."""


class SequenceError(InputError):
    """A DNA sequence or FASTA record is invalid (names the file, record and position)."""


class DataError(PhenogenError):
    """A dataset directory is malformed or inconsistent."""


class CheckpointError(PhenogenError):
    """A model or checkpoint directory is missing files or does not match the code."""


class ExternalToolError(PhenogenError):
    """An external program (mafft, FastTree, IQ-TREE) is missing or failed."""


class NetworkError(PhenogenError):
    """A remote server could not be reached after retries."""

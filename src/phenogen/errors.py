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
    "one_line",
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


def one_line(text: object, limit: int | None = 200) -> str:
    """``text`` (or an exception's message) with whitespace runs, newlines too, collapsed to one space and
    cut to ``limit`` characters (None: not cut): every message phenogen prints stays one line.

    An exception with an empty message gives its type's name.

    >>> one_line("a\\n  b"), one_line(ValueError()), one_line("x" * 9, limit=5)
    ('a b', 'ValueError', 'xxxx…')
    """
    flat = " ".join(str(text).split())
    if not flat and isinstance(text, BaseException):
        flat = type(text).__name__
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"

"""Safe file-system primitives shared by every command: atomic saves, output directories, bounded reads.

- **Atomic saves**: :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`
  write a temporary file beside the target, ``fsync`` it, ``os.replace`` it over the target and
  ``fsync`` the directory: a kill leaves the old file or the new one, never half of one.
  :func:`replace_dir` does the same for a directory written aside (``NAME.tmp``): the previous
  complete copy is kept as ``NAME.old`` until the new one is in place, and :func:`complete_dir`
  finds whichever of the two is whole after a kill at any point.
- **Output directories**: a directory phenogen writes carries a marker file (:data:`MARKER`).
  :func:`check_output_dir` says, *without touching anything*, whether ``--out`` may be used;
  :func:`prepare_output_dir` (called only after the inputs checked out) removes an earlier phenogen
  output under ``--force`` — never a directory without the marker — and writes the marker.
- **Bounded reads**: :func:`read_json` and :func:`read_text` turn every way a file can be broken
  (missing, a directory, too large, not UTF-8, not JSON, the wrong shape, nested too deep) into one
  :class:`~phenogen.errors.PhenogenError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from phenogen.errors import InputError, PhenogenError

__all__ = [
    "MARKER",
    "MAX_JSON_BYTES",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "fsync_dir",
    "replace_dir",
    "complete_dir",
    "check_output_dir",
    "prepare_output_dir",
    "is_phenogen_dir",
    "check_output_file",
    "read_text",
    "read_json",
]

MARKER = ".phenogen"
"""Name of the marker file in every directory a phenogen command created (JSON: command, version)."""

MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest JSON file phenogen reads (metrics, configs, model configs are kilobytes)."""

MAX_JSON_DEPTH = 64


# ----------------------------------------------------------------------------------- atomic saves
def fsync_dir(path: str | Path) -> None:
    """``fsync`` a directory so that a rename inside it survives a power cut (no-op where unsupported)."""
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """:func:`atomic_write_text` of ``obj`` as JSON (non-finite floats refused: they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        fsync_dir(dirpath)


def replace_dir(tmp: str | Path, final: str | Path) -> Path:
    """Move the complete directory ``tmp`` to ``final``, keeping the old ``final`` until it is in place.

    Steps: fsync ``tmp``'s files; rename ``final`` → ``final.old``; rename ``tmp`` → ``final``;
    remove ``final.old``. A kill between any two steps leaves at least one complete copy, which
    :func:`complete_dir` finds.
    """
    tmp, final = Path(tmp), Path(final)
    old = final.with_name(final.name + ".old")
    _fsync_tree(tmp)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def complete_dir(final: str | Path) -> Path | None:
    """The complete copy of a directory saved by :func:`replace_dir`: ``final``, else ``final.old``, else None.

    ``final.old`` exists alone only after a kill between the two renames; it is then the newest
    complete copy. ``final.tmp`` (a save in progress) is never returned.
    """
    final = Path(final)
    if final.is_dir():
        return final
    old = final.with_name(final.name + ".old")
    return old if old.is_dir() else None


# ------------------------------------------------------------------------------ output directories
def is_phenogen_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory carrying phenogen's marker file."""
    return (Path(path) / MARKER).is_file()


def check_output_dir(
    out: str | Path, *, force: bool = False, resume: bool = False, flag: str = "--out"
) -> None:
    """Raise :class:`InputError` unless ``out`` can be used as an output directory. Touches nothing.

    Allowed: a missing or empty directory; with ``resume``, an existing phenogen output; with
    ``force``, an existing phenogen output (it will be replaced by :func:`prepare_output_dir`).
    Refused: a file; a non-empty directory without ``--force``/``--resume``; ``--force`` on a
    non-empty directory without the marker (phenogen never deletes what it did not write).
    """
    out = Path(out)
    if resume and force:
        raise InputError("--resume and --force contradict each other; pick one")
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} {out}: is a file, not a directory; give a directory")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {out}: {parent} is a file, not a directory")
            break
    if not out.is_dir():
        if resume:
            raise InputError(f"{flag} {out}: does not exist; nothing to resume")
        return
    try:
        empty = not any(out.iterdir())
    except OSError as exc:
        raise InputError(f"{flag} {out}: cannot be read ({exc.strerror or exc})") from None
    if empty:
        if resume:
            raise InputError(f"{flag} {out}: is empty; nothing to resume")
        return
    if resume:
        return
    if not is_phenogen_dir(out):
        raise InputError(
            f"{flag} {out}: directory is not empty and was not written by phenogen (no {MARKER} file); "
            "choose a new or empty directory — phenogen never deletes files it did not write"
        )
    if not force:
        hint = (
            "pass --resume to continue it or --force to replace it"
            if _resumable(out)
            else "pass --force to replace it"
        )
        raise InputError(f"{flag} {out}: holds an earlier phenogen output; {hint}")


def _resumable(out: Path) -> bool:
    return any((out / name).exists() for name in ("state", "state.old", "checkpoints"))


def prepare_output_dir(
    out: str | Path, command: str, *, force: bool = False, resume: bool = False, flag: str = "--out"
) -> Path:
    """Make ``out`` ready for ``command``: check it (:func:`check_output_dir`), clear it under ``force``, mark it.

    Call this only after every input has been checked, so that a bad input never costs a deletion.
    """
    from phenogen import __version__

    out = Path(out)
    check_output_dir(out, force=force, resume=resume, flag=flag)
    if force and out.is_dir() and is_phenogen_dir(out):
        for child in out.iterdir():
            if child.name == MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not is_phenogen_dir(out):
        atomic_write_json(out / MARKER, {"written_by": f"phenogen {command}", "version": __version__})
    return out


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Raise :class:`InputError` when ``path`` cannot be written as a file (a directory, or no parent dir)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a directory; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"{flag} {path}: {path.parent} is a file, not a directory")
    return path


# ---------------------------------------------------------------------------------- bounded reads
def read_text(
    path: str | Path,
    what: str = "file",
    max_bytes: int = MAX_JSON_BYTES,
    error: type[PhenogenError] = InputError,
) -> str:
    """Read a UTF-8 text file; every failure is one ``error`` naming the file (and the byte offset)."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if path.is_dir():
        raise error(f"{path}: {what} is a directory, not a file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {what} is {size:,} bytes, more than the {max_bytes:,} allowed")
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: {what} is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
        ) from None


def _depth(obj: Any, limit: int) -> int:
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def read_json(
    path: str | Path,
    what: str = "JSON file",
    expect: type | tuple[type, ...] = dict,
    error: type[PhenogenError] = InputError,
    max_bytes: int = MAX_JSON_BYTES,
) -> Any:
    """Read and parse a JSON file whose top level must be ``expect`` (a dict by default).

    Non-UTF-8, invalid JSON, ``NaN``/``Infinity`` literals, nesting deeper than 64 levels and a
    top level of the wrong type are each one ``error`` naming the file.
    """
    text = read_text(path, what, max_bytes=max_bytes, error=error)

    def _no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"{path}: {what} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise error(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(obj, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        shown = {"dict": "an object {...}", "list": "an array [...]"}.get(names, names)
        raise error(f"{path}: {what} must hold {shown} at the top level, not {type(obj).__name__}")
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise error(f"{path}: {what} is nested deeper than {MAX_JSON_DEPTH} levels")
    return obj

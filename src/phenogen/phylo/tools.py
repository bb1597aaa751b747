"""Finding and running the external phylogenetics programs (MAFFT, FastTree, IQ-TREE).

Each program is looked up by its possible binary names (Debian ships ``fasttree`` and ``FastTree``,
``iqtree2`` and, in older releases, ``iqtree``). A missing program raises
:class:`~phenogen.errors.ExternalToolError` naming the Debian package to install; a program that
fails raises the same error with the command line and the end of its stderr.

>>> TOOLS["fasttree"].package
'fasttree'
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from phenogen.errors import ExternalToolError

__all__ = ["Tool", "TOOLS", "find_tool", "have_tool", "run_tool"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tool:
    """An external program: the binary names to try and the Debian package that provides it."""

    key: str
    binaries: tuple[str, ...]
    package: str


TOOLS: dict[str, Tool] = {
    "mafft": Tool("mafft", ("mafft",), "mafft"),
    "fasttree": Tool("fasttree", ("fasttree", "FastTree", "FastTreeMP"), "fasttree"),
    "iqtree": Tool("iqtree", ("iqtree2", "iqtree"), "iqtree"),
}


def find_tool(key: str) -> str:
    """Absolute path of the program ``key`` (``mafft``, ``fasttree``, ``iqtree``), or an error saying what to install."""
    tool = TOOLS[key]
    for name in tool.binaries:
        path = shutil.which(name)
        if path:
            return path
    raise ExternalToolError(
        f"{key} is not installed (looked for {', '.join(tool.binaries)} on PATH); "
        f"install the Debian package: apt-get install {tool.package}  (or run `make setup`)"
    )


def have_tool(key: str) -> bool:
    """True when :func:`find_tool` would succeed."""
    return any(shutil.which(name) for name in TOOLS[key].binaries)


def run_tool(
    key: str, args: list[str], *, cwd: str | Path | None = None, stdout_path: str | Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run program ``key`` with ``args``; write its stdout to ``stdout_path`` when given.

    Raises :class:`ExternalToolError` with the command and the last lines of stderr when it fails.
    """
    exe = find_tool(key)
    cmd = [exe, *map(str, args)]
    log.info("running %s", " ".join(cmd))
    try:
        if stdout_path is not None:
            with open(stdout_path, "w", encoding="utf-8") as out:
                proc = subprocess.run(
                    cmd, cwd=cwd, stdout=out, stderr=subprocess.PIPE, text=True, check=False
                )
        else:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ExternalToolError(f"could not start {' '.join(cmd)}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-8:])
        raise ExternalToolError(f"{key} failed (exit code {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc

"""The ``phenogen`` command: one entry point, thin subcommands, readable errors.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int | None``;
modules are imported only when their command runs (or for ``phenogen CMD --help``), so
``phenogen --help`` stays instant and heavy libraries (torch, diffusers) load only when needed.
Every ``PhenogenError`` becomes one line on stderr and exit code 2 — never a traceback for a user
mistake; so do argparse's usage errors (one line, no usage dump) and, as a last net, an ``OSError`` on a
path the user gave (``exc.filename`` is named) or a file that is not UTF-8 text. Any other exception is
a bug and stays a traceback. ``PHENOGEN_DEBUG=1`` shows the traceback anyway.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

from phenogen.errors import PhenogenError

# On a busy machine, OpenMP threads that spin while waiting slow small CPU models down 5-12x;
# passive waiting costs nothing measurable when the machine is idle. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["main", "COMMANDS", "check_inputs_outside"]


class UsageError(Exception):
    """An argparse usage error (bad flag, missing or malformed value), reported in one line."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of printing the usage and exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _os_error_line(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    what = exc.strerror or type(exc).__name__
    hint = {
        IsADirectoryError: "give a file, not a directory",
        NotADirectoryError: "a directory was expected: this path or one of its parents is a file",
        FileNotFoundError: "check the path",
        PermissionError: "check the file permissions or choose another path",
        FileExistsError: "choose another path",
    }.get(type(exc), "check the path")
    return f"{where}: {what}; {hint}"


def _file_being_read(exc: BaseException) -> str | None:
    """The innermost ``path``-like local naming an existing file in the frames ``exc`` passed through."""
    tb, found = exc.__traceback__, None
    while tb is not None:
        for name in ("path", "filename", "file", "fname", "p"):
            value = tb.tb_frame.f_locals.get(name)
            if isinstance(value, str | os.PathLike) and os.path.isfile(value):
                found = os.fspath(value)
                break
        tb = tb.tb_next
    return found


def _unicode_error_line(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1] if isinstance(exc.object, bytes | bytearray) else b""
    where = _file_being_read(exc) or "an input file"
    return f"{where}: not UTF-8 text (byte {exc.start}: {bytes(bad)!r}); give a UTF-8 text file"


def check_inputs_outside(out: str | os.PathLike, force: bool, **inputs: str | os.PathLike | None) -> None:
    """With ``--force``, refuse an ``--out`` that is or holds one of the inputs (``flag_name=path``): replacing
    the earlier output would delete what the command is about to read."""
    if not force:
        return
    from pathlib import Path

    from phenogen.errors import InputError

    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        given = Path(path).resolve()
        if given == target or target in given.parents:
            flag = "--" + name.replace("_", "-")
            raise InputError(
                f"--out {out}: holds the input {flag} {path}; --force would delete it — write to another directory"
            )


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    help: str


# Order is the order of a typical workflow; `phenogen --help` prints them like this.
COMMANDS: tuple[Command, ...] = (
    Command("simulate", "phenogen.sim.command", "simulate the synthetic clade with ground truth"),
    Command("validate", "phenogen.dna.command", "read and validate a FASTA file or a dataset directory"),
    Command("train-lm", "phenogen.lm.command_train", "train the GPT-2 DNA language model"),
    Command("sample-dna", "phenogen.lm.command_sample", "sample new barcodes from a DNA language model"),
    Command(
        "evaluate-dna", "phenogen.lm.command_evaluate", "score a DNA model: bits/base, novelty, identity"
    ),
    Command(
        "pretrain-image",
        "phenogen.diffusion.command_prior",
        "pretrain the bird prior (VAE + UNet) on random renders",
    ),
    Command("train-image", "phenogen.diffusion.command_train", "train the DNA-conditioned diffusion model"),
    Command(
        "train-generator",
        "phenogen.generators.command",
        "train a non-diffusion generator from DNA: conditional VAE, GAN or plugin network",
    ),
    Command("generate", "phenogen.diffusion.command_generate", "paint images for the sequences of a FASTA"),
    Command(
        "ancestors",
        "phenogen.phylo.command",
        "reconstruct ancestors: alignment, tree, ancestral sequences, portraits",
    ),
    Command(
        "counterfactual",
        "phenogen.command_counterfactual",
        "what if the DNA were different: mutated, interpolated or trait-swapped portraits at equal noise",
    ),
    Command(
        "stylize",
        "phenogen.command_stylize",
        "re-paint portraits in a painting-like style (paleoart): style transfer on the trait probe's features",
    ),
    Command(
        "evaluate", "phenogen.evaluate.command", "score generated images against ground truth and baselines"
    ),
    Command("report", "phenogen.report.command", "write the HTML report of a run directory"),
    Command(
        "fetch",
        "phenogen.data.command_fetch",
        "fetch COI barcodes (NCBI, BOLD) or licensed photos (iNaturalist, GBIF)",
    ),
    Command(
        "import", "phenogen.data.command_import", "import a FASTA+CSV folder, BIOSCAN-5M or a BOLD TSV export"
    ),
    Command(
        "dataset",
        "phenogen.data.command_build",
        "dataset build: join fetched barcodes and photos into a dataset",
    ),
    Command("demo", "phenogen.demo", "run the whole pipeline on the synthetic clade"),
    Command("app", "phenogen.app", "the web app: paint barcodes, walk the tree, counterfactuals (Gradio)"),
)


def _available(command: Command) -> bool:
    try:
        return importlib.util.find_spec(command.module) is not None
    except ModuleNotFoundError:
        return False


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file with configuration sections")
    parser.add_argument(
        "--set",
        metavar="SECTION.KEY=VALUE",
        action="append",
        default=[],
        help="override one configuration value (repeatable), e.g. --set sim.n_living=30",
    )


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    from phenogen import __version__

    parser = _Parser(
        prog="phenogen",
        description="phenogen: from DNA barcodes to pictures of organisms, ancestors and extinct relatives.",
    )
    parser.add_argument("--version", action="version", version=f"phenogen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = {}
    for command in COMMANDS:
        if not _available(command):
            continue
        sub.add_parser(command.name, help=command.help, add_help=False)
        table[command.name] = command
    return parser, table


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, table = build_parser()
    if not argv or argv[0] not in table:
        try:
            parser.parse_args(argv or ["--help"])  # prints help / version and exits
        except UsageError as exc:  # "invalid choice", an unknown option
            print(f"phenogen: error: {exc}", file=sys.stderr)
        return 2
    command = table[argv[0]]
    debug = bool(os.environ.get("PHENOGEN_DEBUG"))
    try:
        module = importlib.import_module(command.module)
        sub = _Parser(prog=f"phenogen {command.name}", description=command.help)
        module.add_arguments(sub)
        add_common_arguments(sub)
        args = sub.parse_args(argv[1:])
        code = module.run(args)
        return int(code or 0)
    except PhenogenError as exc:
        if debug:
            raise
        line = str(exc)
    except UsageError as exc:
        line = f"{exc} (see phenogen {command.name} --help)"
    except OSError as exc:
        # a last net for a path the user gave (a directory where a file belongs, no permission …); an
        # OSError without a file name is not a user's path and stays a traceback
        if debug or exc.filename is None:
            raise
        line = _os_error_line(exc)
    except UnicodeDecodeError as exc:  # a reader that does not check its encoding yet
        if debug:
            raise
        line = _unicode_error_line(exc)
    except KeyboardInterrupt:
        print(f"phenogen {command.name}: interrupted", file=sys.stderr)
        return 130
    line = " ".join(line.split())  # one line, whatever the message held
    if os.environ.get("RANK", "0") == "0":  # under torchrun/accelerate every rank fails alike: say it once
        print(f"phenogen {command.name}: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

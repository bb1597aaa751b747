"""The ``phenogen`` command: one entry point, thin subcommands, readable errors.

Each subcommand lives in a module exposing ``add_arguments(parser)`` and ``run(args) -> int | None``;
modules are imported only when their command runs (or for ``phenogen CMD --help``), so
``phenogen --help`` stays instant and heavy libraries (torch, diffusers) load only when needed.
Every ``PhenogenError`` becomes one line on stderr and exit code 2 — never a traceback for a user
mistake. ``PHENOGEN_DEBUG=1`` shows the traceback anyway.
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

__all__ = ["main", "COMMANDS"]


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
    Command("generate", "phenogen.diffusion.command_generate", "paint images for the sequences of a FASTA"),
    Command(
        "ancestors",
        "phenogen.phylo.command",
        "reconstruct ancestors: alignment, tree, ancestral sequences, portraits",
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

    parser = argparse.ArgumentParser(
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
        parser.parse_args(argv or ["--help"])  # prints help / version / "invalid choice" and exits
        return 2
    command = table[argv[0]]
    try:
        module = importlib.import_module(command.module)
        sub = argparse.ArgumentParser(prog=f"phenogen {command.name}", description=command.help)
        module.add_arguments(sub)
        add_common_arguments(sub)
        args = sub.parse_args(argv[1:])
        code = module.run(args)
        return int(code or 0)
    except PhenogenError as exc:
        if os.environ.get("PHENOGEN_DEBUG"):
            raise
        print(f"phenogen {command.name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"phenogen {command.name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``phenogen report --run DIR``: one self-contained HTML page for a run (images embedded).

    phenogen report --run runs/demo                 # writes runs/demo/report.html
    phenogen report --run runs/demo --out /tmp/r.html --max-targets 24

The run-directory layout it reads is documented in :mod:`phenogen.report.html`; any part may be
missing (it is shown as "not run"). A broken ``metrics.json``, a ``--out`` that is a directory or an
existing file other than an ``.html`` report, or a malformed dataset is one error (exit 2); an image
that is corrupt or lies outside the run and dataset directories is skipped with a visible note.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from phenogen.config import require_finite

__all__ = ["ReportConfig", "add_arguments", "run"]


@dataclass
class ReportConfig:
    """Section ``[report]``."""

    max_targets: int = field(default=12, metadata={"help": "targets shown side by side per split"})

    def __post_init__(self) -> None:
        require_finite(self)
        if self.max_targets < 1:
            raise ValueError(f"max_targets must be >= 1, got {self.max_targets}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        required=True,
        metavar="DIR",
        help="run directory: `phenogen demo --out`, a folder holding the --out folders of train-lm / train-image "
        "/ generate / evaluate, or an evaluate --out",
    )
    parser.add_argument("--out", metavar="FILE", help="HTML file to write (default RUN/report.html)")
    parser.add_argument("--max-targets", type=int, help="shortcut for --set report.max_targets=N")


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved
    from phenogen.report.html import build_report

    overrides = list(args.set)
    if args.max_targets is not None:
        overrides.append(f"report.max_targets={args.max_targets}")
    cfg = load_sections({"report": ReportConfig}, args.config, overrides)["report"]
    run_dir = Path(args.run)
    if run_dir.exists() and not run_dir.is_dir():
        from phenogen.errors import InputError

        raise InputError(
            f"--run {run_dir}: is a file; give a run directory (the output of `phenogen demo --out DIR`)"
        )
    if args.out and Path(args.out).is_file() and Path(args.out).suffix.lower() not in (".html", ".htm"):
        from phenogen.errors import InputError

        raise InputError(
            f"--out {args.out}: an existing file that is not an HTML report (a run's metrics.json, a "
            "dataset's manifest …); writing the report there would overwrite it — give a new .html file"
        )
    path = build_report(Path(args.run), args.out, max_targets=cfg.max_targets)
    save_resolved({"report": cfg}, path.parent, name=f"{path.stem}.config.json", run=str(args.run))
    size = path.stat().st_size / 1e6
    print(f"report: {path} ({size:.1f} MB, self-contained)")
    return 0

"""Shared by the bench scripts that re-paint a demo run's targets: score a generated directory with the run's
own probe (``phenogen evaluate --probe RUN/eval/probe``) and return its ``metrics.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def score_with_run_probe(
    run: Path, generated: Path, out: Path, splits: list[str], probe: Path | None = None
) -> dict:
    subprocess.run(
        [sys.executable, "-m", "phenogen.cli", "evaluate", "--data", str(run / "data"), "--generated",
         str(generated), "--out", str(out), "--probe", str(probe or run / "eval" / "probe"), "--set",
         f"evaluate.splits={json.dumps(splits)}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))

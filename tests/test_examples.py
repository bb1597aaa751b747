"""The README's worked real-data example (``examples/real_data.sh``) end to end, at tiny settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # train-lm, train-image, generate, evaluate and report in a row: ~1.5 min on 2 cores
def test_the_worked_example_runs_end_to_end_and_scores_without_traits(tmp_path):
    env = {
        **os.environ,
        "PHENOGEN": f"{sys.executable} -m phenogen.cli",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(["bash", str(ROOT / "examples" / "real_data.sh"), str(tmp_path / "run"), "--set",
                           'image.preset="tiny"', "--set", "image.max_steps=3", "--set", "image.vae_steps=3"],
                          capture_output=True, text=True, env=env, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    rows = metrics["splits"]["heldout"]["photo"]["methods"]
    assert metrics["splits"]["heldout"]["methods"] == {}  # no traits: photo scores only
    assert rows["truth"]["top5"] > rows["random"]["top5"] and rows["generated"]["n_images"] == 48
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Photo scores" in page and "evaluation: not run" not in page

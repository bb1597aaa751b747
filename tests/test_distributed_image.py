"""``phenogen train-image`` under ``torchrun --nproc_per_node 2`` on the CPU (gloo).

Each process draws the whole global batch's inputs and noise and trains on its own contiguous half of
the rows; gradient all-reduce averages the halves. So two processes train the model one process trains,
up to floating-point rounding (measured on the tiny run: max |difference| of the exported UNet and
conditioner weights 2.3e-05 and 7.9e-06 after 8 AdamW steps, per-step losses within 1.2e-07; tested
with atol 2e-4). Only the main process writes ``--out``; a killed 2-process run resumes with 2
processes bit for bit.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_image_crash import ARGS, KILL_ENV, STEPS, _dataset, complete_steps, train, weights

TOLERANCE = 2e-4  # max |w2 - w1| allowed; measured 2.3e-05 (see the module docstring)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(data: Path, out: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node 2 -m phenogen.cli train-image ...``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), "-m", "phenogen.cli", "train-image", "--data", str(data),
            "--out", str(out), "--no-progress", *ARGS, *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("clade")).root


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    r = train(data, out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    r = torchrun(data, out)
    assert r.returncode == 0, r.stderr
    return out


def test_two_processes_train_the_model_one_process_trains(one_process, two_processes):
    a, b = weights(one_process), weights(two_processes)
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    diff = max((a[k] - b[k]).abs().max().item() for k in floats)
    moved = json.loads((one_process / "losses.json").read_text())["train"]
    shared = json.loads((two_processes / "losses.json").read_text())["train"]
    assert diff < TOLERANCE, diff
    assert len(shared) == STEPS and max(abs(x - y) for x, y in zip(moved, shared, strict=True)) < 1e-5
    assert all(torch.equal(a[k], b[k]) for k in a if k not in floats)
    # one writer: one copy of each file; each process's RNG state in the checkpoints
    assert complete_steps(two_processes) == [6, 8]
    names = sorted(p.name for p in (two_processes / "checkpoints" / "checkpoint-000008").iterdir())
    assert "random_states_0.pkl" in names and "random_states_1.pkl" in names
    assert json.loads((two_processes / "config.json").read_text())["image"]["max_steps"] == STEPS
    assert (two_processes / "pipeline" / "model_index.json").is_file()


@pytest.mark.slow  # three more 2-process launches: ~30 s on an idle 2-core machine, ~55 s busy
def test_a_killed_two_process_run_resumes_with_two_processes_bit_exact(data, two_processes, tmp_path, capsys):
    out = tmp_path / "run"
    r = torchrun(data, out, kill="checkpoint:mid_write@6")
    assert r.returncode != 0
    assert complete_steps(out) == [2, 4]
    from phenogen.cli import main  # another number of processes: one clear error, nothing lost

    assert (
        main(["train-image", "--data", str(data), "--out", str(out), "--no-progress", "--resume", *ARGS]) == 2
    )
    assert "written by a run of 2 process(es), this one has 1" in capsys.readouterr().err
    r = torchrun(data, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("skipped checkpoint-000006.tmp") == 1  # the main process's note
    a, b = weights(two_processes), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert complete_steps(out) == [6, 8]


def test_a_refused_out_is_the_same_error_on_every_process(data, two_processes):
    """Only the main process checks and prepares --out; the other learns its verdict (no hang, no race).

    Every process exits 2; the line is printed once (by rank 0), not once per process.
    """
    r = torchrun(data, two_processes)
    assert r.returncode != 0
    line = "holds an earlier phenogen output; pass --resume to continue it or --force to replace it"
    assert r.stderr.count(line) == 1
    assert "phenogen/" not in r.stderr.replace(
        str(two_processes), ""
    )  # torchrun's own report, no frame of ours

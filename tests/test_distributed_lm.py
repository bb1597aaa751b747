"""``phenogen train-lm`` under ``torchrun --nproc_per_node 2`` (CPU, gloo) against a one-process run.

``lm.batch_size`` is the micro-batch of all processes together (each takes ``micro_batch[rank::2]``),
so without dropout the two-process model equals the one-process model up to floating-point
rounding (measured: max |Δw| ≈ 1e-5 after 6 AdamW steps at lr 3e-3, per-step losses within 1e-7).
21 training records in micro-batches of 4 leave a last micro-batch of one sequence: process 1's
share is empty there and it joins the gradient all-reduce with a zero-weight forward. A two-process
run killed inside a state save resumes, under two processes, to bit-identical weights (dropout
on: every process's RNG state is saved).
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from phenogen.dna.seqio import write_fasta
from phenogen.fsio import complete_dir
from phenogen.lm.train import KILL_ENV

sys.path.insert(0, os.path.dirname(__file__))
from test_lm_crash import SETS, assert_same_run, toy_pairs, train_cli  # noqa: E402

NO_DROPOUT = {**SETS, "dropout": 0.0, "state_every_steps": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(fasta, out, *extra, sets=SETS, kill_at=None, timeout=300):
    """``python -m torch.distributed.run --nproc_per_node 2 -m phenogen.cli train-lm …`` (CPU, gloo)."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if kill_at:
        env[KILL_ENV] = kill_at
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
    ]
    cmd += ["--master_port", str(free_port()), "-m", "phenogen.cli", "train-lm", "--data", str(fasta)]
    cmd += ["--out", str(out), "--no-progress", *extra]
    cmd += [a for k, v in sets.items() for a in ("--set", f"lm.{k}={v}")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_shard_indices_split_a_micro_batch_into_near_equal_shares():
    from phenogen.accel import shard_indices

    mb = [7, 3, 9, 1, 4]
    shares = [shard_indices(mb, r, 2) for r in range(2)]
    assert shares == [[7, 9, 4], [3, 1]] and shard_indices(mb, 0, 1) == mb
    assert shard_indices([5], 1, 2) == []  # joins the all-reduce with a zero-weight forward
    with pytest.raises(ValueError):
        shard_indices(mb, 2, 2)


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "toy.fasta"
    write_fasta(path, toy_pairs()[:23])  # 2 held out, 21 to train on
    return path


@pytest.fixture(scope="module")
def two(fasta):
    """An uninterrupted two-process run without dropout."""
    out = fasta.parent / "two"
    proc = torchrun(fasta, out, sets=NO_DROPOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("train-lm: finished") == 1  # the main process reports, once
    return out


def test_two_processes_train_the_one_process_model(fasta, two):
    one = fasta.parent / "one"
    proc = train_cli(fasta, one, sets=NO_DROPOUT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((two / "state" / "trainer_state.json").read_text())["world_size"] == 2
    files = {d: sorted(str(p.relative_to(d)) for p in d.rglob("*")) for d in (one, two)}
    assert files[one] == files[two]
    wa, wb = (load_file(str(d / "model" / "model.safetensors")) for d in (one, two))
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    print(f"1 vs 2 processes: max |dw| = {worst:.2e}")  # shown with -s; measured 1.0e-05
    assert worst < 1e-4, worst
    la, lb = (json.loads((d / "losses.json").read_text()) for d in (one, two))
    assert [s["lr"] for s in la["steps"]] == [s["lr"] for s in lb["steps"]]  # one schedule step per step
    for a, b in zip(la["steps"], lb["steps"], strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-6)
    for a, b in zip(la["epochs"], lb["epochs"], strict=True):
        assert b["heldout_loss"] == pytest.approx(a["heldout_loss"], rel=1e-4)


def kill_resume_2(fasta, run, sets):
    """Two processes killed between the renames of save #5 (step 4), then resumed by two processes."""
    proc = torchrun(fasta, run, sets=sets, kill_at="state:after_old_rename@5")
    assert proc.returncode != 0
    assert "SIGKILL" in proc.stderr or f"exitcode  : -{int(signal.SIGKILL)}" in proc.stderr
    newest = complete_dir(run / "state")
    assert newest.name == "state.old"
    assert json.loads((newest / "trainer_state.json").read_text())["global_step"] == 3
    proc = torchrun(fasta, run, "--resume", sets=sets)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_two_process_run_killed_in_a_save_resumes_bit_exactly(fasta, two):
    run = fasta.parent / "killed"
    kill_resume_2(fasta, run, {**NO_DROPOUT, "state_every_steps": 1})
    assert_same_run(two, run)


@pytest.mark.slow
def test_two_process_resume_with_dropout_restores_every_process_rng(fasta):
    full, run = fasta.parent / "full_dropout", fasta.parent / "killed_dropout"
    proc = torchrun(fasta, full)
    assert proc.returncode == 0, proc.stderr[-3000:]
    kill_resume_2(fasta, run, SETS)
    assert_same_run(full, run)
    assert torch.equal(*(load_file(str(d / "state" / "rng.safetensors"))["rank1.cpu"] for d in (full, run)))


@pytest.mark.slow
def test_accelerate_launch_equals_torchrun(fasta, two):
    """``accelerate launch --multi_gpu --num_processes 2`` (on CPU: gloo) is the same run as torchrun.

    (``accelerate launch --cpu --num_processes 2`` starts one process unless mpirun is configured.)
    """
    out = fasta.parent / "accelerate"
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(free_port()), "-m", "phenogen.cli", "train-lm", "--data", str(fasta)]
    cmd += ["--out", str(out), "--no-progress"] + [
        a for k, v in NO_DROPOUT.items() for a in ("--set", f"lm.{k}={v}")
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "state" / "trainer_state.json").read_text())["world_size"] == 2
    assert_same_run(two, out)

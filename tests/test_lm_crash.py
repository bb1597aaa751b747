"""Crash safety of ``phenogen train-lm``: real processes SIGKILLed at chosen points resume bit-exactly.

The kill points come from the ``PHENOGEN_TEST_KILL_AT`` hook of :mod:`phenogen.lm.train` (the
process SIGKILLs itself there, so no ``finally`` or ``atexit`` runs): after an optimizer step, and
inside a state save — half-written ``state.tmp``, complete ``state.tmp``, and between the two
renames of :func:`phenogen.fsio.replace_dir` (only ``state.old`` left). After each kill the newest
complete state must be the last one whose save finished, and ``--resume`` must end with weights
and per-step losses identical to an uninterrupted run. Also: broken ``config.json`` / state files
are one clear error line, and ``--force`` replaces only a phenogen output, after the inputs checked out.
"""

import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from phenogen.dna.seqio import write_fasta
from phenogen.errors import CheckpointError, ConfigError, InputError
from phenogen.fsio import MARKER, complete_dir
from phenogen.lm.config import LMConfig
from phenogen.lm.data import SequenceSplits, load_sequences
from phenogen.lm.train import KILL_ENV, train_lm

torch.set_num_threads(1)

# 22 train records, batch 4, accumulation 2: 3 optimizer steps per epoch, 6 in all. With a state saved
# after every step the saves are: #1 step 1, #2 step 2, #3 step 3, #4 step 3 (epoch end), #5 step 4,
# #6 step 5, #7 step 6, #8 step 6 (epoch end). Dropout stays on: the RNG state must resume too.
SETS = {
    "k": 3,
    "n_positions": 48,
    "epochs": 2,
    "batch_size": 4,
    "grad_accum": 2,
    "lr": 3e-3,
    "seed": 0,
    "state_every_steps": 1,
    "mixed_precision": "no",
}


def toy_pairs(seed=0, n_species=8, per_species=3):
    """24 related barcodes of 50-60 bp (the same recipe as tests/test_lm.py)."""
    rng = random.Random(seed)
    root = "".join(rng.choice("ACGT") for _ in range(60))

    def mutate(s, rate):
        return "".join(c if rng.random() > rate else rng.choice("ACGT") for c in s)

    pairs = []
    for sp in range(n_species):
        base = mutate(root, 0.1)
        pairs += [(f"s{sp}_{i}", mutate(base, 0.02)[: rng.randint(50, 60)]) for i in range(per_species)]
    return pairs


def train_cli(fasta, out, *extra, kill_at=None, sets=SETS, timeout=300):
    """``python -m phenogen.cli train-lm`` in a fresh process (one thread; kill hook when asked)."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if kill_at:
        env[KILL_ENV] = kill_at
    cmd = [sys.executable, "-m", "phenogen.cli", "train-lm", "--data", str(fasta), "--out", str(out)]
    cmd += ["--no-progress", *extra] + [a for k, v in sets.items() for a in ("--set", f"lm.{k}={v}")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "weights differ"
    la, lb = (json.loads((d / "losses.json").read_text()) for d in (a, b))
    assert [s["loss"] for s in la["steps"]] == [s["loss"] for s in lb["steps"]]
    assert [e["heldout_loss"] for e in la["epochs"]] == [e["heldout_loss"] for e in lb["epochs"]]


@pytest.fixture(scope="module")
def fasta(tmp_path_factory):
    path = tmp_path_factory.mktemp("crash") / "toy.fasta"
    write_fasta(path, toy_pairs())
    return path


@pytest.fixture(scope="module")
def reference(fasta):
    """The uninterrupted run."""
    out = fasta.parent / "reference"
    proc = train_cli(fasta, out)
    assert proc.returncode == 0, proc.stderr
    return out


def kill_and_resume(fasta, reference, tmp_path, kill_at, resumed_from_step, state_name):
    out = tmp_path / "run"
    proc = train_cli(fasta, out, kill_at=kill_at)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])
    newest = complete_dir(out / "state")
    assert newest is not None and newest.name == state_name, sorted(p.name for p in out.iterdir())
    saved = json.loads((newest / "trainer_state.json").read_text())
    assert saved["global_step"] == resumed_from_step  # the last completed save survived
    proc = train_cli(fasta, out, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert_same_run(reference, out)
    assert not any(p.name.endswith((".tmp", ".old")) for p in out.rglob("*")), "leftovers of a save"
    return out


@pytest.mark.parametrize(
    "kill_at,resumed_from_step,state_name",
    [
        ("state:after_old_rename@3", 2, "state.old"),  # between the renames: only state.old is complete
        ("step@5", 4, "state"),  # mid-epoch 2, after the optimizer step, before its save
        pytest.param("state:mid_write@2", 1, "state", marks=pytest.mark.slow),
        pytest.param("state:before_replace@4", 3, "state", marks=pytest.mark.slow),
        pytest.param("checkpoint:before_replace@2", 6, "state", marks=pytest.mark.slow),
        pytest.param("model:before_replace", 6, "state", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_bit_exactly(fasta, reference, tmp_path, kill_at, resumed_from_step, state_name):
    kill_and_resume(fasta, reference, tmp_path, kill_at, resumed_from_step, state_name)


@pytest.mark.slow
def test_killed_twice_then_resumed(fasta, reference, tmp_path):
    """A resumed run killed again (inside its first save) still ends where the uninterrupted run does."""
    out = tmp_path / "run"
    assert train_cli(fasta, out, kill_at="step@2").returncode == -signal.SIGKILL
    assert train_cli(fasta, out, "--resume", kill_at="state:after_old_rename@1").returncode == -signal.SIGKILL
    assert complete_dir(out / "state").name == "state.old"
    assert train_cli(fasta, out, "--resume").returncode == 0
    assert_same_run(reference, out)


# ------------------------------------------------------------------- broken files on --resume
def _splits():
    pairs = toy_pairs()
    return SequenceSplits(pairs[:-3], pairs[-3:], "toy")


CFG = LMConfig(**{**SETS, "state_every_steps": 0})


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped after 2 steps (state at step 2) with a complete older state.old (step 1) beside it."""
    out = tmp_path_factory.mktemp("broken") / "run"
    train_lm(_splits(), out, LMConfig(**{**SETS, "state_every_steps": 1}), stop_after_steps=2, progress=False)
    # the situation of a kill after replace_dir's second rename: state (new) and state.old (old) both whole
    part = out.parent / "part"
    train_lm(
        _splits(), part, LMConfig(**{**SETS, "state_every_steps": 1}), stop_after_steps=1, progress=False
    )
    (part / "state").rename(out / "state.old")
    return out


def _broken_copy(src, dst, rel, content):
    import shutil

    shutil.copytree(src, dst)
    path = dst / rel
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif callable(content):
        path.write_bytes(content(path.read_bytes()))
    else:
        path.write_text(content)
    return dst


@pytest.mark.parametrize(
    "rel,content,err,msg",
    [
        ("config.json", "{not json", CheckpointError, "config.json.*not valid JSON"),
        ("config.json", "[]", CheckpointError, "config.json.*object"),
        ("config.json", "{}", CheckpointError, "no 'lm' object"),
        ("config.json", '{"lm": {}, "data": "toy"}', ConfigError, "different \\[lm\\] config"),
        ("state/model.safetensors", lambda b: b[: len(b) // 2], CheckpointError, "model.safetensors: cannot"),
        ("state/optimizer.pt", lambda b: b[:100], CheckpointError, "optimizer.pt: cannot be loaded"),
        ("state/rng.safetensors", b"\x00" * 8, CheckpointError, "rng.safetensors: cannot be loaded"),
        ("state/trainer_state.json", "{", CheckpointError, "trainer_state.json.*not valid JSON"),
        ("state/trainer_state.json", '{"epoch": "x"}', CheckpointError, "not a training state"),
    ],
)
def test_broken_files_on_resume_are_one_clear_error(stopped_run, tmp_path, rel, content, err, msg):
    out = _broken_copy(stopped_run, tmp_path / "run", rel, content)
    with pytest.raises(err, match=msg) as info:
        train_lm(_splits(), out, CFG, resume=True, progress=False)
    if rel.startswith("state/"):  # the older complete state is pointed at, not silently used
        assert "state.old holds an older complete state (global step 1)" in str(info.value)


def test_broken_files_through_the_cli_are_one_line(stopped_run, tmp_path, capsys):
    from phenogen.cli import main

    fasta = tmp_path / "toy.fasta"
    write_fasta(fasta, toy_pairs())
    out = _broken_copy(stopped_run, tmp_path / "run", "state/model.safetensors", lambda b: b[:50])
    for config in ("[1, 2]", None):
        if config:
            (out / "config.json").write_text(config)
        else:  # a good config.json for this FASTA: the truncated weights are next
            saved = json.loads((stopped_run / "config.json").read_text())
            (out / "config.json").write_text(json.dumps({**saved, "data": load_sequences(fasta).source}))
        sets = [a for k, v in SETS.items() for a in ("--set", f"lm.{k}={v}")]
        code = main(["train-lm", "--data", str(fasta), "--out", str(out), "--resume", "--no-progress", *sets])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert ("config.json" if config else "model.safetensors: cannot be loaded") in err


def test_resume_of_an_interrupted_first_save_names_it(tmp_path):
    out = tmp_path / "run"
    (out / "state.tmp").mkdir(parents=True)
    (out / MARKER).write_text("{}")
    with pytest.raises(CheckpointError, match="nothing to resume.*state.tmp"):
        train_lm(_splits(), out, CFG, resume=True, progress=False)


# ------------------------------------------------------------------- output directory, --force
def test_force_replaces_only_a_phenogen_output_and_only_after_the_inputs_checked_out(stopped_run, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(stopped_run, out)
    assert (out / MARKER).is_file()
    with pytest.raises(ConfigError, match="--force"):
        train_lm(_splits(), out, CFG, progress=False)
    bad = SequenceSplits(_splits().train + [("nn", "N" * 30)], _splits().heldout, "toy")
    with pytest.raises(Exception, match="nn"):
        train_lm(bad, out, CFG, force=True, progress=False)
    assert (out / "state" / "model.safetensors").is_file()  # a bad input cost no deletion
    one_epoch = LMConfig(**{**SETS, "epochs": 1, "state_every_steps": 0})
    result = train_lm(_splits(), out, one_epoch, force=True, progress=False)
    assert result.finished and not (out / "state.old").exists()
    assert json.loads((out / "config.json").read_text())["lm"]["epochs"] == 1

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="not written by phenogen"):
        train_lm(_splits(), foreign, CFG, force=True, progress=False)
    with pytest.raises(InputError, match="not written by phenogen"):
        train_lm(_splits(), foreign, CFG, progress=False)
    assert sorted(p.name for p in foreign.iterdir()) == ["precious.txt"]

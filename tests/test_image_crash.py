"""Crash safety of ``phenogen train-image``: real subprocesses killed at chosen points, then ``--resume``.

A kill is ``os._exit(137)`` at an exact point of the code (the ``PHENOGEN_TEST_KILL_AT`` hook of
:mod:`phenogen.diffusion.train`) — what a SIGKILL does there, reproducibly. After each kill every
checkpoint completed before it is still complete, ``--resume`` continues from the newest complete one,
and the final weights equal an uninterrupted run's bit for bit. Also: a broken ``config.json`` or
checkpoint is one clear error line; ``--force`` checks the inputs before it touches ``--out``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from phenogen.data.dataset import Record, write_dataset
from phenogen.diffusion.checkpoints import KILL_ENV, checkpoint_problem, list_checkpoints

STEPS = 8
SETS = {"preset": "tiny", "max_steps": STEPS, "batch_size": 4, "vae_steps": 2, "vae_batch_size": 4,
        "kmer_k": 2, "kmer_segments": 2, "sample_steps": 1, "checkpoint_every": 2, "checkpoints_total_limit": 2,
        "lr_warmup_steps": 1, "hflip": True}  # fmt: skip
ARGS = [a for k, v in SETS.items() for a in ("--set", f"image.{k}={json.dumps(v)}")]


def _dataset(root: Path):
    """Coloured discs, one colour per species (4 training species x 2 x 2 images, 1 held out)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    base = rng.choice(list("ACGT"), 48)
    records = []
    for s in range(5):
        sp = base.copy()
        sp[rng.choice(48, 10, replace=False)] = rng.choice(list("ACGT"), 10)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        for i in range(2):
            rels = []
            for k in range(2):
                im = Image.new("RGB", (16, 16), (200, 220, 240))
                ImageDraw.Draw(im).ellipse([3 + k, 4, 12 + k, 11], fill=colour)
                rels.append(f"images/sp{s}_{i}_{k}.png")
                im.save(root / rels[-1])
            split = "heldout" if s == 4 else "train"
            records.append(
                Record(f"sp{s}_i{i}", f"sp{s}", f"sp{s}_i{i}", split, "living", "".join(sp), tuple(rels))
            )
    return write_dataset(root, records, {"source": "test"})


def train(data: Path, out: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """``phenogen train-image`` in a fresh process (one thread), killed at ``kill`` if given."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    env.pop(KILL_ENV, None)
    if kill:
        env[KILL_ENV] = kill
    argv = [sys.executable, "-m", "phenogen.cli", "train-image", "--data", str(data), "--out", str(out),
            "--no-progress", *ARGS, *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)


def complete_steps(out: Path) -> list[int]:
    """Steps of the complete checkpoints in ``out``."""
    return [step for step, d in list_checkpoints(out / "checkpoints") if checkpoint_problem(d) is None]


def weights(out: Path) -> dict[str, torch.Tensor]:
    """The exported pipeline's UNet and conditioner tensors."""
    found = {}
    for part in ("unet", "conditioner"):
        tensors = load_file(out / "pipeline" / part / "diffusion_pytorch_model.safetensors")
        found |= {f"{part}.{k}": v for k, v in tensors.items()}
    return found


def assert_same_run(out: Path, reference: Path) -> None:
    """Bit-identical final weights and per-step losses."""
    a, b = weights(reference), weights(out)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
    losses = [json.loads((d / "losses.json").read_text())["train"] for d in (reference, out)]
    assert losses[0] == losses[1] and len(losses[0]) == STEPS


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("clade")).root


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    r = train(data, out)
    assert r.returncode == 0, r.stderr
    assert complete_steps(out) == [6, 8]
    return out


def test_killed_inside_a_save_and_between_saves_resumes_bit_exact(data, reference, tmp_path):
    """Kill 1 inside the save of checkpoint 6 (limit 2: the old code had deleted checkpoint 2 already and
    left a half-written newest checkpoint that blocked --resume); kill 2 after step 7 (between saves)."""
    out = tmp_path / "run"
    r = train(data, out, kill="checkpoint:mid_write@6")
    assert r.returncode == 137, r.stderr
    assert complete_steps(out) == [2, 4]  # nothing completed was lost
    assert (out / "checkpoints" / "checkpoint-000006.tmp").is_dir()
    assert not (out / "checkpoints" / "checkpoint-000006").exists() and not (out / "pipeline").exists()

    r = train(data, out, "--resume", kill="step@7")
    assert r.returncode == 137, r.stderr
    assert "resuming from checkpoint-000004; skipped checkpoint-000006.tmp (an unfinished save)" in r.stderr
    assert complete_steps(out) == [4, 6]  # 6 saved again, complete; only then was 2 pruned

    r = train(data, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert complete_steps(out) == [6, 8]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.old"))
    assert_same_run(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "left"),
    [
        ("checkpoint:mid_write@2", []),
        ("checkpoint:before_rename@4", [2]),
        ("checkpoint:before_prune@6", [2, 4, 6]),
        ("step@5", [2, 4]),
        ("export:mid_write", [6, 8]),
    ],
)
def test_every_kill_point_resumes_bit_exact(data, reference, tmp_path, kill, left):
    """At every kill point the completed checkpoints survive and one --resume finishes the same run.
    A kill in the very first save leaves no complete checkpoint: --resume is then one clear error."""
    out = tmp_path / "run"
    r = train(data, out, kill=kill)
    assert r.returncode == 137, r.stderr
    assert complete_steps(out) == left
    r = train(data, out, "--resume")
    if not left:
        assert r.returncode == 2 and "no complete checkpoint" in r.stderr and "Traceback" not in r.stderr
        return
    assert r.returncode == 0, r.stderr
    assert_same_run(out, reference)


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(data, reference, tmp_path, capsys):
    """A checkpoint whose files no longer match its complete.json is skipped with a note; a checkpoint
    that looks complete but cannot be loaded is one clear error naming it (it is never deleted)."""
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    shutil.rmtree(out / "pipeline")
    weights_file = out / "checkpoints" / "checkpoint-000008" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])  # truncated
    r = train(data, out, "--resume")
    assert r.returncode == 0, r.stderr
    assert (
        "resuming from checkpoint-000006; skipped checkpoint-000008 (model.safetensors is 1000 bytes"
        in r.stderr
    )
    assert_same_run(out, reference)

    from phenogen.cli import main

    optimizer = out / "checkpoints" / "checkpoint-000008" / "optimizer.bin"
    optimizer.write_bytes(b"\0" * optimizer.stat().st_size)  # same size, garbage
    capsys.readouterr()
    assert (
        main(["train-image", "--data", str(data), "--out", str(out), "--no-progress", "--resume", *ARGS]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert "checkpoint-000008: cannot resume from this checkpoint" in err[-1] and "Traceback" not in "".join(
        err
    )
    assert optimizer.is_file()


@pytest.mark.parametrize("text", ["not json {", "[]", "{}", '{"image": 3}'])
def test_resume_with_a_broken_config_json_is_one_clear_error(data, reference, tmp_path, capsys, text):
    from phenogen.cli import main

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "config.json").write_text(text)
    argv = ["train-image", "--data", str(data), "--out", str(out), "--no-progress", "--resume", *ARGS]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "Traceback" not in err[0], err


def test_resume_without_a_complete_checkpoint_is_one_clear_error(data, reference, tmp_path, capsys):
    from phenogen.cli import main

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for d in (out / "checkpoints").iterdir():
        (d / "complete.json").write_text("{}")
    argv = ["train-image", "--data", str(data), "--out", str(out), "--no-progress", "--resume", *ARGS]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no complete checkpoint" in err[0] and "complete.json lists no files" in err[0]


def test_force_checks_the_inputs_before_touching_out(data, tmp_path):
    """``--force`` with a missing dataset or a bad init deletes nothing; and it never clears a directory
    phenogen did not write, even with good inputs."""
    from phenogen.cli import main
    from phenogen.fsio import prepare_output_dir

    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.tex").write_text("years of work")
    earlier = prepare_output_dir(tmp_path / "earlier", "train-image")
    (earlier / "losses.json").write_text("{}")
    for out in (important, earlier):
        base = ["train-image", "--force", "--out", str(out), "--no-progress", *ARGS]
        assert main([*base, "--data", str(tmp_path / "nope")]) == 2
        assert main([*base, "--data", str(data), "--set", "image.init=nope"]) == 2
    assert main(["train-image", "--force", "--out", str(important), "--data", str(data), *ARGS]) == 2
    assert main(["pretrain-image", "--force", "--out", str(important), "--set", "prior.init=nope"]) == 2
    assert main(["pretrain-image", "--force", "--out", str(earlier), "--set", "prior.init=nope"]) == 2
    assert (important / "thesis.tex").read_text() == "years of work"
    assert (earlier / "losses.json").is_file()


def test_force_never_clears_an_out_that_holds_an_input(data, tmp_path, capsys):
    """``--force --out OUT`` with the dataset or the init prior inside OUT would delete them: refused."""
    from phenogen.cli import main
    from phenogen.fsio import prepare_output_dir

    out = prepare_output_dir(tmp_path / "run", "train-image")
    shutil.copytree(data, out / "data")
    assert main(["train-image", "--force", "--out", str(out), "--data", str(out / "data"), *ARGS]) == 2
    assert "lies inside --out" in capsys.readouterr().err
    prior = prepare_output_dir(tmp_path / "prior", "pretrain-image")
    for part in ("vae", "unet"):
        (prior / part).mkdir()
        (prior / part / "config.json").write_text("{}")
    assert (
        main(
            [
                "pretrain-image",
                "--force",
                "--out",
                str(prior),
                "--set",
                f"prior.init={json.dumps(str(prior))}",
            ]
        )
        == 2
    )
    assert "lies inside --out" in capsys.readouterr().err
    assert (out / "data" / "dataset.json").is_file()
    assert (prior / "unet" / "config.json").is_file()

"""The whole demo, end to end, at toy budgets (slow: ~2 min on 2 cores; `make test-slow`)."""

from __future__ import annotations

import json

import pytest

from phenogen.cli import main

pytestmark = pytest.mark.slow

TOY = [
    "sim.n_living=16", "sim.photos_per_individual=2", "lm.max_minutes=0.15", "lm.epochs=2",
    "dna_eval.n_samples=30", "dna_eval.select_n=8", "dna_eval.select_every=1", "image.preset=tiny",
    'image.init=""', 'image.cond_head="tokens"', "image.train_unet=true", "image.max_steps=3",
    "image.vae_steps=10", "generate.steps=2", "demo.sweep_sequences=1",
    "demo.sweep_guidance=[1.0, 8.0]", "demo.sweep_steps=[2]", "demo.images_per_target=1",
    "demo.max_targets_per_split=3", "evaluate.probe_epochs=2",
    'ancestors.portrait_condition="sequence"', "image.caption_scan_at=0",
    "image.caption_prior_weight=0",  # the toy model has the tokens head: no caption to scan or hold
]  # fmt: skip


def test_demo_runs_every_stage_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *[a for s in TOY for a in ("--set", s)]]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert list(summary["stage_seconds"]) == [
        "simulate", "train-lm", "evaluate-dna", "ancestors", "train-image", "generate", "evaluate", "report"
    ]  # fmt: skip
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for split in ("train", "heldout", "extinct", "ancestor"):
        methods = metrics["splits"][split]["methods"]
        assert {"generated", "nearest", "random", "mean", "oracle", "truth"} <= set(methods)
        assert methods["generated"]["n_targets"] >= 1
    painted = (out / "generated" / "sequences.fasta").read_text()
    assert "reconstructed" not in painted and painted.count(">") == sum(
        metrics["splits"][s]["methods"]["generated"]["n_targets"] for s in metrics["splits"]
    )
    # the demo's [generate] settings travel with the pipeline, and generate painted with them
    stored = json.loads((out / "image" / "pipeline" / "generation_config.json").read_text())
    assert (stored["scheduler"], stored["steps"], stored["guidance_scale"]) == ("unipc", 2, 3.0)
    assert (
        stored["best_of"] == 3
    )  # kept with the pipeline; this tokens-head model has no reader, so every draw
    assert json.loads((out / "generated" / "config.json").read_text())["settings"]["steps"] == 2
    html = (out / "report.html").read_text()
    assert "<img" in html and "heldout" in html.lower()
    assert (out / "sweeps" / "guidance.png").is_file()
    printed = capsys.readouterr()
    assert str(out / "report.html") in printed.out + printed.err
    named = metrics["splits"]["heldout"]["methods"]
    assert (
        f"named from the true trait table [heldout]: top-1 {named['generated']['top1_traits']:.2f}  "
        f"(oracle vector {named['oracle']['top1_traits']:.2f}, own photos {named['truth']['top1_traits']:.2f})"
    ) in printed.out

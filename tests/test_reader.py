"""Best-of-K sampling: the prior's reader and the candidates it keeps."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_diffusion import _caption_pipeline

from phenogen.diffusion.config import GenerateConfig
from phenogen.diffusion.generate import paint
from phenogen.diffusion.pipeline import DNAToImagePipeline, load_pipeline
from phenogen.diffusion.reader import (
    READER_DIR,
    best_of,
    build_reader,
    caption_distance,
    load_reader,
    save_reader,
    train_reader,
)
from phenogen.diffusion.settings import GenerationSettings, read_settings, write_settings
from phenogen.errors import CheckpointError
from phenogen.evaluate.probe import ProbeSpec, TraitProbe

SEQS = ["ACGTACGTTTGACAACGTAGGCT", "ACGGGTACCATTGACAACNTAGG", "TTGACCAGTACGGATCCATGACA"]
NAMES = ["size", "hue", "crest"]


def _pipeline(tmp: Path, reader: bool = True) -> DNAToImagePipeline:
    """test_diffusion's tiny caption-head pipeline (captions size, hue, crest) with stored settings and a randomly
    initialised reader of its captions."""
    pipe = _caption_pipeline(tmp)
    pipe.generation_settings = GenerationSettings("ddim", 2, 1.0)
    pipe.reader = (
        TraitProbe(ProbeSpec(NAMES, [], [0.0] * 3, [1.2] * 3, image_size=16)).eval() if reader else None
    )
    return pipe


def test_best_of_keeps_the_candidates_the_reader_reads_closest_to_the_caption(tmp_path):
    """best_of=3 with 2 kept = the 2 (in draw order) of the 6 candidates drawn at the same noise keys whose read is
    closest to the record's caption, renumbered 0, 1; at least one record keeps other than its first two draws."""
    pipe = _pipeline(tmp_path)
    records = [(f"r{i}", s) for i, s in enumerate(SEQS)]
    every, values = paint(pipe, records, images_per_sequence=6, best_of=1, seed=3)
    kept, kept_values = paint(pipe, records, images_per_sequence=2, best_of=3, seed=3)
    assert np.array_equal(values, kept_values)
    assert [(rid, k) for rid, k, _ in kept] == [(f"r{i}", k) for i in range(3) for k in (0, 1)]
    moved = 0
    for i in range(3):
        cands = [im for rid, _, im in every if rid == f"r{i}"]
        d = caption_distance(pipe.reader, cands, values[i])
        want = sorted(np.argsort(d)[:2].tolist())
        moved += want != [0, 1]
        got = [np.asarray(im) for rid, _, im in kept if rid == f"r{i}"]
        assert all(np.array_equal(g, np.asarray(cands[w])) for g, w in zip(got, want, strict=True))
    assert moved >= 1


def test_best_of_from_the_stored_settings_and_without_a_reader(tmp_path, caplog):
    """Left unset, best_of is the pipeline's stored setting; a pipeline with no reader warns once and keeps every
    draw (the same images as best_of = 1)."""
    pipe = _pipeline(tmp_path)
    pipe.generation_settings = GenerationSettings("ddim", 2, 1.0, best_of=3)
    records = [("r0", SEQS[0])]
    stored, _ = paint(pipe, records, images_per_sequence=1)
    explicit, _ = paint(pipe, records, images_per_sequence=1, best_of=3)
    plain, _ = paint(pipe, records, images_per_sequence=1, best_of=1)
    assert np.array_equal(np.asarray(stored[0][2]), np.asarray(explicit[0][2]))
    pipe.reader = None
    with caplog.at_level(logging.WARNING, logger="phenogen.diffusion.generate"):
        unread, _ = paint(pipe, records, images_per_sequence=1)
    assert "best_of = 3 ignored" in caplog.text
    assert np.array_equal(np.asarray(unread[0][2]), np.asarray(plain[0][2]))


def test_caption_distance_is_the_mean_squared_gap_in_prior_units():
    """A reader that reads every image as its head's bias: distance = mean of ((bias − c / sd)² for continuous traits,
    (sigmoid(bias) − c)² for binary ones)."""
    reader = TraitProbe(ProbeSpec(["a", "b"], ["c"], [0.0, 0.0], [1.2, 1.2], image_size=16)).eval()
    with torch.no_grad():
        reader.head.weight.zero_()
        reader.head.bias.copy_(torch.tensor([0.5, -1.0, 0.0]))
    caption = np.array([1.2, 1.2, 1.0])
    d = caption_distance(reader, [Image.new("RGB", (16, 16), (200, 10, 10))] * 2, caption)
    assert d == pytest.approx([((0.5 - 1) ** 2 + (-1 - 1) ** 2 + (0.5 - 1) ** 2) / 3] * 2)
    assert best_of(reader, [Image.new("RGB", (16, 16))] * 3, caption, 2) == [0, 1]  # ties: draw order


def test_a_reader_is_trained_on_random_renders_and_saved_with_the_prior(tmp_path):
    """build_reader trains on renders of random birds (the simulator's traits, continuous first) and saves
    PRIOR/reader (safetensors + JSON, read back exactly); names it cannot draw are refused."""
    from phenogen.sim.traitspec import CONTINUOUS, DISCRETE

    names = (*CONTINUOUS, *DISCRETE)
    record = build_reader(tmp_path, names, n=24, epochs=1, seed=2, size=32)
    assert record["renders"] == 24 and record["image_size"] == 32
    reader = load_reader(tmp_path / READER_DIR)
    assert reader.spec.trait_names == list(names) and reader.spec.std == [1.2] * len(CONTINUOUS)
    assert json.loads((tmp_path / READER_DIR / "probe.json").read_text())["history"]["seed"] == 2
    assert not list((tmp_path / READER_DIR).glob("*.tmp"))
    with pytest.raises(ValueError, match="unknown: wingspan"):
        train_reader(["body_size", "wingspan"], n=4, epochs=1)
    with pytest.raises(ValueError, match="continuous traits before the binary"):
        train_reader([DISCRETE[0], CONTINUOUS[0]], n=4, epochs=1)


def test_a_saved_pipeline_loads_its_reader_and_refuses_one_of_other_captions(tmp_path):
    pipe = _pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    write_settings(tmp_path / "pipe", GenerationSettings("ddim", 2, 1.0, best_of=4), "test")
    assert load_pipeline(tmp_path / "pipe").reader is None  # no reader/ folder: plain sampling
    save_reader(pipe.reader, tmp_path / "pipe" / READER_DIR)
    loaded = load_pipeline(tmp_path / "pipe")
    assert loaded.reader.spec.trait_names == NAMES and loaded.generation_settings.best_of == 4
    other = TraitProbe(ProbeSpec(["size", "hue"], [], [0.0] * 2, [1.2] * 2, image_size=16))
    save_reader(other, tmp_path / "pipe" / READER_DIR)
    with pytest.raises(
        CheckpointError, match="the reader reads size, hue; the pipeline's captions are size, hue, crest"
    ):
        load_pipeline(tmp_path / "pipe")


def test_best_of_settings_are_checked_and_default_to_one(tmp_path):
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"scheduler": "unipc", "steps": 15, "guidance_scale": 3})
    )
    assert read_settings(tmp_path)[0].best_of == 1  # saved before best_of existed
    with pytest.raises(ValueError, match="best_of must be an integer >= 1"):
        GenerationSettings("ddim", 2, 1.0, best_of=0)
    with pytest.raises(ValueError, match="best_of must be >= 1"):
        GenerateConfig(best_of=0)
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"scheduler": "unipc", "steps": 15, "guidance_scale": 3, "best_of": 1.5})
    )
    with pytest.raises(CheckpointError, match="best_of must be an integer"):
        read_settings(tmp_path)


def test_generate_best_of_on_the_command_line(tmp_path, capsys):
    """`generate --best-of 2 --n 2` writes the 2 of 4 draws the reader keeps (as paint does), records the setting;
    --best-of 0 is one clear line and exit code 2, before a model is loaded."""
    from phenogen.cli import main

    pipe = _pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    write_settings(tmp_path / "pipe", GenerationSettings("ddim", 2, 1.0), "test")
    save_reader(pipe.reader, tmp_path / "pipe" / READER_DIR)
    argv = ["generate", "--model", str(tmp_path / "pipe"), "--sequence", SEQS[0], "--id", "bird", "--n", "2"]
    assert main([*argv, "--best-of", "2", "--out", str(tmp_path / "out")]) == 0
    settings = json.loads((tmp_path / "out" / "config.json").read_text())["settings"]
    assert settings["best_of"] == 2
    kept, _ = paint(load_pipeline(tmp_path / "pipe"), [("bird", SEQS[0])], images_per_sequence=2, best_of=2)
    for k in range(2):
        written = np.asarray(Image.open(tmp_path / "out" / "images" / f"bird_{k}.png").convert("RGB"))
        assert np.array_equal(written, np.asarray(kept[k][2].convert("RGB")))
    capsys.readouterr()
    assert main([*argv, "--best-of", "0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "best_of must be >= 1" in err[0]

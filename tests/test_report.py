"""The HTML report: self-contained, readable with every part present and with parts missing."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import re

import pytest
import torch
from PIL import Image
from toy_clade import fake_generated, make_clade

from phenogen.cli import add_common_arguments
from phenogen.data.dataset import load_dataset
from phenogen.errors import InputError
from phenogen.evaluate.config import EvaluateConfig
from phenogen.evaluate.metrics import evaluate
from phenogen.report import command
from phenogen.report.figures import loss_curves, plot_loss_curves
from phenogen.report.html import RunParts, build_report

torch.set_num_threads(2)
TINY = dict(
    probe_image_size=32,
    probe_width=8,
    probe_epochs=3,
    retrieval_epochs=20,
    kid_subsets=2,
    random_repeats=1,
)
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (120, 80), colour).save(path)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """A run directory with every part: data, generated, eval, LM/image losses, selection, sweeps."""
    run = tmp_path_factory.mktemp("run")
    ds = make_clade(run / "data", n_tips=12, n_extinct=2)
    fake_generated(ds, run / "generated", "truth")
    evaluate(ds.root, run / "generated", run / "eval", EvaluateConfig(**TINY), progress=None)
    lm_losses = {
        "steps": [{"step": i, "epoch": i / 10, "loss": 3.0 / i} for i in range(1, 21)],
        "epochs": [
            {"epoch": 1, "train_loss": 1.2, "heldout_loss": 1.3},
            {"epoch": 2, "train_loss": 0.9, "heldout_loss": 1.1},
        ],
    }
    (run / "lm").mkdir()
    (run / "lm" / "losses.json").write_text(json.dumps(lm_losses))
    _png(run / "image" / "loss_curve.png", (30, 30, 200))
    _png(run / "lm_eval" / "identity_by_epoch.png", (30, 200, 30))
    _png(run / "sweeps" / "guidance.png")
    _png(run / "sweeps" / "steps.png")
    return run


def _images(page: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(m))) for m in DATA_URI.findall(page)]


def test_full_report_embeds_every_part(full_run):
    """Every section shows: metric table, pairs, tree, losses, selection, sweeps; images decode."""
    page = build_report(full_run).read_text()
    for text in ("Held-out living species", "Extinct species", "Ancestors", "oracle", "Guidance scale sweep",
                 "Sampling steps sweep", "identity to the nearest training barcode", "top-5"):  # fmt: skip
        assert text in page, text
    assert "not run" not in page.split("Sequence side")[0]
    images = _images(page)
    assert len(images) > 40
    assert all(im.size[0] > 0 for im in images)
    assert (full_run / "report.html").is_file()
    assert '<img src="file:' not in page and 'src="/' not in page  # self-contained
    metrics = json.loads((full_run / "eval" / "metrics.json").read_text())
    split = metrics["headline"]["split"]
    generated = metrics["splits"][split]["methods"]["generated"]
    assert generated["trait_rmse_se"] is not None  # two images per target: the card shows the ±
    card = f"<b>{generated['trait_rmse']:.3f} ± {generated['trait_rmse_se']:.3f}</b>"
    assert card in page.split('<div class="cards">')[1].split("<p>")[0]


def test_caption_readout_section_shows_only_for_the_caption_head(full_run, tmp_path):
    """The "What the DNA wrote" section lists every trait's r per split when metrics.json has a
    caption read-out, and is absent otherwise (the fake generator has no model)."""
    assert "What the DNA wrote" not in build_report(full_run).read_text()
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    metrics = json.loads((full_run / "eval" / "metrics.json").read_text())
    metrics["caption_readout"] = {
        "model": "m",
        "traits": ["beak_length", "crest_size"],
        "splits": {
            "heldout": {
                "n_targets": 5,
                "mean_r": 0.61,
                "per_trait_r": {"beak_length": 0.42, "crest_size": 0.8},
            },
            "ancestor": {
                "n_targets": 4,
                "mean_r": None,
                "per_trait_r": {"beak_length": None, "crest_size": None},
            },
        },
    }
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(run).read_text()
    section = page.split("What the DNA wrote</h2>")[1].split("<h2")[0]
    for text in ("beak_length", "crest_size", "0.420", "0.800", "0.610", "heldout", "ancestor", "—"):
        assert text in section, text


def test_report_with_parts_missing_says_not_run(tmp_path):
    """Only a dataset: the page is still written, the tree shows, missing parts say "not run"."""
    make_clade(tmp_path / "data", n_tips=8, n_extinct=1)
    page = build_report(tmp_path, tmp_path / "out" / "r.html").read_text()
    assert page.count("not run") >= 5
    assert "Species tree" in page and len(_images(page)) >= 1  # the tree figure


def test_empty_run_and_missing_run(tmp_path):
    """A run with one stage gives a page of "not run" elsewhere; an empty or missing one is an InputError."""
    with pytest.raises(InputError, match="not a phenogen run directory"):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    (tmp_path / "lm").mkdir()
    page = build_report(tmp_path).read_text()
    assert "not run" in page and "<html" in page
    with pytest.raises(InputError, match="no such run directory"):
        build_report(tmp_path / "nope")


def test_loss_curve_shapes():
    """losses.json in the shapes phenogen writes all become curves; garbage gives none."""
    assert list(loss_curves([3.0, 2.0, 1.0])) == ["loss"]
    assert loss_curves([{"step": 5, "loss": 1.0}, {"step": 9, "loss": 0.5}])["loss"] == (
        [5.0, 9.0],
        [1.0, 0.5],
    )
    assert set(loss_curves({"train": [1.0, 0.5], "val": [1.2, 0.9]})) == {"train", "val"}
    assert loss_curves({"note": "nothing here"}) == {}
    png = plot_loss_curves(
        loss_curves({"epochs": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}), "t"
    )
    assert Image.open(io.BytesIO(png)).size[0] > 100


def test_report_command(full_run, tmp_path, capsys):
    """`phenogen report --run DIR --out FILE` writes the page and its resolved config."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    add_common_arguments(parser)
    out = tmp_path / "report.html"
    assert (
        command.run(parser.parse_args(["--run", str(full_run), "--out", str(out), "--max-targets", "2"])) == 0
    )
    assert "report:" in capsys.readouterr().out
    assert json.loads((tmp_path / "report.config.json").read_text())["report"]["max_targets"] == 2
    assert out.read_text().count('class="g"') <= 3 * 2 * 4  # at most 2 targets × 3 splits × 4 images


def test_ancestors_section_says_what_the_ancestors_were_painted_from(tmp_path):
    """Reconstructed sequences by default; the tree captions when the generated directory has captions.tsv."""
    from phenogen.report.html import _ancestors

    (tmp_path / "ancestors").mkdir()
    record = {"ancestor_sequences": "reconstructed", "all_nodes_mean_identity": {"treetime": 0.97},
              "n_identifiable": 5, "n_true_internal": 6}  # fmt: skip
    (tmp_path / "ancestors" / "targets.json").write_text(json.dumps(record))
    assert "<b>reconstructed</b> sequences" in _ancestors(RunParts.resolve(tmp_path))
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "captions.tsv").write_text("record_id\ta\nn1\t0.5\n")
    section = _ancestors(RunParts.resolve(tmp_path))
    assert "reconstructed at each ancestor on the tree" in section and "0.9700" in section
    assert "barcodes of every tip write" in section  # no config: caption_tips = "all"
    (tmp_path / "config.toml").write_text('[ancestors]\ncaption_tips = "train"\n')
    assert "barcodes of the training species write" in _ancestors(RunParts.resolve(tmp_path))


def test_first_screen_compares_with_every_baseline_and_shows_a_contact_sheet(full_run):
    """The headline says, per split, whether the portraits beat nearest and mean and how far they are from
    the oracle; a truth | generated contact sheet of held-out species (labelled) follows it at once."""
    from phenogen.report.html import verdict_lines

    metrics = json.loads((full_run / "eval" / "metrics.json").read_text())
    lines = verdict_lines(metrics)
    assert len(lines) == len(metrics["splits"])
    held = metrics["splits"]["heldout"]["methods"]
    line = next(v for v in lines if v.startswith("Held-out living species"))
    gen, near = held["generated"]["trait_rmse"], held["nearest"]["trait_rmse"]
    assert ("beats nearest" in line) == (gen < near)
    assert ("worse than" in line) == (gen >= min(near, held["mean"]["trait_rmse"]))
    assert f"{gen / held['oracle']['trait_rmse']:.2f} × oracle" in line
    page = build_report(full_run).read_text()
    first = page.split('<h2 id="s1">')[0]  # the headline section only
    assert html.escape(line) in first
    named = metrics["headline"]["top1_traits"]
    assert "named from the trait table, top-1" in first
    assert " / ".join(f"{100 * named[k]:.0f}%" for k in ("generated", "oracle", "truth")) in first
    assert "true image (top: a render, or a photo) and generated portrait" in first
    ds_species = {r.species for r in load_dataset(full_run / "data").records("heldout")}
    assert any(f">{sp}</th>" in first for sp in ds_species)  # columns labelled with species names
    assert len(_images(first)) >= 2 * min(len(ds_species), 16)


def test_pairs_table_shows_which_species_each_target_is_named_as(full_run):
    """The truth vs generated table has a "named from traits" column: per target, the species its portraits'
    traits lie nearest to (with a picture of it) and how many of them are nearest to its own species."""
    import csv

    rows = list(csv.DictReader((full_run / "eval" / "targets.tsv").read_text().splitlines(), delimiter="\t"))
    page = build_report(full_run).read_text()
    assert "<th>named from traits</th>" in page
    for r in rows:
        label = ("itself" if r["named_as"] == r["species"] else r["named_as"]) + f" · {r['named_own']} own"
        assert html.escape(label) in page, label
    assert any(r["named_as"] == r["species"] for r in rows)  # true renders are named as themselves somewhere


def test_rendered_baselines_show_in_the_headline_and_beside_each_target(full_run, tmp_path):
    """With rendered mean / oracle rows (synthetic clades) the verdict compares picture with picture and the
    truth-vs-generated table shows the oracle's rendered prediction per target; without them neither appears."""
    import shutil

    from phenogen.report.html import verdict_lines

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    page = build_report(run).read_text()
    assert "oracle, rendered" not in page and "rendered:" not in page
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    held = metrics["splits"]["heldout"]["methods"]
    gen = held["generated"]["trait_rmse"]
    held["oracle_render"] = {**held["truth"], "trait_rmse": gen * 0.8}
    held["mean_render"] = {**held["truth"], "trait_rmse": gen * 1.2}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    line = next(v for v in verdict_lines(metrics) if v.startswith("Held-out"))
    assert f"rendered: beats mean ({gen * 1.2:.3f}), 1.25 × oracle ({gen * 0.8:.3f})" in line
    rid = next(r.record_id for r in load_dataset(run / "data").records("heldout"))
    _png(run / "eval" / "baselines" / "oracle_render" / f"{rid}_0.png", (10, 200, 10))
    page = build_report(run).read_text()
    assert "oracle, rendered" in page and html.escape(line) in page
    assert any(im.getpixel((0, 0))[:3] == (10, 200, 10) for im in _images(page))


def test_a_run_laid_out_by_hand_is_reported_from_what_its_commands_recorded(tmp_path):
    """Commands run one by one into folders of the user's choosing: the report finds the evaluation, and
    from the paths each command recorded its dataset, images, image model and DNA model — every section
    its artifacts support, from the project folder or from the evaluation folder itself."""
    proj = tmp_path / "proj"
    ds = make_clade(proj / "clade", n_tips=12, n_extinct=2)
    fake_generated(ds, proj / "portraits", "truth")
    evaluate(ds.root, proj / "portraits", proj / "scores", EvaluateConfig(**TINY), progress=None)
    (proj / "scores" / "config.json").write_text(json.dumps(
        {"evaluate": {}, "data": str(ds.root), "generated": str(proj / "portraits")}))  # fmt: skip
    (proj / "portraits" / "config.json").write_text(
        json.dumps({"generate": {}, "model": "proj/bird-model/pipeline"})
    )
    (proj / "bird-model" / "pipeline").mkdir(parents=True)
    (proj / "bird-model" / "config.json").write_text(
        json.dumps({"image": {"lm_model": "proj/dna-model/model"}})
    )
    _png(proj / "bird-model" / "loss_curve.png", (30, 30, 200))
    (proj / "dna-model" / "model").mkdir(parents=True)
    (proj / "dna-model" / "losses.json").write_text(
        json.dumps({"steps": [{"step": i, "loss": 3.0 / i} for i in range(1, 9)]})
    )
    for where in (proj, proj / "scores"):
        page = build_report(where, tmp_path / f"{where.name}.html").read_text()
        for text in ("Held-out living species", "oracle", "top-5"):
            assert text in page, (where, text)
        for part in ("evaluation", "generated images", "dataset", "true tree", "DNA language model training",
                     "Image model (diffusion) training"):  # fmt: skip
            assert f"{part}: not run" not in page, (where, part)
        assert len(_images(page)) > 10
    parts = RunParts.resolve(proj)
    assert parts["image"] == proj / "bird-model" and parts["lm"] == proj / "dna-model"


def test_training_section_lists_the_caption_scan_moves(full_run, tmp_path):
    """RUN/image/caption_scan.json (train-image's scan of the written hues) shows under "Training": each move's
    species, value, from where to where and the decoder's loss; no moves says so; a damaged file is one line."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    scan = {"step": 202, "seconds": 15.0, "species": 38, "moves": [
        {"species": "sp_021", "trait": "wing_hue", "before": -0.93, "after": 2.48, "loss_before": 0.254,
         "loss_after": 0.215}]}  # fmt: skip
    (run / "image" / "caption_scan.json").write_text(json.dumps(scan))
    section = build_report(run).read_text().split("Training</h2>")[1].split("<h2")[0]
    for text in (
        "Caption scan (step 202): 1 value(s) of 38",
        "sp_021",
        "wing_hue",
        "-0.93 → 2.48",
        "0.254 → 0.215",
    ):
        assert text in section, text
    (run / "image" / "caption_scan.json").write_text(json.dumps(scan | {"moves": []}))
    assert "already in its best minimum" in build_report(run).read_text()
    (run / "image" / "caption_scan.json").write_text('{"step": 3}')
    page = build_report(run).read_text()
    assert "not a caption scan" in page and "Traceback" not in page

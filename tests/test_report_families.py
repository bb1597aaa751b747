"""The generator families side by side (phenogen.report.families): a run's own evaluation and every
``RUN/families/<name>/`` in one table — in the report and as BENCHMARKS.md's markdown — with the best per split
named, a held-out contact sheet, rows on other targets refused as not comparable, broken ones noted."""

from __future__ import annotations

import json
import re

import pytest
import torch
from toy_clade import fake_generated, make_clade

from phenogen.evaluate.config import EvaluateConfig
from phenogen.evaluate.metrics import evaluate
from phenogen.fsio import prepare_output_dir
from phenogen.generators.base import generate_to_dir, load_generator
from phenogen.generators.train import GeneratorConfig, train_generator
from phenogen.report.families import best_by_split, collect, markdown_table, verdicts
from phenogen.report.html import build_report

torch.set_num_threads(2)
TINY = dict(probe_image_size=32, probe_width=8, probe_epochs=3, retrieval_epochs=20, kid_subsets=2,
            random_repeats=1)  # fmt: skip
TARGETS = ("heldout", "extinct", "ancestor")


def _evaluate(ds, generated, out):
    evaluate(ds.root, generated, out, EvaluateConfig(**TINY), progress=None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run (truth-drawn portraits: the best possible), a real tiny cVAE and a noise painter on the same
    targets, a row evaluated on another clade, and a family whose metrics.json is broken."""
    run = tmp_path_factory.mktemp("run")
    ds = make_clade(run / "data", n_tips=12, n_extinct=2)
    _evaluate(ds, fake_generated(ds, run / "generated", "truth"), run / "eval")
    fam = run / "families"
    cfg = GeneratorConfig(family="cvae", resolution=16, steps=4, batch_size=4, checkpoint_every=0, kmer_k=2,
                          kmer_segments=2, params={"z_dim": 4, "width": 8, "cond_embed": 8, "max_width": 16})  # fmt: skip
    prepare_output_dir(fam / "cvae" / "model", "train-generator")
    train_generator(ds.root, fam / "cvae" / "model", cfg, progress=False)
    records = [(r.record_id, r.sequence) for r in ds.records(TARGETS)]
    generator = load_generator(fam / "cvae" / "model" / "generator")
    generate_to_dir(generator, records, fam / "cvae" / "generated", images_per_sequence=2, seed=0)
    _evaluate(ds, fam / "cvae" / "generated", fam / "cvae" / "eval")
    _evaluate(ds, fake_generated(ds, fam / "noise" / "generated", "noise"), fam / "noise" / "eval")
    other = make_clade(run / "other-data", n_tips=9, n_extinct=1, seed=3)
    _evaluate(
        other, fake_generated(other, fam / "zz-other" / "generated", "truth"), fam / "zz-other" / "eval"
    )
    (fam / "broken" / "eval").mkdir(parents=True)
    (fam / "broken" / "eval" / "metrics.json").write_text("{not json")
    return run, ds


def test_rows_read_every_family_with_its_measurements(run):
    root, _ = run
    rows, notes = collect(root)
    assert [r.name for r in rows] == ["this run", "cvae", "noise", "zz-other"]
    this, cvae, noise, other = rows
    assert (this.kind, cvae.kind, noise.kind) == ("diffusion", "cvae", "diffusion")
    # the cVAE row carries its training minutes, diversity and sampling speed (generated/timing.json)
    timing = json.loads((root / "families" / "cvae" / "generated" / "timing.json").read_text())
    assert timing["images"] == 2 * sum(1 for _ in run[1].records(TARGETS))
    assert cvae.images_per_second == pytest.approx(timing["images_per_second"]) and cvae.images_per_second > 0
    assert cvae.train_minutes is not None and cvae.train_minutes > 0 and 0 <= cvae.diversity
    # the fake painters wrote no timing: their speed is unknown, not zero
    assert noise.images_per_second is None and noise.train_minutes is None
    assert [r.comparable for r in rows] == [True, True, True, False]
    assert "other targets" in other.note
    assert len(notes) == 1 and "broken" in notes[0] and "metrics.json" in notes[0]


def test_best_per_split_is_the_lowest_comparable_rmse(run):
    rows, _ = collect(run[0])
    best = best_by_split(rows)
    assert set(best) == set(TARGETS)  # nothing painted the training species
    for split, row in best.items():
        assert row.comparable
        assert row.rmse(split)[0] == min(r.rmse(split)[0] for r in rows if r.comparable and r.rmse(split))
    # the other clade's row has the lowest numbers of all (its own, easier targets) and is never named
    other = rows[-1]
    assert all(other.rmse(s)[0] < best[s].rmse(s)[0] for s in TARGETS)
    assert all(r.name != "zz-other" for r in best.values())
    lines = verdicts(rows)
    assert len(lines) == 3 and lines[0].startswith(f"heldout: best {best['heldout'].name} (")
    assert "nearest" in lines[0] and "mean" in lines[0]


def test_markdown_table_bolds_the_best_and_lists_the_baselines(run):
    rows, _ = collect(run[0])
    table = markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| generator | family | train | heldout | extinct | ancestor |")
    assert len(lines) == 2 + len(rows) + 4  # header, rule, one per row, nearest / mean / oracle / truth
    best = best_by_split(rows)["heldout"]
    heldout = best.rmse("heldout")
    assert f"**{heldout[0]:.3f} ± {heldout[1]:.3f}**" in lines[2 + rows.index(best)]
    assert sum(line.count("**") for line in lines) == 2 * 3  # one best per scored split
    assert "(not comparable)" in lines[5] and "**" not in lines[5]
    assert lines[-1].startswith("| *truth* |")
    assert all(line.count("|") == lines[0].count("|") for line in lines)  # a well-formed table


def test_report_shows_the_families_table_and_contact_sheet(run, tmp_path):
    root, ds = run
    page = build_report(root, tmp_path / "r.html").read_text()
    assert "Generator families side by side" in page
    section = page.split("Generator families side by side</h2>", 1)[1].split("<h2", 1)[0]
    for name in ("this run", "cvae", "noise", "zz-other"):
        assert f'<td class="l">{name}</td>' in section
    assert "other targets than this run" in section and "broken" in section
    # the contact sheet: truth, then one row per comparable painter, one column per held-out species
    sheet = section.split('<table class="pairs">', 1)[1].split("</table>", 1)[0]
    n_species = len({r.species for r in ds.records("heldout")})
    assert sheet.count("<tr>") == 1 + 1 + 3
    assert len(re.findall(r'src="data:image/png;base64,', sheet)) == 4 * n_species
    assert "zz-other" not in sheet


def test_no_families_no_section(tmp_path):
    ds = make_clade(tmp_path / "data", n_tips=8, n_extinct=1)
    _evaluate(ds, fake_generated(ds, tmp_path / "generated", "truth"), tmp_path / "eval")
    page = build_report(tmp_path).read_text()
    assert "Generator families" not in page
    assert collect(tmp_path)[0][0].name == "this run" and len(collect(tmp_path)[0]) == 1

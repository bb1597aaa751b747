"""Photo scores of ``evaluate``: a real-format dataset without traits, the toy clade, bad input."""

from __future__ import annotations

import colorsys
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from toy_clade import fake_generated, make_clade

from phenogen.cli import main
from phenogen.data.dataset import Record, write_dataset
from phenogen.evaluate import command
from phenogen.evaluate.config import EvaluateConfig
from phenogen.evaluate.metrics import SCHEMA_VERSION, evaluate
from phenogen.evaluate.photo_scores import PHOTO_METHODS, PHOTO_ROW_KEYS

torch.set_num_threads(2)
SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics_schema.md"
FAST = dict(
    probe_width=16, probe_epochs=25, retrieval_epochs=150, kid_subsets=5, random_repeats=3, plots=False
)
SHAPES = ("ellipse", "square", "triangle", "diamond", "cross", "bar")
SIZE = 32


def _photo(shape: str, hue: float, light: float, scale: float, rng: np.random.Generator) -> Image.Image:
    """A 32-px "specimen photo": a shape (family) of a colour (genus hue, species lightness) on noise."""
    bg = rng.integers(150, 230, (SIZE, SIZE, 3)).astype(np.uint8)
    im = Image.fromarray(bg)
    d = ImageDraw.Draw(im)
    r = 9 * scale * rng.uniform(0.85, 1.15)
    cx, cy = 16 + rng.uniform(-3, 3), 16 + rng.uniform(-3, 3)
    fill = tuple(int(255 * v) for v in colorsys.hls_to_rgb(hue + rng.normal(0, 0.01), light, 0.85))
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "ellipse":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "diamond":
        d.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=fill)
    elif shape == "cross":
        d.rectangle([cx - r, cy - r / 3, cx + r, cy + r / 3], fill=fill)
        d.rectangle([cx - r / 3, cy - r, cx + r / 3, cy + r], fill=fill)
    else:
        d.rectangle([cx - r, cy - r / 2.5, cx + r, cy + r / 2.5], fill=fill)
    return im


def _mutate(seq: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = seq.copy()
    hit = rng.random(len(seq)) < rate
    out[hit] = (out[hit] + rng.integers(1, 4, hit.sum())) % 4
    return out


def photo_dataset(root: Path, seed: int = 0, photos: int = 4):
    """A real-format dataset without traits: 3 orders × 2 families × 2 genera × 3 species, barcodes
    evolved down that taxonomy, photos whose shape is the family's, hue the genus', lightness and size
    the species'. The third species of every genus is held out. Returns (dataset, {species: look})."""
    rng = np.random.default_rng(seed)
    records, looks = [], {}
    base = rng.integers(0, 4, 300)
    for o in range(3):
        o_seq = _mutate(base, 0.25, rng)
        for f in range(2):
            f_seq, shape = _mutate(o_seq, 0.12, rng), SHAPES[2 * o + f]
            for g in range(2):
                g_seq, hue = _mutate(f_seq, 0.08, rng), (4 * o + 2 * f + g) / 12
                for s in range(3):
                    sp = f"Genus{o}{f}{g} species{s}"
                    s_seq = _mutate(g_seq, 0.04, rng)
                    looks[sp] = (shape, hue, 0.3 + 0.2 * s, 0.7 + 0.15 * s)
                    split = "heldout" if s == 2 else "train"
                    for ind in range(2):
                        rid = f"o{o}f{f}g{g}s{s}_{ind}"
                        rels = []
                        for k in range(photos // 2):
                            rel = f"images/{rid}_{k}.png"
                            (root / rel).parent.mkdir(parents=True, exist_ok=True)
                            _photo(*looks[sp], rng).save(root / rel)
                            rels.append(rel)
                        seq = "".join("ACGT"[c] for c in _mutate(s_seq, 0.005, rng))
                        taxonomy = ("Insecta", f"Order{o}", f"Family{o}{f}", f"Genus{o}{f}{g}", sp)
                        records.append(Record(rid, sp, rid, split, "living", seq, tuple(rels), taxonomy))
    return write_dataset(root, records, {"source": "test photos"}), looks


def fake_photos(ds, looks: dict, out: Path, kind: str, n: int = 3, seed: int = 7) -> Path:
    """A ``generate``-like directory of fresh photos: of each held-out target's own species
    (``right``) or of a random other species (``random``)."""
    rng = np.random.default_rng(seed)
    species = sorted(looks)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for rec in ds.records("heldout"):
        for k in range(n):
            sp = rec.species if kind == "right" else species[int(rng.integers(len(species)))]
            rel = f"images/{rec.record_id}_{k}.png"
            _photo(*looks[sp], rng).save(out / rel)
            rows.append((rec.record_id, k, rel))
    with open(out / "generated.tsv", "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["record_id", "k", "image"])
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The traitless dataset scored twice: right-species photos and random-species photos."""
    root = tmp_path_factory.mktemp("photos")
    ds, looks = photo_dataset(root / "data")
    cfg = EvaluateConfig(**FAST, splits=("heldout",))
    out = {}
    for kind in ("right", "random"):
        gen = fake_photos(ds, looks, root / f"gen_{kind}", kind)
        out[kind] = evaluate(ds.root, gen, root / f"eval_{kind}", cfg, progress=None)
    return {"root": root, "ds": ds, "looks": looks, **out}


def _rows(metrics: dict, split: str = "heldout") -> dict:
    return metrics["splits"][split]["photo"]["methods"]


def test_traitless_dataset_gets_photo_scores_only(photos):
    """A dataset without traits is scored: photo rows for every image method, no trait rows, schema 2."""
    m = json.loads((photos["root"] / "eval_right" / "metrics.json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION == 2
    assert m["probe"] is None and m["retrieval"] is None and m["headline"] is None
    assert m["splits"]["heldout"]["methods"] == {} and m["traits"] == {"continuous": [], "discrete": []}
    block = m["photo"]
    assert block["model"]["heads"] == {"species": 24, "genus": 12, "family": 6, "order": 3}
    assert block["retrieval"]["n_candidates"] == 36
    assert block["retrieval"]["chance_top5"] == pytest.approx(5 / 36)
    rows = _rows(m)
    assert list(rows) == list(PHOTO_METHODS)
    for row in rows.values():
        assert set(row) == set(PHOTO_ROW_KEYS)
    assert rows["mean_render"]["top1"] is None and "no traits" in rows["mean_render"]["note"]
    # every held-out species' genus, family and order has training species; its species has none
    assert m["splits"]["heldout"]["photo"]["taxon_targets"] == {
        "species": 0,
        "genus": 24,
        "family": 24,
        "order": 24,
    }
    assert (photos["root"] / "eval_right" / "photo" / "photo.safetensors").is_file()
    doc = SCHEMA_DOC.read_text()
    for key in [*PHOTO_ROW_KEYS, "taxon_targets", "n_reference_photos", "ranks_dropped", "top5_by_row"]:
        assert re.search(rf"`{key}[`\[]", doc), key


def test_right_species_photos_score_near_the_ceiling_random_near_chance(photos):
    """Photos of the target's own species rank it like the ceiling (its real photos), far above chance,
    are more similar to its barcode and agree on genus; random species' photos sit near chance."""
    right, rand = _rows(photos["right"]), _rows(photos["random"])
    chance5 = right["generated"]["chance_top5"]
    ceiling = right["truth"]
    assert ceiling["top5"] >= 0.5 and ceiling["top5"] >= 3.5 * chance5  # 0.99 here; 0.65 to 0.97 on seeds 1-3
    assert right["generated"]["top5"] >= ceiling["top5"] - 0.2
    assert right["generated"]["top5"] > right["random"]["top5"] + 0.3
    assert rand["generated"]["top5"] <= 2 * chance5 + 0.1
    assert right["generated"]["similarity"] > rand["generated"]["similarity"] + 0.2
    assert right["generated"]["taxon_agreement"]["genus"] >= 0.7
    assert rand["generated"]["taxon_agreement"]["genus"] <= 0.35
    assert right["generated"]["kid_mean"] < rand["generated"]["kid_mean"]
    assert right["nearest"]["taxon_agreement"]["genus"] >= 0.8  # a congener's photos: right genus
    printed = command.format_table(photos["right"])
    assert "photo scores" in printed and "no trait table" in printed


def test_toy_clade_reports_trait_and_photo_scores_that_agree(tmp_path):
    """On the synthetic toy clade both score families appear; across the image baselines a lower trait
    RMSE goes with a higher photo retrieval success (truth beats random on both, pooled over splits)."""
    ds = make_clade(tmp_path / "data")
    gen = fake_generated(ds, tmp_path / "gen", "truth")
    m = evaluate(ds.root, gen, tmp_path / "eval", EvaluateConfig(**FAST), progress=None)
    methods = ("generated", "nearest", "random", "truth")
    sq = dict.fromkeys(methods, 0.0)  # image-weighted sums over splits
    hits, sim, n = dict(sq), dict(sq), dict(sq)
    for split, block in m["splits"].items():
        assert block["methods"]["generated"]["trait_rmse"] is not None, split
        for method in methods:
            trait, photo = block["methods"][method], block["photo"]["methods"][method]
            assert photo["n_images"] == trait["n_images"], (split, method)
            w = trait["n_images"]
            sq[method] += w * trait["trait_rmse"] ** 2
            hits[method] += w * photo["top5"]
            sim[method] += w * photo["similarity"]
            n[method] += w
    rmse = {k: np.sqrt(sq[k] / n[k]) for k in methods}
    top5 = {k: hits[k] / n[k] for k in methods}
    assert rmse["truth"] < rmse["random"] and top5["truth"] > top5["random"]
    assert rmse["generated"] < rmse["random"] and top5["generated"] > top5["random"]
    assert sim["truth"] / n["truth"] > sim["random"] / n["random"] + 0.2
    from scipy.stats import spearmanr

    # random is last on both axes, so with 4 methods rho >= 0.2 whatever the order of the other three
    rho = spearmanr([-rmse[k] for k in methods], [top5[k] for k in methods]).statistic
    assert rho > 0, (rmse, top5)
    assert "photo scores" in command.format_table(m) and "trait RMSE" in command.format_table(m)


def test_bad_photo_inputs_are_one_clear_line(photos, tmp_path, capsys):
    """`phenogen evaluate` on a dataset whose training records have no photos, or on a traitless dataset
    with the photo scores turned off: one line each, exit 2, before any model is trained."""
    ds = photos["ds"]
    bare = [
        Record(r.record_id, r.species, r.individual, r.split, r.node_kind, r.sequence,
               r.images if r.split != "train" else (), r.taxonomy)
        for r in ds.records()
    ]  # fmt: skip
    data = tmp_path / "data"
    for r in bare:
        for rel in r.images:
            (data / rel).parent.mkdir(parents=True, exist_ok=True)
            (data / rel).write_bytes((ds.root / rel).read_bytes())
    write_dataset(data, bare, {"source": "test photos"})
    gen = str(photos["root"] / "gen_right")
    for argv, message in [
        (["--data", str(data)], "photos of at least two training species (found 0)"),
        (
            ["--data", str(ds.root), "--set", "evaluate.photo=false"],
            "declares no traits and evaluate.photo = false",
        ),
    ]:
        code = main(["evaluate", *argv, "--generated", gen, "--out", str(tmp_path / "eval")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        assert message in err[0]
        assert not (tmp_path / "eval" / "metrics.json").exists()


def test_report_of_a_traitless_evaluation_shows_the_photo_scores(photos, tmp_path):
    """``phenogen report --run EVAL`` of a dataset without traits: the photo headline and tables, the
    generated images beside the real photos, no trait section pretending to be empty."""
    import shutil

    from phenogen.report.html import build_report

    root = photos["root"]
    run = tmp_path / "eval"
    shutil.copytree(root / "eval_right", run)
    (run / "config.json").write_text(
        json.dumps({"evaluate": {}, "data": str(photos["ds"].root), "generated": str(root / "gen_right")})
    )
    page = build_report(run, tmp_path / "r.html").read_text()
    for text in ("Photo scores", "photo top-1 / 5 / 100, generated", "top-100", "similarity", "genus"):
        assert text in page, text
    assert "evaluation: not run" not in page and "Trait probe" not in page
    right = _rows(photos["right"])["generated"]["top5"]
    assert f"{100 * right:.0f}%" in page

"""Evaluation against ground truth: probe, baselines, retrieval, FID/KID, metrics.json, the command."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from toy_clade import coalescent_tree, fake_generated, make_clade

from phenogen.cli import add_common_arguments
from phenogen.errors import CheckpointError, DataError, InputError
from phenogen.evaluate import baselines, command
from phenogen.evaluate.config import METHODS, EvaluateConfig
from phenogen.evaluate.metrics import ROW_KEYS, SCHEMA_VERSION, evaluate
from phenogen.evaluate.probe import ProbeSpec, TraitProbe, load_probe, predict, save_probe
from phenogen.evaluate.retrieval import kmer_profile, rank_by_traits, rank_species, success_rates
from phenogen.evaluate.steps import redraw_se, rmse_text
from phenogen.evaluate.targets import match_targets, read_generated, read_painted

torch.set_num_threads(2)
SCHEMA_DOC = Path(__file__).resolve().parents[1] / "docs" / "metrics_schema.md"
FAST = dict(
    probe_image_size=32,
    probe_width=16,
    probe_epochs=25,
    retrieval_epochs=150,
    kid_subsets=5,
    random_repeats=3,
    plots=False,
)


@pytest.fixture(scope="module")
def clade(tmp_path_factory):
    """Toy clade, a truth-returning and a noise-returning "generator", and both evaluations."""
    root = tmp_path_factory.mktemp("clade")
    ds = make_clade(root / "data")
    truth_dir = fake_generated(ds, root / "gen_truth", "truth")
    noise_dir = fake_generated(ds, root / "gen_noise", "noise")
    m_truth = evaluate(ds.root, truth_dir, root / "eval_truth", EvaluateConfig(**FAST), progress=None)
    probe_dir = str(root / "eval_truth" / "probe")
    m_noise = evaluate(
        ds.root, noise_dir, root / "eval_noise", EvaluateConfig(**FAST, probe_dir=probe_dir), progress=None
    )
    return {"root": root, "ds": ds, "truth": m_truth, "noise": m_noise, "probe_dir": probe_dir}


def _pooled(metrics: dict, method: str) -> float:
    """Trait RMSE over every scored split, weighted by image count."""
    num = den = 0.0
    for block in metrics["splits"].values():
        row = block["methods"][method]
        num += row["trait_rmse"] ** 2 * row["n_images"]
        den += row["n_images"]
    return float(np.sqrt(num / den))


def test_truth_generator_scores_near_truth(clade):
    """A "generator" returning true renders scores like the truth row and far better than random."""
    for split, block in clade["truth"]["splits"].items():
        rows = block["methods"]
        gen, truth, rand = (
            rows["generated"]["trait_rmse"],
            rows["truth"]["trait_rmse"],
            rows["random"]["trait_rmse"],
        )
        assert abs(gen - truth) <= 0.1 + 0.15 * truth, split
        assert gen < 0.8 * rand, split
        assert rows["generated"]["fid"] < rows["random"]["fid"], split
    assert _pooled(clade["truth"], "generated") < _pooled(clade["truth"], "mean")


def test_noise_generator_scores_near_or_below_random(clade):
    """Noise images score no better than the DNA-blind baselines: near random, far from truth."""
    m = clade["noise"]
    assert _pooled(m, "generated") > 0.75 * _pooled(m, "random")
    assert _pooled(m, "generated") > _pooled(m, "truth") + 0.15
    for split, block in m["splits"].items():
        rows = block["methods"]
        assert rows["generated"]["fid"] > 5 * rows["truth"]["fid"], split
        assert rows["generated"]["top5"] <= max(2.5 * rows["generated"]["chance_top5"], 0.2), split
    assert m["probe"]["loaded_from"] == clade["probe_dir"]


def test_rendered_mean_and_oracle_rows_on_a_simulated_clade(tmp_path, clade):
    """On a phenogen synthetic clade the mean and oracle vectors are drawn by its renderer and read by the
    probe as every image row is: pictures on disk, as many per target as generated, the oracle's closer to
    the truth than the mean's, the targets' own photos closer than both. A clade the renderer did not draw
    gets empty rows that say why."""
    import shutil

    from phenogen.sim.clade import simulate_clade
    from phenogen.sim.config import SimConfig

    ds = simulate_clade(SimConfig(n_living=14, death_rate=0.5, image_size=32, photos_per_individual=2,
                                  ancestor_photos=2, seed=1), tmp_path / "data", progress=False)  # fmt: skip
    gen = tmp_path / "gen"
    (gen / "images").mkdir(parents=True)
    rows = []
    for rec in ds.records(("heldout", "extinct", "ancestor")):
        for k, rel in enumerate(
            rec.images[:2]
        ):  # the targets' own photos: a "generator" that knows the truth
            shutil.copy(ds.root / rel, gen / "images" / f"{rec.record_id}_{k}.png")
            rows.append(f"{rec.record_id}\t{k}\timages/{rec.record_id}_{k}.png")
    (gen / "generated.tsv").write_text("record_id\tk\timage\n" + "\n".join(rows) + "\n")
    m = evaluate(ds.root, gen, tmp_path / "eval", EvaluateConfig(**{**FAST, "probe_epochs": 12}, retrieval=False, fid=False),
                 progress=None)  # fmt: skip
    drawn = sorted((tmp_path / "eval" / "baselines" / "oracle_render").glob("*.png"))
    assert drawn and len(drawn) == sum(b["n_images"] for b in m["splits"].values())
    for split, block in m["splits"].items():
        rows_ = block["methods"]
        for method in ("mean_render", "oracle_render"):
            assert rows_[method]["n_images"] == rows_["generated"]["n_images"], (split, method)
            assert rows_[method]["trait_rmse_se"] is not None
    assert _pooled(m, "oracle_render") < _pooled(m, "mean_render")
    assert _pooled(m, "generated") < _pooled(m, "oracle_render")  # the truth's own photos beat any prediction
    toy = clade["truth"]["splits"]["heldout"]["methods"]["oracle_render"]
    assert toy["trait_rmse"] is None and "synthetic clade" in toy["note"]


def test_metrics_json_matches_schema(clade):
    """metrics.json has every documented key, all methods per split, strict JSON, and the doc names them."""
    path = clade["root"] / "eval_truth" / "metrics.json"
    m = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert m["schema_version"] == SCHEMA_VERSION == 2
    top = {
        "dataset",
        "generated",
        "traits",
        "standardization",
        "methods",
        "probe",
        "retrieval",
        "identification",
        "splits",
    }
    assert top | {"headline", "sequence", "config", "timing"} <= set(m)
    assert m["methods"] == list(METHODS)
    assert set(m["splits"]) == {"heldout", "extinct", "ancestor"}
    for block in m["splits"].values():
        assert list(block["methods"]) == list(METHODS)
        for row in block["methods"].values():
            assert set(row) == set(ROW_KEYS)
        assert block["methods"]["oracle"]["trait_rmse"] is not None
        assert block["methods"]["mean"]["top1"] is None
    assert set(m["probe"]["r2"]["heldout"]) == set(m["traits"]["continuous"]) | set(m["traits"]["discrete"])
    doc = SCHEMA_DOC.read_text()
    for key in [*ROW_KEYS, *(top - {"methods"}), "r2_clade", "ratio_to_random", "top5_over_chance"]:
        assert re.search(rf"`{key}[`\[]", doc), key
    tsv = (clade["root"] / "eval_truth" / "targets.tsv").read_text().splitlines()
    assert len(tsv) == 1 + sum(b["n_targets"] for b in m["splits"].values())


def test_redraw_se_matches_the_spread_of_redrawn_images():
    """The standard error from one draw predicts how much the RMSE moves when the images are redrawn."""
    rng = np.random.default_rng(0)
    n_targets, per_target = 16, 4
    centre = rng.normal(0.0, 0.6, (n_targets, 12))  # each target's systematic error
    target = np.repeat(np.arange(n_targets), per_target)

    def draw() -> np.ndarray:  # per-image MSE over 12 traits: systematic + image noise of sd 0.5
        return np.mean((centre[target] + rng.normal(0.0, 0.5, (len(target), 12))) ** 2, axis=1)

    draws = [draw() for _ in range(2000)]
    spread = float(np.std([np.sqrt(d.mean()) for d in draws]))
    predicted = float(np.mean([redraw_se(d, target) for d in draws[:200]]))
    assert 0.85 < predicted / spread < 1.15, (predicted, spread)
    assert redraw_se(draws[0], np.arange(len(target))) is None  # one image per target: unknown
    assert redraw_se(np.zeros(4), np.array([0, 0, 1, 1])) is None


def test_image_rows_carry_their_standard_error(clade):
    """Image rows report ± from redrawing; vectors have none; the printed table shows it."""
    for block in clade["truth"]["splits"].values():
        rows = block["methods"]
        for m in ("generated", "nearest", "random", "truth"):
            se = rows[m]["trait_rmse_se"]
            assert se is not None and 0.0 < se < 0.5 * rows[m]["trait_rmse"], m
        assert rows["mean"]["trait_rmse_se"] is None and rows["oracle"]["trait_rmse_se"] is None
    row = clade["truth"]["splits"]["heldout"]["methods"]["generated"]
    assert rmse_text(row) in command.format_table(clade["truth"])
    assert rmse_text(row) == f"{row['trait_rmse']:.3f} ± {row['trait_rmse_se']:.3f}"


def test_retrieval_truth_beats_chance_on_ancestors(clade):
    """The retrieval model trained on training pairs finds ancestors' species well above chance."""
    row = clade["truth"]["splits"]["ancestor"]["methods"]["truth"]
    assert row["top5"] >= 2 * row["chance_top5"]
    assert clade["truth"]["retrieval"]["n_candidates"] == len(clade["ds"].species())


def test_identification_by_traits_separates_true_renders_from_noise(clade):
    """top1_traits: true renders of extinct species and ancestors are named from the trait table far above
    chance, noise images are not; the toy clade's held-out species sit among near-identical relatives, so
    there only the range is checked."""
    truth, noise = clade["truth"], clade["noise"]
    block = truth["identification"]
    assert block["note"] is None and block["n_candidates"] == len(clade["ds"].species())
    chance = 1 / block["n_candidates"]
    for split in ("extinct", "ancestor"):
        rows = truth["splits"][split]["methods"]
        assert rows["truth"]["top1_traits"] >= 4 * chance, split
        assert rows["generated"]["top1_traits"] >= 4 * chance, split
        assert rows["random"]["top1_traits"] <= 2.5 * chance, split
        assert noise["splits"][split]["methods"]["generated"]["top1_traits"] <= 2 * chance, split
    for rows in (b["methods"] for b in truth["splits"].values()):
        for m in ("generated", "mean", "oracle", "truth"):
            assert 0.0 <= rows[m]["top1_traits"] <= rows[m]["top5_traits"] <= 1.0, m
    assert (
        truth["headline"]["top1_traits"]["truth"]
        == truth["splits"]["heldout"]["methods"]["truth"]["top1_traits"]
    )


def test_targets_table_names_each_targets_portraits(clade):
    """targets.tsv: per target the species its portraits are most often nearest to, and how many are nearest to
    its own species — the per-split sums of the latter give the generated row's top1_traits."""
    import csv

    path = clade["root"] / "eval_truth" / "targets.tsv"
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter="\t"))
    species = set(clade["ds"].species())
    for split, block in clade["truth"]["splits"].items():
        mine = [r for r in rows if r["split"] == split]
        assert mine and all(r["named_as"] in species for r in mine), split
        own, n = zip(*(map(int, r["named_own"].split("/")) for r in mine), strict=True)
        assert all(k <= m == int(r["n_images"]) for k, m, r in zip(own, n, mine, strict=True))
        assert sum(own) / sum(n) == pytest.approx(block["methods"]["generated"]["top1_traits"]), split
        assert all(k >= 1 for k, r in zip(own, mine, strict=True) if r["named_as"] == r["species"]), split


def test_rank_by_traits_counts_ties_against_the_reading():
    """Rank 1 only when strictly nearest; a tie or a nearer candidate pushes the rank down."""
    cands = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    readings = np.array([[0.1, 0.0], [0.5, 0.0], [0.9, 0.0], [0.0, 2.0]])
    assert rank_by_traits(readings, cands, [0, 0, 0, 2]).tolist() == [1, 2, 2, 1]
    assert rank_by_traits(np.zeros((0, 2)), cands, []).shape == (0,)


def _bm_clade(tmp_path, seed: int, n_traits: int = 100):
    """A coalescent tree with BM trait values at every node: (tree path, values (nodes, traits))."""
    rng = np.random.default_rng(seed)
    parent, branch, root_i = coalescent_tree(40, rng)
    children: dict[int, list[int]] = {}
    for i, p in enumerate(parent):
        if p >= 0:
            children.setdefault(p, []).append(i)

    def newick(i: int) -> str:
        label = f"t{i}" + (f":{branch[i]:.6f}" if i != root_i else "")
        return label if i not in children else "(" + ",".join(newick(c) for c in children[i]) + ")" + label

    tree = tmp_path / f"tree{seed}.nwk"
    tree.write_text(newick(root_i) + ";\n")
    values = np.zeros((len(parent), n_traits))
    for i in sorted(range(len(parent)), reverse=True):
        if i != root_i:
            values[i] = values[parent[i]] + rng.normal(0, np.sqrt(branch[i]), n_traits)
    return tree, values, rng


def test_oracle_beats_random_and_mean_under_brownian_motion(tmp_path):
    """On a tree where traits evolve by BM, the conditional mean beats the mean and a random species."""
    tree, values, rng = _bm_clade(tmp_path, 3, n_traits=200)
    known = {f"t{i}": values[i] for i in range(30)}
    targets = [f"t{i}" for i in range(30, 40)] + [f"t{i}" for i in range(40, 60)]
    pred = baselines.bm_conditional_mean(tree, known, targets)
    truth = np.stack([values[int(t[1:])] for t in targets])
    oracle = np.sqrt(np.mean((np.stack([pred[t] for t in targets]) - truth) ** 2))
    mean = np.sqrt(np.mean((np.mean(list(known.values()), axis=0) - truth) ** 2))
    random = np.sqrt(np.mean((np.stack([known[f"t{rng.integers(30)}"] for _ in targets]) - truth) ** 2))
    assert oracle < 0.9 * mean < 0.9 * random


def test_tip_noise_chosen_by_leave_one_out_helps_with_noisy_tips(tmp_path):
    """Known tips measured with error: leave-one-out (no truth) picks a tip noise > 0, and the prediction of
    unseen tips with it is closer to the truth than treating the noisy tips as exact; exact tips pick ~0."""
    tree, values, rng = _bm_clade(tmp_path, 5)
    targets = [f"t{i}" for i in range(30, 40)]
    truth = np.stack([values[int(t[1:])] for t in targets])
    scale = float(np.mean([values[i].var() for i in range(30)]))
    noisy = {f"t{i}": values[i] + rng.normal(0, np.sqrt(0.5 * scale), values.shape[1]) for i in range(30)}
    best, table = baselines.loo_tip_noise(tree, noisy)
    assert best > 0.0 and table[best] < table[0.0]

    def err(known, noise):
        pred = baselines.bm_conditional_mean(tree, known, targets, tip_noise=noise)
        return float(np.sqrt(np.mean((np.stack([pred[t] for t in targets]) - truth) ** 2)))

    assert err(noisy, best) < 0.95 * err(noisy, 0.0)
    exact = {f"t{i}": values[i] for i in range(30)}
    best_exact, _ = baselines.loo_tip_noise(tree, exact)
    assert best_exact <= 0.02 and err(exact, best_exact) <= err(noisy, best)
    with pytest.raises(DataError, match="at least 3"):
        baselines.loo_tip_noise(tree, {"t0": values[0], "t1": values[1]})
    with pytest.raises(DataError, match="tip_noise"):
        baselines.bm_conditional_mean(tree, exact, targets, tip_noise=-0.1)


def test_oracle_reproduces_known_tips(tmp_path):
    """Conditioning on a tip and asking for that tip returns its value (up to the tiny nugget)."""
    tree = tmp_path / "t.nwk"
    tree.write_text("((a:1,b:1)x:1,c:2)root;\n")
    known = {"a": np.array([1.0, 2.0]), "b": np.array([3.0, 0.0]), "c": np.array([-1.0, 1.0])}
    pred = baselines.bm_conditional_mean(tree, known, ["a", "x", "root", "missing"])
    assert np.allclose(pred["a"], known["a"], atol=1e-4)
    assert "missing" not in pred
    assert np.all(pred["x"] != pred["root"])
    with pytest.raises(DataError, match="not in the tree"):
        baselines.tree_covariance(tree, ["nope"])


def test_nearest_by_barcode_hamming_and_alignment_agree():
    """Both identity modes pick the closest reference; alignment copes with an indel."""
    rng = np.random.default_rng(0)
    base = "".join(rng.choice(list("ACGT"), 120))
    refs = []
    for n_mut in (30, 3, 12):
        s = list(base)
        for pos in rng.choice(120, n_mut, replace=False):
            s[pos] = "ACGT"[("ACGT".index(s[pos]) + 1) % 4]
        refs.append("".join(s))
    assert baselines.nearest_by_barcode([base], refs, mode="hamming")[0][0] == 1
    assert baselines.nearest_by_barcode([base[:50] + base[51:]], refs, mode="auto")[0][0] == 1
    assert baselines.nearest_by_barcode([base], refs, mode="align")[0] == (1, pytest.approx(117 / 120))
    with pytest.raises(DataError, match="equal-length"):
        baselines.hamming_identity(["ACGT"], ["ACG"])


def test_sample_paths_same_count_without_early_repeats():
    """Image baselines draw exactly n items, each pool item once before any repeats."""
    rng = np.random.default_rng(0)
    draw = baselines.sample_paths(["a", "b", "c"], 7, rng)
    assert len(draw) == 7 and sorted(draw[:3]) == ["a", "b", "c"] and sorted(draw[3:6]) == ["a", "b", "c"]
    with pytest.raises(DataError):
        baselines.sample_paths([], 2, rng)


def test_probe_save_load_round_trip(tmp_path):
    """A saved probe loads with identical predictions; a half-written directory is a CheckpointError."""
    spec = ProbeSpec(["a", "b"], ["c"], [0.5, -1.0], [2.0, 1.0], image_size=16, width=8, features=8)
    probe = TraitProbe(spec).eval()
    images = torch.randint(0, 256, (5, 3, 24, 24), dtype=torch.uint8)
    save_probe(probe, tmp_path / "p", {"loss": [1.0]})
    again = load_probe(tmp_path / "p")
    assert again.spec == spec
    np.testing.assert_allclose(predict(again, images), predict(probe, images))
    assert spec.standardize(np.array([[2.5, 0.0, 1.0]])).tolist() == [[1.0, 1.0, 1.0]]
    (tmp_path / "p" / "probe.safetensors").unlink()
    with pytest.raises(CheckpointError, match="probe.safetensors"):
        load_probe(tmp_path / "p")


def test_retrieval_ranks_and_rates():
    """Ranks count ties against the image; success rates and chance follow the definitions."""
    dna = torch.eye(3)
    images = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0.5, 0.5, 0]])
    ranks = rank_species(images, dna, [0, 1, 1])
    assert ranks.tolist() == [1, 3, 2]
    rates = success_rates(ranks, 3)
    assert rates["top1"] == pytest.approx(1 / 3) and rates["top5"] == 1.0 and rates["chance_top5"] == 1.0
    assert kmer_profile("ACGNNACG", k=3).sum() == pytest.approx(1.0)


def test_read_generated_errors(tmp_path, clade):
    """Missing table, missing image and unknown record ids give specific errors."""
    with pytest.raises(InputError, match="no generated.tsv"):
        read_generated(tmp_path)
    (tmp_path / "generated.tsv").write_text("record_id\tk\timage\nsp_001_1\t0\timages/gone.png\n")
    with pytest.raises(DataError, match=r"row 2, field image: image images/gone.png does not exist"):
        read_generated(tmp_path)
    outside = tmp_path.parent / "outside.png"
    outside.write_bytes(b"not even an image")
    for bad in ("../outside.png", str(outside)):
        (tmp_path / "generated.tsv").write_text(f"record_id\tk\timage\nsp_001_1\t0\t{bad}\n")
        with pytest.raises(DataError, match="row 2, field image"):
            read_generated(tmp_path)
    (tmp_path / "generated.tsv").write_bytes(b"record_id\tk\timage\n\xff\t0\tx.png\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_generated(tmp_path)
    (tmp_path / "x.png").write_bytes(
        (clade["root"] / "gen_truth" / "images").glob("*.png").__next__().read_bytes()
    )
    (tmp_path / "generated.tsv").write_text("record_id\tk\timage\nnot_a_record\t0\tx.png\n")
    with pytest.raises(DataError, match="not_a_record"):
        evaluate(clade["ds"].root, tmp_path, tmp_path / "out", EvaluateConfig(**FAST), progress=None)


def test_painted_barcodes_replace_the_records_own_for_barcode_baselines(clade, tmp_path):
    """sequences.fasta beside generated.tsv (a reconstructed ancestor) becomes the target's barcode."""
    ds = clade["ds"]
    anc = ds.records("ancestor")[0]
    img = next((clade["root"] / "gen_truth" / "images").glob("*.png"))
    (tmp_path / "a.png").write_bytes(img.read_bytes())
    (tmp_path / "generated.tsv").write_text(f"record_id\tk\timage\n{anc.record_id}\t0\ta.png\n")
    assert read_painted(tmp_path) == {}
    other = anc.sequence[::-1]
    (tmp_path / "sequences.fasta").write_text(f">{anc.record_id}\n{other}\n")
    targets = match_targets(ds, read_generated(tmp_path), ("ancestor",), read_painted(tmp_path))
    assert targets["ancestor"][0].painted == other != anc.sequence
    plain = match_targets(ds, read_generated(tmp_path), ("ancestor",))
    assert plain["ancestor"][0].painted == anc.sequence


def test_evaluate_command_writes_metrics_and_config(clade, tmp_path, capsys):
    """`phenogen evaluate` with a reused probe, no retrieval/FID: metrics.json, config.json, a table."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    add_common_arguments(parser)
    out = tmp_path / "eval"
    args = parser.parse_args(
        [
            "--data",
            str(clade["ds"].root),
            "--generated",
            str(clade["root"] / "gen_truth"),
            "--out",
            str(out),
            "--probe",
            clade["probe_dir"],
            "--set",
            "evaluate.retrieval=false",
            "--set",
            "evaluate.fid=false",
            "--set",
            "evaluate.probe_image_size=32",
        ]
    )
    assert command.run(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"heldout: \d+ targets", printed) and "oracle" in printed
    m = json.loads((out / "metrics.json").read_text())
    assert m["retrieval"] is None and m["splits"]["heldout"]["methods"]["generated"]["fid"] is None
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["evaluate"]["retrieval"] is False and cfg["evaluate"]["probe_dir"] == clade["probe_dir"]
    with pytest.raises(InputError, match="--generated DIR"):
        command.run(parser.parse_args(["--data", str(clade["ds"].root), "--out", str(out)]))


def test_config_validation():
    """Bad [evaluate] values are refused with the field's name."""
    with pytest.raises(ValueError, match="probe_epochs"):
        EvaluateConfig(probe_epochs=0)
    with pytest.raises(ValueError, match="splits"):
        EvaluateConfig(splits=("future",))


def test_prior_renders_shapes_and_traits():
    """Prior renders come with their own trait vectors, resized to the probe's input size."""
    from phenogen.evaluate.probe import prior_renders
    from phenogen.sim.traitspec import CONTINUOUS, DISCRETE

    images, traits = prior_renders(CONTINUOUS, DISCRETE, 3, 64, np.random.default_rng(0), out_size=32)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.uint8
    assert traits.shape == (3, len(CONTINUOUS) + len(DISCRETE))
    assert set(np.unique(traits[:, len(CONTINUOUS) :])) <= {0.0, 1.0}
    assert images[0].float().std() > 5  # a picture, not a blank frame


def test_caption_readout_reports_how_well_the_written_caption_tracks_the_truth(tmp_path):
    """A generator with the caption head gets a read-out: per split, Pearson r between the value each
    barcode writes and the true trait. A conditioner fitted to write trait `a` scores r ~ 1 on it; an
    untrained one writes the same caption for every barcode (r undefined → null); a generator without
    the caption head (or without a model path) gets none."""
    from phenogen.data.dataset import Record
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.prior import CaptionEncoder
    from phenogen.evaluate.metrics import caption_readout
    from phenogen.evaluate.targets import Target

    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 48)) for _ in range(8)]
    values = rng.normal(size=8)
    records = [
        Record(f"r{i}", f"s{i}", f"r{i}", "heldout", "living", s, traits={"a": float(v), "b": 0.0, "c": 1.0})
        for i, (s, v) in enumerate(zip(seqs, values, strict=True))
    ]
    targets = {"heldout": [Target(r, []) for r in records]}
    CaptionEncoder(n_traits=2, dim=8, traits=("a", "c")).save_pretrained(tmp_path / "cap")
    cond = build_conditioner(
        "kmer", 8, kmer_k=2, kmer_segments=2, head="caption", caption_encoder=tmp_path / "cap"
    )
    model, gen = tmp_path / "model", tmp_path / "gen"
    gen.mkdir()
    (gen / "config.json").write_text(json.dumps({"model": str(model)}))
    cond.save_pretrained(model / "conditioner", safe_serialization=True)
    untrained = caption_readout(targets, gen, ["a", "b", "c"])
    assert untrained["traits"] == ["a", "c"] and untrained["splits"]["heldout"]["per_trait_r"]["a"] is None

    feats, mask = cond.featurize(seqs)
    target = torch.tensor(values, dtype=torch.float32)
    opt = torch.optim.Adam(cond.trainable_parameters(), lr=2e-2)
    for _ in range(200):
        loss = (cond.caption_values(feats, mask)[:, 0] - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    cond.eval().save_pretrained(model / "conditioner", safe_serialization=True)
    block = caption_readout(targets, gen, ["a", "b", "c"])["splits"]["heldout"]
    assert block["n_targets"] == 8 and block["per_trait_r"]["a"] > 0.95 and block["n_given"] == 0
    assert block["per_trait_r"]["c"] is None  # the true trait is constant
    # targets painted from given captions (generate --captions) are read with those captions
    lines = ["record_id\ta\tc"] + [f"r{i}\t{-v}\t0" for i, v in enumerate(values[:6])]
    (gen / "captions.tsv").write_text("\n".join(lines) + "\n")
    block = caption_readout(targets, gen, ["a", "b", "c"])["splits"]["heldout"]
    assert block["n_given"] == 6 and block["per_trait_r"]["a"] < 0

    tokens = build_conditioner("kmer", 8, kmer_k=2, kmer_segments=2)
    tokens.save_pretrained(model / "conditioner", safe_serialization=True)
    assert caption_readout(targets, gen, ["a"]) is None
    (gen / "config.json").write_text("{}")
    assert caption_readout(targets, gen, ["a"]) is None

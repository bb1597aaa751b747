"""The synthetic clade: tree, barcodes, traits, splits, the written dataset and the simulate command."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import dendropy
import numpy as np
import pytest
from PIL import Image

from phenogen.cli import main
from phenogen.config import load_sections
from phenogen.data.dataset import load_dataset
from phenogen.dna.codons import has_internal_stop, translate
from phenogen.dna.seqio import read_fasta
from phenogen.errors import ConfigError
from phenogen.sim.clade import build_truth, simulate_clade
from phenogen.sim.config import SimConfig
from phenogen.sim.sequences import (
    COI_BARCODE_PROTEIN,
    SENSE_CODONS,
    CodonModel,
    decode,
    pairwise_identity,
    root_codons,
)
from phenogen.sim.traits import evolve_traits
from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES
from phenogen.sim.tree import choose_heldout_clades, cut_labels, simulate_tree

# death_rate 0.5: a small clade with a few extinct species (seed 0 gives 1; seed 1 gives 9).
SMALL = dict(n_living=12, death_rate=0.5, image_size=32, photos_per_individual=1, ancestor_photos=1)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_clade(tmp_path_factory):
    root = tmp_path_factory.mktemp("clade") / "a"
    return simulate_clade(SimConfig(**SMALL), root, progress=False)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sim.seq_length=658", "multiple of 3"),
        ("sim.death_rate=1.5", "death_rate"),
        ("sim.n_clades=20", "n_clades <= n_genera"),
        ("sim.image_size=8", "image_size"),
        ("sim.trait_model='levy'", "trait_model"),
        ("sim.codon_position_rates=[1.0, 0.0, 2.0]", "codon_position_rates"),
    ],
)
def test_bad_sim_config_is_a_config_error(override, message):
    """Invalid [sim] values are rejected with a message naming the field."""
    with pytest.raises(ConfigError, match=message):
        load_sections({"sim": SimConfig}, overrides=[override])


# --- tree ---------------------------------------------------------------------------------------


def test_tree_keeps_dated_extinct_tips_and_names_every_node():
    """Extinct tips die before the present, living tips reach it, names are stable and unique."""
    tree = simulate_tree(20, 1.0, 0.5, 2.0, np.random.default_rng(3), min_species_age=0.05)
    names = [n.name for n in tree.nodes]
    assert len(set(names)) == len(names)
    assert tree.nodes[0].name == "n000" and tree.nodes[0].parent == -1
    assert [tree.nodes[i].name for i in tree.living()] == [f"sp_{k:03d}" for k in range(1, 21)]
    assert len(tree.extinct()) >= 1
    assert all(tree.nodes[i].depth == pytest.approx(2.0) for i in tree.living())
    assert all(tree.nodes[i].depth < 2.0 - 1e-9 for i in tree.extinct())
    assert all(len(tree.nodes[i].children) == 2 for i in tree.internal())
    assert len(tree.internal()) == len(tree.tips()) - 1
    assert min(tree.nodes[i].branch for i in tree.living()) >= 0.05 * 2.0 - 1e-9


def test_newick_round_trips_through_dendropy():
    """The full tree keeps extinct tips and internal labels; the living tree is ultrametric."""
    tree = simulate_tree(15, 1.0, 0.4, 1.0, np.random.default_rng(1))
    full = dendropy.Tree.get(data=tree.to_newick(), schema="newick", preserve_underscores=True)
    assert len(full.leaf_nodes()) == len(tree.tips())
    assert {n.label for n in full.internal_nodes()} == {tree.nodes[i].name for i in tree.internal()}
    living = dendropy.Tree.get(
        data=tree.to_newick(living_only=True), schema="newick", preserve_underscores=True
    )
    leaves = sorted(leaf.taxon.label for leaf in living.leaf_nodes())
    assert leaves == sorted(tree.nodes[i].name for i in tree.living())
    depths = [leaf.distance_from_root() for leaf in living.leaf_nodes()]
    assert max(depths) - min(depths) < 1e-4


def test_tree_is_deterministic_per_seed():
    """Same generator seed, same Newick; another seed, another tree."""
    a = simulate_tree(10, 1.0, 0.3, 1.0, np.random.default_rng(7)).to_newick()
    b = simulate_tree(10, 1.0, 0.3, 1.0, np.random.default_rng(7)).to_newick()
    c = simulate_tree(10, 1.0, 0.3, 1.0, np.random.default_rng(8)).to_newick()
    assert a == b and a != c


def test_heldout_clades_are_whole_disjoint_subtrees():
    """Held-out nodes cover about the requested fraction, as non-overlapping clades of >= 2 species."""
    tree = simulate_tree(40, 1.0, 0.25, 1.0, np.random.default_rng(2))
    roots = choose_heldout_clades(tree, 0.2, np.random.default_rng(0))
    groups = [set(tree.living_descendants(r)) for r in roots]
    assert all(len(g) >= 2 for g in groups)
    assert sum(len(g) for g in groups) == len(set().union(*groups)) == 8
    labels = cut_labels(tree, 5, "clade_")
    assert len({labels[i] for i in tree.living()}) == 5


def test_heldout_species_are_scattered_single_tips():
    """unit='species' holds out single living tips (8 of 40), deterministic per seed, spread over clades."""
    tree = simulate_tree(40, 1.0, 0.25, 1.0, np.random.default_rng(2))
    roots = choose_heldout_clades(tree, 0.2, np.random.default_rng(0), unit="species")
    assert roots == choose_heldout_clades(tree, 0.2, np.random.default_rng(0), unit="species")
    assert len(set(roots)) == 8 and set(roots) <= set(tree.living())
    labels = cut_labels(tree, 5, "clade_")
    assert len({labels[i] for i in roots}) >= 3  # not one clade


# --- barcodes -----------------------------------------------------------------------------------


def test_codon_model_is_a_proper_markov_chain():
    """Rows of P(t) sum to 1, P(0) = I, pi is stationary, one substitution per site per unit length."""
    model = CodonModel.build(
        kappa=10.0, omega=0.05, position_rates=(1.0, 0.5, 2.0), gamma_shape=0.5, gamma_categories=4
    )
    assert len(SENSE_CODONS) == 60 and not {"TAA", "TAG", "AGA", "AGG"} & set(SENSE_CODONS)
    assert model.rate_per_site() == pytest.approx(1.0)
    assert model.rates.mean() == pytest.approx(1.0) and model.rates[0] < 0.2
    p = model.transition(0.3)
    assert p.shape == (4, 60, 60)
    np.testing.assert_allclose(p.sum(axis=2), 1.0, atol=1e-9)
    np.testing.assert_allclose(model.pi @ p[2], model.pi, atol=1e-8)
    np.testing.assert_allclose(model.transition(0.0)[0], np.eye(60), atol=1e-8)


def test_root_is_the_coi_barcode_protein_without_stops():
    """The root back-translates the bird COI barcode protein, an ORF under NCBI table 2."""
    seq = decode(root_codons(219, np.random.default_rng(0)))
    assert len(seq) == 657 and not has_internal_stop(seq, table=2)
    assert translate(seq, table=2) == COI_BARCODE_PROTEIN


def test_every_sequence_is_an_open_reading_frame(small_clade):
    """Root, internal nodes, extinct and living individuals: 657 bp, no stop codon under table 2."""
    records = small_clade.records()
    assert {r.node_kind for r in records} == {"living", "extinct", "internal"}
    for record in records:
        assert len(record.sequence) == 657, record.record_id
        assert not has_internal_stop(record.sequence, table=2), record.record_id
        assert "*" not in translate(record.sequence, table=2), record.record_id
    truth = read_fasta(small_clade.root / "truth" / "species.fasta")
    assert all(not has_internal_stop(r.sequence) for r in truth.records)


def test_within_species_identity_exceeds_between_species(small_clade):
    """Individuals of a species are more alike than any two species, as real barcodes are."""
    living = small_clade.records(("train", "heldout"))
    by_species: dict[str, list[str]] = {}
    for r in living:
        by_species.setdefault(r.species, []).append(r.sequence)
    within = [pairwise_identity(s)[np.triu_indices(len(s), 1)].min() for s in by_species.values()]
    firsts = [s[0] for s in by_species.values()]
    between = pairwise_identity(firsts)[np.triu_indices(len(firsts), 1)]
    assert min(within) >= 0.97
    assert np.mean(within) > np.max(between) > np.min(between) > 0.75


# --- traits -------------------------------------------------------------------------------------


def test_sister_species_are_closer_in_traits_than_distant_ones():
    """Cherries (sister pairs) differ less in traits than species split at the root."""
    truth = build_truth(SimConfig(n_living=40, seed=4))
    tree = truth.tree
    cont = truth.traits.continuous()
    living = tree.living()
    sisters, distant = [], []
    for k, a in enumerate(living):
        for b in living[k + 1 :]:
            mrca = tree.mrca(a, b)
            dist = float(np.linalg.norm(cont[a] - cont[b]))
            if set(tree.nodes[mrca].children) == {a, b}:
                sisters.append(dist)
            elif mrca == 0:
                distant.append(dist)
    assert sisters and distant
    assert np.mean(sisters) < 0.5 * np.mean(distant)


@pytest.mark.parametrize("model", ["brownian", "ou"])
def test_traits_are_standardised_and_discrete_ones_binary(model):
    """Continuous traits have mean 0, sd 1 over the tips; 0/1 traits take only 0 and 1."""
    tree = simulate_tree(30, 1.0, 0.3, 1.0, np.random.default_rng(5))
    values = evolve_traits(
        [n.parent for n in tree.nodes],
        [n.branch for n in tree.nodes],
        np.random.default_rng(0),
        model=model,
        standardize_over=tree.tips(),
    )
    assert values.names == TRAIT_NAMES and values.shape == (len(tree.nodes), len(TRAIT_NAMES))
    tips = values.continuous()[tree.tips()]
    np.testing.assert_allclose(tips.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(tips.std(axis=0), 1.0, atol=1e-9)
    discrete = values.values[:, [TRAIT_NAMES.index(d) for d in DISCRETE]]
    assert set(np.unique(discrete)) <= {0.0, 1.0}


# --- the dataset --------------------------------------------------------------------------------


def test_dataset_loads_with_truth_kept_apart(small_clade):
    """The directory validates; truth lives under truth/ and never in sequences.fasta."""
    ds = load_dataset(small_clade.root)
    info = ds.info
    assert info["source"] == "synthetic" and info["generator"] == "phenogen simulate" and info["seed"] == 0
    assert ds.trait_names == list(TRAIT_NAMES)
    train, heldout = ds.records("train"), ds.records("heldout")
    assert len(train) + len(heldout) == 12 * 3
    assert all(r.images and r.images[0].startswith(f"images/{r.split}/") for r in train + heldout)
    hidden = ds.records(("extinct", "ancestor"))
    assert hidden and all(all(p.startswith("truth/") for p in r.images) for r in hidden)
    assert {r.node_kind for r in ds.records("ancestor")} == {"internal"}
    assert {r.node_kind for r in ds.records("extinct")} == {"extinct"}
    fasta_ids = {r.id for r in read_fasta(ds.root / "sequences.fasta").records}
    assert fasta_ids == {r.record_id for r in train + heldout}
    ancestors = read_fasta(ds.root / "truth" / "ancestors.fasta").records
    assert [r.id for r in ancestors] == [r.record_id for r in ds.records("ancestor")]
    assert ancestors[0].id == "n000"
    rec = train[0]
    assert (
        set(rec.traits) == set(TRAIT_NAMES) and rec.taxonomy[0] == "Aves" and rec.taxonomy[-1] == rec.species
    )
    with Image.open(ds.image_path(rec.images[0])) as img:
        assert img.size == (32, 32)
    for name in (
        "contact_sheet.png",
        "tree.nwk",
        "truth/tree_living.nwk",
        "truth/traits.tsv",
        "truth/extinct.fasta",
    ):
        assert (ds.root / name).is_file(), name
    traits_rows = (ds.root / "truth" / "traits.tsv").read_text().splitlines()
    assert len(traits_rows) == 1 + len(
        dendropy.Tree.get(path=str(ds.root / "tree.nwk"), schema="newick", preserve_underscores=True).nodes()
    )


def test_splits_hold_out_whole_clades(small_clade):
    """Held-out species are exactly the living leaves of the held-out clades; none is in train."""
    ds = small_clade
    train = set(ds.species("train"))
    heldout = set(ds.species("heldout"))
    assert heldout and train and not train & heldout
    tree = dendropy.Tree.get(path=str(ds.root / "tree.nwk"), schema="newick", preserve_underscores=True)
    covered: set[str] = set()
    for clade in ds.info["heldout_clades"]:
        node = tree.find_node_with_label(clade["node"])
        if node is None:  # a single held-out species is its own clade
            leaves = {clade["node"]}
        else:
            leaves = {leaf.taxon.label for leaf in node.leaf_nodes() if leaf.taxon.label.startswith("sp_")}
        assert leaves == set(clade["species"]) and leaves <= heldout
        covered |= leaves
    assert covered == heldout
    extinct = set(ds.species("extinct"))
    assert extinct and all(s.startswith("ext_") for s in extinct) and not extinct & (train | heldout)


def test_same_seed_same_bytes_other_seed_other_clade(small_clade, tmp_path):
    """Two runs with one seed write identical files; another seed changes them."""
    again = simulate_clade(SimConfig(**SMALL), tmp_path / "b", progress=False)
    assert _digest(again.root) == _digest(small_clade.root)
    other = simulate_clade(SimConfig(**SMALL, seed=5), tmp_path / "c", progress=False)
    assert (other.root / "manifest.tsv").read_bytes() != (small_clade.root / "manifest.tsv").read_bytes()


def test_large_images_render():
    """128-px images work (GPU runs use 128 and 256)."""
    from phenogen.sim.render import render_photos

    truth = build_truth(SimConfig(n_living=4, individuals_per_species=1))
    _, _, traits = truth.individuals[truth.tree.living()[0]][0]
    (photo,) = render_photos(traits, 1, 128, np.random.default_rng(0))
    assert photo.size == (128, 128) and set(traits) == set(CONTINUOUS) | set(DISCRETE)


# --- the command --------------------------------------------------------------------------------

ARGS = ["--n-living", "5", "--image-size", "32", "--quiet", "--set", "sim.photos_per_individual=1"]


def test_simulate_command_writes_config_and_guards_the_out_dir(tmp_path, capsys):
    """simulate saves config.json, refuses to clobber without --force, and never touches foreign dirs."""
    out = tmp_path / "clade"
    assert main(["simulate", "--out", str(out), "--seed", "3", *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "contact sheet" in printed and "identity" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["sim"]["n_living"] == 5 and config["sim"]["seed"] == 3
    assert load_dataset(out).info["config"]["image_size"] == 32

    assert main(["simulate", "--out", str(out), *ARGS]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["simulate", "--out", str(out), "--force", *ARGS]) == 0
    assert json.loads((out / "config.json").read_text())["sim"]["seed"] == 0

    (out / "notes.txt").write_text("mine")
    assert main(["simulate", "--out", str(out), "--force", *ARGS]) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("x")
    assert main(["simulate", "--out", str(foreign), "--force", *ARGS]) == 2
    assert "not a 'phenogen simulate' output" in capsys.readouterr().err


@pytest.mark.slow
def test_default_clade_is_fast_and_realistic(tmp_path):
    """Defaults: under 60 s on 2 cores, 48 living species, realistic COI identities."""
    start = time.perf_counter()
    ds = simulate_clade(SimConfig(), tmp_path / "default", progress=False)
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"default simulate took {elapsed:.1f} s"
    summary = ds.info["summary"]
    assert summary["species"]["train"] + summary["species"]["heldout"] == 48
    between = summary["identity"]["between_living_species"]
    assert 0.78 <= between["min"] and between["max"] <= 0.99
    assert summary["identity"]["within_species"]["median"] >= 0.98

"""Tests of reconstruction over tree uncertainty (--bootstrap) and the codon-aware alignment (--align codon)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from phenogen.cli import main
from phenogen.dna.seqio import read_fasta
from phenogen.phylo.asr import reconstruct_treetime
from phenogen.phylo.bootstrap import bootstrap_trees, clade_frequencies, reconstruct_over_trees
from phenogen.phylo.codon import codon_align, codon_positions_ok
from phenogen.phylo.frame import best_frame, stop_codons
from phenogen.phylo.tree import infer_tree, name_internal_nodes, parse_newick, root_tree

DATA = Path(__file__).parent / "data" / "phylo"
needs_tools = pytest.mark.skipif(
    shutil.which("mafft") is None or (shutil.which("fasttree") is None and shutil.which("FastTree") is None),
    reason="Debian packages mafft and fasttree not installed",
)


def _records(name: str) -> tuple[list[str], list[str]]:
    recs = read_fasta(DATA / name).records
    return [r.id for r in recs], [r.sequence for r in recs]


# ------------------------------------------------------------------ clade frequencies
def test_clade_frequency_is_one_when_every_tree_has_the_clade_and_zero_when_none_has():
    """(A,B) is in all three trees (1.0); (C,D) in none (0.0); (E,F) in one of three."""
    main_tree = parse_newick("((((A:1,B:1)ab:1,(C:1,D:1)cd:1)abcd:1,(E:1,F:1)ef:1)x:1,G:1)r;")
    others = [
        parse_newick("((((A:1,B:1):1,C:1):1,(D:1,(E:1,F:1):1):1):1,G:1);"),
        parse_newick("((((A:1,B:1):1,(C:1,E:1):1):1,(D:1,F:1):1):1,G:1);"),
        parse_newick("(((A:1,B:1):1,(D:1,(C:1,(E:1,F:1):1):1):1):1,G:1);"),
    ]
    freq = clade_frequencies(main_tree, others)
    assert freq["ab"] == 1.0 and freq["cd"] == 0.0 and freq["r"] == 1.0
    assert freq["ef"] == pytest.approx(2 / 3) and freq["abcd"] == 0.0


def test_linear_midpoint_rooting_gives_the_clades_of_bio_phylos():
    """root_tree(fast=True) (the bootstrap trees) roots at Bio.Phylo's midpoint: same clades, same root lengths."""
    text = "((A:0.3,B:0.1):0.05,(C:0.2,(D:0.05,E:0.6):0.1):0.02,(F:0.1,G:0.15):0.3);"
    slow, fast = parse_newick(text), parse_newick(text)
    root_tree(slow, "midpoint")
    root_tree(fast, "midpoint", fast=True)
    for t in (slow, fast):
        name_internal_nodes(t)
    assert set(clade_frequencies(slow, [fast]).values()) == {1.0}
    assert sorted(round(c.branch_length, 9) for c in slow.root.clades) == sorted(
        round(c.branch_length, 9) for c in fast.root.clades
    )


# ------------------------------------------------------------------ replicate reconstructions
@needs_tools
def test_bootstrap_reconstruction_gives_a_spread_and_a_consensus():
    """Real FastTree replicates + TreeTime: frequencies in [0, 1], spread >= 0, consensus of full length."""
    names, seqs = _records("coi_ncbi.fasta")
    tree = infer_tree(names, seqs)
    root_tree(tree, "midpoint")
    name_internal_nodes(tree)
    main_result = reconstruct_treetime(tree, dict(zip(names, seqs, strict=True)))
    trees = bootstrap_trees(names, seqs, 6, seed=1)  # a generator, consumed as the trees come
    internal = [c.name for c in tree.get_nonterminals()]
    sample = reconstruct_over_trees(
        tree, trees, dict(zip(names, seqs, strict=True)), chosen=internal[:2], model=main_result.model
    )
    assert sample.n_trees == 6 and sample.clade_frequency[tree.root.name] == 1.0
    assert all(0.0 <= f <= 1.0 for f in sample.clade_frequency.values())
    assert sample.split_frequency[tree.root.name] is None
    for name in internal:
        spread = sample.spread(name, main_result.sequences[name])
        assert spread["boot_trees"] == round(sample.clade_frequency[name] * 6)
        if spread["boot_trees"]:
            assert 0.0 <= spread["boot_majority_agreement"] <= 1.0 and spread["boot_sites_split"] >= 0
            assert re.fullmatch("[ACGT-]{303}", sample.consensus(name))
        if spread["boot_trees"] >= 2:
            assert 0.0 <= spread["boot_pairwise_identity"] <= spread["boot_majority_agreement"]
    root = tree.root.name
    assert sum(k for _, k in sample.variants[root]) == 6  # every tree has the root clade
    summary = sample.summary([root])
    assert summary["chosen"][root]["clade_frequency"] == 1.0 and summary["trees"] == 6


@pytest.mark.skipif(shutil.which("iqtree2") is None and shutil.which("iqtree") is None, reason="no iqtree")
def test_ufboot_trees_are_taken_from_iqtree_and_rooted():
    """bootstrap_method ufboot: N of IQ-TREE's UFBoot trees, tips back to the FASTA ids, midpoint-rooted."""
    names, seqs = _records("coi_ncbi.fasta")
    trees = list(bootstrap_trees(names, seqs, 3, method="ufboot"))
    assert len(trees) == 3
    for tree in trees:
        assert sorted(t.name for t in tree.get_terminals()) == sorted(names) and len(tree.root.clades) == 2


# ------------------------------------------------------------------ codon alignment
@needs_tools
def test_codon_alignment_keeps_every_sequence_in_frame():
    """A 3-bp deletion across a codon boundary, a record in frame 2 and a partial last codon: every base
    keeps its codon position as its column, internal gaps are whole codons, no base is lost."""
    names, seqs = _records("codon_indel_frame2.fasta")
    rows, info = codon_align(names, seqs, genetic_code=2)
    assert len({len(r) for r in rows}) == 1 and len(rows[0]) % 3 == 0
    assert info["frames"] == [7, 0, 1] and info["with_stops"] == 0  # the one that lost its first base
    for seq, row in zip(seqs, rows, strict=True):
        assert row.replace("-", "") == seq
        assert codon_positions_ok(row, best_frame(seq, 2)[0])
        for m in re.finditer("-+", row.strip("-")):  # gaps inside the sequence
            start = m.start() + len(row) - len(row.lstrip("-"))
            assert len(m.group()) % 3 == 0 and start % 3 == 0, (m.group(), start)
    deleted = rows[names.index("JQ176521")]
    assert deleted.strip("-").count("---") == 1  # the lost bases are one codon gap


# ------------------------------------------------------------------ the command
@needs_tools
def test_command_with_bootstrap_writes_frequencies_spread_and_replicates(tmp_path, capsys):
    """--bootstrap 5 on eight barcodes: nodes.csv columns, bootstrap.json, 5 rooted replicate trees."""
    out = tmp_path / "out"
    argv = ["ancestors", "--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out), "--bootstrap", "5",
            "--mrca", "Tolmomyias"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    with (out / "nodes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for col in (
        "clade_frequency",
        "split_frequency",
        "boot_trees",
        "boot_pairwise_identity",
        "boot_sites_split",
    ):
        assert col in rows[0]
    assert float(rows[0]["clade_frequency"]) == 1.0 and int(rows[0]["boot_trees"]) == 5  # the root
    boot = json.loads((out / "bootstrap.json").read_text())
    assert boot["trees"] == 5 and boot["search"] == "-gtr -nosupport"
    (chosen,) = boot["chosen"].values()
    assert chosen["mrca_in_every_tree"]["boot_trees"] == 5 and 0 <= chosen["clade_frequency"] <= 1
    assert 0 < chosen["mrca_in_every_tree"]["boot_identity_with_main"] <= 1
    assert len((out / "bootstrap_trees.nwk").read_text().splitlines()) == 5
    consensus = read_fasta(out / "ancestors.bootstrap.fasta", allow_gaps=True).records
    assert consensus and all(len(r.sequence) == 303 for r in consensus)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bootstrap"]["trees"] == 5 and summary["timings"]["bootstrap_s"] > 0
    assert "clade_frequency=" in (out / "tree.annotated.nwk").read_text()


@needs_tools
def test_command_codon_alignment_gives_ancestors_without_stop_codons(tmp_path, capsys):
    """--align codon on the file with an indel and a frame-2 record: mafft-codon, ancestors in frame."""
    out = tmp_path / "out"
    argv = [
        "ancestors",
        "--fasta",
        str(DATA / "codon_indel_frame2.fasta"),
        "--out",
        str(out),
        "--align",
        "codon",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["alignment_method"] == "mafft-codon" and summary["ancestors_with_stop_codons"] == 0
    assert summary["ancestors_with_stop_codons_in_covered_sites"] == 0
    with (out / "nodes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(int(r["extrapolated_sites"]) >= 0 and r["stop_codons_in_covered"] == "0" for r in rows)
    aln = read_fasta(out / "alignment.fasta", allow_gaps=True).records
    assert len(aln[0].sequence) % 3 == 0
    ancestors = read_fasta(out / "ancestors.fasta", allow_gaps=True).records
    assert all(stop_codons(r.sequence, 2) == 0 for r in ancestors)


@needs_tools
def test_bootstrap_portrait_row_paints_replicate_reconstructions(tmp_path, capsys):
    """--bootstrap with --model: NODE_bootstrap_row.png and one portrait per distinct replicate sequence."""
    from test_phylo import _tiny_pipeline_dir

    model = _tiny_pipeline_dir(tmp_path / "pipeline")
    out = tmp_path / "out"
    argv = ["ancestors", "--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out), "--bootstrap", "4",
            "--mrca", "KJ013277", "KJ013271", "--model", str(model), "--set", "ancestors.images_per_node=1",
            "--set", "ancestors.num_inference_steps=2", "--set", "ancestors.bootstrap_portraits=2"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    rows = json.loads((out / "summary.json").read_text())["portraits"]["bootstrap_rows"]
    (node, row) = next(iter(rows.items()))
    assert 1 <= len(row["images"]) <= 2 and (out / "portraits" / row["figure"]).is_file()
    assert sum(row["painted_trees"]) <= row["trees_with_clade"] <= 4
    assert np.all([(out / "portraits" / f).is_file() for f in row["images"]])

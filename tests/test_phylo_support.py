"""Tests of given trees and alignments, outputs and branch support in ``phenogen ancestors``."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
from test_phylo import needs_fasttree, needs_iqtree, needs_mafft

from phenogen.cli import main
from phenogen.dna.seqio import read_fasta, write_fasta
from phenogen.phylo.frame import alignment_doubts, best_frame, stop_codons
from phenogen.phylo.tree import infer_tree, parse_newick, root_tree

DATA = Path(__file__).parent / "data" / "phylo"


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(["ancestors", *argv])
    return code, capsys.readouterr().err


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------ given trees
def test_given_nj_tree_with_negative_zero_lengths_and_gi_tips(tmp_path, capsys, caplog):
    """A gi-named NJ tree with negative lengths is matched to NCBI headers; negatives become 0, counted."""
    out = tmp_path / "out"
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--tree", str(DATA / "nj_gi_negative.nwk"),
                      "--out", str(out), "--mrca", "Tolmomyias"], capsys)  # fmt: skip
    assert code == 0, err
    s = _summary(out)
    assert s["tree_method"] == "given" and s["negative_branch_lengths_set_to_zero"] == 2
    assert s["zero_branch_lengths"] == 3 and s["alignment_method"] == "input"
    assert "2 negative branch length(s) set to 0" in caplog.text


def test_strict_tree_refuses_naming_every_negative_branch(tmp_path, capsys):
    """--strict-tree: exit 2, both negative branches named, nothing built."""
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--tree", str(DATA / "nj_gi_negative.nwk"),
                      "--out", str(tmp_path / "o"), "--strict-tree"], capsys)  # fmt: skip
    assert code == 2 and "2 negative branch length(s): -1e-06 above" in err and "; -0.0021 above" in err


# ------------------------------------------------------------------ alignment check
def test_frame_check_counts_stops_under_the_mitochondrial_codes():
    """AGA is a stop in the vertebrate (2), not the invertebrate (5), mitochondrial code; gaps are skipped."""
    assert stop_codons("ATGAGACCC", 2, frame=0) == 1 and stop_codons("ATGAGACCC", 5, frame=0) == 0
    assert stop_codons("ATG-AGACCC", 2, frame=0) == 1 and stop_codons("ATGAGACCC", 2) == 0
    assert best_frame("CATGAAACCCTAG", 2) == (0, 0)


def test_shifted_indel_and_frameshift_are_doubted_aligned_rows_are_not():
    """A codon indel shifted along is found by homology; a 1-bp shift by stop codons; clean rows pass."""
    recs = read_fasta(DATA / "shifted_indel.fasta").records
    names, seqs = [r.id for r in recs], [r.sequence for r in recs]
    doubts = alignment_doubts(names, seqs)
    assert list(doubts) == ["KJ013275"] and "shifted" in doubts["KJ013275"]
    clean = read_fasta(DATA / "coi_ncbi.fasta").records
    assert alignment_doubts([r.id for r in clean], [r.sequence for r in clean]) == {}
    frameshift = [r.sequence for r in clean]
    frameshift[2] = frameshift[2][:60] + frameshift[2][61:200] + "A" + frameshift[2][200:]
    doubted = alignment_doubts([r.id for r in clean], frameshift)
    assert clean[2].id in doubted and "stop codon" in doubted[clean[2].id]


@needs_mafft
@needs_fasttree
def test_align_auto_aligns_the_equal_length_file_never_keeps_it(tmp_path, capsys):
    """--align auto runs MAFFT on the shifted file (the row ungaps to its input); --align never does not."""
    out = tmp_path / "auto"
    code, err = _run(["--fasta", str(DATA / "shifted_indel.fasta"), "--out", str(out)], capsys)
    assert code == 0, err
    s = _summary(out)
    assert s["alignment_method"] == "mafft" and s["alignment_doubts"] == 1 and s["alignment_length"] > 303
    aligned = {r.id: r.sequence for r in read_fasta(out / "alignment.fasta", allow_gaps=True).records}
    original = {r.id: r.sequence for r in read_fasta(DATA / "shifted_indel.fasta").records}
    assert {k: v.replace("-", "") for k, v in aligned.items()} == original
    never = tmp_path / "never"
    assert _run(["--fasta", str(DATA / "shifted_indel.fasta"), "--out", str(never), "--align", "never"],
                capsys)[0] == 0  # fmt: skip
    assert _summary(never)["alignment_method"] == "input"
    code, err = _run(["--fasta", str(DATA / "shifted_indel.fasta"), "--out", str(tmp_path / "x"),
                      "--aligned", "--align", "always"], capsys)  # fmt: skip
    assert code == 2 and "contradicts" in err


# ------------------------------------------------------------------ outputs and support
@needs_fasttree
def test_outputs_state_table_stop_codons_and_fasttree_support(tmp_path, capsys):
    """ancestors.state.tsv.gz: one row per node and site, posteriors summing to 1, State = argmax;
    nodes.csv: stop_codons (0 for in-frame COI) and FastTree SH-like support in [0, 1], low ones flagged."""
    out = tmp_path / "out"
    code, err = _run(["--fasta", str(DATA / "coi_ncbi.fasta"), "--out", str(out),
                      "--set", "ancestors.low_support=0.95"], capsys)  # fmt: skip
    assert code == 0, err
    rows = json.loads((out / "nodes.json").read_text())
    with gzip.open(out / "ancestors.state.tsv.gz", "rt") as fh:
        table = list(csv.DictReader((line for line in fh if not line.startswith("#")), delimiter="\t"))
    assert len(table) == len(rows) * 303 and list(table[0])[:4] == ["Node", "Site", "State", "p_A"]
    probs = np.array([[float(r[f"p_{a}"]) for a in "ACGT-"] for r in table])
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    assert all(
        "ACGT-"[int(np.argmax(p))] == r["State"] for p, r in zip(probs[:500], table[:500], strict=True)
    )
    assert all(r["stop_codons"] == 0 for r in rows)
    assert all(r["mean_calibrated"] <= r["mean_posterior"] for r in rows)
    supported = [r for r in rows if r["support"] is not None]
    # every split but the trivial one a midpoint root on a tip's branch makes carries support
    assert len(supported) >= len(rows) - 2 and all(0 <= r["support"] <= 1 for r in supported)
    assert all(r["low_support"] == (r["support"] < 0.95) for r in supported)
    s = _summary(out)
    assert s["support"] == "FastTree SH-like local support" and s["nodes_low_support"] >= 0
    assert "support=" in (out / "tree.annotated.nwk").read_text()


def test_support_follows_its_split_through_rerooting():
    """Rooting reverses clades on the path to the new root; each support stays with its bipartition,
    also when the tip order changes (the least tip name moves off the top)."""
    tree = parse_newick("(Z:1,Y:1,((A:1,B:1)0.9:1,(E:1,F:1)0.2:1)0.5:1);")
    root_tree(tree, "outgroup", ["E", "F"])
    by_tips = {
        frozenset(t.name for t in c.get_terminals()): getattr(c, "support", None)
        for c in tree.get_nonterminals()
        if c is not tree.root
    }
    assert by_tips == {frozenset("ABYZ"): 0.2, frozenset("YZ"): 0.5, frozenset("AB"): 0.9}


@needs_fasttree
def test_ids_with_spaces_and_parentheses_reach_fasttree_intact(tmp_path):
    """Odd ids are renamed for the programs and come back unchanged."""
    recs = read_fasta(DATA / "coi_ncbi.fasta").records
    names = [f"sample ({i}):x" for i in range(len(recs))]
    tree = infer_tree(names, [r.sequence for r in recs])
    assert sorted(t.name for t in tree.get_terminals()) == sorted(names)


@needs_iqtree
def test_iqtree_ufboot_and_sh_alrt_support_on_a_0_1_scale(tmp_path):
    """tree_method iqtree with both supports: clade.support = UFBoot/100, clade.sh_alrt = SH-aLRT/100."""
    recs = read_fasta(DATA / "coi_ncbi.fasta").records
    tree = infer_tree([r.id for r in recs], [r.sequence for r in recs], method="iqtree", iqtree_model="HKY",
                      iqtree_support="both")  # fmt: skip
    inner = [c for c in tree.get_nonterminals() if getattr(c, "support", None) is not None]
    assert inner and all(0 <= c.support <= 1 and 0 <= c.sh_alrt <= 1 for c in inner)
    assert all(not c.name for c in tree.get_nonterminals())
    write_fasta(tmp_path / "x.fasta", [(r.id, r.sequence) for r in recs])  # the ids stayed FASTA ids
    assert {t.name for t in tree.get_terminals()} == {r.id for r in recs}


def test_calibration_is_monotone_and_lowers_overconfident_posteriors():
    """The shipped calibration never decreases with the posterior and maps 0.99 well below 0.99."""
    from phenogen.phylo.calibration import EDGES, TABLE, calibrate

    assert list(TABLE) == sorted(TABLE) and len(TABLE) == len(EDGES)
    p = np.linspace(0.25, 1.0, 200)
    cal = calibrate(p)
    assert np.all(np.diff(cal) >= 0) and calibrate([0.99])[0] < 0.9 and calibrate([1.0])[0] > 0.99

"""Tests of phenogen.phylo: alignment, trees, ancestral reconstruction, node selection, truth, command."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest

from phenogen.cli import add_common_arguments
from phenogen.data.dataset import Record, write_dataset
from phenogen.dna.seqio import write_fasta
from phenogen.errors import DataError, ExternalToolError, InputError, SequenceError
from phenogen.phylo import command
from phenogen.phylo.align import align, check_aligned, is_aligned, read_sequences, run_mafft
from phenogen.phylo.asr import node_table, reconstruct_iqtree, reconstruct_treetime
from phenogen.phylo.config import AncestorsConfig
from phenogen.phylo.select import select_nodes
from phenogen.phylo.tools import find_tool
from phenogen.phylo.tree import (
    check_names,
    fix_branch_lengths,
    name_internal_nodes,
    parse_newick,
    root_tree,
    tip_names,
)
from phenogen.phylo.truth import compare_to_truth, match_nodes, sequence_identity

needs_mafft = pytest.mark.skipif(shutil.which("mafft") is None, reason="Debian package mafft not installed")
needs_fasttree = pytest.mark.skipif(
    shutil.which("fasttree") is None and shutil.which("FastTree") is None,
    reason="Debian package fasttree not installed",
)
needs_iqtree = pytest.mark.skipif(
    shutil.which("iqtree2") is None and shutil.which("iqtree") is None,
    reason="Debian package iqtree not installed",
)

# A rooted 8-tip tree with named internal nodes (r = root); branch lengths in substitutions/site.
TRUE_NEWICK = (
    "(((A:0.04,B:0.06)n2:0.03,(C:0.05,D:0.02)n3:0.04)n1:0.03,"
    "((E:0.07,F:0.03)n5:0.05,(G:0.06,H:0.04)n6:0.02)n4:0.04)r;"
)


def evolve(newick: str, length: int = 600, seed: int = 0) -> tuple[object, dict[str, str]]:
    """Jukes–Cantor sequences for every node of a named Newick tree (tiny real simulator for tests)."""
    rng = np.random.default_rng(seed)
    tree = parse_newick(newick)
    codes = {tree.root.name: rng.integers(0, 4, length)}
    for clade in tree.find_clades(order="preorder"):
        for child in clade.clades:
            p_change = 0.75 * (1 - np.exp(-4 / 3 * child.branch_length))
            seq = codes[clade.name].copy()
            hit = rng.random(length) < p_change
            seq[hit] = (seq[hit] + rng.integers(1, 4, hit.sum())) % 4
            codes[child.name] = seq
    return tree, {k: "".join("ACGT"[i] for i in v) for k, v in codes.items()}


@pytest.fixture(scope="module")
def clade():
    tree, seqs = evolve(TRUE_NEWICK)
    tips = {t: seqs[t] for t in tip_names(tree)}
    return tree, seqs, tips


def run_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    add_common_arguments(parser)
    return command.run(parser.parse_args(argv))


# ------------------------------------------------------------------ alignment
def test_is_aligned_and_check_aligned_names_the_odd_record():
    """--aligned with unequal lengths names the record whose length differs."""
    assert is_aligned(["AC-T", "ACGT"]) and not is_aligned(["ACGT", "ACG"])
    with pytest.raises(InputError, match=r"odd \(3 bp\)"):
        check_aligned(["a", "b", "odd"], ["ACGT", "ACGA", "ACG"], "x.fasta")


def test_read_sequences_rejects_a_single_sequence(tmp_path):
    """A FASTA with one record cannot give a tree."""
    path = write_fasta(tmp_path / "one.fasta", [("only", "ACGTACGT")])
    with pytest.raises(InputError, match="1 usable sequence"):
        read_sequences(path)


def test_read_sequences_masks_ambiguity_codes_and_rejects_duplicates(tmp_path):
    """Ambiguity codes become N (counted); duplicate ids are refused by name."""
    path = write_fasta(tmp_path / "a.fasta", [("a", "ACGRT"), ("b", "ACGTT"), ("c", "AYGTT")])
    seqs = read_sequences(path)
    assert seqs.as_dict()["a"] == "ACGNT" and seqs.masked == {"a": 1, "c": 1}
    (tmp_path / "dup.fasta").write_text(">a\nACGT\n>b\nACGT\n>a\nACGA\n")
    with pytest.raises(SequenceError, match="duplicate id 'a'"):
        read_sequences(tmp_path / "dup.fasta")


@needs_mafft
def test_mafft_aligns_sequences_with_an_indel(clade):
    """MAFFT returns equal-length rows that ungap to the inputs, in input order."""
    _, _, tips = clade
    names = list(tips)[:4]
    seqs = [tips[n][:300] for n in names]
    seqs[1] = seqs[1][:100] + seqs[1][103:]  # a 3-bp deletion
    out = run_mafft(names, seqs)
    assert is_aligned(out) and len(out[0]) == 300
    assert [s.replace("-", "") for s in out] == seqs


def test_align_with_assume_aligned_raises_on_unaligned(tmp_path):
    """align(assume_aligned=True) refuses sequences of different lengths."""
    path = write_fasta(tmp_path / "u.fasta", [("a", "ACGTAC"), ("b", "ACGTA"), ("c", "ACGTAC")])
    with pytest.raises(InputError, match="--aligned"):
        align(read_sequences(path), assume_aligned=True)


# ------------------------------------------------------------------ trees
def test_check_names_says_which_names_differ():
    """Tree-only and FASTA-only names are both listed."""
    tree = parse_newick("((A:1,B:1):1,(C:1,X:1):1);")
    with pytest.raises(InputError, match=r"not in FASTA: X.*in FASTA but not in the tree: D"):
        check_names(tree, ["A", "B", "C", "D"])


def test_check_names_rejects_duplicate_tips():
    """A tip name used twice is an error naming it."""
    tree = parse_newick("((A:1,B:1):1,(A:1,C:1):1);")
    with pytest.raises(InputError, match="duplicate tip name.*A"):
        check_names(tree, ["A", "B", "C"])


def test_negative_branch_lengths_become_zero_or_are_refused_missing_ones_are_counted():
    """Negative lengths are set to 0 and counted (strict: refused, naming each); missing ones get the epsilon."""
    bad = parse_newick("((A:1,B:-0.5):1,(C:-1e-6,D:1):1);")
    with pytest.raises(InputError, match=r"2 negative branch length.*-0.5 above B; -1e-06 above C"):
        fix_branch_lengths(bad, strict=True)
    assert fix_branch_lengths(bad) == (0, 2, 2)
    assert min(c.branch_length for c in bad.find_clades() if c is not bad.root) == 0.0
    tree = parse_newick("((A,B:1):1,(C:1,D:1));")
    assert fix_branch_lengths(tree, missing=1e-5).missing == 2
    assert min(c.branch_length for c in tree.find_clades() if c is not tree.root) == pytest.approx(1e-5)


def test_internal_names_are_kept_and_new_ones_deterministic():
    """Existing internal names survive; unnamed ones get anc00N in preorder, skipping used names."""
    tree = parse_newick("(((A:1,B:1)anc001:1,C:1):1,(D:1,E:1)keep:1);")
    assert name_internal_nodes(tree) == 2
    assert [c.name for c in tree.get_nonterminals(order="preorder")] == ["anc002", "anc003", "anc001", "keep"]


def test_support_values_are_not_names():
    """Numeric internal labels (support) do not become node names, and are kept on the clade."""
    tree = parse_newick("((A:1,B:1)0.97:1,(C:1,D:1)0.5:1);")
    name_internal_nodes(tree)
    supports = sorted(getattr(c, "support", -1) for c in tree.get_nonterminals())
    assert supports == [-1, 0.5, 0.97] and all(c.name.startswith("anc") for c in tree.get_nonterminals())


def test_outgroup_rooting_puts_the_outgroup_beside_the_root():
    """Rooting on tip E makes E a child of the root; unknown outgroups are refused."""
    tree = parse_newick("((A:1,B:1):1,(C:1,(D:1,E:1):1):1);")
    root_tree(tree, "outgroup", ["E"])
    assert "E" in [c.name for c in tree.root.clades]
    with pytest.raises(InputError, match="Z"):
        root_tree(tree, "outgroup", ["Z"])


def test_missing_tool_names_the_debian_package(monkeypatch, tmp_path):
    """With an empty PATH, the error says which Debian package to install."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ExternalToolError, match="apt-get install fasttree"):
        find_tool("fasttree")


# ------------------------------------------------------------------ reconstruction
def test_treetime_reconstructs_ancestors_close_to_the_truth(clade):
    """Marginal ML ancestors are >= 95 % identical to the simulated ones; confidence is per site."""
    tree, seqs, tips = clade
    res = reconstruct_treetime(tree, tips)
    assert set(res.sequences) == {c.name for c in tree.get_nonterminals()}
    for name, seq in res.sequences.items():
        assert sequence_identity(seqs[name], seq) > 0.95, name
        conf = res.confidence[name]
        assert conf.shape == (600,) and 0.2 <= conf.min() and conf.max() <= 1.0 + 1e-9
    rows = node_table(tree, res)
    assert [r["node"] for r in rows][0] == "r" and rows[0]["n_tips"] == 8


@needs_iqtree
def test_iqtree_asr_maps_back_to_our_node_names(clade):
    """IQ-TREE's -asr nodes are matched to ours by split; all but the root are reported and close to truth."""
    tree, seqs, tips = clade
    res = reconstruct_iqtree(tree, tips)
    assert set(res.sequences) == {c.name for c in tree.get_nonterminals()} - {"r"}
    assert all(sequence_identity(seqs[n], s) > 0.95 for n, s in res.sequences.items())


def test_select_nodes_by_name_mrca_and_all_internal(clade):
    """--node, --mrca and --all-internal combine in a stable order without repeats; bad names fail."""
    tree, _, _ = clade
    assert select_nodes(tree, nodes=["n5"], mrca=[["A", "D"], ["E", "F"]]) == ["n5", "n1"]
    assert select_nodes(tree, all_internal=True)[:3] == ["r", "n1", "n2"]
    with pytest.raises(InputError, match="did you mean n5"):
        select_nodes(tree, nodes=["n55"])
    with pytest.raises(InputError, match="at least two distinct"):
        select_nodes(tree, mrca=[["A"]])


# ------------------------------------------------------------------ truth
def test_match_nodes_skips_nodes_the_data_cannot_identify():
    """A node whose other child leads only to unused (extinct) tips has no counterpart."""
    true = parse_newick("(((A:1,X:1)u:1,B:1)v:1,(C:1,D:1)w:1)r;")
    recon = parse_newick("((A:1,B:1)p:1,(C:1,D:1)q:1)s;")
    rows = {r["node"]: r for r in match_nodes(true, recon, {"A", "B", "C", "D"})}
    assert set(rows) == {"r", "v", "w"}
    assert rows["v"]["recon_node"] == "p" and rows["v"]["clade_match"]


def test_compare_to_truth_scores_methods_and_pools(clade):
    """The true sequences score 1.0; a pool of tips scores below; depth bins cover every node."""
    tree, seqs, tips = clade
    truth = {c.name: seqs[c.name] for c in tree.get_nonterminals()}
    res = compare_to_truth(
        tree, truth, tree, {"perfect": truth}, tips_used=set(tips), pools={"tips": list(tips.values())}
    )
    assert res["summary"]["perfect"]["mean"] == 1.0 and res["summary"]["tips"]["mean"] < 1.0
    assert sum(b["n"] for b in res["by_depth"]) == res["n_identifiable"] == 7


# ------------------------------------------------------------------ command
@needs_fasttree
def test_command_on_a_fasta_writes_every_output(tmp_path, clade):
    """FASTA in → alignment, named tree, ancestors FASTA, node table, selection, config out."""
    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", list(tips.items()))
    out = tmp_path / "out"
    assert (
        run_command(["--fasta", str(fasta), "--out", str(out), "--mrca", "A", "B", "--node", "anc001"]) == 0
    )
    names = [c.split()[0] for c in (out / "ancestors.fasta").read_text().split(">")[1:]]
    assert len(names) == 7 and names[0] == "anc001"
    rows = json.loads((out / "nodes.json").read_text())
    assert {"node", "mean_posterior", "min_posterior", "depth", "support", "stop_codons"} <= set(rows[0])
    assert "[&posterior=" in (out / "tree.annotated.nwk").read_text()
    assert json.loads((out / "selected.json").read_text())["selected"][0] == "anc001"
    assert json.loads((out / "config.json").read_text())["ancestors"]["tree_method"] == "fasttree"


def test_command_with_a_tree_whose_names_do_not_match(tmp_path, clade):
    """--tree with a tip missing from the FASTA says which name."""
    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", [(k, v) for k, v in tips.items() if k != "H"])
    nwk = tmp_path / "t.nwk"
    nwk.write_text(TRUE_NEWICK)
    with pytest.raises(InputError, match="in the tree but not in .*: H"):
        run_command(["--fasta", str(fasta), "--tree", str(nwk), "--out", str(tmp_path / "o")])


def test_command_aligned_flag_with_unaligned_fasta(tmp_path, clade):
    """--aligned on sequences of different lengths is refused before any tool runs."""
    _, _, tips = clade
    pairs = [(k, v[: 600 - i]) for i, (k, v) in enumerate(tips.items())]
    fasta = write_fasta(tmp_path / "in.fasta", pairs)
    with pytest.raises(InputError, match="--aligned was given"):
        run_command(["--fasta", str(fasta), "--aligned", "--out", str(tmp_path / "o")])


def test_command_on_a_dataset_with_given_tree_scores_against_truth(tmp_path, clade):
    """Dataset mode with the true tree: metrics.json holds TreeTime vs the closest living barcode and LM samples."""
    tree, seqs, tips = clade
    recs = [Record(f"{t}_1", t, f"{t}_1", "train", "living", s) for t, s in tips.items()]
    recs += [
        Record(n, n, n, "ancestor", "internal", seqs[n]) for n in ("r", "n1", "n2", "n3", "n4", "n5", "n6")
    ]
    ds = write_dataset(tmp_path / "ds", recs, {"source": "test"}, tree_newick=TRUE_NEWICK)
    living_tree = tmp_path / "living.nwk"
    living_tree.write_text(TRUE_NEWICK)
    samples = write_fasta(tmp_path / "lm.fasta", [("s1", seqs["A"]), ("s2", seqs["n1"]), ("s3", seqs["E"])])
    out = tmp_path / "out"
    args = [
        "--dataset",
        str(ds.root),
        "--tree",
        str(living_tree),
        "--out",
        str(out),
        "--lm-samples",
        str(samples),
        "--set",
        "ancestors.iqtree_peer=false",
    ]
    assert run_command(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())["ancestors"]
    assert metrics["n_identifiable"] == 7 and metrics["clade_match_fraction"] == 1.0
    assert metrics["summary"]["treetime"]["mean"] > metrics["summary"]["closest_living"]["mean"]
    # LM samples: the nearest sample per true ancestor; one sample IS ancestor n1
    n1 = next(r for r in metrics["nodes"] if r["node"] == "n1")
    assert n1["lm_samples"] == 1.0 and metrics["summary"]["lm_samples"]["n"] == 7
    assert all("lm_samples" in b for b in metrics["by_depth"])
    assert json.loads((out / "summary.json").read_text())["truth"]["lm_samples"] < 1.0
    assert (out / "identity_vs_depth.png").stat().st_size > 1000


def test_config_validates_rooting_and_thresholds():
    """Outgroup rooting without an outgroup, and a confidence threshold of 0, are refused."""
    with pytest.raises(ValueError, match="outgroup"):
        AncestorsConfig(rooting="outgroup")
    with pytest.raises(ValueError, match="low_confidence"):
        AncestorsConfig(low_confidence=0.0)


# ------------------------------------------------------------------ portraits
def test_tree_figure_places_portraits_at_chosen_nodes(tmp_path, clade):
    """The layout puts parents midway between children; the figure with two portraits is written."""
    from PIL import Image

    from phenogen.phylo.portraits import tree_figure, tree_layout

    tree, _, _ = clade
    pos = tree_layout(tree)
    assert pos["n2"][1] == (pos["A"][1] + pos["B"][1]) / 2 and pos["r"][0] == 0.0
    paths = {}
    for name, colour in (("n1", "red"), ("n5", "blue")):
        paths[name] = tmp_path / f"{name}.png"
        Image.new("RGB", (16, 16), colour).save(paths[name])
    out = tree_figure(tree, paths, tmp_path / "tree.png")
    assert out.stat().st_size > 2000


def test_model_without_a_node_choice_is_refused(tmp_path, clade):
    """--model needs --node / --mrca / --all-internal."""
    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", list(tips.items()))
    with pytest.raises(InputError, match="choose them with --node"):
        run_command(["--fasta", str(fasta), "--model", str(tmp_path), "--out", str(tmp_path / "o")])


def _tiny_pipeline_dir(path, caption: bool = False):
    """A tiny real DNA-to-image pipeline (16 px, kmer encoder), saved with save_pretrained; ``caption``:
    with the caption head (a random DNA → caption map, so barcodes write different captions)."""
    import torch

    from phenogen.diffusion.components import build_noise_scheduler, build_unet, build_vae
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.pipeline import DNAToImagePipeline, make_scheduler
    from phenogen.diffusion.prior import CaptionEncoder

    torch.manual_seed(0)
    if caption:
        CaptionEncoder(n_traits=3, dim=32, traits=("size", "hue", "crest")).save_pretrained(
            path.parent / "cap"
        )
        cond = build_conditioner(
            "kmer", 32, kmer_k=2, kmer_segments=3, head="caption", caption_encoder=path.parent / "cap"
        )
        torch.nn.init.normal_(cond.to_caption.weight, std=0.3)
    else:
        cond = build_conditioner("kmer", 32, kmer_k=2, kmer_segments=3, max_length=24, heads=2)
    scheduler = make_scheduler("ddim", build_noise_scheduler().config)
    DNAToImagePipeline(build_vae("tiny"), build_unet("tiny"), scheduler, cond).save_pretrained(path)
    return path


def test_portraits_through_a_saved_pipeline(tmp_path, clade):
    """--model paints images_per_node 16-px PNGs per chosen node (MRCA and a tip) and the tree figure."""
    from PIL import Image

    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", list(tips.items()))
    nwk = tmp_path / "t.nwk"
    nwk.write_text(TRUE_NEWICK)
    model = _tiny_pipeline_dir(tmp_path / "pipeline")
    out = tmp_path / "out"
    argv = ["--fasta", str(fasta), "--aligned", "--tree", str(nwk), "--out", str(out), "--model", str(model),
            "--mrca", "A", "B", "--node", "E", "--set", "ancestors.images_per_node=2",
            "--set", "ancestors.num_inference_steps=2"]  # fmt: skip
    assert run_command(argv) == 0
    portraits = out / "portraits"
    pngs = sorted(p.name for p in portraits.glob("*.png"))
    assert pngs == ["E_0.png", "E_1.png", "n2_0.png", "n2_1.png", "tree_portraits.png"]
    for name in pngs[:-1]:
        with Image.open(portraits / name) as im:
            assert im.size == (16, 16) and im.mode == "RGB"
    with Image.open(portraits / "tree_portraits.png") as im:
        assert im.width >= 400 and im.height >= 200
    summary = json.loads((out / "summary.json").read_text())["portraits"]
    assert summary["images"] == {"n2": ["n2_0.png", "n2_1.png"], "E": ["E_0.png", "E_1.png"]}
    assert summary["settings"]["num_inference_steps"] == 2


def test_tree_captions_are_the_brownian_motion_reconstruction(tmp_path):
    """Internal nodes get the BM conditional mean of the tips' captions: sister tips' mean pulled toward the
    rest by the GLS root, the root between clades; a tip keeps its own; unknown nodes are a DataError."""
    from phenogen.phylo.portraits import tree_captions

    nwk = tmp_path / "t.nwk"
    nwk.write_text("((a:1,b:1)x:1,(c:1,d:1)y:1)r;")
    caps = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([3.0, 0.0]),
        "c": np.array([-1.0, 2.0]),
        "d": np.array([-3.0, 2.0]),
    }
    got = tree_captions(nwk, caps, ["x", "y", "r", "a"])
    # symmetric tree: root = mean of the tips; x = root + (cov 1, 1 with a, b) … = (2 + 0) / 2 pulled: 4/3 of the way
    assert np.allclose(got["r"], [0.0, 1.0], atol=1e-4)
    assert np.allclose(got["x"], [4 / 3, 1 / 3], atol=1e-4) and np.allclose(
        got["y"], [-4 / 3, 5 / 3], atol=1e-4
    )
    assert np.allclose(got["a"], caps["a"], atol=1e-4)
    with pytest.raises(DataError, match="zz"):
        tree_captions(nwk, caps, ["zz"])
    with pytest.raises(DataError, match="at least one tip"):
        tree_captions(nwk, {}, ["x"])


def test_tree_captions_tip_noise_shrinks_towards_relatives(tmp_path):
    """With tip noise a tip is no longer reproduced exactly: it moves towards its sister and the rest, and
    ``tip_noise=None`` picks the grid value leave-one-out prefers."""
    from phenogen.evaluate.baselines import loo_tip_noise
    from phenogen.phylo.portraits import choose_tip_noise, tree_captions

    nwk = tmp_path / "t.nwk"
    nwk.write_text("((a:1,b:1)x:1,(c:1,d:1)y:1)r;")
    caps = {"a": np.array([1.0]), "b": np.array([5.0]), "c": np.array([-1.0]), "d": np.array([-3.0])}
    exact = tree_captions(nwk, caps, ["a", "x"])
    noisy = tree_captions(nwk, caps, ["a", "x"], tip_noise=0.5)
    assert np.allclose(exact["a"], 1.0, atol=1e-4) and 1.0 < float(noisy["a"][0]) < 5.0
    assert abs(float(noisy["x"][0])) < abs(float(exact["x"][0]))  # noisy tips: the clade mean is shrunk too
    chosen = choose_tip_noise(nwk, caps)
    assert chosen == loo_tip_noise(nwk, caps)[0]
    assert np.allclose(tree_captions(nwk, caps, ["x"], tip_noise=None)["x"],
                       tree_captions(nwk, caps, ["x"], tip_noise=chosen)["x"])  # fmt: skip
    assert choose_tip_noise(nwk, {"a": caps["a"], "b": caps["b"]}) == 0.0


def test_portraits_from_tree_captions(tmp_path, clade):
    """portrait_condition = 'tree': chosen nodes are painted from the tips' captions reconstructed on the tree
    (recorded in portraits.json, equal to tree_captions of what the tips write); a tokens-head model is a
    ConfigError that says what to do."""
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.errors import ConfigError
    from phenogen.phylo.portraits import tree_captions

    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", list(tips.items()))
    nwk = tmp_path / "t.nwk"
    nwk.write_text(TRUE_NEWICK)
    model = _tiny_pipeline_dir(tmp_path / "pipeline", caption=True)
    out = tmp_path / "out"
    argv = ["--fasta", str(fasta), "--aligned", "--tree", str(nwk), "--out", str(out), "--model", str(model),
            "--node", "n1", "--node", "n4", "--set", "ancestors.images_per_node=1",
            "--set", "ancestors.num_inference_steps=2", "--set", 'ancestors.portrait_condition="tree"']  # fmt: skip
    assert run_command(argv) == 0
    summary = json.loads((out / "summary.json").read_text())["portraits"]
    assert summary["settings"]["portrait_condition"] == "tree"
    assert sorted(summary["images"]) == ["n1", "n4"] and (out / "portraits" / "n4_0.png").is_file()
    cond = load_pipeline(model).conditioner
    names = sorted(tips)
    written = dict(zip(names, cond.caption_matrix([tips[n] for n in names]), strict=True))
    from Bio import Phylo

    tree = Phylo.read(str(out / "tree.nwk"), "newick")
    expect = tree_captions(tree, written, ["n1", "n4"])
    for node in ("n1", "n4"):
        got = [summary["captions"][node][k] for k in ("size", "hue", "crest")]
        assert np.allclose(got, expect[node], atol=1e-3)
    assert not np.allclose(expect["n1"], expect["n4"], atol=1e-3)

    tokens = _tiny_pipeline_dir(tmp_path / "tokens")
    with pytest.raises(ConfigError, match="caption head"):
        run_command([*argv[:5], "--out", str(tmp_path / "o2"), "--model", str(tokens), *argv[9:]])
    # the training species are known in dataset mode only
    with pytest.raises(ConfigError, match="--dataset"):
        run_command(
            [*argv[:5], "--out", str(tmp_path / "o3"), *argv[7:], "--set", 'ancestors.caption_tips="train"']
        )


def test_reconstruct_captions_from_chosen_tips(tmp_path):
    """reconstruct_captions with tips: only those tips' captions are reconstructed (equal to tree_captions
    over them); tips outside the tree are a DataError; a bad caption_tips value is refused."""
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.phylo.config import AncestorsConfig
    from phenogen.phylo.portraits import reconstruct_captions, tree_captions

    cond = load_pipeline(_tiny_pipeline_dir(tmp_path / "pipeline", caption=True)).conditioner
    nwk = tmp_path / "t.nwk"
    nwk.write_text("((a:1,b:1)x:1,(c:1,d:1)y:1)r;")
    rng = np.random.default_rng(0)
    seqs = {t: "".join(rng.choice(list("ACGT"), 120)) for t in "abcd"}
    written = dict(zip("abcd", cond.caption_matrix([seqs[t] for t in "abcd"]), strict=True))
    got = reconstruct_captions(cond, nwk, seqs, ["x", "y"], tips={"a", "c", "d"})
    expect = tree_captions(nwk, {t: written[t] for t in "acd"}, ["x", "y"])
    every = reconstruct_captions(cond, nwk, seqs, ["x", "y"])
    assert np.allclose(got["x"], expect["x"]) and np.allclose(got["y"], expect["y"])
    assert not np.allclose(got["x"], every["x"])
    with pytest.raises(DataError, match="none of the tips"):
        reconstruct_captions(cond, nwk, seqs, ["x"], tips={"zz"})
    with pytest.raises(ValueError, match="caption_tips"):
        AncestorsConfig(caption_tips="some")


def test_portraits_with_a_directory_that_is_no_pipeline(tmp_path, clade):
    """--model pointing at a directory without model_index.json is one CheckpointError naming it."""
    from phenogen.errors import CheckpointError

    _, _, tips = clade
    fasta = write_fasta(tmp_path / "in.fasta", list(tips.items()))
    nwk = tmp_path / "t.nwk"
    nwk.write_text(TRUE_NEWICK)
    (tmp_path / "empty").mkdir()
    argv = ["--fasta", str(fasta), "--tree", str(nwk), "--out", str(tmp_path / "o"),
            "--model", str(tmp_path / "empty"), "--node", "n1"]  # fmt: skip
    with pytest.raises(CheckpointError, match="no model_index.json"):
        run_command(argv)

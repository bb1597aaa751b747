"""Ancestral sequence reconstruction: TreeTime marginal ML (the method) and IQ-TREE ``-asr`` (a peer).

:func:`reconstruct_treetime` runs ``treetime.TreeAnc.infer_ancestral_sequences(marginal=True,
infer_gtr=True)``: a GTR model is fitted to the alignment on the given tree, then every internal
node gets its marginal posterior distribution over A/C/G/T/- at each site. The reconstructed base is
the most probable one and its posterior probability is the per-site *confidence*; the node table
summarises it per node (mean, minimum, number of sites below ``low_confidence``).

:func:`reconstruct_iqtree` runs ``iqtree2 -s ALN -te TREE -m GTR+G -asr`` on the same tree and reads
its ``.state`` file. IQ-TREE unroots the tree and names internal nodes ``Node1 …``; they are matched
back to ours by the split (tip bipartition) each node sits under, so both methods report the same
node names. The root of a rooted binary tree has no counterpart in an unrooted tree and is left out
of the IQ-TREE result.

Node names are stable: they are the names the tree already carries (see
:func:`phenogen.phylo.tree.name_internal_nodes`); TreeTime is given a copy and never renames.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.dna.seqio import write_fasta
from phenogen.errors import ExternalToolError, InputError
from phenogen.phylo.tools import run_tool
from phenogen.phylo.tree import copy_tree, node_depths, read_tree, to_newick

__all__ = [
    "AncestralResult",
    "reconstruct_treetime",
    "reconstruct_iqtree",
    "node_table",
    "annotate_tree",
    "write_state_table",
]

log = logging.getLogger(__name__)


@dataclass
class AncestralResult:
    """Reconstructed internal-node sequences (alignment coordinates) with per-site confidence."""

    method: str  # "treetime" | "iqtree"
    sequences: dict[str, str]  # internal node name -> sequence (A/C/G/T/-)
    confidence: dict[str, np.ndarray]  # internal node name -> (L,) posterior of the chosen base
    model: dict[str, Any] = field(default_factory=dict)
    log_likelihood: float | None = None
    profiles: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (L, 5) posterior over alphabet
    alphabet: str = "ACGT-"


def _require_named(tree) -> None:
    unnamed = [c for c in tree.find_clades() if not c.name]
    if unnamed:
        raise InputError(f"{len(unnamed)} tree node(s) have no name; call name_internal_nodes first")


def reconstruct_treetime(
    tree, alignment: dict[str, str], *, seed: int = 0, model: dict[str, Any] | None = None
) -> AncestralResult:
    """Marginal ML ancestral sequences with TreeTime (GTR inferred) on a named, validated tree.

    Parameters
    ----------
    tree : Bio.Phylo tree whose nodes are all named and whose tips are the keys of ``alignment``.
    alignment : tip name -> aligned sequence (equal lengths; ``N`` = missing, ``-`` = gap).
    seed : TreeTime's random seed (only used for tie-breaking; results are deterministic).
    model : a GTR fitted before (``AncestralResult.model``: ``pi``, ``W``, ``mu``), kept fixed instead
        of inferred (a third of the time: the bootstrap trees reuse the main tree's model).

    Examples
    --------
    >>> from phenogen.phylo.tree import parse_newick
    >>> t = parse_newick("((A:0.1,B:0.1)x:0.1,(C:0.1,D:0.1)y:0.1)r;")
    >>> res = reconstruct_treetime(t, {"A": "ACGT", "B": "ACGT", "C": "ACGA", "D": "ACGA"})
    >>> sorted(res.sequences), res.sequences["x"]
    (['r', 'x', 'y'], 'ACGT')
    """
    from Bio.Align import MultipleSeqAlignment
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord
    from treetime import GTR, TreeAnc

    _require_named(tree)
    work = copy_tree(tree)
    for clade in work.find_clades():
        clade.comment = None
    aln = MultipleSeqAlignment([SeqRecord(Seq(s), id=n, description="") for n, s in alignment.items()])
    gtr: Any = "JC69"
    if model is not None:
        gtr = GTR.custom(pi=np.asarray(model["pi"]), W=np.asarray(model["W"]), mu=model["mu"], alphabet="nuc")
    anc = TreeAnc(tree=work, aln=aln, gtr=gtr, verbose=0, rng_seed=seed, fill_overhangs=True)
    anc.infer_ancestral_sequences(marginal=True, infer_gtr=model is None, reconstruct_tip_states=False)
    full_map = np.asarray(anc.data.full_to_compressed_sequence_map)
    sequences, confidence, profiles = {}, {}, {}
    alphabet = "".join(str(a) for a in anc.gtr.alphabet)
    for clade in anc.tree.get_nonterminals():
        profile = np.asarray(clade.marginal_profile)[full_map]  # (L, 5) over A C G T -
        sequences[clade.name] = anc.sequence(clade, as_string=True)
        confidence[clade.name] = profile.max(axis=1)
        profiles[clade.name] = profile.astype(np.float32)
    gtr = anc.gtr
    model = {
        "model": "GTR (inferred by TreeTime)" if model is None else "GTR (given)",
        "alphabet": [str(a) for a in gtr.alphabet],
        "pi": [float(x) for x in np.asarray(gtr.Pi).ravel()],
        "mu": float(gtr.mu),
        "W": np.asarray(gtr.W).round(6).tolist(),
    }
    ll = getattr(anc.tree, "sequence_marginal_LH", None)
    return AncestralResult(
        "treetime", sequences, confidence, model, None if ll is None else float(ll), profiles, alphabet
    )


def _splits(tree) -> dict[int, frozenset[str]]:
    """``id(clade) -> set of tip names below it``."""
    below: dict[int, frozenset[str]] = {}
    for clade in tree.find_clades(order="postorder"):
        if clade.is_terminal():
            below[id(clade)] = frozenset([clade.name])
        else:
            below[id(clade)] = frozenset().union(*(below[id(c)] for c in clade.clades))
    return below


def _match_unrooted(ours, theirs) -> dict[str, str]:
    """Map our internal node names to the other tree's internal names by the split above each node."""
    tips = frozenset(c.name for c in ours.get_terminals())
    their_below = _splits(theirs)
    by_split: dict[frozenset[str], Any] = {}
    parent = {id(c): p for p in theirs.find_clades() for c in p.clades}
    for clade in theirs.get_nonterminals():
        if clade is not theirs.root:
            by_split[their_below[id(clade)]] = clade
    out = {}
    our_below = _splits(ours)
    for clade in ours.get_nonterminals():
        if clade is ours.root:
            continue
        split = our_below[id(clade)]
        if split in by_split:  # same side: their node sits where ours does
            out[clade.name] = by_split[split].name
        elif (tips - split) in by_split:  # their clade is our complement: our node is its parent
            out[clade.name] = parent[id(by_split[tips - split])].name
    return out


def reconstruct_iqtree(
    tree, alignment: dict[str, str], *, model: str = "GTR+G", threads: int = 1, seed: int = 0
) -> AncestralResult:
    """IQ-TREE's marginal reconstruction (``-asr``) on a fixed tree, mapped to our node names."""
    plain = copy_tree(tree)
    for clade in plain.get_nonterminals():
        clade.name, clade.comment = None, None
    safe = {name: f"s{i}" for i, name in enumerate(alignment)}  # IQ-TREE rewrites ids with ( ) : …
    for tip in plain.get_terminals():
        tip.name = safe[tip.name]
    with tempfile.TemporaryDirectory(prefix="phenogen-iqasr-") as tmp:
        aln, nwk, prefix = Path(tmp) / "aln.fasta", Path(tmp) / "tree.nwk", Path(tmp) / "iq"
        write_fasta(aln, [(safe[n], s) for n, s in alignment.items()])
        nwk.write_text(to_newick(plain), encoding="utf-8")
        run_tool(
            "iqtree",
            [
                "-s",
                aln,
                "-te",
                nwk,
                "-m",
                model,
                "-asr",
                "-pre",
                prefix,
                "-seed",
                seed,
                "-nt",
                threads,
                "-quiet",
                "-redo",
            ],
        )
        state_path, tree_path = Path(f"{prefix}.state"), Path(f"{prefix}.treefile")
        if not state_path.is_file():
            raise ExternalToolError(
                f"IQ-TREE wrote no {state_path.name}; is this IQ-TREE >= 1.6 (needed for -asr)?"
            )
        theirs = read_tree(tree_path)
        back = {v: k for k, v in safe.items()}
        for tip in theirs.get_terminals():
            tip.name = back.get(tip.name, tip.name)
        for clade in theirs.get_nonterminals():  # labels may be "Node3" or "Node3/95"
            if clade.name:
                clade.name = clade.name.split("/")[0]
        rows: dict[str, tuple[list[str], list[float]]] = {}
        with state_path.open(encoding="utf-8") as fh:
            reader = csv.reader((line for line in fh if not line.startswith("#")), delimiter="\t")
            header = next(reader)
            prob_cols = [i for i, h in enumerate(header) if h.startswith("p_")]
            for row in reader:
                states, probs = rows.setdefault(row[0], ([], []))
                states.append(row[2])
                probs.append(max(float(row[i]) for i in prob_cols))
    mapping = _match_unrooted(tree, theirs)
    sequences, confidence = {}, {}
    for ours, name in mapping.items():
        if name in rows:
            states, probs = rows[name]
            sequences[ours] = "".join(states)
            confidence[ours] = np.asarray(probs)
    return AncestralResult("iqtree", sequences, confidence, {"model": model})


def node_table(
    tree,
    result: AncestralResult,
    *,
    low_confidence: float = 0.9,
    names=None,
    genetic_code: int | None = 2,
    low_support: float = 0.7,
    alignment: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One row per internal node: name, parent, tips and species below, depth, support, posterior summary.

    ``names`` (a :class:`~phenogen.phylo.names.TipNames`) adds ``species`` (up to four below the node)
    and ``taxon`` (the species or genus all its tips share). ``support`` is the tree builder's branch
    support for the clade (FastTree SH-like local support, IQ-TREE's; ``None`` for the root and for
    given trees without it) and ``low_support`` flags it below ``low_support``. ``stop_codons`` counts
    the stops of the reconstructed sequence in its best frame under NCBI code ``genetic_code``
    (:func:`phenogen.phylo.frame.stop_codons`; ``None``: not counted). ``mean_calibrated`` is the
    expected fraction of right bases after :func:`phenogen.phylo.calibration.calibrate` (TreeTime only):
    the raw posterior is overconfident. With ``alignment`` (tip -> aligned sequence), ``extrapolated_sites``
    counts the sites where none of the node's own tips has a base (the alignment's overhangs, missing
    data: the base there comes from outside the clade) and ``stop_codons_in_covered`` counts stops with
    those sites left out — on the USNM birds every stop codon of a reconstructed ancestor lies there.
    """
    from phenogen.phylo.calibration import calibrate
    from phenogen.phylo.frame import stop_codons

    depths = node_depths(tree)
    covered: dict[int, np.ndarray] = {}
    if alignment is not None:
        for clade in tree.find_clades(order="postorder"):
            if clade.is_terminal():
                seq = alignment.get(clade.name, "")
                covered[id(clade)] = np.frombuffer(seq.encode("ascii"), dtype=np.uint8) != ord("-")
            else:
                covered[id(clade)] = np.logical_or.reduce([covered[id(c)] for c in clade.clades])
    parent = {id(c): p.name for p in tree.find_clades() for c in p.clades}
    rows = []
    for clade in tree.get_nonterminals(order="preorder"):
        conf = result.confidence.get(clade.name)
        seq = result.sequences.get(clade.name, "")
        tips = [t.name for t in clade.get_terminals()]
        support = getattr(clade, "support", None)
        row: dict[str, Any] = {
            "node": clade.name,
            "parent": parent.get(id(clade), ""),
            "n_tips": len(tips),
            "tips": ";".join(tips[:4]) + (";…" if len(tips) > 4 else ""),
        }
        if names is not None:
            species = list(dict.fromkeys(names.display(t) for t in tips))
            row["species"] = ";".join(species[:4]) + (f";… ({len(species)})" if len(species) > 4 else "")
            row["taxon"] = names.taxon(tips)
        row |= {
            "depth": round(depths[id(clade)], 6),
            "support": None if support is None else float(support),
            "low_support": None if support is None else bool(support < low_support),
            "mean_posterior": None if conf is None else round(float(conf.mean()), 6),
            "min_posterior": None if conf is None else round(float(conf.min()), 6),
            "mean_calibrated": None
            if conf is None or result.method != "treetime"
            else round(float(calibrate(conf).mean()), 6),
            f"sites_below_{low_confidence:g}": None if conf is None else int((conf < low_confidence).sum()),
            "gap_fraction": round(seq.count("-") / len(seq), 6) if seq else None,
        }
        if genetic_code is not None:
            row["stop_codons"] = stop_codons(seq, genetic_code) if seq else None
        if covered and seq:
            cov = covered[id(clade)]
            row["extrapolated_sites"] = int((~cov).sum())
            if genetic_code is not None:
                kept = "".join(ch for ch, ok in zip(seq, cov, strict=True) if ok)
                row["stop_codons_in_covered"] = stop_codons(kept, genetic_code)
        rows.append(row)
    return rows


def annotate_tree(tree, rows: list[dict[str, Any]], names=None) -> Any:
    """A copy of ``tree`` for people: internal nodes carry ``[&posterior=…,support=…,taxon="…"]``
    (``posterior``: the mean per-site posterior of the reconstructed sequence; ``support``: the tree
    builder's branch support; ``clade_frequency`` with ``--bootstrap``: the share of bootstrap trees
    holding the clade), tips are labelled ``Genus species|id`` when ``names`` knows the species."""
    out = copy_tree(tree)
    by_name = {r["node"]: r for r in rows}
    for clade in out.get_nonterminals():
        row = by_name.get(clade.name)
        if row is None:
            continue
        parts = []
        if row["mean_posterior"] is not None:
            parts.append(f"posterior={row['mean_posterior']:.4f}")
        if row["support"] is not None:
            parts.append(f"support={row['support']:g}")
        if row.get("clade_frequency") is not None:
            parts.append(f"clade_frequency={row['clade_frequency']:g}")
        if row.get("taxon"):
            parts.append(f'taxon="{row["taxon"]}"')
        clade.comment = "&" + ",".join(parts) if parts else None
    if names is not None:
        for tip in out.get_terminals():
            tip.name = names.label(tip.name)
    return out


def write_state_table(result: AncestralResult, path: str | Path, nodes: list[str] | None = None) -> Path:
    """Per-site posteriors, one row per node and site, like IQ-TREE's ``.state`` (tab-separated, gzip).

    Columns ``Node Site State p_A p_C p_G p_T p_-`` (sites 1-based, alignment coordinates; ``p_-`` is
    TreeTime's gap state). ``nodes`` (default: every reconstructed node) in that order.
    """
    import gzip

    path = Path(path)
    cols = [f"p_{a}" for a in result.alphabet]
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=4) as fh:
        fh.write("# per-site marginal posteriors of the reconstructed ancestors (phenogen ancestors)\n")
        fh.write("\t".join(["Node", "Site", "State", *cols]) + "\n")
        for name in nodes or list(result.profiles):
            profile, seq = result.profiles[name], result.sequences[name]
            text = np.char.mod("%.4f", profile)
            fh.writelines(f"{name}\t{i + 1}\t{seq[i]}\t" + "\t".join(text[i]) + "\n" for i in range(len(seq)))
    return path

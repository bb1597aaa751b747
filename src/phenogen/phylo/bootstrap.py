"""Ancestral reconstruction over tree uncertainty: bootstrap trees, clade frequencies, replicate ancestors.

One ML tree is one guess. ``phenogen ancestors --bootstrap N`` (``[ancestors] bootstrap = N``) asks how
much a reconstructed ancestor depends on it:

1. :func:`bootstrap_trees` — ``N`` trees of the same alignment: columns resampled with replacement
   (seeded) and every replicate inferred by one FastTree process (``-n N`` on a PHYLIP
   multi-alignment, options ``bootstrap_fasttree_args``), or IQ-TREE's UFBoot trees (``-B … -wbt``),
   ``N`` of them taken evenly. Each is rooted like the main tree (:func:`~phenogen.phylo.tree.root_tree`).
2. :func:`reconstruct_over_trees` — for every internal node of the main tree, its *clade frequency*
   (the fraction of rooted replicate trees in which its tip set is a clade) and *split frequency* (of
   unrooted trees holding the bipartition: the classic bootstrap support); TreeTime reconstructs the
   ancestors on each replicate tree from the *original* alignment (as the main path does), and where a
   node's clade exists its replicate sequence is counted. From the counts (node × site × base):

   ``boot_consensus``            the per-site majority base (``ancestors.bootstrap.fasta``);
   ``boot_pairwise_identity``    mean identity of two replicate reconstructions (sites, gaps as a state);
   ``boot_majority_agreement``   mean over sites of the majority base's share;
   ``boot_identity_with_main``   mean share of replicates agreeing with the main tree's base;
   ``boot_sites_split``          sites at which the replicates do not all agree.

   ``targets`` (tip groups, e.g. ``--mrca`` choices) are followed as the MRCA of their tips in every
   tree — such a node exists in all trees, even where its clade gained or lost tips.
3. For chosen nodes the distinct replicate sequences are kept, most frequent first
   (:attr:`TreeSample.variants`), which the portraits paint as a row (:mod:`phenogen.phylo.portraits`).

Clades are compared by a 64-bit hash of their tip set (sum of random tip keys modulo 2⁶⁴; a collision
among a few thousand clades has probability ~1e-12), so a replicate costs one pass over its nodes.

>>> from phenogen.phylo.tree import parse_newick
>>> main = parse_newick("(((A:1,B:1)x:1,C:1)y:1,D:1)r;")
>>> other = parse_newick("(((A:1,C:1):1,B:1):1,D:1);")
>>> clade_frequencies(main, [main, other])["x"]
0.5
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.errors import ExternalToolError, InputError
from phenogen.phylo.tools import run_tool

__all__ = [
    "TreeSample",
    "resample_columns",
    "SEARCHES",
    "search_args",
    "bootstrap_trees",
    "clade_frequencies",
    "reconstruct_over_trees",
]

log = logging.getLogger(__name__)
_MASK = (1 << 64) - 1
_CODES = np.full(256, 4, dtype=np.uint8)  # A C G T, everything else (gap, N) as state 4
for _i, _b in enumerate(b"ACGT"):
    _CODES[_b] = _i
_BASES = np.frombuffer(b"ACGT-", dtype=np.uint8)


def resample_columns(sequences: Sequence[str], n: int, seed: int = 0) -> list[list[str]]:
    """``n`` bootstrap replicates of an alignment: its columns drawn with replacement (seeded)."""
    rows = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8).reshape(len(sequences), -1)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cols = rng.integers(0, rows.shape[1], rows.shape[1])
        out.append([r.tobytes().decode("ascii") for r in rows[:, cols]])
    return out


SEARCHES = {
    "ml": ("-gtr", "-nosupport"),
    "me": ("-gtr", "-nosupport", "-noml"),
    "nj": ("-gtr", "-nosupport", "-noml", "-nni", "0", "-spr", "0"),
}
"""FastTree options per ``bootstrap_search`` (``auto``: ``ml`` below :data:`AUTO_NJ_TIPS` tips, else ``nj``)."""
AUTO_NJ_TIPS = 500


def search_args(search: str, n_tips: int) -> tuple[str, ...]:
    """FastTree options of a ``bootstrap_search`` setting for ``n_tips`` tips."""
    if search == "auto":
        search = "ml" if n_tips < AUTO_NJ_TIPS else "nj"
    if search not in SEARCHES:
        raise InputError(f"bootstrap_search {search!r}: use auto, ml, me or nj")
    return SEARCHES[search]


def _fasttree_replicates(
    names: Sequence[str], sequences: Sequence[str], n: int, seed: int, args: Sequence[str], tmp: Path
) -> Iterator[str]:
    """Newick texts of FastTree on ``n`` resampled alignments, tips ``s0 …``, as FastTree writes them.

    One FastTree process reads all replicates (``-n``); its trees are read while it runs, so TreeTime
    works on tree k while FastTree builds tree k + 1 (two cores: about half the time).
    """
    from phenogen.phylo.tools import find_tool

    phylip = tmp / "replicates.phy"
    with phylip.open("w", encoding="ascii") as fh:
        for replicate in resample_columns(sequences, n, seed):
            fh.write(f"{len(names)} {len(replicate[0])}\n")
            fh.writelines(f"s{i} {seq}\n" for i, seq in enumerate(replicate))
    cmd = [find_tool("fasttree"), "-nt", "-quiet", "-nopr", "-seed", str(seed + 1), *args, "-n", str(n),
           str(phylip)]  # fmt: skip
    log.info("running %s", " ".join(cmd))
    with (tmp / "stderr.txt").open("w+", encoding="utf-8") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        finished = False
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.strip():
                    yield line
            finished = True
        finally:
            if not finished:
                proc.kill()  # the caller stopped early (or failed)
            code = proc.wait()
        if finished and code != 0:
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-8:])
            raise ExternalToolError(f"fasttree failed (exit code {code}): {' '.join(cmd)}\n{tail}")


def _ufboot_replicates(
    names: Sequence[str], sequences: Sequence[str], n: int, seed: int, model: str, threads: int, tmp: Path
) -> list[str]:
    """``n`` of IQ-TREE's UFBoot trees (``-B max(1000, n) -wbt``), evenly spaced, tips ``s0 …``."""
    from phenogen.dna.seqio import write_fasta

    aln, prefix = tmp / "aln.fasta", tmp / "iq"
    write_fasta(aln, [(f"s{i}", s) for i, s in enumerate(sequences)])
    run_tool("iqtree", ["-s", aln, "-m", model, "-B", max(1000, n), "-wbt", "-pre", prefix, "-seed", seed,
                        "-nt", threads, "-quiet", "-redo"])  # fmt: skip
    path = Path(f"{prefix}.ufboot")
    if not path.is_file():
        raise ExternalToolError(f"IQ-TREE wrote no {path.name} (UFBoot trees; needs IQ-TREE >= 1.6)")
    trees = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    picks = np.linspace(0, len(trees) - 1, n).round().astype(int)
    return [trees[i] for i in picks]


def bootstrap_trees(
    names: Sequence[str],
    sequences: Sequence[str],
    n: int,
    *,
    method: str = "fasttree",
    search: str = "auto",
    seed: int = 0,
    rooting: str = "midpoint",
    outgroup: Sequence[str] = (),
    iqtree_model: str = "GTR+G",
    threads: int = 1,
) -> Iterator[Any]:
    """``n`` replicate trees of an alignment, rooted like the main tree, as they are made (a generator).

    ``method``: ``fasttree`` (columns resampled, FastTree with :func:`search_args` of ``search``) or
    ``ufboot`` (IQ-TREE). Tips carry ``names``; negative branch lengths are set to 0 and missing ones to
    1e-6, as for the main tree (one count in the log for all replicates).

    Examples
    --------
    >>> seqs = ["ACGTACGTAA", "ACGTACGTTA", "ACGAACGTTT", "TCGAACCTTT"]
    >>> trees = list(bootstrap_trees(["a", "b", "c", "d"], seqs, 3))
    >>> len(trees), sorted(t.name for t in trees[0].get_terminals())
    (3, ['a', 'b', 'c', 'd'])
    """
    from phenogen.phylo.tree import parse_newick, root_tree

    if n < 1:
        raise InputError(f"bootstrap needs at least one tree, got {n}")
    back = {f"s{i}": name for i, name in enumerate(names)}
    made = negative = 0
    with tempfile.TemporaryDirectory(prefix="phenogen-bootstrap-") as tmp:
        if method == "fasttree":
            texts: Iterable[str] = _fasttree_replicates(
                names, sequences, n, seed, search_args(search, len(names)), Path(tmp)
            )
        elif method == "ufboot":
            texts = _ufboot_replicates(names, sequences, n, seed, iqtree_model, threads, Path(tmp))
        else:
            raise InputError(f"unknown bootstrap method {method!r}; use fasttree or ufboot")
        for text in texts:
            made += 1
            tree = parse_newick(text.strip(), f"{method} replicate {made}")
            for clade in tree.get_nonterminals():
                clade.name = None  # IQ-TREE/FastTree labels are supports, not names
                clade.support = None
            for tip in tree.get_terminals():
                tip.name = back[tip.name]
            for clade in tree.find_clades():  # as fix_branch_lengths, counted once for all replicates
                if clade is not tree.root and (clade.branch_length is None or clade.branch_length < 0):
                    negative += clade.branch_length is not None
                    clade.branch_length = 0.0 if clade.branch_length is not None else 1e-6
            root_tree(tree, rooting, outgroup, fast=True)
            yield tree
    if made != n:
        raise ExternalToolError(f"{method} returned {made} replicate trees for {n} alignments")
    if negative:
        log.info(
            "bootstrap trees: %d negative branch length(s) set to 0 (neighbour-joining gives them)", negative
        )


def _tip_keys(tips: Sequence[str], seed: int = 12345) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=(len(tips), 2), dtype=np.int64)
    return {t: (int(a) << 1 ^ int(b)) & _MASK for t, (a, b) in zip(tips, keys, strict=True)}


def _clade_hashes(tree, keys: Mapping[str, int]) -> list[tuple[Any, int]]:
    """``(clade, hash of its tip set)`` for every clade of ``tree`` (postorder)."""
    h: dict[int, int] = {}
    out = []
    for clade in tree.find_clades(order="postorder"):
        if clade.is_terminal():
            value = keys[clade.name]
        else:
            value = sum(h[id(c)] for c in clade.clades) & _MASK
        h[id(clade)] = value
        out.append((clade, value))
    return out


def _split(value: int, total: int) -> int:
    """The same key for a tip set and its complement (an unrooted split)."""
    return min(value, (total - value) & _MASK)


def clade_frequencies(main_tree, trees: Sequence[Any]) -> dict[str, float]:
    """Internal node name of ``main_tree`` -> fraction of ``trees`` (rooted alike) in which its tip set is a clade."""
    keys = _tip_keys(sorted(t.name for t in main_tree.get_terminals()))
    wanted = {c.name: v for c, v in _clade_hashes(main_tree, keys) if not c.is_terminal()}
    seen: Counter[int] = Counter()
    for tree in trees:
        seen.update({v for c, v in _clade_hashes(tree, keys) if not c.is_terminal()})
    return {name: seen[v] / len(trees) for name, v in wanted.items()}


@dataclass
class TreeSample:
    """What the replicate trees say about each internal node of the main tree (see module doc)."""

    n_trees: int
    method: str
    alignment_length: int
    clade_frequency: dict[str, float]  # main node -> fraction of rooted trees with its clade
    split_frequency: dict[str, float | None]  # main node -> fraction of trees with its split (None: root)
    counts: dict[str, np.ndarray]  # node (or target) -> (L, 5) replicate base counts over A C G T -
    variants: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # chosen -> [(seq, trees)]
    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target name -> its tips
    timings: dict[str, float] = field(default_factory=dict)
    search: str | None = None  # the FastTree options of the replicates

    def consensus(self, node: str) -> str:
        """Per-site majority base of ``node``'s replicate reconstructions (ties: first of A C G T -)."""
        return _BASES[self.counts[node].argmax(axis=1)].tobytes().decode("ascii")

    def spread(self, node: str, main_sequence: str | None = None) -> dict[str, Any]:
        """Spread of ``node``'s replicate reconstructions (module doc); empty values when no tree has it."""
        c = self.counts.get(node)
        n = 0 if c is None else int(c[0].sum())
        row: dict[str, Any] = {
            "boot_trees": n,
            "boot_pairwise_identity": None,
            "boot_majority_agreement": None,
            "boot_identity_with_main": None,
            "boot_sites_split": None,
        }
        if not n:
            return row
        c = c.astype(np.float64)
        row["boot_majority_agreement"] = round(float((c.max(axis=1) / n).mean()), 6)
        row["boot_sites_split"] = int((c.max(axis=1) < n).sum())
        if n >= 2:
            row["boot_pairwise_identity"] = round(
                float(((c * (c - 1)).sum(axis=1) / (n * (n - 1))).mean()), 6
            )
        if main_sequence is not None:
            idx = _CODES[np.frombuffer(main_sequence.encode("ascii"), dtype=np.uint8)]
            row["boot_identity_with_main"] = round(float((c[np.arange(len(idx)), idx] / n).mean()), 6)
        return row

    def summary(
        self, chosen: Sequence[str] = (), main_sequences: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """JSON-ready: settings, the distributions of clade frequency and spread, per chosen node detail
        (``main_sequences``: the main tree's reconstructions, for ``boot_identity_with_main``)."""
        main_sequences = main_sequences or {}
        freqs = np.asarray(list(self.clade_frequency.values()), dtype=float)
        pairwise = [self.spread(n)["boot_pairwise_identity"] for n in self.clade_frequency]
        pairwise = np.asarray([p for p in pairwise if p is not None], dtype=float)
        out: dict[str, Any] = {
            "trees": self.n_trees,
            "method": self.method,
            "search": self.search,
            "nodes": len(freqs),
            "clade_frequency": _describe(freqs),
            "clade_frequency_histogram": np.histogram(freqs, bins=10, range=(0, 1))[0].tolist(),
            "nodes_in_every_tree": int((freqs == 1).sum()),
            "nodes_in_no_tree": int((freqs == 0).sum()),
            "pairwise_identity": _describe(pairwise),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "chosen": {},
        }
        for name in chosen:
            entry: dict[str, Any] = {"clade_frequency": self.clade_frequency.get(name)}
            if name in self.counts:
                entry |= self.spread(name, main_sequences.get(name))
                entry["variants"] = [{"trees": k, "sequence": s} for s, k in self.variants.get(name, [])[:10]]
            out["chosen"][name] = entry
        for name, tips in self.targets.items():
            out["chosen"].setdefault(name, {})["mrca_of"] = list(tips)
            out["chosen"][name]["mrca_in_every_tree"] = self.spread(f"mrca:{name}", main_sequences.get(name))
        return out


def _describe(v: np.ndarray) -> dict[str, float | None]:
    if v.size == 0:
        return {"mean": None, "median": None, "q10": None, "q90": None, "n": 0}
    return {"mean": round(float(v.mean()), 6), "median": round(float(np.median(v)), 6),
            "q10": round(float(np.quantile(v, 0.1)), 6), "q90": round(float(np.quantile(v, 0.9)), 6),
            "n": int(v.size)}  # fmt: skip


def reconstruct_over_trees(
    main_tree,
    trees: Iterable[Any],
    alignment: Mapping[str, str],
    *,
    chosen: Sequence[str] = (),
    targets: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    model: dict[str, Any] | None = None,
    method: str = "fasttree",
) -> TreeSample:
    """Clade frequencies of ``main_tree``'s internal nodes over ``trees`` and TreeTime on each tree.

    ``alignment`` (tip -> aligned sequence) is what every tree is reconstructed from; ``model`` (the
    main reconstruction's GTR, ``AncestralResult.model``) is kept fixed on every tree, else TreeTime
    fits one per tree. ``trees`` may be a generator (:func:`bootstrap_trees`). ``chosen`` main nodes
    keep their distinct replicate sequences; ``targets`` (name -> tips) are followed as the MRCA of
    their tips in every tree (counts under ``"mrca:" + name``).

    Examples
    --------
    >>> from phenogen.phylo.tree import parse_newick
    >>> main = parse_newick("(((A:.1,B:.1)x:.1,C:.1)y:.1,(D:.1,E:.1)z:.1)r;")
    >>> alt = parse_newick("(((A:.1,C:.1):.1,B:.1):.1,(D:.1,E:.1):.1);")
    >>> aln = {"A": "ACGT", "B": "ACGT", "C": "ACGA", "D": "TCGA", "E": "TCGA"}
    >>> s = reconstruct_over_trees(main, [main, alt], aln, chosen=["z"])
    >>> s.clade_frequency["x"], s.clade_frequency["z"], s.spread("z")["boot_trees"]
    (0.5, 1.0, 2)
    """
    from phenogen.phylo.asr import reconstruct_treetime
    from phenogen.phylo.tree import copy_tree, name_internal_nodes

    targets = {k: tuple(v) for k, v in (targets or {}).items()}
    length = len(next(iter(alignment.values())))
    tip_list = sorted(t.name for t in main_tree.get_terminals())
    keys = _tip_keys(tip_list)
    total = sum(keys.values()) & _MASK
    main = [(c.name, v) for c, v in _clade_hashes(main_tree, keys) if not c.is_terminal()]
    root_name = main_tree.root.name
    wanted = {v: name for name, v in main}
    counts = {name: np.zeros((length, 5), dtype=np.uint16) for name, _ in main}
    counts |= {f"mrca:{k}": np.zeros((length, 5), dtype=np.uint16) for k in targets}
    seen: Counter[int] = Counter()
    split_seen: Counter[int] = Counter()
    variants: dict[str, Counter[str]] = {n: Counter() for n in chosen}
    timings = {"trees_s": 0.0, "asr_s": 0.0}
    sites = np.arange(length)
    n = 0
    iterator = iter(trees)
    while True:
        t0 = time.perf_counter()
        tree = next(iterator, None)
        timings["trees_s"] += time.perf_counter() - t0
        if tree is None:
            break
        n += 1
        tree = copy_tree(tree)
        for clade in tree.get_nonterminals():
            clade.name = None
        name_internal_nodes(tree, prefix="b")
        hashes = [(c, v) for c, v in _clade_hashes(tree, keys) if not c.is_terminal()]
        seen.update({v for _, v in hashes})
        split_seen.update({_split(v, total) for c, v in hashes if c is not tree.root})
        t0 = time.perf_counter()
        result = reconstruct_treetime(tree, dict(alignment), seed=seed, model=model)
        timings["asr_s"] += time.perf_counter() - t0
        matched = [(wanted[v], c.name) for c, v in hashes if v in wanted]
        tips = {t.name: t for t in tree.get_terminals()}
        for name, group in targets.items():
            matched.append((f"mrca:{name}", tree.common_ancestor([tips[t] for t in group]).name))
        if matched:
            seqs = np.frombuffer(
                "".join(result.sequences[b] for _, b in matched).encode("ascii"), dtype=np.uint8
            )
            idx = _CODES[seqs].reshape(len(matched), length)
            for row, (name, _) in zip(idx, matched, strict=True):
                counts[name][sites, row] += 1
        for name, b in matched:
            if name in variants:
                variants[name][result.sequences[b]] += 1
        log.info(
            "bootstrap tree %d: %d of %d nodes' clades present", n, len(matched) - len(targets), len(main)
        )
    if n == 0:
        raise InputError("no bootstrap tree to reconstruct on")
    clade_frequency = {name: seen[v] / n for name, v in main}
    split_frequency: dict[str, float | None] = {
        name: None if name == root_name else split_seen[_split(v, total)] / n for name, v in main
    }
    return TreeSample(
        n_trees=n,
        method=method,
        alignment_length=length,
        clade_frequency=clade_frequency,
        split_frequency=split_frequency,
        counts=counts,
        variants={name: c.most_common() for name, c in variants.items()},
        targets=targets,
        timings=timings,
    )

"""Trees for ancestral reconstruction: read, validate, infer (FastTree / IQ-TREE), root, name, write.

Tree I/O is Bio.Phylo's Newick reader and writer. Validation is strict and names what is wrong:

* tip names must be unique, and must match the FASTA record ids exactly (both directions are
  reported: "in the tree but not the FASTA", "in the FASTA but not the tree");
* a *negative* branch length is an error (it has no meaning for substitution models; re-estimate
  the tree, or pass no tree and let FastTree infer one);
* a *missing* branch length (``(A,B)`` or ``A:``) is set to ``missing_branch_length`` (default
  1e-6, "no change") and counted; the count is logged and stored in ``nodes.json``. The root's
  own branch is ignored.

Rooting is explicit (``midpoint``, ``outgroup`` with one or more tip names, or ``none`` = keep the
input root; FastTree and IQ-TREE trees are unrooted, so ``none`` roots them at their arbitrary
basal multifurcation). Internal nodes keep the names they have in the input tree; unnamed ones are
named ``anc001, anc002, …`` in preorder *after* rooting, so the same tree always gets the same
names. Support values (FastTree's SH-like, IQ-TREE's) are moved out of the Newick labels into
``clade.confidence`` and reported in the node table.

>>> import io
>>> t = parse_newick("((A:1,B:1):1,(C:1,D:1):1);")
>>> _ = name_internal_nodes(t)
>>> [c.name for c in t.get_nonterminals()]
['anc001', 'anc002', 'anc003']
"""

from __future__ import annotations

import io
import logging
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from phenogen.dna.seqio import write_fasta
from phenogen.errors import InputError
from phenogen.phylo.tools import run_tool

__all__ = [
    "parse_newick",
    "read_tree",
    "write_tree",
    "to_newick",
    "tip_names",
    "check_names",
    "fix_branch_lengths",
    "name_internal_nodes",
    "root_tree",
    "infer_tree",
    "node_depths",
]

log = logging.getLogger(__name__)
Rooting = Literal["midpoint", "outgroup", "none"]


def parse_newick(text: str, source: str = "<newick>"):
    """Parse one Newick tree from a string (Bio.Phylo ``Tree``)."""
    from Bio import Phylo

    try:
        trees = list(Phylo.parse(io.StringIO(text), "newick"))
    except Exception as exc:  # Bio raises NewickError / ValueError with a position
        raise InputError(f"{source}: not a valid Newick tree: {exc}") from exc
    if len(trees) != 1:
        raise InputError(f"{source}: expected exactly one Newick tree, found {len(trees)}")
    tree = trees[0]
    tree.rooted = True
    _strip_support(tree)
    return tree


def read_tree(path: str | Path):
    """Read a Newick file; raises :class:`InputError` naming the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tree file {path} does not exist")
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        raise InputError(f"tree file {path} is empty")
    return parse_newick(text, str(path))


def to_newick(tree) -> str:
    """Newick text of ``tree`` (names, branch lengths and ``[&...]`` comments; no support labels)."""
    from Bio import Phylo

    buf = io.StringIO()
    Phylo.write(tree, buf, "newick")
    return buf.getvalue().strip() + "\n"


def write_tree(tree, path: str | Path) -> Path:
    """Write ``tree`` as Newick to ``path``."""
    path = Path(path)
    path.write_text(to_newick(tree), encoding="utf-8")
    return path


def tip_names(tree) -> list[str]:
    """Tip names in preorder (``None`` for unnamed tips)."""
    return [c.name for c in tree.get_terminals()]


def check_names(
    tree, names: Sequence[str], *, tree_source: str = "tree", fasta_source: str = "FASTA"
) -> None:
    """Tips must be named, unique, and exactly the FASTA ids; raise :class:`InputError` saying which differ."""
    tips = tip_names(tree)
    unnamed = sum(1 for t in tips if not t)
    if unnamed:
        raise InputError(
            f"{tree_source}: {unnamed} tip(s) have no name; every tip must be named after a FASTA record"
        )
    dup = sorted(n for n, k in Counter(tips).items() if k > 1)
    if dup:
        raise InputError(
            f"{tree_source}: duplicate tip name(s) {', '.join(dup[:10])}; tip names must be unique"
        )
    internal = {c.name for c in tree.get_nonterminals() if c.name}
    clash = sorted(internal & set(tips))
    if clash:
        raise InputError(f"{tree_source}: internal node name(s) {', '.join(clash[:10])} are also tip names")
    only_tree = sorted(set(tips) - set(names))
    only_fasta = sorted(set(names) - set(tips))
    if only_tree or only_fasta:

        def show(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f" … ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = []
        if only_tree:
            parts.append(f"in the tree but not in {fasta_source}: {show(only_tree)}")
        if only_fasta:
            parts.append(f"in {fasta_source} but not in the tree: {show(only_fasta)}")
        raise InputError(f"{tree_source}: tip names and FASTA ids do not match; " + "; ".join(parts))


def fix_branch_lengths(tree, *, missing: float = 1e-6, source: str = "tree") -> int:
    """Reject negative branch lengths; set missing ones (not the root's) to ``missing``; return how many were set."""
    n_missing = 0
    for clade in tree.find_clades(order="preorder"):
        if clade is tree.root:
            continue
        bl = clade.branch_length
        if bl is None:
            clade.branch_length = missing
            n_missing += 1
        elif bl < 0:
            label = (
                clade.name or f"the ancestor of {', '.join(t.name or '?' for t in clade.get_terminals()[:3])}"
            )
            raise InputError(
                f"{source}: negative branch length {bl} above {label}; branch lengths must be >= 0 "
                "(re-estimate the tree, or omit --tree to infer one)"
            )
    if n_missing:
        log.warning("%s: %d missing branch length(s) set to %g", source, n_missing, missing)
    return n_missing


def name_internal_nodes(tree, prefix: str = "anc") -> int:
    """Name unnamed internal nodes ``{prefix}001 …`` in preorder, skipping names already used; return how many."""
    used = {c.name for c in tree.find_clades() if c.name}
    count, i = 0, 0
    width = max(3, len(str(len(tree.get_nonterminals()))))
    for clade in tree.find_clades(order="preorder"):
        if clade.is_terminal() or clade.name:
            continue
        while True:
            i += 1
            name = f"{prefix}{i:0{width}d}"
            if name not in used:
                break
        clade.name = name
        used.add(name)
        count += 1
    return count


def root_tree(tree, rooting: Rooting = "midpoint", outgroup: Sequence[str] = ()) -> None:
    """Root ``tree`` in place: at the midpoint, on the MRCA of ``outgroup`` tips, or leave it (``none``)."""
    if rooting == "none":
        return
    if rooting == "midpoint":
        tree.root_at_midpoint()
    elif rooting == "outgroup":
        if not outgroup:
            raise InputError("rooting 'outgroup' needs at least one outgroup tip name (--outgroup NAME …)")
        tips = {c.name: c for c in tree.get_terminals()}
        missing = [n for n in outgroup if n not in tips]
        if missing:
            raise InputError(f"outgroup tip(s) {', '.join(missing)} are not in the tree")
        target = (
            tips[outgroup[0]] if len(outgroup) == 1 else tree.common_ancestor([tips[n] for n in outgroup])
        )
        if target is tree.root:
            raise InputError(
                f"outgroup {', '.join(outgroup)} spans the root already; choose a smaller outgroup"
            )
        tree.root_with_outgroup(target)
    else:
        raise InputError(f"unknown rooting {rooting!r}; use midpoint, outgroup or none")
    tree.rooted = True
    if tree.root.branch_length is not None:
        tree.root.branch_length = None


def _strip_support(tree) -> None:
    """Support values stay in ``clade.confidence`` but are not written as labels (they would clash with names)."""
    for clade in tree.get_nonterminals():
        if clade.confidence is not None:
            clade.support = float(clade.confidence)  # read back by the node table
            clade.confidence = None


def infer_tree(
    names: Sequence[str],
    sequences: Sequence[str],
    *,
    method: Literal["fasttree", "iqtree"] = "fasttree",
    threads: int = 1,
    seed: int = 0,
    iqtree_model: str = "GTR+G",
    work_dir: str | Path | None = None,
):
    """Infer an (unrooted) ML tree of aligned sequences with FastTree (GTR+Γ) or IQ-TREE.

    Names are kept as given; they must be unique and Newick-safe (no spaces, ``(),:;``).
    """
    bad = [n for n in names if any(ch in n for ch in " \t(),:;[]'")]
    if bad:
        raise InputError(
            f"sequence id(s) {', '.join(bad[:5])} contain characters Newick cannot hold (space ( ) , : ; [ ])"
        )
    with tempfile.TemporaryDirectory(prefix=f"phenogen-{method}-", dir=work_dir) as tmp:
        aln = Path(tmp) / "aln.fasta"
        write_fasta(aln, list(zip(names, sequences, strict=True)))
        if method == "fasttree":
            out = Path(tmp) / "tree.nwk"
            run_tool("fasttree", ["-nt", "-gtr", "-gamma", "-quiet", "-nopr", str(aln)], stdout_path=out)
        elif method == "iqtree":
            prefix = Path(tmp) / "iq"
            run_tool(
                "iqtree",
                [
                    "-s",
                    aln,
                    "-m",
                    iqtree_model,
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
            out = Path(f"{prefix}.treefile")
        else:
            raise InputError(f"unknown tree method {method!r}; use fasttree or iqtree")
        tree = read_tree(out)  # support values move to clade.comment
    return tree


def node_depths(tree) -> dict[int, float]:
    """``id(clade) -> distance from the root`` (sum of branch lengths)."""
    depths = {id(tree.root): 0.0}
    for clade in tree.find_clades(order="preorder"):
        for child in clade.clades:
            depths[id(child)] = depths[id(clade)] + (child.branch_length or 0.0)
    return depths

"""Trees for ancestral reconstruction: read, validate, infer (FastTree / IQ-TREE), root, name, write.

Tree I/O is Bio.Phylo's Newick reader and writer. Validation is strict and names what is wrong:

* tip names must be unique, and must match the FASTA record ids exactly (both directions are
  reported: "in the tree but not the FASTA", "in the FASTA but not the tree");
* a *negative* branch length (neighbour-joining gives them, often ``-1e-6``) has no meaning for
  substitution models: it is set to 0 and counted in a warning; ``--strict-tree`` refuses the tree
  instead, naming every negative branch;
* a *missing* branch length (``(A,B)`` or ``A:``) is set to ``missing_branch_length`` (default
  1e-6, "no change") and counted; the count is logged and stored in ``nodes.json``. The root's
  own branch is ignored.

Rooting is explicit (``midpoint``, ``outgroup`` with one or more tip names, or ``none`` = keep the
input root; FastTree and IQ-TREE trees are unrooted, so ``none`` roots them at their arbitrary
basal multifurcation). Internal nodes keep the names they have in the input tree; unnamed ones are
named ``anc001, anc002, …`` in preorder *after* rooting, so the same tree always gets the same
names. Support values (FastTree's SH-like, IQ-TREE's) are moved out of the Newick labels into
``clade.confidence`` and reported in the node table.

Before Bio.Phylo sees a text, :func:`parse_newick` checks it lexically (Bio.Phylo silently skips
what it does not understand: ``A:x`` renames the tip ``x``, ``Homo sapiens`` becomes ``sapiens``),
and every problem is one :class:`~phenogen.errors.InputError` naming the source and the position:
unbalanced parentheses, nesting deeper than :data:`MAX_NEWICK_DEPTH`, an unterminated quote or
comment, a branch length that is not a number or not finite (``1e401`` overflows to ``inf``), two
labels or two lengths on one node, a support value that is not finite, text after the ``;``, and
input larger than :data:`MAX_NEWICK_CHARS`. Negative lengths are left to :func:`fix_branch_lengths`.

>>> import io
>>> t = parse_newick("((A:1,B:1):1,(C:1,D:1):1);")
>>> _ = name_internal_nodes(t)
>>> [c.name for c in t.get_nonterminals()]
['anc001', 'anc002', 'anc003']
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from phenogen.dna.seqio import write_fasta
from phenogen.errors import InputError
from phenogen.fsio import read_text
from phenogen.phylo.tools import run_tool

__all__ = [
    "parse_newick",
    "read_tree",
    "write_tree",
    "to_newick",
    "tip_names",
    "check_names",
    "fix_branch_lengths",
    "BranchFixes",
    "name_internal_nodes",
    "root_tree",
    "infer_tree",
    "node_depths",
    "copy_tree",
    "MAX_NEWICK_CHARS",
    "MAX_NEWICK_DEPTH",
]

log = logging.getLogger(__name__)
Rooting = Literal["midpoint", "outgroup", "none"]


MAX_NEWICK_CHARS = 16 * 1024 * 1024
"""Largest Newick text read (a tree of 3,000 barcodes is ~100 kB)."""
MAX_NEWICK_DEPTH = 500
"""Deepest parenthesis nesting accepted; Bio.Phylo's recursive traversals need stack for every level."""

# One token per match; every character of a text belongs to exactly one (see _check_newick). The
# quote and comment patterns are Bio.Phylo's without its backtracking and without newlines: Bio.Phylo
# parses line by line, and its patterns take exponential time on an unterminated quote full of '\\'.
_NEWICK_TOKEN = re.compile(
    r"(?P<open>\()|(?P<close>\))|(?P<comma>,)|(?P<semi>;)|(?P<colon>:)|(?P<space>\s+)"
    r"|(?P<comment>\[(?:\\[^\n]|[^\]\\\n])*\])|(?P<quoted>'(?:\\[^\n]|[^'\\\n])*')"
    r"|(?P<label>[^\s()\[\]':;,]+)|(?P<bad>.)",
    re.DOTALL,
)
# Bio.Phylo's edge-length number, [+-]?[0-9]*\.?[0-9]+(e..)?, written so that a failed match of a long
# run of digits does not backtrack quadratically.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _where(text: str, pos: int) -> str:
    """'position 12' (1-based), with the line and column when the text has several lines."""
    if "\n" not in text:
        return f"position {pos + 1}"
    line = text.count("\n", 0, pos) + 1
    return f"line {line}, column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def _check_newick(text: str, source: str) -> None:
    """Refuse, with its position, anything in ``text`` that Bio.Phylo would crash on or misread."""
    if len(text) > MAX_NEWICK_CHARS:
        raise InputError(f"{source}: Newick text of {len(text):,} characters; at most {MAX_NEWICK_CHARS:,}")
    if not text.strip():
        raise InputError(f"{source}: empty; expected a Newick tree such as ((A:1,B:1):1,C:2);")

    def fail(pos: int, what: str) -> InputError:
        return InputError(f"{source}, {_where(text, pos)}: {what}; not a valid Newick tree")

    depth = 0
    label = length = after_close = prev_quoted = False  # what the current node already has
    done = None  # position of the ';'
    tokens = _NEWICK_TOKEN.finditer(text)
    for m in tokens:
        kind, tok, pos = m.lastgroup, m.group(), m.start()
        if kind == "space":
            prev_quoted = False
            continue
        if done is not None:
            raise fail(
                pos, f"text after the ';' that ends the tree ({tok[:20]!r}); a tree file holds one tree"
            )
        if kind == "comment":
            prev_quoted = False
            continue
        quoted = kind == "quoted"
        if kind == "bad":
            what = (
                "unterminated quoted label" if tok == "'" else "unterminated [comment]" if tok == "[" else ""
            )
            raise fail(pos, what or f"unexpected {tok!r}")
        if kind == "open":
            if label or length or after_close:
                raise fail(pos, "'(' after a label, a length or ')'; a ',' is missing")
            depth += 1
            if depth > MAX_NEWICK_DEPTH:
                raise fail(pos, f"nested more than {MAX_NEWICK_DEPTH} levels deep")
        elif kind == "close":
            depth -= 1
            if depth < 0:
                raise fail(pos, "')' without a matching '('")
        elif kind == "semi":
            done = pos
        elif kind == "colon":
            if length:
                raise fail(pos, "second branch length on one node")
            start = m.end() + (text[m.end() : m.end() + 1] == " ")  # Bio.Phylo allows one space
            num = _NEWICK_TOKEN.match(text, start)
            if num is not None and num.lastgroup == "space":
                after = _NEWICK_TOKEN.match(text, num.end())
                if after is not None and after.lastgroup in ("label", "quoted"):
                    raise fail(after.start(), "spaces between ':' and the branch length")
            elif num is not None and num.lastgroup in ("label", "quoted"):
                value = num.group()
                if not _NUMBER.fullmatch(value):
                    raise fail(num.start(), f"branch length {value[:30]!r} is not a number")
                if not math.isfinite(float(value)):
                    raise fail(num.start(), f"branch length {value[:30]} is not a finite number")
                while next(tokens).end() < num.end():  # skip the space and the number: not a label
                    pass
            length = True
            prev_quoted = False
            continue
        elif kind in ("label", "quoted"):
            if (label or length) and not (quoted and prev_quoted):  # 'a''b' is one label with a quote
                raise fail(pos, f"second label {tok[:30]!r} on one node (quote names that hold spaces)")
            if after_close:  # Bio.Phylo reads a numeric internal label as a support value
                name = tok[1:-1] if quoted else tok
                if name.isdigit() and len(name) > 30:
                    raise fail(pos, f"support value of {len(name)} digits")
                try:
                    support = float(name)
                except ValueError:
                    support = None
                if support is not None and not math.isfinite(support):
                    raise fail(pos, f"support value {name[:30]} is not a finite number")
            label = True
            prev_quoted = quoted
            continue
        # '(' ',' ')' ';' start or end a node
        label = length = prev_quoted = False
        after_close = kind == "close"
    if depth > 0:
        raise fail(len(text) - 1, f"{depth} '(' without a matching ')'")


@contextlib.contextmanager
def _deep_stack() -> Iterator[None]:
    """Room on the stack for Bio.Phylo's recursive writer and rooting (up to ~3 frames per level)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 4 * MAX_NEWICK_DEPTH + 2000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def parse_newick(text: str, source: str = "<newick>"):
    """Parse one Newick tree from a string (Bio.Phylo ``Tree``), checked first by :func:`_check_newick`."""
    from Bio import Phylo

    if not isinstance(text, str):
        raise InputError(f"{source}: expected Newick text, got {type(text).__name__}")
    _check_newick(text, source)
    try:
        with _deep_stack():
            trees = list(Phylo.parse(io.StringIO(text), "newick"))
            if len(trees) == 1:
                _strip_support(trees[0])
    except Exception as exc:  # Bio raises NewickError / ValueError with a position
        raise InputError(f"{source}: not a valid Newick tree: {' '.join(str(exc).split())[:200]}") from None
    if len(trees) != 1:
        raise InputError(f"{source}: expected exactly one Newick tree, found {len(trees)}")
    tree = trees[0]
    tree.rooted = True
    return tree


def read_tree(path: str | Path):
    """Read a Newick file; raises :class:`InputError` naming the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"tree file {path} does not exist")
    text = read_text(path, "tree file", max_bytes=MAX_NEWICK_CHARS).strip()
    if not text:
        raise InputError(f"tree file {path} is empty")
    return parse_newick(text, str(path))


def to_newick(tree) -> str:
    """Newick text of ``tree`` (names, branch lengths and ``[&...]`` comments; no support labels)."""
    from Bio import Phylo

    buf = io.StringIO()
    with _deep_stack():
        Phylo.write(tree, buf, "newick")
    return buf.getvalue().strip() + "\n"


def write_tree(tree, path: str | Path) -> Path:
    """Write ``tree`` as Newick to ``path``."""
    path = Path(path)
    path.write_text(to_newick(tree), encoding="utf-8")
    return path


def _names(names: Sequence[str], limit: int = 40) -> str:
    """Names for a message, each cut to ``limit`` characters (a tip name may be a megabyte long)."""
    return ", ".join(n if len(n) <= limit else n[:limit] + f"… ({len(n):,} characters)" for n in names)


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
        raise InputError(f"{tree_source}: duplicate tip name(s) {_names(dup[:10])}; tip names must be unique")
    internal = {c.name for c in tree.get_nonterminals() if c.name}
    clash = sorted(internal & set(tips))
    if clash:
        raise InputError(f"{tree_source}: internal node name(s) {_names(clash[:10])} are also tip names")
    only_tree = sorted(set(tips) - set(names))
    only_fasta = sorted(set(names) - set(tips))
    if only_tree or only_fasta:

        def show(xs: list[str]) -> str:
            return _names(xs[:8]) + (f" … ({len(xs)} in all)" if len(xs) > 8 else "")

        parts = []
        if only_tree:
            parts.append(f"in the tree but not in {fasta_source}: {show(only_tree)}")
        if only_fasta:
            parts.append(f"in {fasta_source} but not in the tree: {show(only_fasta)}")
        raise InputError(f"{tree_source}: tip names and FASTA ids do not match; " + "; ".join(parts))


class BranchFixes(NamedTuple):
    """What :func:`fix_branch_lengths` changed: missing lengths set, negative ones set to zero, zeros seen."""

    missing: int
    negative: int
    zero: int


def _clade_label(clade) -> str:
    if clade.name:
        return _names([clade.name])
    return f"the ancestor of {_names([t.name or '?' for t in clade.get_terminals()[:3]])}"


def fix_branch_lengths(
    tree, *, missing: float = 1e-6, source: str = "tree", strict: bool = False
) -> BranchFixes:
    """Set missing branch lengths (not the root's) to ``missing``; negative ones to 0 (``strict``: refuse).

    Negative lengths come from neighbour-joining and similar distance methods (often ``-1e-6``); they
    have no meaning under a substitution model. By default each is set to 0 and the count is logged;
    ``strict=True`` (``--strict-tree``) raises one :class:`InputError` naming every one of them.
    Zero-length branches are kept (they are counted: a polytomy resolved arbitrarily).
    """
    n_missing, negative, n_zero = 0, [], 0
    for clade in tree.find_clades(order="preorder"):
        if clade is tree.root:
            continue
        bl = clade.branch_length
        if bl is None:
            clade.branch_length = missing
            n_missing += 1
        elif bl < 0:
            negative.append((clade, bl))
        elif bl == 0:
            n_zero += 1
    if negative and strict:
        shown = "; ".join(f"{bl:g} above {_clade_label(c)}" for c, bl in negative[:20])
        more = f" … ({len(negative)} in all)" if len(negative) > 20 else ""
        raise InputError(
            f"{source}: {len(negative)} negative branch length(s): {shown}{more}; branch lengths must be "
            ">= 0 (--strict-tree; drop it to set them to 0, or omit --tree to infer a tree)"
        )
    for clade, _ in negative:
        clade.branch_length = 0.0
    if negative:
        worst = min(bl for _, bl in negative)
        log.warning(
            "%s: %d negative branch length(s) set to 0 (most negative %g, above %s); --strict-tree refuses them",
            source,
            len(negative),
            worst,
            _clade_label(min(negative, key=lambda x: x[1])[0]),
        )
    if n_missing:
        log.warning("%s: %d missing branch length(s) set to %g", source, n_missing, missing)
    return BranchFixes(n_missing, len(negative), n_zero + len(negative))


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


def _root_at_midpoint_linear(tree) -> None:
    """Bio.Phylo's ``root_at_midpoint`` with the farthest pair found in linear time.

    Bio.Phylo re-roots on every tip to find the two most distant (quadratic: 13 s on 3,000 tips); the tip
    farthest from any tip is an end of a longest path (non-negative lengths), so one sweep from an
    arbitrary tip and one from that end give the pair. The midpoint of a tree's longest path is unique,
    so the root lands at the same point; the order of clades may differ from Bio.Phylo's.
    """
    tips = tree.get_terminals()
    tree.root_with_outgroup(tips[0])
    tip1 = max(((c, d) for c, d in tree.depths().items() if c.is_terminal()), key=lambda cd: cd[1])[0]
    tree.root_with_outgroup(tip1)
    tip2, max_distance = max(tree.depths().items(), key=lambda cd: cd[1])
    root_remainder = 0.5 * (max_distance - (tree.root.branch_length or 0))
    for node in tree.get_path(tip2):  # as Bio.Phylo: walk towards tip2 until half the distance is spent
        root_remainder -= node.branch_length
        if root_remainder < 0:
            tree.root_with_outgroup(node, outgroup_branch_length=-root_remainder)
            return
    raise ValueError("failed to find the midpoint")


def root_tree(
    tree, rooting: Rooting = "midpoint", outgroup: Sequence[str] = (), *, fast: bool = False
) -> None:
    """Root ``tree`` in place: at the midpoint, on the MRCA of ``outgroup`` tips, or leave it (``none``).

    ``fast``: find the midpoint in linear time (:func:`_root_at_midpoint_linear`; the bootstrap trees),
    else with Bio.Phylo's quadratic search (the main tree, whose node names earlier runs hold).
    """
    if rooting == "none":
        return
    supports = _support_by_split(tree)
    if rooting in ("midpoint", "outgroup") and tree.count_terminals() < 2:
        raise InputError(f"rooting {rooting!r} needs a tree of at least two tips")
    if rooting == "midpoint":
        try:
            with _deep_stack():
                if fast:
                    _root_at_midpoint_linear(tree)
                else:
                    tree.root_at_midpoint()
        except Exception as exc:  # Bio.Phylo: ValueError "failed to find the midpoint", UnboundLocalError
            raise InputError(f"midpoint rooting failed ({exc}); root with --outgroup or 'none'") from None
    elif rooting == "outgroup":
        if not outgroup:
            raise InputError("rooting 'outgroup' needs at least one outgroup tip name (--outgroup NAME …)")
        tips = {c.name: c for c in tree.get_terminals()}
        missing = [n for n in outgroup if n not in tips]
        if missing:
            raise InputError(f"outgroup tip(s) {_names(missing)} are not in the tree")
        target = (
            tips[outgroup[0]] if len(outgroup) == 1 else tree.common_ancestor([tips[n] for n in outgroup])
        )
        if target is tree.root:
            raise InputError(f"outgroup {_names(outgroup)} spans the root already; choose a smaller outgroup")
        try:
            with _deep_stack():
                tree.root_with_outgroup(target)
        except Exception as exc:  # Bio.Phylo's own checks
            raise InputError(f"rooting on outgroup {_names(outgroup)} failed ({exc})") from None
    else:
        raise InputError(f"unknown rooting {rooting!r}; use midpoint, outgroup or none")
    tree.rooted = True
    if tree.root.branch_length is not None:
        tree.root.branch_length = None
    if supports:
        _restore_support(tree, supports)


def _splits_of(tree) -> Iterator[tuple[object, frozenset[str]]]:
    """``(clade, split)`` for every non-root internal clade; a split is the side without the least tip name
    (the same side whatever the rooting)."""
    below: dict[int, frozenset[str]] = {}
    every = frozenset(t.name for t in tree.get_terminals())
    ref = min(every)
    for clade in tree.find_clades(order="postorder"):
        if clade.is_terminal():
            below[id(clade)] = frozenset([clade.name])
            continue
        below[id(clade)] = frozenset().union(*(below[id(c)] for c in clade.clades))
        if clade is not tree.root:
            side = below[id(clade)]
            yield clade, (every - side if ref in side else side)


def _support_by_split(tree) -> dict[frozenset[str], float]:
    """Branch support is a property of a split (bipartition), not of a clade object: record it so."""
    tips = [t.name for t in tree.get_terminals()]
    if not all(tips) or len(set(tips)) < len(tips):  # splits need unique tip names (checked elsewhere)
        return {}
    return {
        split: clade.support
        for clade, split in _splits_of(tree)
        if getattr(clade, "support", None) is not None
    }


def _restore_support(tree, supports: dict[frozenset[str], float]) -> None:
    """After rooting, give every clade the support of its split (rooting reverses clades on the path)."""
    for clade, split in list(_splits_of(tree)):
        clade.support = supports.get(split)
    tree.root.support = None


def copy_tree(tree):
    """A deep copy of a Bio.Phylo tree, made without recursion.

    ``copy.deepcopy`` spends about six stack frames per level and fails near 160 levels at Python's
    default recursion limit; every :data:`MAX_NEWICK_DEPTH`-deep tree :func:`parse_newick` accepts
    copies here. Clade attributes other than ``clades`` are copied shallowly (they are immutable).
    """
    new = copy.copy(tree)
    new.root = copy.copy(tree.root)
    stack = [(tree.root, new.root)]
    while stack:
        old, dup = stack.pop()
        dup.clades = [copy.copy(c) for c in old.clades]
        stack.extend(zip(old.clades, dup.clades, strict=True))
    return new


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
    iqtree_support: Literal["none", "ufboot", "sh-alrt", "both"] = "none",
    work_dir: str | Path | None = None,
):
    """Infer an (unrooted) ML tree of aligned sequences with FastTree (GTR+Γ) or IQ-TREE.

    The programs see the names ``s0, s1, …`` (any FASTA id, spaces and parentheses too, comes back
    intact). Branch support lands in ``clade.support`` on a 0-1 scale: FastTree's SH-like local support
    (always computed); with IQ-TREE, UFBoot (``-B 1000``) or SH-aLRT (``-alrt 1000``) as
    ``iqtree_support`` says (``both``: support = UFBoot, ``clade.sh_alrt`` = SH-aLRT).
    """
    safe = [f"s{i}" for i in range(len(names))]
    with tempfile.TemporaryDirectory(prefix=f"phenogen-{method}-", dir=work_dir) as tmp:
        aln = Path(tmp) / "aln.fasta"
        write_fasta(aln, list(zip(safe, sequences, strict=True)))
        if method == "fasttree":
            out = Path(tmp) / "tree.nwk"
            run_tool("fasttree", ["-nt", "-gtr", "-gamma", "-quiet", "-nopr", str(aln)], stdout_path=out)
        elif method == "iqtree":
            prefix = Path(tmp) / "iq"
            extra: list[object] = []
            if iqtree_support in ("ufboot", "both"):
                extra += ["-B", 1000]
            if iqtree_support in ("sh-alrt", "both"):
                extra += ["-alrt", 1000]
            run_tool(
                "iqtree",
                ["-s", aln, "-m", iqtree_model, "-pre", prefix, "-seed", seed, "-nt", threads, *extra,
                 "-quiet", "-redo"],
            )  # fmt: skip
            out = Path(f"{prefix}.treefile")
        else:
            raise InputError(f"unknown tree method {method!r}; use fasttree or iqtree")
        tree = read_tree(out)  # support values move to clade.support
    if method == "iqtree":
        _iqtree_support(tree, iqtree_support)
    back = dict(zip(safe, names, strict=True))
    for tip in tree.get_terminals():
        tip.name = back.get(tip.name, tip.name)
    return tree


def _iqtree_support(tree, kind: str) -> None:
    """IQ-TREE labels nodes ``95`` (one support) or ``80.5/97`` (SH-aLRT/UFBoot), in percent: to 0-1."""
    for clade in tree.get_nonterminals():
        label, support = clade.name, getattr(clade, "support", None)
        if label and "/" in label:
            sh, boot = (float(x) for x in label.split("/")[:2])
            clade.name, clade.support, clade.sh_alrt = None, boot / 100, sh / 100
        elif support is not None:
            clade.support = support / 100
            if kind == "sh-alrt":
                clade.sh_alrt = clade.support


def node_depths(tree) -> dict[int, float]:
    """``id(clade) -> distance from the root`` (sum of branch lengths)."""
    depths = {id(tree.root): 0.0}
    for clade in tree.find_clades(order="preorder"):
        for child in clade.clades:
            depths[id(child)] = depths[id(clade)] + (child.branch_length or 0.0)
    return depths

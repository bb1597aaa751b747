"""Which nodes get portraits: ``--node NAME``, ``--mrca TAXON TAXON …`` and ``--all-internal``.

Selections combine (union) and keep a stable order: the order of the options, then preorder for
``--all-internal``; a node chosen twice appears once. Unknown names raise
:class:`~phenogen.errors.InputError` with a few close matches.

>>> from phenogen.phylo.tree import parse_newick
>>> t = parse_newick("((A:1,B:1)x:1,(C:1,D:1)y:1)r;")
>>> select_nodes(t, nodes=["y"], mrca=[["A", "C"]])
['y', 'r']
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from phenogen.errors import InputError

__all__ = ["select_nodes", "mrca_name"]


def _unknown(kind: str, name: str, known: list[str]) -> InputError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; names look like {', '.join(known[:3])}"
    return InputError(f"no {kind} named {name!r} in the tree{hint} (see nodes.csv)")


def mrca_name(tree, taxa: Sequence[str]) -> str:
    """Name of the most recent common ancestor of the tips ``taxa`` (at least two, all distinct)."""
    if len(taxa) < 2 or len(set(taxa)) < len(taxa):
        raise InputError(f"--mrca needs at least two distinct tip names, got {' '.join(taxa) or 'none'}")
    tips = {c.name: c for c in tree.get_terminals()}
    for t in taxa:
        if t not in tips:
            raise _unknown("tip", t, sorted(tips))
    return tree.common_ancestor([tips[t] for t in taxa]).name


def select_nodes(
    tree,
    *,
    nodes: Sequence[str] = (),
    mrca: Sequence[Sequence[str]] = (),
    all_internal: bool = False,
) -> list[str]:
    """Names of the chosen nodes (internal nodes or tips), de-duplicated, in a stable order."""
    names = [c.name for c in tree.find_clades(order="preorder")]
    known = set(names)
    chosen: list[str] = []
    for n in nodes:
        if n not in known:
            raise _unknown("node", n, names)
        chosen.append(n)
    chosen.extend(mrca_name(tree, taxa) for taxa in mrca)
    if all_internal:
        chosen.extend(c.name for c in tree.get_nonterminals(order="preorder"))
    return list(dict.fromkeys(chosen))

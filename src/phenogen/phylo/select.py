"""Which nodes get portraits: ``--node NAME``, ``--mrca TAXON TAXON …`` and ``--all-internal``.

Selections combine (union) and keep a stable order: ``--node`` options, then ``--mrca`` options, then
preorder for ``--all-internal``; a node chosen twice appears once. Unknown names raise
:class:`~phenogen.errors.InputError` with a few close matches.

The words after ``--mrca`` and ``--node`` may be tip ids, accessions, gi numbers, species names or
genera (:meth:`phenogen.phylo.names.TipNames.resolve`); :func:`resolve_choices` checks them against
the input *before* a tree is built. ``--mrca`` takes the MRCA of all the tips its words name (one
genus alone is enough); ``--node`` with a species or genus is the tip itself when it has one, else
their MRCA; any other ``--node`` word must be an internal node name (``anc001`` …, or a name in the
given tree), looked up once the tree exists.

>>> from phenogen.phylo.tree import parse_newick
>>> t = parse_newick("((A:1,B:1)x:1,(C:1,D:1)y:1)r;")
>>> select_nodes(t, nodes=["y"], mrca=[["A", "C"]])
['y', 'r']
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from phenogen.errors import InputError

__all__ = ["Choice", "resolve_choices", "select_nodes", "mrca_name"]

_AUTO_NAME = re.compile(r"^anc(\d+)$")


@dataclass(frozen=True)
class Choice:
    """One ``--node`` / ``--mrca`` option: what was written, and the tips it stands for (empty: a node name)."""

    flag: str
    words: tuple[str, ...]
    tips: tuple[str, ...] = ()


def resolve_choices(
    names,
    *,
    nodes: Sequence[str] = (),
    mrca: Sequence[Sequence[str]] = (),
    internal_names: Collection[str] = (),
) -> list[Choice]:
    """Resolve ``--node`` and ``--mrca`` words against the input's tips (``names``: a ``TipNames``).

    ``internal_names`` are the internal node names a given tree carries; names of the form ``anc<N>``
    (given by :func:`phenogen.phylo.tree.name_internal_nodes`) are accepted while ``N`` is below twice
    the number of tips. Raises :class:`InputError` with close matches for any other unknown word.
    """
    choices: list[Choice] = []
    limit = 2 * len(names.ids)
    for word in nodes:
        auto = _AUTO_NAME.match(word)
        if word in internal_names or (auto and 0 < int(auto.group(1)) <= limit):
            choices.append(Choice("--node", (word,)))
            continue
        try:
            tips = names.resolve(word, flag="--node")
        except InputError as exc:
            if internal_names:
                close = difflib.get_close_matches(word, sorted(internal_names), n=2)
                if close:
                    raise InputError(f"--node {word!r}: did you mean node {', '.join(close)}?") from None
            raise exc from None
        choices.append(Choice("--node", (word,), tuple(tips)))
    for words in mrca:
        if len(set(words)) < len(words):
            raise InputError(f"--mrca needs distinct names, got {' '.join(words)}")
        choices.append(Choice("--mrca", tuple(words), tuple(names.resolve_group(words))))
    return choices


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
    choices: Sequence[Choice] = (),
) -> list[str]:
    """Names of the chosen nodes (internal nodes or tips), de-duplicated, in a stable order.

    ``choices`` (from :func:`resolve_choices`) come first; ``nodes`` and ``mrca`` take node and tip
    names of ``tree`` as they are.
    """
    names = [c.name for c in tree.find_clades(order="preorder")]
    known = set(names)
    chosen: list[str] = []
    tips = {c.name: c for c in tree.get_terminals()}
    for choice in choices:
        if not choice.tips:
            if choice.words[0] not in known:
                raise _unknown("node", choice.words[0], names)
            chosen.append(choice.words[0])
        elif len(choice.tips) == 1:
            chosen.append(choice.tips[0])
        else:
            chosen.append(tree.common_ancestor([tips[t] for t in choice.tips]).name)
    for n in nodes:
        if n not in known:
            raise _unknown("node", n, names)
        chosen.append(n)
    chosen.extend(mrca_name(tree, taxa) for taxa in mrca)
    if all_internal:
        chosen.extend(c.name for c in tree.get_nonterminals(order="preorder"))
    return list(dict.fromkeys(chosen))

"""The species tree of the synthetic clade: a birth–death tree that keeps its extinct lineages.

The process is simulated forward in time (Gillespie): each of the ``k`` lineages alive speciates at
rate ``birth_rate`` and goes extinct at rate ``death_rate``. It stops the first time ``n_living``
lineages are alive, at a uniformly random point of the waiting time to the next event (so the last
two sister species do not get zero-length branches); a run in which every lineage dies is restarted.
Lineages that died are kept as *extinct tips*, dated by their time of death.

Why not ``dendropy.model.birthdeath.birth_death_tree``: in dendropy 4.6 it marks extinct tips with the
same ``None`` as internal nodes and stops on a speciation, giving the last pair of species branch
length 0 (identical barcodes). The simulator below is short, deterministic for a given
``numpy.random.Generator`` and keeps tip kinds explicit; Newick output is read back by dendropy in
the tests.

Naming is stable: children are ladderized (smaller subtree first, ties by birth order), then nodes
are numbered in preorder: the root is ``n000``, internal nodes ``n001 …``, living tips ``sp_001 …``
and extinct tips ``ext_01 …`` in the order a reader meets them, so neighbouring numbers are close
relatives. Newick labels keep their underscores (``sp_001``); read them with dendropy's
``preserve_underscores=True`` (Bio.Phylo and TreeTime keep them as they are).

>>> import numpy as np
>>> tree = simulate_tree(8, 1.0, 0.3, 1.0, np.random.default_rng(0))
>>> len(tree.living()), tree.nodes[0].name, round(tree.nodes[tree.living()[0]].depth, 6)
(8, 'n000', 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from phenogen.errors import ConfigError

__all__ = ["Node", "SimTree", "simulate_tree", "living_split_depths", "cut_labels", "choose_heldout_clades"]

NodeKind = Literal["living", "extinct", "internal"]
_MAX_RESTARTS = 10_000


@dataclass(frozen=True)
class Node:
    """One node of the species tree; ``depth`` is time since the root, ``branch`` the time to its parent."""

    index: int
    name: str
    kind: NodeKind
    parent: int  # -1 for the root
    children: tuple[int, ...]
    depth: float
    branch: float


@dataclass(frozen=True)
class SimTree:
    """A rooted, binary, dated tree whose ``nodes`` are in preorder (``nodes[0]`` is the root)."""

    nodes: tuple[Node, ...]
    height: float  # time from the root to the present

    def by_name(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def indices(self, kind: NodeKind) -> list[int]:
        return [n.index for n in self.nodes if n.kind == kind]

    def living(self) -> list[int]:
        """Indices of the living tips, in tree order."""
        return self.indices("living")

    def extinct(self) -> list[int]:
        """Indices of the extinct tips, in tree order."""
        return self.indices("extinct")

    def internal(self) -> list[int]:
        """Indices of the internal nodes (root first), in preorder."""
        return self.indices("internal")

    def tips(self) -> list[int]:
        """Indices of all tips (living and extinct), in tree order."""
        return [n.index for n in self.nodes if n.kind != "internal"]

    def descendants(self, index: int) -> list[int]:
        """``index`` and every node below it, in preorder."""
        out, stack = [], [index]
        while stack:
            i = stack.pop()
            out.append(i)
            stack.extend(reversed(self.nodes[i].children))
        return out

    def ancestors(self, index: int) -> list[int]:
        """The path from ``index``'s parent up to the root."""
        out, i = [], self.nodes[index].parent
        while i >= 0:
            out.append(i)
            i = self.nodes[i].parent
        return out

    def mrca(self, a: int, b: int) -> int:
        """Index of the most recent common ancestor of nodes ``a`` and ``b``."""
        seen = {a, *self.ancestors(a)}
        for i in [b, *self.ancestors(b)]:
            if i in seen:
                return i
        raise ValueError("nodes are not in the same tree")  # unreachable for a rooted tree

    def to_newick(self, living_only: bool = False, scale: float = 1.0) -> str:
        """Newick with internal node names and branch lengths (time × ``scale``, 6 decimals).

        ``living_only`` prunes extinct tips and suppresses the resulting one-child nodes (their branch
        lengths are summed; the surviving node keeps the name of the lower node).
        """
        keep = self._living_subtree() if living_only else set(range(len(self.nodes)))

        def kept_children(i: int) -> list[int]:
            return [c for c in self.nodes[i].children if c in keep]

        def write(i: int, extra: float) -> str:
            kids = kept_children(i)
            while len(kids) == 1:  # suppress unifurcation: descend, carrying the branch length
                extra += self.nodes[i].branch
                i = kids[0]
                kids = kept_children(i)
            node = self.nodes[i]
            label = node.name
            if kids:
                label = "(" + ",".join(write(c, 0.0) for c in kids) + ")" + label
            if node.parent < 0 and extra == 0.0:
                return label
            return f"{label}:{(node.branch + extra) * scale:.6f}"

        root = 0
        kids = kept_children(root)
        while len(kids) == 1:  # a living-only tree may start below the true root
            root = kids[0]
            kids = kept_children(root)
        text = write(root, 0.0)
        if self.nodes[root].parent >= 0:  # drop the stem of the new root
            text = text.rsplit(":", 1)[0]
        return text + ";"

    def _living_subtree(self) -> set[int]:
        keep: set[int] = set()
        for i in self.living():
            keep.add(i)
            keep.update(self.ancestors(i))
        return keep

    def living_descendants(self, index: int) -> list[int]:
        """Living tips below ``index`` (itself included when it is one)."""
        return [i for i in self.descendants(index) if self.nodes[i].kind == "living"]


def simulate_tree(
    n_living: int,
    birth_rate: float,
    death_rate: float,
    height: float,
    rng: np.random.Generator,
    min_species_age: float = 0.0,
) -> SimTree:
    """Simulate a birth–death tree with ``n_living`` living tips, scaled so the root is ``height`` old.

    Parameters
    ----------
    n_living : int
        Number of lineages alive at the present (>= 2).
    birth_rate, death_rate : float
        Per-lineage speciation and extinction rates (``0 <= death_rate < birth_rate``).
    height : float
        Age of the root after rescaling.
    min_species_age : float
        Youngest split, as a fraction of ``height``: ages are mapped ``a -> m + a (1 - m)`` (times
        in units of ``height``), a monotone stretch that keeps the topology and order of events but
        gives every living species at least this much time to diverge from its sister (a pure
        birth-death tree otherwise has sister species only a few thousandths of the height apart,
        whose barcodes would be as alike as two individuals').
    rng : numpy.random.Generator
        The only source of randomness.

    Returns
    -------
    SimTree
        Nodes in ladderized preorder with stable names.
    """
    if n_living < 2:
        raise ConfigError(f"a tree needs at least 2 living species, got n_living={n_living}")
    total = birth_rate + death_rate
    for _ in range(_MAX_RESTARTS):
        # Each lineage is a row: parent lineage, end time, fate ("alive", "birth", "death").
        parent: list[int] = [-1]
        end: list[float] = [np.nan]
        fate: list[str] = ["alive"]
        alive = [0]
        t = 0.0
        while alive and len(alive) < n_living:
            k = len(alive)
            t += rng.exponential(1.0 / (k * total))
            pick = int(rng.integers(k))
            lineage = alive.pop(pick)
            end[lineage] = t
            if rng.random() < birth_rate / total:
                fate[lineage] = "birth"
                for _child in range(2):
                    parent.append(lineage)
                    end.append(np.nan)
                    fate.append("alive")
                    alive.append(len(parent) - 1)
            else:
                fate[lineage] = "death"
        if len(alive) == n_living and fate[0] == "birth":
            t_end = t + rng.random() * rng.exponential(1.0 / (n_living * total))
            for lineage in alive:
                end[lineage] = t_end
            return _build(parent, end, fate, height, min_species_age)
    raise ConfigError(  # pragma: no cover - needs death_rate very close to birth_rate
        f"the birth-death process went extinct {_MAX_RESTARTS} times; lower sim.death_rate"
    )


def _build(parent: list[int], end: list[float], fate: list[str], height: float, min_age: float) -> SimTree:
    """Turn simulated lineages into a ladderized, named, rescaled :class:`SimTree`."""
    n = len(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    for lineage in range(1, n):
        children[parent[lineage]].append(lineage)
    n_tips = [0] * n
    for lineage in range(n - 1, -1, -1):  # children always have larger ids than parents
        n_tips[lineage] = 1 if not children[lineage] else sum(n_tips[c] for c in children[lineage])
        children[lineage].sort(key=lambda c: (n_tips[c], c))
    t_root = end[0]  # lineage 0's speciation is the root; its stem is dropped
    present = max(end)

    def age(lineage: int) -> float:  # fraction of the root age, stretched so no split is younger than min_age
        a = (present - end[lineage]) / (present - t_root)
        return 0.0 if fate[lineage] == "alive" else min_age + a * (1.0 - min_age)

    order: list[int] = []
    stack = [0]
    while stack:
        lineage = stack.pop()
        order.append(lineage)
        stack.extend(reversed(children[lineage]))
    kinds = {
        lineage: (
            "internal" if fate[lineage] == "birth" else "extinct" if fate[lineage] == "death" else "living"
        )
        for lineage in order
    }
    width = {
        "living": max(3, len(str(sum(k == "living" for k in kinds.values())))),
        "extinct": max(2, len(str(sum(k == "extinct" for k in kinds.values())))),
        "internal": max(3, len(str(sum(k == "internal" for k in kinds.values()) - 1))),
    }
    prefix = {"living": "sp_", "extinct": "ext_", "internal": "n"}
    counters = {"living": 1, "extinct": 1, "internal": 0}
    new_index = {lineage: i for i, lineage in enumerate(order)}
    nodes = []
    for lineage in order:
        kind = kinds[lineage]
        name = f"{prefix[kind]}{counters[kind]:0{width[kind]}d}"
        counters[kind] += 1
        depth = (1.0 - age(lineage)) * height
        branch = 0.0 if lineage == 0 else (age(parent[lineage]) - age(lineage)) * height
        nodes.append(
            Node(
                index=new_index[lineage],
                name=name,
                kind=kind,  # type: ignore[arg-type]
                parent=-1 if lineage == 0 else new_index[parent[lineage]],
                children=tuple(new_index[c] for c in children[lineage]),
                depth=float(depth),
                branch=float(branch),
            )
        )
    return SimTree(nodes=tuple(nodes), height=float(height))


def _letters(i: int) -> str:
    """0 → A, 25 → Z, 26 → AA …"""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


def living_split_depths(tree: SimTree) -> list[float]:
    """Sorted depths of the speciations that are ancestral to two or more living species."""
    return sorted(
        n.depth
        for n in tree.nodes
        if n.kind == "internal" and sum(bool(tree.living_descendants(c)) for c in n.children) == 2
    )


def cut_labels(tree: SimTree, n_groups: int, prefix: str, numbered: bool = False) -> dict[int, str]:
    """Label every node by the lineage it belongs to when the living tree is cut into ``n_groups``.

    The cut is placed in time half-way between the speciations that make ``n_groups`` living
    lineages, so exactly ``min(n_groups, n_living)`` groups hold living species. A node deeper than
    the cut belongs to the lineage (edge) crossing the cut above it; extinct tips that died before
    the cut form their own group; internal nodes above the cut get no label. Labels are
    ``{prefix}A, {prefix}B …`` (or ``{prefix}01 …`` when ``numbered``) in tree order.
    """
    splits = living_split_depths(tree)
    k = max(1, min(n_groups, len(splits) + 1))
    upper = splits[k - 1] if k - 1 < len(splits) else tree.height
    cut = 0.5 * (splits[k - 2] + upper) if k >= 2 else 0.0
    group_root: dict[int, int] = {}
    for node in tree.nodes:  # preorder: parents are labelled before children
        if node.parent >= 0 and node.parent in group_root:
            group_root[node.index] = group_root[node.parent]
        elif node.depth >= cut or node.kind != "internal":
            group_root[node.index] = node.index
    roots = list(dict.fromkeys(group_root[i] for i in sorted(group_root)))
    width = max(2, len(str(len(roots))))
    name = {
        r: (f"{prefix}{k + 1:0{width}d}" if numbered else f"{prefix}{_letters(k)}")
        for k, r in enumerate(roots)
    }
    return {i: name[r] for i, r in group_root.items()}


def choose_heldout_clades(
    tree: SimTree, fraction: float, rng: np.random.Generator, unit: str = "clades"
) -> list[int]:
    """Pick whole clades of living species to hold out, about ``fraction`` of the living species.

    ``unit="species"`` picks single living species uniformly at random instead (clades of one), so
    held-out species keep their relatives in training.

    Each chosen node's living descendants form a clade of the living tree; the clades do not overlap.
    Clades of at least two species are preferred (like holding out whole bird orders); larger ones
    first, chosen at random among those at least half the size still needed.

    Returns
    -------
    list[int]
        Indices of the nodes whose living descendants are held out, in tree order.
    """
    n_living = len(tree.living())
    remaining = int(round(fraction * n_living))
    if unit == "species":
        living = sorted(tree.living())
        return sorted(int(i) for i in rng.choice(living, size=remaining, replace=False))
    candidates: dict[frozenset[int], int] = {}
    for node in tree.nodes:
        members = frozenset(tree.living_descendants(node.index))
        if members and len(members) < n_living and members not in candidates:
            candidates[members] = node.index
    chosen: list[int] = []
    taken: set[int] = set()
    while remaining > 0:
        min_size = 2 if remaining >= 2 else 1
        eligible = [
            (m, i) for m, i in candidates.items() if min_size <= len(m) <= remaining and not (m & taken)
        ]
        if not eligible:
            break
        large = [(m, i) for m, i in eligible if len(m) >= remaining / 2]
        pool = sorted(large or eligible, key=lambda mi: mi[1])
        members, index = pool[int(rng.integers(len(pool)))]
        chosen.append(index)
        taken |= members
        remaining -= len(members)
    return sorted(chosen)

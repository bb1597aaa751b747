"""Reconstructed ancestors against the synthetic clade's true ancestors.

Which reconstructed node stands for which true one: for each internal node ``v`` of the true tree,
let ``D(v)`` be the tips below ``v`` that went into the reconstruction (the living species, plus
extinct ones given as fossils). ``v`` is *identifiable* when at least two of its children have tips
in ``D(v)`` — otherwise the data cannot tell ``v`` from its descendant. Its reconstructed
counterpart is the MRCA of ``D(v)`` in the reconstructed tree; ``clade_match`` says whether that
node's tips are exactly ``D(v)`` (the inferred topology got the clade right).

Scores per identifiable node, all as identity with the true ancestral sequence (matches / positions
where both hold A/C/G/T; Hamming when lengths agree, else a global pairwise alignment):

``treetime``, ``iqtree``
    the reconstructed sequence at the counterpart node.
``closest_living``
    the input barcode most identical to the *true* ancestor (chosen with hindsight: generous).
``lm_samples``
    (when given) the language-model sample most identical to the true ancestor — the thesis'
    method, scored generously the same way.

Depth is the true node's time from the root as a fraction of the tree height (0 = root,
1 = present); results are also summarised in four depth bins.

:func:`reconstructed_counterparts` reads a finished ``phenogen ancestors --dataset`` directory back
as "true ancestor -> its reconstructed sequence": what the demo paints in place of the true
ancestral barcode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.errors import DataError

__all__ = [
    "sequence_identity",
    "match_nodes",
    "compare_to_truth",
    "plot_identity_vs_depth",
    "reconstructed_counterparts",
]


def sequence_identity(truth: str, seq: str) -> float:
    """Identity of ``seq`` with ``truth``: when lengths agree, matches over positions where ``truth``
    holds A/C/G/T and ``seq`` is not ``N`` (a gap in ``seq`` counts as a mismatch); otherwise the
    identity of a global pairwise alignment of the ungapped sequences.

    >>> sequence_identity("ACGT", "ACG-"), sequence_identity("ACGT", "ACGN")
    (0.75, 1.0)
    """
    from phenogen.evaluate.baselines import align_identity

    if len(truth) != len(seq):
        return float(align_identity(truth, seq))
    t = np.frombuffer(truth.encode("ascii"), dtype=np.uint8)
    s = np.frombuffer(seq.encode("ascii"), dtype=np.uint8)
    comparable = np.isin(t, np.frombuffer(b"ACGT", dtype=np.uint8)) & (s != ord("N"))
    n = int(comparable.sum())
    return float((t[comparable] == s[comparable]).sum() / n) if n else 0.0


def _tips_below(tree) -> dict[str, frozenset[str]]:
    below: dict[int, frozenset[str]] = {}
    out = {}
    for clade in tree.find_clades(order="postorder"):
        if clade.is_terminal():
            below[id(clade)] = frozenset([clade.name])
        else:
            below[id(clade)] = frozenset().union(*(below[id(c)] for c in clade.clades))
        out[clade.name] = below[id(clade)]
    return out


def match_nodes(true_tree, recon_tree, tips_used: set[str]) -> list[dict[str, Any]]:
    """For each identifiable true internal node: its name, depth, ``D(v)`` size, counterpart and clade match."""
    from phenogen.phylo.tree import node_depths

    missing = tips_used - {c.name for c in recon_tree.get_terminals()}
    if missing:
        raise DataError(f"reconstructed tree lacks tip(s) {', '.join(sorted(missing)[:5])}")
    depth = node_depths(true_tree)
    height = max(depth[id(t)] for t in true_tree.get_terminals())
    true_below = _tips_below(true_tree)
    recon_tips = {c.name: c for c in recon_tree.get_terminals()}
    recon_below = _tips_below(recon_tree)
    rows = []
    for clade in true_tree.get_nonterminals(order="preorder"):
        used = true_below[clade.name] & tips_used
        informative = sum(1 for c in clade.clades if true_below[c.name] & tips_used)
        if informative < 2:
            continue
        node = recon_tree.common_ancestor([recon_tips[t] for t in sorted(used)])
        rows.append(
            {
                "node": clade.name,
                "depth": depth[id(clade)] / height if height > 0 else 0.0,
                "n_tips": len(used),
                "recon_node": node.name,
                "clade_match": recon_below[node.name] == used,
            }
        )
    return rows


def _summary(values: Sequence[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "median": None, "min": None, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()), "n": int(v.size)}


def compare_to_truth(
    true_tree,
    true_sequences: Mapping[str, str],
    recon_tree,
    reconstructions: Mapping[str, Mapping[str, str]],
    *,
    tips_used: set[str],
    pools: Mapping[str, Sequence[str]] = {},
    n_bins: int = 4,
) -> dict[str, Any]:
    """Score reconstructions (method -> node -> sequence) and nearest-of-pool baselines against the truth.

    Returns ``{"nodes": [...per-node rows...], "summary": {method: {mean, median, min, n}},
    "by_depth": [...], "clade_match_fraction": f, "n_identifiable": n, "n_true_internal": m}``.
    """
    from phenogen.evaluate.baselines import nearest_by_barcode

    rows = [r for r in match_nodes(true_tree, recon_tree, tips_used) if r["node"] in true_sequences]
    if not rows:
        raise DataError("no identifiable true ancestor has a known sequence; nothing to compare")
    truths = [true_sequences[r["node"]] for r in rows]
    for method, seqs in reconstructions.items():
        for r, truth in zip(rows, truths, strict=True):
            seq = seqs.get(r["recon_node"])
            r[method] = None if seq is None else sequence_identity(truth, seq)
    for name, pool in pools.items():
        pool = [p.replace("-", "") if len({len(x) for x in [*pool, *truths]}) > 1 else p for p in pool]
        for r, (_, ident) in zip(rows, nearest_by_barcode(truths, list(pool)), strict=True):
            r[name] = ident
    methods = [*reconstructions, *pools]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    by_depth = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [r for r in rows if lo <= r["depth"] < hi or (hi == 1.0 and r["depth"] == 1.0)]
        by_depth.append(
            {"depth_from": float(lo), "depth_to": float(hi), "n": len(sel)}
            | {m: _summary([r[m] for r in sel])["mean"] for m in methods}
        )
    return {
        "nodes": rows,
        "summary": {m: _summary([r[m] for r in rows]) for m in methods},
        "by_depth": by_depth,
        "clade_match_fraction": float(np.mean([r["clade_match"] for r in rows])),
        "n_identifiable": len(rows),
        "n_true_internal": len(true_tree.get_nonterminals()),
    }


def plot_identity_vs_depth(result: Mapping[str, Any], path: str | Path) -> Path:
    """Scatter of identity with the true ancestor against depth, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=120)
    for method in result["summary"]:
        pts = [(r["depth"], r[method]) for r in result["nodes"] if r.get(method) is not None]
        if not pts:
            continue
        x, y = zip(*pts, strict=True)
        mean = result["summary"][method]["mean"]
        ax.scatter(x, y, s=14, alpha=0.7, label=f"{method} (mean {mean:.3f})")
    ax.set_xlabel("true node depth (0 = root, 1 = present)")
    ax.set_ylabel("identity with the true ancestral sequence")
    ax.set_title("Ancestral sequences vs the truth")
    ax.legend(
        fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False
    )  # beside, not on, the points
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def reconstructed_counterparts(
    ancestors_dir: str | Path, method: str = "treetime"
) -> dict[str, dict[str, Any]]:
    """True ancestor name -> its reconstructed counterpart, from a ``phenogen ancestors --dataset`` output.

    Reads ``metrics.json`` (which true node maps to which reconstructed node, see :func:`match_nodes`)
    and ``ancestors.fasta``. Only identifiable true nodes appear. Each value holds ``recon_node``,
    ``clade_match``, ``depth``, ``identity`` (of ``method``'s sequence with the truth) and ``sequence``
    (the reconstructed sequence without alignment gaps, ready for the image model).

    Raises
    ------
    DataError
        the directory holds no truth comparison (the input had no known ancestors), or a matched node
        is missing from ``ancestors.fasta``.
    """
    from phenogen.dna.seqio import read_fasta
    from phenogen.phylo.align import ungap

    root = Path(ancestors_dir)
    metrics_path, fasta = root / "metrics.json", root / "ancestors.fasta"
    if not metrics_path.is_file() or not fasta.is_file():
        raise DataError(
            f"{root}: no metrics.json / ancestors.fasta; run `phenogen ancestors --dataset DIR` first"
        )
    scored = json.loads(metrics_path.read_text(encoding="utf-8")).get("ancestors")
    if not scored or "nodes" not in scored:
        raise DataError(f"{metrics_path}: no ancestors comparison (the input had no known true ancestors)")
    sequences = {r.id: r.sequence for r in read_fasta(fasta, policy="mask", allow_gaps=True).records}
    out: dict[str, dict[str, Any]] = {}
    for row in scored["nodes"]:
        seq = sequences.get(row["recon_node"])
        if seq is None:
            raise DataError(
                f"{fasta}: no sequence for reconstructed node {row['recon_node']} (true {row['node']})"
            )
        out[row["node"]] = {
            "recon_node": row["recon_node"],
            "clade_match": bool(row["clade_match"]),
            "depth": float(row["depth"]),
            "identity": row.get(method),
            "sequence": ungap(seq),
        }
    return out

"""Baselines that say whether a generator learned anything beyond "draw the closest relative".

Every scored split of ``metrics.json`` carries the generated images next to these rows:

``nearest``
    Real renders of the *training* species whose barcode is closest to the target's — the
    "closest living relative" answer. Identity: Hamming over comparable positions when the
    barcodes have equal length (aligned / simulated), else Biopython's global ``PairwiseAligner``
    on the few candidates closest by 5-mer profile (:func:`nearest_by_barcode`).
``random``
    Real renders of a random training species (several draws, mean reported).
``mean``
    The average training bird's trait vector — the best a generator that ignores the DNA can do
    on average. Scored directly as a trait vector.
``oracle``
    The best linear prediction of the target's traits from the training species' true traits on
    the true tree: the Brownian-motion conditional mean (:func:`bm_conditional_mean`), with the
    root state estimated by generalised least squares. It bounds what a DNA-only method can
    reach when traits evolve by BM; scored directly as a trait vector.
``truth``
    Renders of the target itself: the probe's noise floor.

Image baselines (nearest, random, truth) draw as many images per target as the generator made
(:func:`sample_paths`), so every row of a table is scored on the same number of images.

>>> nearest_by_barcode(["ACGTAC"], ["ACGTTT", "ACGTAA"])
[(1, 0.8333333333333334)]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from phenogen.errors import DataError

__all__ = [
    "hamming_identity",
    "align_identity",
    "nearest_by_barcode",
    "sample_paths",
    "as_tree",
    "tree_covariance",
    "tree_node_names",
    "bm_conditional_mean",
    "loo_tip_noise",
    "TIP_NOISE_GRID",
]

_CODE = np.full(256, 4, dtype=np.uint8)  # 0..3 = A C G T, 4 = not comparable (N, -, other)
for _i, _c in enumerate("ACGT"):
    _CODE[ord(_c)] = _i


def _encode(seqs: Sequence[str]) -> np.ndarray:
    return np.stack([_CODE[np.frombuffer(s.encode("ascii"), dtype=np.uint8)] for s in seqs])  # (N, L)


def hamming_identity(targets: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """(T, R) identity of equal-length barcodes: matches / positions where both hold A/C/G/T."""
    lengths = {len(s) for s in [*targets, *refs]}
    if len(lengths) != 1:
        raise DataError(f"hamming identity needs equal-length barcodes, got lengths {sorted(lengths)[:5]}")
    t, r = _encode(targets), _encode(refs)  # (T, L), (R, L)
    out = np.empty((len(targets), len(refs)))
    for i, row in enumerate(t):
        comparable = (row[None, :] < 4) & (r < 4)  # (R, L)
        matches = (row[None, :] == r) & comparable
        out[i] = matches.sum(1) / np.maximum(comparable.sum(1), 1)
    return out


def _kmer_profiles(seqs: Sequence[str], k: int = 5) -> np.ndarray:
    codes = [_CODE[np.frombuffer(s.encode("ascii"), dtype=np.uint8)].astype(np.int64) for s in seqs]
    out = np.zeros((len(seqs), 4**k))
    for i, c in enumerate(codes):
        if len(c) < k:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(c, k)  # (L-k+1, k)
        ok = (windows < 4).all(1)
        idx = (windows[ok] * (4 ** np.arange(k - 1, -1, -1))).sum(1)
        np.add.at(out[i], idx, 1.0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def align_identity(a: str, b: str) -> float:
    """Identity of a global alignment (free end gaps): identities / (aligned columns + internal gaps)."""
    from Bio.Align import PairwiseAligner

    aligner = PairwiseAligner(
        mode="global",
        match_score=1,
        mismatch_score=-1,
        open_gap_score=-3,
        extend_gap_score=-1,
        end_gap_score=0,
    )
    counts = aligner.align(a.replace("-", ""), b.replace("-", ""))[0].counts()
    columns = counts.aligned + counts.internal_gaps
    return counts.identities / columns if columns else 0.0


def nearest_by_barcode(
    targets: Sequence[str], refs: Sequence[str], *, mode: str = "auto", max_align: int = 5
) -> list[tuple[int, float]]:
    """For each target barcode, ``(index of the most identical reference, identity)``.

    ``mode="hamming"`` needs equal lengths; ``"align"`` aligns each target with the ``max_align``
    references closest by 5-mer profile (cosine) and keeps the best; ``"auto"`` picks Hamming when
    every length is equal. Ties go to the lower reference index.
    """
    if not refs:
        raise DataError("no reference barcodes to compare with (the training split is empty)")
    if mode not in ("auto", "hamming", "align"):
        raise ValueError(f"mode must be auto, hamming or align, got {mode!r}")
    equal = len({len(s) for s in [*targets, *refs]}) == 1
    if mode == "hamming" or (mode == "auto" and equal):
        ident = hamming_identity(targets, refs)
        best = ident.argmax(1)
        return [(int(j), float(ident[i, j])) for i, j in enumerate(best)]
    sim = _kmer_profiles(targets) @ _kmer_profiles(refs).T  # (T, R) cosine
    out = []
    for i, target in enumerate(targets):
        candidates = np.argsort(-sim[i], kind="stable")[:max_align]
        scored = [(align_identity(target, refs[j]), -int(j)) for j in candidates]
        ident, neg_j = max(scored)
        out.append((-neg_j, float(ident)))
    return out


def sample_paths(pool: Sequence[str | Path], n: int, rng: np.random.Generator) -> list[str | Path]:
    """``n`` items from ``pool``: without replacement while possible, then a fresh shuffle again."""
    if not pool:
        raise DataError("cannot draw images from an empty pool")
    out: list[str | Path] = []
    while len(out) < n:
        order = rng.permutation(len(pool))
        out.extend(pool[i] for i in order[: n - len(out)])
    return out


def as_tree(tree):
    """A Newick path or an already parsed Bio.Phylo tree → (tree, a name for messages)."""
    if isinstance(tree, (str, Path)):
        from phenogen.phylo.tree import read_tree

        return read_tree(tree), str(tree)
    return tree, "the tree"


def tree_covariance(newick_path, names: Sequence[str]) -> np.ndarray:
    """(N, N) Brownian-motion covariance of named nodes: the root-to-MRCA path length of each pair.

    ``newick_path`` is a Newick file or a parsed Bio.Phylo tree. Nodes are looked up by label (tips
    and internal nodes alike); a name absent from the tree raises :class:`DataError`.
    """
    tree, newick_path = as_tree(newick_path)
    depths = tree.depths()  # clade -> root-to-node length (missing branch lengths count 0)
    by_name = {c.name: c for c in tree.find_clades() if c.name}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataError(f"{newick_path}: node(s) {', '.join(missing[:5])} not in the tree")
    chains = []
    for n in names:
        path = [tree.root, *tree.get_path(by_name[n])] if by_name[n] is not tree.root else [tree.root]
        chains.append({id(c): depths[c] for c in path})
    cov = np.empty((len(names), len(names)))
    for i, a in enumerate(chains):
        for j in range(i, len(names)):
            b = chains[j]
            cov[i, j] = cov[j, i] = max(a[k] for k in a.keys() & b.keys())
    return cov


def tree_node_names(newick_path) -> set[str]:
    """All node labels of a Newick tree (a file or a parsed Bio.Phylo tree)."""
    return {c.name for c in as_tree(newick_path)[0].find_clades() if c.name}


def bm_conditional_mean(
    newick_path, known: Mapping[str, np.ndarray], targets: Sequence[str], *, tip_noise: float = 0.0
) -> dict[str, np.ndarray]:
    """Predict the traits of ``targets`` from ``known`` node values under Brownian motion.

    ``E[x_t | x_K] = μ̂ + C_tK (C_KK + s·I)⁻¹ (x_K − μ̂)`` with ``μ̂`` the GLS estimate of the root state
    ``(1ᵀV⁻¹x)/(1ᵀV⁻¹1)``, ``V = C_KK + s·I``. The BM rate cancels, so one covariance serves every trait
    column. ``tip_noise`` is the variance of independent measurement error on the known values as a
    fraction of the mean root-to-tip variance (``s = tip_noise · mean diag C_KK``; 0 = exact values, the
    oracle): with noisy known values (captions a model wrote) the prediction leans on the consensus of
    relatives rather than on the single closest one — :func:`loo_tip_noise` chooses it from the data.
    Targets absent from the tree are left out of the result.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.nwk"
    >>> _ = p.write_text("((a:1,b:1)x:1,c:2)root;")
    >>> pred = bm_conditional_mean(p, {"a": np.array([1.0]), "c": np.array([-1.0])}, ["b", "x"])
    >>> round(float(pred["b"][0]), 3), round(float(pred["x"][0]), 3)
    (0.5, 0.5)
    """
    names_k = list(known)
    if not names_k:
        raise DataError("the oracle needs at least one node with known traits")
    if not tip_noise >= 0.0:
        raise DataError(f"tip_noise must be >= 0, got {tip_noise}")
    present = tree_node_names(newick_path)
    targets = [t for t in targets if t in present]
    cov = tree_covariance(newick_path, [*names_k, *targets])
    k = len(names_k)
    x = np.stack([np.asarray(known[n], dtype=np.float64) for n in names_k])  # (K, P)
    pred = _bm_predict(cov[:k, :k], cov[k:, :k], x, tip_noise)
    return {t: pred[i] for i, t in enumerate(targets)}


def _bm_predict(c_kk: np.ndarray, c_tk: np.ndarray, x: np.ndarray, tip_noise: float) -> np.ndarray:
    """(T, P) GLS-root BM conditional mean from the known block ``c_kk`` (K, K), ``c_tk`` (T, K), ``x`` (K, P)."""
    k = len(c_kk)
    scale = max(float(np.mean(np.diag(c_kk))), 1e-12)
    v = c_kk + np.eye(k) * (1e-6 + tip_noise) * scale
    solve_1 = np.linalg.solve(v, np.ones(k))  # (K,)
    mu = solve_1 @ x / solve_1.sum()  # (P,)
    return mu + c_tk @ np.linalg.solve(v, x - mu)


TIP_NOISE_GRID: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def loo_tip_noise(
    newick_path, known: Mapping[str, np.ndarray], grid: Sequence[float] = TIP_NOISE_GRID
) -> tuple[float, dict[float, float]]:
    """Choose :func:`bm_conditional_mean`'s ``tip_noise`` by leave-one-out over the known tips.

    Each known value is predicted from all the others; the grid value with the smallest mean squared
    error wins (ties to the smaller). When the known values carry independent errors, the squared error
    against a left-out *noisy* value is the error against its true value plus that value's own noise
    variance, the same for every grid value — so the choice is the one best against the unseen truth,
    found without it. Returns ``(best, {grid value: LOO RMSE})``.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.nwk"
    >>> _ = p.write_text("((a:1,b:1)x:1,(c:1,d:1)y:1)root;")
    >>> best, table = loo_tip_noise(p, {n: np.array([v]) for n, v in zip("abcd", [1.0, 1.2, -1.0, -0.8])})
    >>> best, len(table)
    (0.0, 8)
    """
    names_k = list(known)
    if len(names_k) < 3:
        raise DataError("choosing tip noise by leave-one-out needs at least 3 known tips")
    if not grid or any(not g >= 0.0 for g in grid):
        raise DataError(f"tip noise grid must hold values >= 0, got {list(grid)}")
    cov = tree_covariance(newick_path, names_k)
    x = np.stack([np.asarray(known[n], dtype=np.float64) for n in names_k])  # (K, P)
    table: dict[float, float] = {}
    for g in grid:
        sq = 0.0
        for i in range(len(names_k)):
            keep = np.arange(len(names_k)) != i
            pred = _bm_predict(cov[np.ix_(keep, keep)], cov[i : i + 1, keep], x[keep], float(g))
            sq += float(np.sum((pred[0] - x[i]) ** 2))
        table[float(g)] = float(np.sqrt(sq / x.size))
    best = min(table, key=lambda g: (round(table[g], 12), g))
    return best, table

"""Honest statistics of sampled barcodes, measured against the training set and against nature.

* **novelty** — share of samples not identical to any training sequence;
* **duplicates** — samples identical to an earlier sample;
* **nearest identity** — identity of each sample to its nearest training sequence, compared with
  the **natural** distribution: each (subsampled) training sequence's nearest identity to training
  sequences of *other* species, and held-out species' nearest identity to the training set;
* **length** and **GC** distributions;
* **stop-free share** — sequences without an internal stop codon under the vertebrate
  mitochondrial code (NCBI table 2), in the one frame that has the fewest stops on the training set.

Identity definition: ``identity(a, b) = I / max(S, min(|a|, |b|))`` in the best global alignment
with free end gaps (Biopython ``PairwiseAligner``, Needleman–Wunsch; match +1, mismatch −1, gap
−2), where ``I`` counts identical columns and ``S`` the aligned span (identities + mismatches +
internal gap columns). Overhangs of barcodes trimmed differently cost nothing; internal gaps and
any unaligned part of the shorter sequence lower identity. N counts as a mismatch. Nearest
identity is computed fast: references are pre-filtered by the cosine similarity of 6-mer count
profiles, the ``candidates`` best are scored by alignment score only, and the
identity is counted on the best-scoring one (exact matches short-cut to 1.0).

>>> round(identity("ACGTACGTAC", "ACGTTCGTAC"), 2)
0.9
>>> round(identity("ACGTACGTAC", "GGACGTACGTAC"), 2)  # overhang is free
1.0
>>> stop_free_share(["ATGTAAGCC", "ATGGCCTAA"], frame=0)
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

from phenogen.dna.codons import internal_stop_codons
from phenogen.dna.markov import encode_bases

__all__ = [
    "identity",
    "kmer_profiles",
    "nearest_identity",
    "natural_identity",
    "novelty",
    "n_duplicates",
    "gc_content",
    "best_frame",
    "stop_free_share",
    "stop_free_any_frame_share",
    "summarize",
    "NearestResult",
]


@cache
def _aligner():
    from Bio.Align import PairwiseAligner

    aligner = PairwiseAligner(mode="global", match_score=1, mismatch_score=-1, gap_score=-2)
    aligner.end_gap_score = 0
    return aligner


def identity(a: str, b: str) -> float:
    """Identity of two sequences (see the module docstring for the definition)."""
    if not a or not b:
        return 0.0
    if a == b:
        return 1.0
    counts = _aligner().align(a, b)[0].counts()
    span = counts.identities + counts.mismatches + counts.internal_gaps
    return counts.identities / max(span, min(len(a), len(b)))


def kmer_profiles(seqs: Sequence[str], k: int = 6) -> np.ndarray:
    """L2-normalised k-mer count vectors (N, 4**k); windows with ambiguous bases are skipped."""
    out = np.zeros((len(seqs), 4**k), dtype=np.float32)
    weights = 4 ** np.arange(k - 1, -1, -1)
    for i, seq in enumerate(seqs):
        x = encode_bases(seq)
        if len(x) < k:
            continue
        win = np.lib.stride_tricks.sliding_window_view(x, k)  # (L-k+1, k)
        ok = (win >= 0).all(axis=1)
        idx = win[ok] @ weights
        out[i] = np.bincount(idx, minlength=4**k)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


@dataclass
class NearestResult:
    identity: np.ndarray  # (Q,) nearest identity per query
    index: np.ndarray  # (Q,) index of the nearest reference (-1 when none allowed)


def nearest_identity(
    queries: Sequence[str],
    references: Sequence[str],
    candidates: int = 16,
    query_groups: Sequence[str] | None = None,
    ref_groups: Sequence[str] | None = None,
    ref_profiles: np.ndarray | None = None,
) -> NearestResult:
    """Identity of each query to its nearest reference (k-mer prefilter, then alignment).

    When ``query_groups`` and ``ref_groups`` (e.g. species) are given, references of the query's own
    group are excluded — that is how the natural inter-species distribution is measured.
    """
    if not references:
        raise ValueError("nearest_identity needs at least one reference sequence")
    exact = {}
    for j, r in enumerate(references):
        exact.setdefault(r, j)
    q_prof = kmer_profiles(queries)
    r_prof = kmer_profiles(references) if ref_profiles is None else ref_profiles
    sim = q_prof @ r_prof.T  # (Q, R)
    if query_groups is not None and ref_groups is not None:
        rg = np.asarray(ref_groups, dtype=object)
        for i, g in enumerate(query_groups):
            sim[i, rg == g] = -np.inf
    m = min(candidates, len(references))
    top = (
        np.argpartition(-sim, m - 1, axis=1)[:, :m]
        if m < len(references)
        else np.tile(np.arange(m), (len(queries), 1))
    )
    ident = np.zeros(len(queries))
    index = np.full(len(queries), -1)
    for i, q in enumerate(queries):
        j = exact.get(q)
        if j is not None and (query_groups is None or ref_groups is None or ref_groups[j] != query_groups[i]):
            ident[i], index[i] = 1.0, j
            continue
        best, best_j = -np.inf, -1
        for j in top[i]:
            if not np.isfinite(sim[i, j]):
                continue
            score = _aligner().score(q, references[j])
            if score > best:
                best, best_j = score, int(j)
        if best_j >= 0:
            ident[i], index[i] = identity(q, references[best_j]), best_j
    return NearestResult(ident, index)


def natural_identity(
    train: Sequence[str],
    species: Sequence[str] | None,
    max_queries: int = 400,
    candidates: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Nearest identity of (up to ``max_queries``) training sequences to training sequences of other species.

    Without species labels each query only excludes itself (then the distribution includes
    conspecific neighbours and is shifted upward; the report says which was used).
    """
    rng = np.random.default_rng(seed)
    n = len(train)
    pick = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    groups = list(species) if species is not None else [str(i) for i in range(n)]
    queries = [train[i] for i in pick]
    return nearest_identity(queries, train, candidates, [groups[i] for i in pick], groups).identity


def novelty(samples: Sequence[str], train: Sequence[str]) -> float:
    """Share of samples not identical to any training sequence."""
    known = set(train)
    return sum(s not in known for s in samples) / max(len(samples), 1)


def n_duplicates(samples: Sequence[str]) -> int:
    """Samples identical to an earlier sample."""
    return len(samples) - len(set(samples))


def gc_content(seq: str) -> float:
    """G+C share among the A/C/G/T bases (NaN when there are none)."""
    acgt = sum(seq.count(c) for c in "ACGT")
    return (seq.count("G") + seq.count("C")) / acgt if acgt else float("nan")


def best_frame(train: Sequence[str], table: int = 2) -> int:
    """The frame (0, 1, 2) with the fewest internal stop codons summed over ``train``."""
    totals = [sum(len(internal_stop_codons(s, f, table)) for s in train) for f in range(3)]
    return int(np.argmin(totals))


def stop_free_share(seqs: Sequence[str], frame: int, table: int = 2) -> float:
    """Share of sequences without an internal stop codon in ``frame``."""
    return sum(not internal_stop_codons(s, frame, table) for s in seqs) / max(len(seqs), 1)


def stop_free_any_frame_share(seqs: Sequence[str], table: int = 2) -> float:
    """Share of sequences free of internal stops in at least one of the three frames."""
    ok = [any(not internal_stop_codons(s, f, table) for f in range(3)) for s in seqs]
    return sum(ok) / max(len(seqs), 1)


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0}
    q = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "n": int(len(v)),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "q05": float(q[0]),
        "q25": float(q[1]),
        "median": float(q[2]),
        "q75": float(q[3]),
        "q95": float(q[4]),
        "max": float(v.max()),
    }


def summarize(
    samples: Sequence[str],
    train: Sequence[str],
    train_species: Sequence[str] | None = None,
    heldout: Sequence[str] = (),
    candidates: int = 16,
    natural_max: int = 400,
    range_quantiles: tuple[float, float] = (0.05, 0.95),
    seed: int = 0,
    natural: np.ndarray | None = None,
    frame: int | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """All sample statistics as a JSON-able dict, plus the raw arrays for plotting.

    ``natural`` and ``frame`` may be passed in to reuse them across calls (checkpoint selection).
    """
    frame = best_frame(train) if frame is None else frame
    if natural is None:
        natural = natural_identity(train, train_species, natural_max, candidates, seed)
    lo, hi = (float(np.quantile(natural, q)) for q in range_quantiles)
    near = nearest_identity(samples, train, candidates).identity if len(samples) else np.zeros(0)
    arrays = {
        "sample_identity": near,
        "natural_identity": natural,
        "sample_length": np.array([len(s) for s in samples]),
        "train_length": np.array([len(s) for s in train]),
        "sample_gc": np.array([gc_content(s) for s in samples]),
        "train_gc": np.array([gc_content(s) for s in train]),
    }
    report = {
        "n_samples": len(samples),
        "novelty": novelty(samples, train),
        "n_duplicates": n_duplicates(samples),
        "unique_share": len(set(samples)) / max(len(samples), 1),
        "nearest_identity": _stats(near),
        "natural_identity": _stats(natural),
        "natural_identity_definition": (
            "nearest identity of training sequences to training sequences of other species"
            if train_species is not None
            else "nearest identity of training sequences to other training sequences (no species labels)"
        ),
        "natural_range": [lo, hi],
        "natural_range_quantiles": list(range_quantiles),
        "median_in_natural_range": bool(len(near) and lo <= float(np.median(near)) <= hi),
        "share_in_natural_range": float(((near >= lo) & (near <= hi)).mean()) if len(near) else float("nan"),
        "frame": frame,
        "stop_free_share": stop_free_share(samples, frame),
        "train_stop_free_share": stop_free_share(train, frame),
        "stop_free_any_frame_share": stop_free_any_frame_share(samples),
        "train_stop_free_any_frame_share": stop_free_any_frame_share(train),
        "length": {"samples": _stats(arrays["sample_length"]), "train": _stats(arrays["train_length"])},
        "gc": {"samples": _stats(arrays["sample_gc"]), "train": _stats(arrays["train_gc"])},
    }
    if len(heldout):
        held_near = nearest_identity(heldout, train, candidates).identity
        arrays["heldout_identity"] = held_near
        report["heldout_nearest_identity"] = _stats(held_near)
        report["heldout_stop_free_share"] = stop_free_share(heldout, frame)
    return report, arrays

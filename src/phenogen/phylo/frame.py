"""Reading frames of protein-coding barcodes (COI): stop codons, and whether equal lengths mean aligned.

A COI barcode is a piece of a mitochondrial gene: read in its frame, it has no stop codon. Two genetic
codes matter (NCBI tables, via ``Bio.Data.CodonTable``): 2, vertebrate mitochondrial (``TAA TAG AGA
AGG`` stop), and 5, invertebrate mitochondrial (``TAA TAG``). :func:`stop_codons` counts the stops of
a sequence, gaps removed, in the frame (0, 1 or 2) that has fewest; codons holding ``N`` are skipped.

:func:`alignment_doubts` is what ``--align auto`` asks of a FASTA whose sequences share one length
before taking it as aligned:

* *reading frame*: every sequence has a frame without stop codons (a frameshifting indel gives one);
  checked only when most sequences have such a frame (otherwise the set is not coding under
  ``table``, and only homology is checked);
* *positional homology*: no stretch of a sequence (a window of :data:`WINDOW` columns) falls to the
  identity two unrelated sequences have (below :data:`MIN_WINDOW_IDENTITY` with the column consensus)
  while another stretch of it is clearly homologous (at least 0.2 above that) — a codon indel shifted
  elsewhere keeps the frame but misaligns everything between.

>>> stop_codons("ATGAAATAGCCC", frame=0), stop_codons("ATGAAACCC")
(1, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

__all__ = [
    "GENETIC_CODES",
    "WINDOW",
    "MIN_WINDOW_IDENTITY",
    "stop_codons",
    "best_frame",
    "alignment_doubts",
]

GENETIC_CODES = {2: "vertebrate mitochondrial", 5: "invertebrate mitochondrial"}
WINDOW = 60
MIN_WINDOW_IDENTITY = 0.5


@cache
def _stops(table: int) -> frozenset[str]:
    from Bio.Data.CodonTable import unambiguous_dna_by_id

    return frozenset(unambiguous_dna_by_id[table].stop_codons)


def _frame_stops(seq: str, table: int) -> list[int]:
    stops = _stops(table)
    return [sum(1 for i in range(f, len(seq) - 2, 3) if seq[i : i + 3] in stops) for f in range(3)]


def best_frame(sequence: str, table: int = 2) -> tuple[int, int]:
    """``(frame, stops)``: the frame (0-2, of the ungapped sequence) with fewest stop codons, and how many."""
    counts = _frame_stops(sequence.replace("-", "").upper(), table)
    frame = int(np.argmin(counts))
    return frame, counts[frame]


def stop_codons(sequence: str, table: int = 2, frame: int | None = None) -> int:
    """Stop codons of ``sequence`` (gaps removed) under NCBI genetic code ``table``, in ``frame`` (0-2;
    ``None``: the frame with fewest)."""
    if frame is None:
        return best_frame(sequence, table)[1]
    return _frame_stops(sequence.replace("-", "").upper(), table)[frame]


def _window_identity(rows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the highest and the lowest identity with the column consensus over sliding windows."""
    n, length = rows.shape
    codes = np.frombuffer(b"ACGT", dtype=np.uint8)
    counts = np.stack([(rows == c).sum(axis=0) for c in codes])  # (4, L)
    consensus = codes[counts.argmax(axis=0)]  # (L,)
    base = np.isin(rows, codes)  # (n, L) comparable positions
    same = (rows == consensus) & base
    overall = same.sum(axis=1) / np.maximum(base.sum(axis=1), 1)
    if length < window:
        return overall, overall
    kernel = np.ones(window)
    hits = np.stack([np.convolve(r, kernel, "valid") for r in same.astype(float)])
    valid = np.stack([np.convolve(r, kernel, "valid") for r in base.astype(float)])
    frac = hits / np.maximum(valid, 1)
    enough = valid >= window / 2  # windows mostly gaps or N say nothing
    best = np.where(enough, frac, 0.0).max(axis=1)
    lowest = np.where(enough, frac, 1.0).min(axis=1)
    return np.where(enough.any(axis=1), best, overall), lowest


def alignment_doubts(
    names: Sequence[str], sequences: Sequence[str], *, table: int = 2, window: int = WINDOW
) -> dict[str, str]:
    """``name -> why`` for each sequence of an equal-length set that does not look aligned (see module doc)."""
    doubts: dict[str, str] = {}
    frames = [best_frame(seq, table) for seq in sequences]
    if 2 * sum(1 for _, stops in frames if stops == 0) > len(frames):  # else not coding under this code
        for name, (frame, stops) in zip(names, frames, strict=True):
            if stops:
                doubts[name] = f"{stops} stop codon(s) in its best frame ({frame + 1}) under code {table}"
    if len(sequences) >= 3:
        rows = np.frombuffer("".join(sequences).upper().encode("ascii"), dtype=np.uint8)
        rows = rows.reshape(len(sequences), -1)
        best, lowest = _window_identity(rows, window)
        for i in np.flatnonzero((lowest < MIN_WINDOW_IDENTITY) & (best >= MIN_WINDOW_IDENTITY + 0.2)):
            doubts.setdefault(
                names[i],
                f"a stretch of {window} columns only {lowest[i]:.0%} identical with the column consensus "
                f"(elsewhere up to {best[i]:.0%}): shifted by an indel",
            )
    return doubts

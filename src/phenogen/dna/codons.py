"""Reading frames under a mitochondrial genetic code (default: NCBI table 2, vertebrate mitochondrial).

Under table 2, TAA, TAG, AGA and AGG are stops and TGA codes tryptophan, so a barcode that is a
clean open reading frame under the standard code can still hold "stops" here and vice versa.

>>> internal_stop_codons("ATGAGAGCCTAA")
[3]
>>> has_internal_stop("ATGTGAGCCTAA")
False
"""

from __future__ import annotations

from functools import cache

__all__ = ["STOP_CODONS_VERT_MITO", "codon_table", "translate", "internal_stop_codons", "has_internal_stop"]

STOP_CODONS_VERT_MITO: frozenset[str] = frozenset({"TAA", "TAG", "AGA", "AGG"})


@cache
def codon_table(table: int = 2) -> tuple[dict[str, str], frozenset[str]]:
    """(codon → amino acid, stop codons) for an NCBI translation table id."""
    from Bio.Data import CodonTable

    t = CodonTable.unambiguous_dna_by_id[table]
    return dict(t.forward_table), frozenset(t.stop_codons)


def translate(seq: str, table: int = 2, frame: int = 0) -> str:
    """Translate in ``frame``; stops become ``*`` and codons with N or gaps become ``X``."""
    forward, stops = codon_table(table)
    out = []
    for i in range(frame, len(seq) - 2, 3):
        codon = seq[i : i + 3].upper()
        out.append("*" if codon in stops else forward.get(codon, "X"))
    return "".join(out)


def internal_stop_codons(seq: str, frame: int = 0, table: int = 2) -> list[int]:
    """0-based nucleotide positions of in-frame stop codons, excluding a terminal stop."""
    _, stops = codon_table(table)
    seq = seq.upper()
    starts = range(frame, len(seq) - 2, 3)
    last = starts[-1] if len(starts) else -1
    return [i for i in starts if seq[i : i + 3] in stops and i != last]


def has_internal_stop(seq: str, frame: int = 0, table: int = 2) -> bool:
    """True when an in-frame stop codon occurs before the last codon."""
    return bool(internal_stop_codons(seq, frame, table))

"""Codon-aware alignment of protein-coding barcodes: translate, align the proteins, back-translate.

MAFFT on nucleotides places gaps wherever they score best, often off the codon frame (one base here,
two there), and the ancestors reconstructed from such an alignment read through stop codons.
``--align codon`` (``[ancestors] align = "codon"``) aligns what selection keeps instead, the protein:

1. each barcode (gaps removed) is read in its best frame under NCBI code ``genetic_code``
   (:func:`~phenogen.phylo.frame.best_frame`: 2 vertebrate, 5 invertebrate mitochondrial); the bases
   before its first and after its last whole codon are padded to whole codons (they translate to
   ``X``), and stop codons translate to ``X`` too (a sequence with any is counted and logged);
2. MAFFT aligns the proteins (``mafft_args`` plus ``--amino``);
3. every residue is replaced by its three bases and every protein gap by ``---``; the padding becomes
   gaps again. Each input base is kept, in order, and every codon occupies alignment columns
   ``3k, 3k+1, 3k+2``: gaps inside the alignment come in whole codons and no sequence is shifted out of
   frame (:func:`codon_positions_ok` checks it).

>>> _translate_padded("ATGAAA", 0, 2), _translate_padded("CATGAAAT", 1, 2)
(('MK', 0, 0), ('XMKX', 2, 2))
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

from phenogen.errors import InputError
from phenogen.phylo.tools import run_tool

__all__ = ["codon_align", "codon_positions_ok"]

log = logging.getLogger(__name__)


def _translate_padded(seq: str, frame: int, table: int) -> tuple[str, int, int]:
    """Protein of ``seq`` read from ``frame`` with partial codons padded; ``(protein, lead pad, tail pad)``.

    Stops and codons holding ``N`` translate to ``X`` (MAFFT reads ``*`` as no amino acid).
    """
    from Bio.Seq import Seq

    lead = (3 - frame) % 3
    padded = "N" * lead + seq
    tail = (-len(padded)) % 3
    padded += "N" * tail
    protein = str(Seq(padded).translate(table=table)).replace("*", "X")
    return protein, lead, tail


def _mafft_protein(proteins: Sequence[str], *, threads: int, args: Sequence[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="phenogen-mafft-aa-") as tmp:
        inp, out = Path(tmp) / "in.fasta", Path(tmp) / "out.fasta"
        inp.write_text("".join(f">s{i}\n{p}\n" for i, p in enumerate(proteins)), encoding="ascii")
        run_tool("mafft", [*args, "--amino", "--thread", threads, "--quiet", inp], stdout_path=out)
        aligned: dict[str, list[str]] = {}
        current = None
        for line in out.read_text(encoding="ascii").splitlines():
            if line.startswith(">"):
                current = line[1:].split()[0]
                aligned[current] = []
            elif current is not None:
                aligned[current].append(line.strip().upper())
    if len(aligned) != len(proteins):
        raise InputError(f"MAFFT returned {len(aligned)} proteins for {len(proteins)} inputs")
    return ["".join(aligned[f"s{i}"]) for i in range(len(proteins))]


def codon_align(
    names: Sequence[str],
    sequences: Sequence[str],
    *,
    genetic_code: int = 2,
    threads: int = 1,
    mafft_args: Sequence[str] = ("--auto",),
) -> tuple[list[str], dict[str, int]]:
    """Codon alignment of ``sequences`` (module doc); returns the aligned rows and ``{"frames": …,
    "with_stops": n}`` (how many sequences read in frame 1, 2, 3 and how many hold stop codons).

    Raises
    ------
    InputError
        a back-translated row does not give back its input bases (MAFFT changed a protein).
    """
    from phenogen.phylo.frame import best_frame

    ungapped = [s.replace("-", "").upper() for s in sequences]
    proteins, pads = [], []
    frames = [0, 0, 0]
    with_stops: list[str] = []
    for name, seq in zip(names, ungapped, strict=True):
        frame, stops = best_frame(seq, genetic_code)
        frames[frame] += 1
        if stops:
            with_stops.append(name)
        protein, lead, tail = _translate_padded(seq, frame, genetic_code)
        proteins.append(protein)
        pads.append((lead, tail))
    if with_stops:
        log.warning(
            "codon alignment: %d of %d sequences hold stop codons in their best frame under code %d "
            "(%s …): aligned with X for each stop; pseudogene, frameshift or wrong genetic code?",
            len(with_stops),
            len(names),
            genetic_code,
            ", ".join(with_stops[:3]),
        )
    aligned_proteins = _mafft_protein(proteins, threads=threads, args=mafft_args)
    rows = []
    for name, seq, aa, (lead, tail) in zip(names, ungapped, aligned_proteins, pads, strict=True):
        padded = "N" * lead + seq + "N" * tail
        parts, i = [], 0
        for residue in aa:
            if residue == "-":
                parts.append("---")
            else:
                parts.append(padded[i : i + 3])
                i += 3
        row = list("".join(parts))
        # the padding is no data: back to gaps (the first `lead` and last `tail` bases of the row)
        base_cols = [j for j, ch in enumerate(row) if ch != "-"]
        for j in base_cols[:lead] + (base_cols[len(base_cols) - tail :] if tail else []):
            row[j] = "-"
        text = "".join(row)
        if i != len(padded) or text.replace("-", "") != seq:
            raise InputError(f"codon alignment of {name}: the back-translated row lost bases; MAFFT output?")
        rows.append(text)
    return rows, {"frames": frames, "with_stops": len(with_stops)}


def codon_positions_ok(row: str, frame: int) -> bool:
    """True when every base of ``row`` sits in the column whose position in the codon (column mod 3) is
    its own codon position when the ungapped sequence is read from ``frame`` (0-2)."""
    k = 0
    for col, ch in enumerate(row):
        if ch == "-":
            continue
        if (k - frame) % 3 != col % 3:
            return False
        k += 1
    return True

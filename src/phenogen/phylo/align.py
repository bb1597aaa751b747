"""Multiple sequence alignment of barcodes: detect aligned input, otherwise run MAFFT.

Input is read with :func:`phenogen.dna.seqio.read_fasta` (gaps allowed, ambiguity codes handled by
the chosen policy, ``mask`` by default: every IUPAC code becomes ``N``). ``--align`` says when to run
``mafft --auto`` (Debian package ``mafft``):

``auto`` (default)
    sequences of different lengths are aligned; sequences of one length are taken as aligned only when
    :func:`phenogen.phylo.frame.alignment_doubts` finds nothing (every sequence has an open reading
    frame under ``genetic_code``, no stretch of one falls to chance identity with the others); else
    MAFFT aligns them and the log says which sequences raised the doubt.
``always``
    MAFFT aligns whatever the lengths (gaps in the input are removed first).
``never`` (``--aligned``)
    the input is the alignment; different lengths are an error naming the odd records.
``codon``
    codon-aware, whatever the lengths: each barcode translated in its best frame under
    ``genetic_code``, the proteins aligned with MAFFT, back-translated (:mod:`phenogen.phylo.codon`);
    gaps come in whole codons and every sequence stays in frame.

Gap handling, end to end:

* MAFFT inserts ``-`` for indels; alignment columns are kept as they are (no trimming), so
  reconstructed ancestors live in alignment coordinates and the ancestors FASTA holds ``-``.
* Leading and trailing gaps (a barcode shorter than its neighbours) are *missing data*: TreeTime's
  ``fill_overhangs`` turns them into ``N`` before reconstruction.
* Internal gaps are a fifth character state in TreeTime's nucleotide alphabet, so an ancestor gets a
  gap where its descendants mostly have one. :func:`ungap` removes them for the image model.

>>> is_aligned(["ACGT", "AC-T"]), is_aligned(["ACGT", "ACG"])
(True, False)
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from phenogen.dna.seqio import read_fasta, write_fasta
from phenogen.errors import InputError, SequenceError
from phenogen.phylo.tools import run_tool

__all__ = ["Alignment", "is_aligned", "check_aligned", "read_sequences", "run_mafft", "align", "ungap"]

log = logging.getLogger(__name__)
AlignMode = Literal["auto", "always", "never", "codon"]


@dataclass
class Alignment:
    """Named sequences in input order; ``aligned`` says whether they share one coordinate system."""

    names: list[str]
    sequences: list[str]
    aligned: bool
    source: str = "<input>"
    masked: dict[str, int] = field(default_factory=dict)  # id -> ambiguity codes turned into N
    dropped: dict[str, str] = field(default_factory=dict)  # id -> why it was left out
    method: str = "input"  # "input" (already aligned), "mafft" or "mafft-codon"
    headers: dict[str, str] = field(default_factory=dict)  # id -> whole FASTA header line
    doubts: dict[str, str] = field(default_factory=dict)  # id -> why equal lengths did not mean aligned

    def as_dict(self) -> dict[str, str]:
        return dict(zip(self.names, self.sequences, strict=True))

    @property
    def length(self) -> int:
        return len(self.sequences[0]) if self.aligned and self.sequences else 0

    def __len__(self) -> int:
        return len(self.names)


def is_aligned(sequences: Sequence[str]) -> bool:
    """True when there is at least one sequence and all have the same length."""
    return len(sequences) > 0 and len({len(s) for s in sequences}) == 1


def check_aligned(names: Sequence[str], sequences: Sequence[str], source: str = "<input>") -> None:
    """Raise :class:`InputError` naming records whose length differs from the most common one."""
    lengths: dict[int, list[str]] = {}
    for name, seq in zip(names, sequences, strict=True):
        lengths.setdefault(len(seq), []).append(name)
    if len(lengths) <= 1:
        return
    common = max(lengths, key=lambda k: len(lengths[k]))
    odd = [f"{n} ({k} bp)" for k, ns in sorted(lengths.items()) if k != common for n in ns]
    shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
    raise InputError(
        f"{source}: --aligned was given but the sequences have {len(lengths)} different lengths; most are "
        f"{common} bp, but {shown}. Drop --aligned to align them with MAFFT."
    )


def read_sequences(path: str | Path, *, policy: str = "mask", min_sequences: int = 3) -> Alignment:
    """Read a FASTA for phylogenetics: gaps allowed, ambiguity codes by ``policy``, at least ``min_sequences``.

    Raises
    ------
    InputError
        fewer than ``min_sequences`` records (a tree needs three), or the file cannot be read.
    SequenceError
        an invalid record (from :func:`read_fasta`, naming record and position); duplicate ids.
    """
    result = read_fasta(path, policy=policy, allow_gaps=True)  # type: ignore[arg-type]
    names = [r.id for r in result.records]
    seqs = [r.sequence for r in result.records]
    if result.masked:
        log.warning("%s: masked ambiguity codes as N in %d record(s)", path, len(result.masked))
    if result.dropped:
        log.warning("%s: dropped %d record(s) (policy %s)", path, len(result.dropped), policy)
    empty = [n for n, s in zip(names, seqs, strict=True) if not s.replace("-", "").replace("N", "")]
    if empty:
        raise SequenceError(f"{path}: record(s) {', '.join(empty[:5])} hold no A/C/G/T base")
    if len(names) < min_sequences:
        raise InputError(
            f"{path}: {len(names)} usable sequence(s); ancestral reconstruction needs a tree of at least "
            f"{min_sequences} sequences"
        )
    return Alignment(
        names,
        seqs,
        is_aligned(seqs),
        str(path),
        dict(result.masked),
        dict(result.dropped),
        method="input",
        headers={r.id: r.description or r.id for r in result.records},
    )


def run_mafft(
    names: Sequence[str], sequences: Sequence[str], *, threads: int = 1, args: Sequence[str] = ("--auto",)
) -> list[str]:
    """Align ``sequences`` with MAFFT; returns the aligned sequences in input order (upper case).

    Names are replaced by ``s0, s1, …`` while MAFFT runs, so no header can be mangled.
    """
    with tempfile.TemporaryDirectory(prefix="phenogen-mafft-") as tmp:
        inp, out = Path(tmp) / "in.fasta", Path(tmp) / "out.fasta"
        write_fasta(inp, [(f"s{i}", s.replace("-", "")) for i, s in enumerate(sequences)])
        run_tool("mafft", [*args, "--thread", str(threads), "--quiet", str(inp)], stdout_path=out)
        aligned = {r.id: r.sequence for r in read_fasta(out, policy="mask", allow_gaps=True).records}
    if len(aligned) != len(names):
        raise InputError(f"MAFFT returned {len(aligned)} sequences for {len(names)} inputs")
    return [aligned[f"s{i}"] for i in range(len(names))]


def align(
    seqs: Alignment,
    *,
    assume_aligned: bool = False,
    mode: AlignMode = "auto",
    genetic_code: int = 2,
    threads: int = 1,
    mafft_args: Sequence[str] = ("--auto",),
) -> Alignment:
    """Return ``seqs`` unchanged when they are an alignment; else align them with MAFFT (see ``--align``).

    ``mode="never"`` (or ``assume_aligned=True``, the ``--aligned`` flag) raises :class:`InputError`
    if lengths differ; ``"auto"`` checks equal-length input with
    :func:`~phenogen.phylo.frame.alignment_doubts` under NCBI code ``genetic_code``; ``"codon"``
    always aligns, codon-aware (:func:`phenogen.phylo.codon.codon_align`: translated under
    ``genetic_code``, proteins aligned, back-translated).
    """
    from phenogen.phylo.frame import alignment_doubts

    if mode not in ("auto", "always", "never", "codon"):
        raise InputError(f"--align {mode!r}: use auto, always, never or codon")
    if assume_aligned or mode == "never":
        check_aligned(seqs.names, seqs.sequences, seqs.source)
        return seqs
    doubts: dict[str, str] = {}
    if mode == "auto" and seqs.aligned:
        doubts = alignment_doubts(seqs.names, seqs.sequences, table=genetic_code)
        if not doubts:
            log.info(
                "%s: all %d sequences have length %d, open reading frames and no shifted stretch; "
                "treating as aligned",
                seqs.source,
                len(seqs),
                seqs.length,
            )
            return seqs
        first = next(iter(doubts))
        log.warning(
            "%s: the %d sequences share one length but %d do not look aligned (%s: %s); aligning with MAFFT",
            seqs.source,
            len(seqs),
            len(doubts),
            first,
            doubts[first],
        )
    method = "mafft"
    if mode == "codon":
        from phenogen.phylo.codon import codon_align

        aligned, info = codon_align(
            seqs.names, seqs.sequences, genetic_code=genetic_code, threads=threads, mafft_args=mafft_args
        )
        method = "mafft-codon"
        log.info(
            "%s: codon alignment under code %d: frames 1/2/3 for %s sequences, %d with stop codons",
            seqs.source,
            genetic_code,
            "/".join(map(str, info["frames"])),
            info["with_stops"],
        )
    else:
        aligned = run_mafft(seqs.names, seqs.sequences, threads=threads, args=mafft_args)
    return Alignment(
        list(seqs.names),
        aligned,
        True,
        seqs.source,
        seqs.masked,
        seqs.dropped,
        method=method,
        headers=seqs.headers,
        doubts=doubts,
    )


def ungap(sequence: str) -> str:
    """Drop alignment gaps (for the image model, which reads plain barcodes)."""
    return sequence.replace("-", "")

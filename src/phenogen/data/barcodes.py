"""The barcodes table that ``phenogen fetch barcodes`` writes and ``phenogen dataset build`` reads.

``barcodes.tsv`` has one row per kept barcode, columns :data:`COLUMNS`; ``taxonomy`` is a
``;``-separated lineage (highest rank first, genus last). :func:`check_barcode` is the one filter
every source applies (ambiguity policy, length window, share of ``N``) and says why it rejected.

>>> seq, why = check_barcode("acgt" * 150, policy="mask", min_length=400, max_length=1600, max_n_fraction=0.05)
>>> len(seq), why
(600, '')
>>> check_barcode("ACGT", policy="mask", min_length=400, max_length=1600, max_n_fraction=0.05)[1]
'too short (4 bp < 400)'
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from phenogen.errors import InputError, SequenceError

__all__ = ["Barcode", "COLUMNS", "check_barcode", "safe_id", "write_barcodes", "read_barcodes", "read_taxa"]

COLUMNS: tuple[str, ...] = (
    "record_id",
    "taxon",
    "species",
    "source",
    "accession",
    "marker",
    "length",
    "taxonomy",
    "sequence",
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]+")


@dataclass(frozen=True)
class Barcode:
    """One COI barcode from a remote source or a file, already cleaned and filtered."""

    record_id: str
    taxon: str  # the name that was searched for (or the file's species)
    species: str  # the organism name the source gives
    source: str  # ncbi | bold | bioscan5m | folder
    accession: str
    marker: str
    taxonomy: tuple[str, ...]
    sequence: str


def safe_id(text: str) -> str:
    """A record id the dataset format accepts (no spaces, tabs, ``;`` or ``|``).

    >>> safe_id("BOLD:ABC 12|x")
    'BOLD:ABC_12_x'
    """
    return _UNSAFE.sub("_", text.strip()).strip("_") or "record"


def check_barcode(
    sequence: str,
    *,
    policy: str,
    min_length: int,
    max_length: int,
    max_n_fraction: float,
    record_id: str = "?",
    source: str = "<remote>",
) -> tuple[str | None, str]:
    """Clean ``sequence`` (gaps removed, ambiguity policy) and filter it; ``(sequence, "")`` or ``(None, reason)``."""
    from phenogen.dna.seqio import clean_sequence

    raw = re.sub(r"[\s\-.]", "", sequence)
    if not raw:
        return None, "empty sequence"
    try:
        cleaned = clean_sequence(raw, record_id=record_id, source=source, policy=policy)  # type: ignore[arg-type]
    except SequenceError as exc:
        if policy == "reject":
            raise
        return None, f"invalid sequence ({exc})"
    if cleaned is None:
        return None, "ambiguity codes (policy drop)"
    cleaned = cleaned.strip("N")
    if len(cleaned) < min_length:
        return None, f"too short ({len(cleaned)} bp < {min_length})"
    if len(cleaned) > max_length:
        return None, f"too long ({len(cleaned)} bp > {max_length})"
    n_share = cleaned.count("N") / len(cleaned)
    if n_share > max_n_fraction:
        return None, f"too many N ({100 * n_share:.1f}% > {100 * max_n_fraction:.1f}%)"
    return cleaned, ""


def write_barcodes(path: str | Path, barcodes: Iterable[Barcode]) -> int:
    """Write ``barcodes.tsv``; returns the number of rows."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for b in barcodes:
            writer.writerow(
                [
                    b.record_id,
                    b.taxon,
                    b.species,
                    b.source,
                    b.accession,
                    b.marker,
                    len(b.sequence),
                    ";".join(b.taxonomy),
                    b.sequence,
                ]
            )
            n += 1
    return n


def read_barcodes(path: str | Path) -> list[Barcode]:
    """Read a ``barcodes.tsv`` written by :func:`write_barcodes`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no barcodes table here; run `phenogen fetch barcodes` first")
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
            out = []
            for row in reader:
                if any(not isinstance(row.get(c), str) for c in COLUMNS):
                    raise InputError(f"{path}: line {reader.line_num} has too few columns")
                out.append(
                    Barcode(
                        record_id=row["record_id"],
                        taxon=row["taxon"],
                        species=row["species"],
                        source=row["source"],
                        accession=row["accession"],
                        marker=row["marker"],
                        taxonomy=tuple(t for t in row["taxonomy"].split(";") if t),
                        sequence=row["sequence"],
                    )
                )
            return out
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: unreadable barcodes table ({type(exc).__name__}: {exc})") from None


def read_taxa(path: str | Path) -> list[str]:
    """Taxon names, one per line (``#`` starts a comment; a TSV/CSV keeps its first column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: taxon list not found")
    names: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: taxon list is not UTF-8 text (byte {exc.start})") from None
    for line in text.splitlines():
        name = re.split(r"[\t,]", line.split("#", 1)[0])[0].strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise InputError(f"{path}: no taxon names (one per line)")
    return names

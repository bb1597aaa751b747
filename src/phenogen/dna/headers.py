"""Parse FASTA header lines: plain ids, BOLD, GenBank and ``key=value`` headers.

A header says more than its id. BOLD exports write ``processid|species name|marker|accession``;
GenBank writes ``ACCESSION.version Genus species … cytochrome oxidase subunit I (COI) gene …``;
phenogen's own dataset FASTA writes ``id species=… split=…``. :func:`parse_header` pulls out what it
can and leaves the rest ``None`` — it never guesses a species from a header that is not GenBank-like.

>>> h = parse_header("MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene, partial cds")
>>> h.id, h.species, h.marker, h.accession
('MN123456.1', 'Turdus merula', 'COI', 'MN123456.1')
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Header", "parse_header"]


class Header(NamedTuple):
    """The parts of one header; ``description`` is the whole header line without ``>``."""

    id: str
    description: str
    species: str | None
    marker: str | None
    accession: str | None


_ACCESSION = re.compile(r"^[A-Z]{1,6}_?\d{5,9}(\.\d+)?$")
_NCBI_DBS = {"gi", "gb", "emb", "dbj", "ref", "lcl", "sp", "tr"}  # NCBI / UniProt id prefixes
_BINOMIAL = re.compile(r"^([A-Z][a-z]+) ((?:cf\.|aff\.) )?([a-z][a-z-]+\.?)(?: ([a-z][a-z-]+))?\b")
_NOT_EPITHET = {"cytochrome", "voucher", "isolate", "strain", "clone", "specimen", "mitochondrion"}
_NOT_EPITHET |= {"mitochondrial", "haplotype", "gene", "partial", "complete", "cox1", "coi", "bold"}
_GENE = re.compile(r"\(([A-Za-z0-9-]+)\)\s+gene")
_COI = re.compile(r"\b(COI|CO1|COX1|COXI)\b|cytochrome (c )?oxidase subunit (I|1)\b", re.IGNORECASE)
_KEY_VALUE = re.compile(r"\b(species|marker|accession)=(\S+)")


def _species_from_text(text: str) -> str | None:
    m = _BINOMIAL.match(text)
    if not m or m.group(3) in _NOT_EPITHET:
        return None
    words = [m.group(1), (m.group(2) or "").strip(), m.group(3)]
    if m.group(4) and m.group(4) not in _NOT_EPITHET:
        words.append(m.group(4))
    return " ".join(w for w in words if w)


def _marker_from_text(text: str) -> str | None:
    gene = _GENE.search(text)
    if gene:
        return "COI" if _COI.fullmatch(gene.group(1)) else gene.group(1)
    return "COI" if _COI.search(text) else None


def parse_header(header: str) -> Header:
    """Split a FASTA header (without ``>``) into id, description, species, marker and accession.

    Understands ``processid|species|marker|accession`` (BOLD), ``ACCESSION Genus species … (COI) gene``
    (GenBank), legacy ``gi|…|gb|ACCESSION|`` ids, and ``key=value`` words (``species=``, ``marker=``,
    ``accession=``; as written by :func:`phenogen.data.dataset.write_dataset`). Unknown parts are ``None``.

    >>> parse_header("ABCD001-10|Turdus merula|COI-5P|MN123456")
    Header(id='ABCD001-10', description='ABCD001-10|Turdus merula|COI-5P|MN123456', species='Turdus merula', marker='COI-5P', accession='MN123456')
    """
    header = header.strip()
    first, rest = (header.split(None, 1) + ["", ""])[:2]
    if "|" in first and first.split("|")[0].lower() not in _NCBI_DBS:  # BOLD
        parts = [p.strip() for p in header.split("|")] + [""] * 3
        return Header(parts[0], header, parts[1] or None, parts[2] or None, parts[3] or None)
    ident, accession = first, None
    if "|" in first:  # gi|123|gb|MN123456.1| or gb|MN123456.1| or sp|P12345|NAME
        parts = first.split("|")
        db = next((i for i, p in enumerate(parts) if p.lower() in _NCBI_DBS - {"gi"}), None)
        accession = parts[db + 1] if db is not None and db + 1 < len(parts) and parts[db + 1] else None
    elif _ACCESSION.match(first):
        accession = first
    found = dict(_KEY_VALUE.findall(rest))
    species = found.get("species") or (_species_from_text(rest) if accession else None)
    marker = found.get("marker") or _marker_from_text(rest)
    return Header(ident, header, species, marker, found.get("accession") or accession)

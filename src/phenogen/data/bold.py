"""BOLD Systems barcodes: the public API (``combined`` TSV) and TSV exports read from disk.

Both speak the same tab-separated format, one row per sequence. Two column dialects are
understood: the v4 public API / v4 downloads (``processid species_name order_name markercode
nucleotides genbank_accession``) and the BOLD v5 portal's data packages (``processid species order
marker_code nuc insdc_acs``). Only COI markers (``COI-5P``, ``COI-3P``) are kept.

Official endpoint: ``https://v4.boldsystems.org/index.php/API_Public/combined?taxon=NAME&format=tsv``.

>>> rows = list(parse_bold_tsv(["processid\\tspecies_name\\tmarkercode\\tnucleotides", "AB1\\tTurdus merula\\tCOI-5P\\tACGT"]))
>>> rows[0]["species"], rows[0]["marker"], rows[0]["sequence"]
('Turdus merula', 'COI-5P', 'ACGT')
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path

from phenogen.data.barcodes import Barcode, check_barcode, safe_id
from phenogen.data.config import FetchConfig
from phenogen.data.http import HttpClient
from phenogen.data.ncbi import TaxonLog
from phenogen.errors import InputError

__all__ = ["RANKS", "parse_bold_tsv", "bold_barcodes", "fetch_bold", "read_bold_file"]

RANKS: tuple[str, ...] = ("phylum", "class", "order", "family", "subfamily", "genus")
# our name -> accepted column names (v4 API first, then v5 data packages)
_ALIASES: dict[str, tuple[str, ...]] = {
    "processid": ("processid", "process_id"),
    "species": ("species_name", "species"),
    "marker": ("markercode", "marker_code"),
    "sequence": ("nucleotides", "nuc"),
    "accession": ("genbank_accession", "insdc_acs"),
    **{rank: (f"{rank}_name", rank) for rank in RANKS},
}


def parse_bold_tsv(lines: Iterable[str], source: str = "<BOLD TSV>") -> Iterator[dict[str, str]]:
    """Rows of a BOLD TSV as dicts with our keys (``processid species marker sequence accession`` + ranks)."""
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None:
        return
    index = {name.strip().lower(): i for i, name in enumerate(header)}
    cols = {key: next((index[a] for a in names if a in index), None) for key, names in _ALIASES.items()}
    missing = [k for k in ("processid", "sequence") if cols[k] is None]
    if missing:
        raise InputError(
            f"{source}: not a BOLD TSV — no column for {', '.join(missing)} "
            f"(expected e.g. {', '.join(_ALIASES[missing[0]])}); header was {header[:8]}"
        )
    for row in reader:
        if not row or not any(row):
            continue
        yield {key: (row[i].strip() if i is not None and i < len(row) else "") for key, i in cols.items()}


def bold_barcodes(
    rows: Iterable[dict[str, str]], taxon: str, cfg: FetchConfig, log: TaxonLog, source: str = "bold"
) -> list[Barcode]:
    """Filter parsed BOLD rows to clean COI barcodes (at most ``cfg.max_per_taxon``)."""
    barcodes: list[Barcode] = []
    seen: set[str] = set()
    for row in rows:
        log.found += 1
        if row["marker"] and not row["marker"].upper().startswith("COI"):
            log.drop(f"marker {row['marker']}")
            continue
        if row["processid"] in seen:
            log.drop("duplicate processid")
            continue
        if len(barcodes) >= cfg.max_per_taxon:
            log.drop("over max_per_taxon")
            continue
        seq, why = check_barcode(
            row["sequence"],
            policy=cfg.policy,
            min_length=cfg.min_length,
            max_length=cfg.max_length,
            max_n_fraction=cfg.max_n_fraction,
            record_id=row["processid"],
            source=f"BOLD {row['processid']}",
        )
        if seq is None:
            log.drop(why)
            continue
        seen.add(row["processid"])
        barcodes.append(
            Barcode(
                record_id=safe_id(row["processid"]),
                taxon=taxon,
                species=row["species"] or taxon,
                source=source,
                accession=row["accession"] or row["processid"],
                marker=row["marker"] or "COI-5P",
                taxonomy=tuple(row[r] for r in RANKS if row.get(r)),
                sequence=seq,
            )
        )
    log.kept = len(barcodes)
    return barcodes


def _check_tsv(body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    if text.strip() and "processid" not in text.split("\n", 1)[0].lower():
        raise ValueError("BOLD answer has no processid header")
    if text.strip() and not text.endswith("\n"):
        raise ValueError("BOLD TSV does not end with a newline (truncated)")


def fetch_bold(client: HttpClient, cfg: FetchConfig, taxon: str) -> tuple[list[Barcode], TaxonLog]:
    """COI barcodes of ``taxon`` from the BOLD public API (``combined`` endpoint, TSV)."""
    log = TaxonLog(taxon, "bold")
    url = client.url(cfg.bold_base, "combined", {"taxon": taxon, "format": "tsv"})
    body = client.get(url, validate=_check_tsv)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")  # the v4 API answers in Latin-1 for some records
    barcodes = bold_barcodes(parse_bold_tsv(text.splitlines(), f"BOLD {taxon}"), taxon, cfg, log)
    return barcodes, log


def read_bold_file(path: str | Path, cfg: FetchConfig) -> tuple[list[Barcode], TaxonLog]:
    """Barcodes from a BOLD TSV export on disk, streamed row by row (``max_per_taxon`` is per species)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: BOLD TSV file not found")
    log = TaxonLog(str(path), "bold-file")
    per_species: dict[str, int] = {}
    seen: set[str] = set()
    kept: list[Barcode] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for row in parse_bold_tsv(fh, str(path)):
            log.found += 1
            species = row["species"]
            if not species:
                log.drop("no species name")
                continue
            if row["processid"] in seen:
                log.drop("duplicate processid")
                continue
            if per_species.get(species, 0) >= cfg.max_per_taxon:
                log.drop("over max_per_taxon")
                continue
            sub = TaxonLog(species, "bold-file")
            got = bold_barcodes([row], species, cfg, sub)
            for reason, n in sub.filtered.items():
                log.filtered[reason] = log.filtered.get(reason, 0) + n
            if got:
                seen.add(row["processid"])
                per_species[species] = per_species.get(species, 0) + 1
                kept.extend(got)
    log.kept = len(kept)
    return kept, log

"""BOLD Systems barcodes: the v5 portal API (the default), the legacy v4 API, and TSV exports on disk.

All three speak tab-separated text, one row per sequence. Two column dialects are understood: the
v4 public API / v4 downloads (``processid species_name order_name markercode nucleotides
genbank_accession``) and the Barcode Core Data Model (BCDM) of BOLD v5 — its portal API and data
packages (``processid species order marker_code nuc insdc_acs``). Only COI markers (``COI-5P``,
``COI-3P``) are kept; alignment gaps in ``nuc`` are removed.

**v5 portal API** (``fetch.bold_api = "v5"``, base ``https://portal.boldsystems.org/api/``; described at
https://boldsystems.org/data/api and https://portal.boldsystems.org/api/docs) — three requests per taxon:

1. ``query/preprocessor?query=tax:NAME`` resolves the name against BOLD's taxonomy
   (``successful_terms[].matched``, e.g. ``tax:species:Parus major``; an unknown name comes back in
   ``failed_terms``, possibly with HTTP 400);
2. ``query?query=TERMS&extent=full`` starts the query and answers its ``query_id`` (valid 24 h);
3. ``documents/QUERY_ID/download?format=tsv`` streams every matching record as BCDM TSV.

The query id is cached like every answer; when a rerun finds that it expired (the download answers
a 4xx), the query is sent again and the cache entry replaced. The download holds every public record
of the taxon (``max_per_taxon`` is applied after it), so ask for species or genera, not whole orders.

**v4 API** (``fetch.bold_api = "v4"``): ``https://v4.boldsystems.org/index.php/API_Public/combined?taxon=NAME&format=tsv``.

>>> rows = list(parse_bold_tsv(["processid\\tspecies_name\\tmarkercode\\tnucleotides", "AB1\\tTurdus merula\\tCOI-5P\\tACGT"]))
>>> rows[0]["species"], rows[0]["marker"], rows[0]["sequence"]
('Turdus merula', 'COI-5P', 'ACGT')
>>> v5_terms({"successful_terms": [{"submitted": "tax:Parus major", "matched": "tax:species:Parus major"}]})
'tax:species:Parus major'
"""

from __future__ import annotations

import csv
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from phenogen.data.barcodes import Barcode, check_barcode, safe_id
from phenogen.data.config import FetchConfig
from phenogen.data.http import HttpClient, HttpStatusError, RetryablePayloadError, expect, json_payload
from phenogen.data.ncbi import TaxonLog
from phenogen.errors import DataError, InputError

__all__ = [
    "RANKS",
    "parse_bold_tsv",
    "parse_bold_payload",
    "parse_v5_preprocessor",
    "parse_v5_query",
    "bold_barcodes",
    "v5_terms",
    "fetch_bold",
    "fetch_bold_v5",
    "fetch_bold_v4",
    "read_bold_file",
]

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
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(f"{source}: unreadable BOLD TSV header ({exc})") from None
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
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:  # e.g. a field over csv's size limit
            raise InputError(f"{source}: unreadable BOLD TSV line {reader.line_num} ({exc})") from None
        if row is None:
            return
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


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")  # the v4 API answers in Latin-1 for some records


def parse_bold_payload(payload: bytes | str, source: str = "BOLD TSV") -> list[dict[str, str]]:
    """The rows of a BOLD TSV answer (v4 ``combined`` or a v5 download); :class:`DataError` if malformed.

    UTF-8, else Latin-1 (the v4 API's encoding for some records). An empty answer has no rows; one
    without its final newline is retried as truncated; a header without ``processid`` and sequence
    columns is refused.
    """
    text = _decode(payload) if isinstance(payload, bytes | bytearray) else payload
    if not text.strip():
        return []
    if not text.endswith("\n"):
        raise RetryablePayloadError(f"{source}: TSV does not end with a newline (truncated)")
    try:
        return list(parse_bold_tsv(text.splitlines(), source))
    except InputError as exc:
        raise DataError(str(exc)) from None


def fetch_bold_v4(client: HttpClient, cfg: FetchConfig, taxon: str) -> tuple[list[Barcode], TaxonLog]:
    """COI barcodes of ``taxon`` from the legacy BOLD v4 public API (``combined`` endpoint, TSV)."""
    log = TaxonLog(taxon, "bold")
    url = client.url(cfg.bold_v4_base, "combined", {"taxon": taxon, "format": "tsv"})
    source = f"BOLD v4 combined for {taxon!r}"
    rows = client.get_parsed(url, lambda body: parse_bold_payload(body, source))
    return bold_barcodes(rows, taxon, cfg, log), log


def v5_terms(doc: dict[str, Any], source: str = "BOLD preprocessor") -> str:
    """The taxonomy terms of a v5 ``query/preprocessor`` answer, ``;``-joined ('' when none matched).

    Each submitted term keeps its first ``tax:`` match (a name can match several ranks); a wrong shape
    raises :class:`DataError` naming the field.
    """
    terms: list[str] = []
    found = expect(doc.get("successful_terms"), list, source, "successful_terms", optional=True) or []
    for i, term in enumerate(found):
        term = expect(term, dict, source, f"successful_terms[{i}]")
        matched = expect(term.get("matched"), str, source, f"successful_terms[{i}].matched", optional=True)
        matches = [m.strip() for m in re.split(r"[;,]", matched or "") if m.strip()]
        tax = [m for m in matches if m.startswith("tax:")]
        if tax and tax[0] not in terms:
            terms.append(tax[0])
    return ";".join(terms)


def parse_v5_preprocessor(payload: bytes | str, source: str = "BOLD preprocessor") -> str:
    """The matched taxonomy terms of a ``query/preprocessor`` JSON answer (see :func:`v5_terms`)."""
    return v5_terms(expect(json_payload(payload, source), dict, source, "<answer>"), source)


def parse_v5_query(payload: bytes | str, source: str = "BOLD query") -> str:
    """The ``query_id`` of a v5 ``query`` JSON answer; :class:`DataError` when missing or not a string."""
    doc = expect(json_payload(payload, source), dict, source, "<answer>")
    if "query_id" not in doc:
        raise DataError(f"{source}: answer has no 'query_id' (keys {sorted(doc)[:8]})")
    query_id = str(expect(doc["query_id"], (str, int), source, "query_id")).strip()
    if not query_id or len(query_id) > 1000:
        raise DataError(f"{source}: field 'query_id' is empty or over 1,000 characters")
    return query_id


def fetch_bold_v5(client: HttpClient, cfg: FetchConfig, taxon: str) -> tuple[list[Barcode], TaxonLog]:
    """COI barcodes of ``taxon`` from the BOLD v5 portal API: preprocessor, query, TSV download."""
    log = TaxonLog(taxon, "bold")
    if cfg.rate_per_s:
        client.set_rate(cfg.bold_base, cfg.rate_per_s)
    # 1. resolve the name against BOLD's taxonomy
    pre_url = client.url(cfg.bold_base, "query/preprocessor", {"query": f"tax:{taxon}"})
    try:
        terms = client.get_parsed(
            pre_url, lambda body: parse_v5_preprocessor(body, f"BOLD preprocessor {taxon!r}")
        )
    except HttpStatusError as exc:
        if exc.status not in (400, 422):  # BOLD may answer an unknown name with 400 + failed_terms
            raise
        terms = ""
    if not terms:
        log.drop("name not in BOLD's taxonomy")
        return [], log
    # 2. start the query; its id stays valid for 24 h
    query_url = client.url(cfg.bold_base, "query", {"query": terms, "extent": "full"})
    source = f"BOLD v5 download for {taxon!r}"

    def download(refresh: bool) -> list[dict[str, str]]:
        query_id = client.get_parsed(
            query_url, lambda body: parse_v5_query(body, f"BOLD query {terms!r}"), refresh=refresh
        )
        path = f"documents/{urllib.parse.quote(query_id, safe='')}/download"
        url = client.url(cfg.bold_base, path, {"format": "tsv"})
        return client.get_parsed(url, lambda body: parse_bold_payload(body, source))

    # 3. download every record as BCDM TSV
    id_from_cache = client.cached(query_url) is not None
    try:
        rows = download(refresh=False)
    except HttpStatusError as exc:
        if not (id_from_cache and 400 <= exc.status < 500):
            raise
        rows = download(refresh=True)  # the cached query id expired: start the query again
    return bold_barcodes(rows, taxon, cfg, log), log


def fetch_bold(client: HttpClient, cfg: FetchConfig, taxon: str) -> tuple[list[Barcode], TaxonLog]:
    """COI barcodes of ``taxon`` from BOLD through the API chosen by ``cfg.bold_api`` (v5 or v4)."""
    if cfg.bold_api == "v4":
        return fetch_bold_v4(client, cfg, taxon)
    return fetch_bold_v5(client, cfg, taxon)


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

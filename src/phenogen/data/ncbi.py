"""COI barcodes from NCBI GenBank through E-utilities: ``esearch`` for ids, ``efetch`` for records.

For each taxon the client searches ``db=nucleotide`` with :attr:`FetchConfig.ncbi_term`, fetches the
GenBank flat files in batches (``rettype=gb``), and takes from each record the COI coding sequence:
the ``CDS``/``gene`` feature whose ``gene`` or ``product`` names COX1 (so a whole mitogenome yields
its COX1 gene), else — for a short record whose definition names COI — the whole sequence.
NCBI's rules are followed: ``tool`` and ``email`` on every request, an ``api_key`` when given
(``NCBI_API_KEY``), at most 3 requests/s without a key and 10 with one, ids fetched in batches.

Official endpoint: https://eutils.ncbi.nlm.nih.gov/entrez/eutils/ (esearch.fcgi, efetch.fcgi).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any

from phenogen.data.barcodes import Barcode, check_barcode, safe_id
from phenogen.data.config import FetchConfig
from phenogen.data.http import HttpClient, RetryablePayloadError, expect, json_payload
from phenogen.errors import DataError, one_line

__all__ = [
    "TaxonLog",
    "esearch",
    "parse_esearch",
    "efetch_genbank",
    "parse_genbank",
    "coi_from_record",
    "fetch_ncbi",
    "COI_PATTERN",
]

COI_PATTERN = re.compile(
    r"\b(cox1|coxi|co1|coi|mt-?co1|cytochrome (c )?oxidase subunit (1|i))\b(?!i)", re.IGNORECASE
)


@dataclass
class TaxonLog:
    """What happened for one taxon and source: ids found, barcodes kept, records filtered and why."""

    taxon: str
    source: str
    found: int = 0
    kept: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def drop(self, reason: str) -> None:
        key = re.sub(r"\(.*\)", "", reason).strip()  # 'too short (312 bp < 400)' -> 'too short'
        self.filtered[key] = self.filtered.get(key, 0) + 1


def _params(cfg: FetchConfig, **extra: Any) -> dict[str, Any]:
    return {"tool": cfg.tool, "email": cfg.ncbi_email(), "api_key": cfg.ncbi_key(), **extra}


_ID = re.compile(r"[A-Za-z0-9_.]{1,40}")
_XML_ERROR = re.compile(r"<ERROR>(.*?)</ERROR>", re.DOTALL | re.IGNORECASE)


def parse_esearch(payload: bytes | str, source: str = "NCBI esearch") -> list[str]:
    """The ids of an esearch JSON answer (``esearchresult.idlist``); :class:`DataError` for any other shape.

    NCBI's own ``ERROR`` (e.g. a backend failure) is retried like a truncated body.

    >>> parse_esearch(b'{"esearchresult": {"count": "2", "idlist": ["1", "22"]}}')
    ['1', '22']
    """
    doc = expect(json_payload(payload, source), dict, source, "<answer>")
    if "esearchresult" not in doc:
        said = f"; NCBI said {one_line(doc.get('error'))!r}" if "error" in doc else ""
        raise DataError(f"{source}: answer has no 'esearchresult' (keys {sorted(doc)[:8]}){said}")
    result = expect(doc["esearchresult"], dict, source, "esearchresult")
    if "ERROR" in result:
        raise RetryablePayloadError(f"{source}: NCBI answered ERROR {one_line(result['ERROR'])!r}")
    ids = expect(result.get("idlist", []), list, source, "esearchresult.idlist", optional=True) or []
    out = []
    for i, value in enumerate(ids):
        value = str(expect(value, (str, int), source, f"esearchresult.idlist[{i}]")).strip()
        if not _ID.fullmatch(value):
            raise DataError(f"{source}: esearchresult.idlist[{i}] = {value[:60]!r} is not a GenBank id")
        out.append(value)
    return out


def esearch(client: HttpClient, cfg: FetchConfig, taxon: str) -> list[str]:
    """GenBank ids (GI numbers) of up to ``cfg.max_per_taxon`` COI records of ``taxon``."""
    client.set_rate(cfg.ncbi_base, cfg.ncbi_rate())
    term = cfg.ncbi_term.format(taxon=taxon)
    url = client.url(
        cfg.ncbi_base,
        "esearch.fcgi",
        _params(cfg, db="nucleotide", term=term, retmode="json", retmax=cfg.max_per_taxon),
    )
    source = f"NCBI esearch for {taxon!r}"
    return client.get_parsed(url, lambda body: parse_esearch(body, source))


def parse_genbank(payload: bytes | str, source: str = "NCBI efetch") -> list[Any]:
    """Biopython ``SeqRecord`` objects of an efetch ``rettype=gb`` answer; :class:`DataError` if malformed.

    An empty answer or one without the final ``//`` is retried as truncated; an XML/HTML error page, FASTA
    or text that Biopython cannot parse is refused with the record number and the parser's reason.
    """
    import warnings

    from Bio import BiopythonParserWarning, SeqIO

    text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes | bytearray) else payload
    text = text.strip()
    if not text:
        raise RetryablePayloadError(f"{source}: empty answer")
    if not text.startswith("LOCUS"):
        said = _XML_ERROR.search(text[:10_000])
        what = (
            f"NCBI said {one_line(said.group(1))!r}"
            if said
            else "FASTA, not GenBank"
            if text.startswith(">")
            else f"starts {text[:60]!r}"
        )
        raise DataError(f"{source}: answer is not GenBank flat-file text ({what})")
    if not text.endswith("//"):
        raise RetryablePayloadError(f"{source}: GenBank text does not end with // (truncated)")
    records: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BiopythonParserWarning)
        try:
            for record in SeqIO.parse(io.StringIO(text), "genbank"):
                records.append(record)
        except Exception as exc:  # noqa: BLE001 - Biopython raises many types on malformed text
            raise DataError(
                f"{source}: malformed GenBank text in record {len(records) + 1} "
                f"(after {one_line(records[-1].id, 60) if records else 'none'}): {type(exc).__name__}: {one_line(exc, 160)}"
            ) from None
    for n, record in enumerate(records, 1):
        if not _ID.fullmatch(str(record.id or "")):
            raise DataError(
                f"{source}: GenBank record {n} has no usable accession (got {str(record.id)[:60]!r})"
            )
    return records


def efetch_genbank(client: HttpClient, cfg: FetchConfig, ids: list[str]) -> list[Any]:
    """Biopython ``SeqRecord`` objects of ``ids``, fetched ``cfg.batch_size`` at a time."""
    client.set_rate(cfg.ncbi_base, cfg.ncbi_rate())
    records = []
    for start in range(0, len(ids), cfg.batch_size):
        batch = ids[start : start + cfg.batch_size]
        url = client.url(
            cfg.ncbi_base,
            "efetch.fcgi",
            _params(cfg, db="nucleotide", id=",".join(batch), rettype="gb", retmode="text"),
        )
        source = f"NCBI efetch of {len(batch)} id(s) from {batch[0]}"
        records.extend(client.get_parsed(url, lambda body, source=source: parse_genbank(body, source)))
    return records


def _names(feature: Any) -> str:
    q = feature.qualifiers
    names = [*q.get("gene", []), *q.get("product", []), *q.get("note", [])[:1]]
    return " ".join(str(v) for v in names)


def coi_from_record(record: Any, max_length: int) -> tuple[str | None, str]:
    """``(sequence, how)`` of the COI region of a GenBank ``SeqRecord``, or ``(None, reason)``."""
    try:
        for kind in ("CDS", "gene"):
            for feature in record.features:
                if feature.type == kind and COI_PATTERN.search(_names(feature)):
                    return str(feature.extract(record.seq)), f"{kind} feature"
        if len(record.seq) <= max_length and COI_PATTERN.search(str(record.description or "")):
            return str(record.seq), "whole record"
    except (ValueError, IndexError, TypeError) as exc:  # UndefinedSequenceError (no ORIGIN), odd location
        return None, f"unusable sequence ({type(exc).__name__})"
    return None, "no COI feature"


def fetch_ncbi(client: HttpClient, cfg: FetchConfig, taxon: str) -> tuple[list[Barcode], TaxonLog]:
    """Search, fetch, extract and filter the COI barcodes of one taxon."""
    log = TaxonLog(taxon, "ncbi")
    ids = esearch(client, cfg, taxon)
    log.found = len(ids)
    barcodes: list[Barcode] = []
    for record in efetch_genbank(client, cfg, ids):
        raw, how = coi_from_record(record, cfg.max_length)
        if raw is None:
            log.drop(how)
            continue
        seq, why = check_barcode(
            raw,
            policy=cfg.policy,
            min_length=cfg.min_length,
            max_length=cfg.max_length,
            max_n_fraction=cfg.max_n_fraction,
            record_id=record.id,
            source=f"NCBI {record.id}",
        )
        if seq is None:
            log.drop(why)
            continue
        annotations = record.annotations
        barcodes.append(
            Barcode(
                record_id=safe_id(record.id),
                taxon=taxon,
                species=str(annotations.get("organism", taxon)),
                source="ncbi",
                accession=record.id,
                marker="COI",
                taxonomy=tuple(str(t) for t in annotations.get("taxonomy", [])),
                sequence=seq,
            )
        )
    log.kept = len(barcodes)
    return barcodes, log

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
from phenogen.data.http import HttpClient
from phenogen.errors import NetworkError

__all__ = ["TaxonLog", "esearch", "efetch_genbank", "coi_from_record", "fetch_ncbi", "COI_PATTERN"]

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


def _check_esearch(body: bytes) -> None:
    import json

    doc = json.loads(body)
    if "esearchresult" not in doc:
        raise ValueError(f"no esearchresult in answer: {str(doc)[:200]}")


def esearch(client: HttpClient, cfg: FetchConfig, taxon: str) -> list[str]:
    """GenBank ids (GI numbers) of up to ``cfg.max_per_taxon`` COI records of ``taxon``."""
    import json

    client.set_rate(cfg.ncbi_base, cfg.ncbi_rate())
    term = cfg.ncbi_term.format(taxon=taxon)
    url = client.url(
        cfg.ncbi_base,
        "esearch.fcgi",
        _params(cfg, db="nucleotide", term=term, retmode="json", retmax=cfg.max_per_taxon),
    )
    doc = json.loads(client.get(url, validate=_check_esearch))
    result = doc["esearchresult"]
    if "ERROR" in result:
        raise NetworkError(f"NCBI esearch for {taxon!r} failed: {result['ERROR']}")
    return [str(i) for i in result.get("idlist", [])]


def _check_genbank(body: bytes) -> None:
    text = body.decode("utf-8", errors="replace").rstrip()
    if not text.startswith("LOCUS") or not text.endswith("//"):
        raise ValueError("GenBank text does not start with LOCUS and end with //")


def efetch_genbank(client: HttpClient, cfg: FetchConfig, ids: list[str]) -> list[Any]:
    """Biopython ``SeqRecord`` objects of ``ids``, fetched ``cfg.batch_size`` at a time."""
    from Bio import SeqIO

    client.set_rate(cfg.ncbi_base, cfg.ncbi_rate())
    records = []
    for start in range(0, len(ids), cfg.batch_size):
        batch = ids[start : start + cfg.batch_size]
        url = client.url(
            cfg.ncbi_base,
            "efetch.fcgi",
            _params(cfg, db="nucleotide", id=",".join(batch), rettype="gb", retmode="text"),
        )
        text = client.get_text(url, validate=_check_genbank)
        records.extend(SeqIO.parse(io.StringIO(text), "genbank"))
    return records


def _names(feature: Any) -> str:
    q = feature.qualifiers
    return " ".join(q.get("gene", []) + q.get("product", []) + q.get("note", [])[:1])


def coi_from_record(record: Any, max_length: int) -> tuple[str | None, str]:
    """``(sequence, how)`` of the COI region of a GenBank ``SeqRecord``, or ``(None, reason)``."""
    for kind in ("CDS", "gene"):
        for feature in record.features:
            if feature.type == kind and COI_PATTERN.search(_names(feature)):
                return str(feature.extract(record.seq)), f"{kind} feature"
    if len(record.seq) <= max_length and COI_PATTERN.search(record.description or ""):
        return str(record.seq), "whole record"
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

"""Photos per taxon with their licences: iNaturalist research-grade observations and GBIF media.

For each taxon, candidates come from the configured sources in order:

* iNaturalist ``GET /v1/observations?taxon_name=…&quality_grade=research&photos=true`` — every
  photo carries ``license_code`` (``cc0``, ``cc-by``, ``cc-by-nc`` …, ``null`` = all rights reserved)
  and ``attribution``; its ``url`` names the ``square`` size, swapped for :attr:`FetchConfig.photo_size`;
* GBIF ``GET /v1/occurrence/search?scientificName=…&mediaType=StillImage`` — ``media[]`` entries with
  ``identifier`` (the image URL), ``license`` (a Creative Commons URL) and ``creator``/``rightsHolder``.

Candidates whose licence is not in :attr:`FetchConfig.licenses` (by default the free ones: CC0,
public domain, CC BY, CC BY-SA) are skipped and counted. Each download is checked to be an image,
deduplicated by the SHA-256 of its bytes (across taxa), centre-cropped to a square, resized to
``image_size`` and saved as ``images/<taxon>/<sha256[:16]>.jpg``. ``images.tsv`` records licence,
author, source URL and observation page per file.

>>> normalize_license("http://creativecommons.org/licenses/by-nc/4.0/legalcode")
'cc-by-nc'
>>> normalize_license("CC_BY_4_0"), normalize_license(None)
('cc-by', 'unknown')
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from phenogen.data.config import FetchConfig
from phenogen.data.http import HttpClient, HttpStatusError
from phenogen.data.ncbi import TaxonLog
from phenogen.errors import InputError

__all__ = [
    "ImageCandidate",
    "ImageEntry",
    "normalize_license",
    "inat_candidates",
    "gbif_candidates",
    "fetch_images",
    "write_image_manifest",
    "read_image_manifest",
    "slug",
]


@dataclass(frozen=True)
class ImageCandidate:
    """A photo a source offers for a taxon, before download."""

    taxon: str
    species: str
    url: str
    license: str
    author: str
    page_url: str
    provider: str


@dataclass(frozen=True)
class ImageEntry:
    """A downloaded, resized photo: one row of ``images.tsv`` (``file`` relative to the images root)."""

    file: str
    taxon: str
    species: str
    license: str
    author: str
    source_url: str
    page_url: str
    provider: str
    sha256: str


def slug(name: str) -> str:
    """A folder name for a taxon: ``Turdus merula`` -> ``Turdus_merula``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("_") or "taxon"


def normalize_license(text: str | None) -> str:
    """One of :data:`~phenogen.data.config.ALL_LICENSES` from an iNaturalist code, a GBIF enum or a CC URL."""
    if not text:
        return "unknown"
    t = text.strip().lower().replace("_", "-")
    if "publicdomain/zero" in t or t in ("cc0", "cc0-1-0") or t.startswith("cc0"):
        return "cc0"
    if "publicdomain/mark" in t or t in ("pd", "public domain", "pdm"):
        return "pd"
    m = re.search(r"licenses/([a-z-]+)/", t) or re.match(r"cc-([a-z-]+?)(-\d.*)?$", t)
    if m:
        code = "cc-" + m.group(1).strip("-")
        return (
            code
            if code in ("cc-by", "cc-by-sa", "cc-by-nc", "cc-by-nc-sa", "cc-by-nd", "cc-by-nc-nd")
            else "unknown"
        )
    return "unknown"


def _check_json_results(body: bytes) -> None:
    import json

    if "results" not in json.loads(body):
        raise ValueError("JSON answer has no 'results'")


def inat_candidates(client: HttpClient, cfg: FetchConfig, taxon: str) -> Iterator[ImageCandidate]:
    """Photos of research-grade iNaturalist observations of ``taxon`` (most-voted first)."""
    import json

    params: dict[str, Any] = {
        "taxon_name": taxon,
        "quality_grade": "research",
        "photos": "true",
        "per_page": min(200, 3 * cfg.max_per_taxon),
        "order_by": "votes",
    }
    inat_codes = [c for c in cfg.licenses if c.startswith("cc")]
    if set(cfg.licenses) <= {
        "cc0",
        "pd",
        "cc-by",
        "cc-by-sa",
        "cc-by-nc",
        "cc-by-nc-sa",
        "cc-by-nd",
        "cc-by-nc-nd",
    }:
        params["photo_license"] = ",".join(inat_codes)
    client.set_rate(cfg.inat_base, cfg.rate_per_s or 1.0)  # iNaturalist asks for ~1 request/s
    doc = json.loads(
        client.get(client.url(cfg.inat_base, "observations", params), validate=_check_json_results)
    )
    for obs in doc.get("results", []):
        species = (obs.get("taxon") or {}).get("name") or taxon
        for photo in obs.get("photos") or []:
            url = photo.get("url") or ""
            if not url:
                continue
            if cfg.photo_size != "square":
                url = re.sub(r"/square\.(jpe?g|png)", rf"/{cfg.photo_size}.\1", url)
            yield ImageCandidate(
                taxon=taxon,
                species=species,
                url=url,
                license=normalize_license(photo.get("license_code")),
                author=photo.get("attribution") or "",
                page_url=obs.get("uri") or "",
                provider="inaturalist",
            )


def gbif_candidates(client: HttpClient, cfg: FetchConfig, taxon: str) -> Iterator[ImageCandidate]:
    """Still images attached to GBIF occurrences of ``taxon``."""
    import json

    params = {"scientificName": taxon, "mediaType": "StillImage", "limit": min(300, 3 * cfg.max_per_taxon)}
    if cfg.rate_per_s:
        client.set_rate(cfg.gbif_base, cfg.rate_per_s)
    url = client.url(cfg.gbif_base, "occurrence/search", params)
    doc = json.loads(client.get(url, validate=_check_json_results))
    for occ in doc.get("results", []):
        species = occ.get("species") or occ.get("scientificName") or taxon
        page = f"https://www.gbif.org/occurrence/{occ['key']}" if "key" in occ else ""
        for media in occ.get("media") or []:
            if media.get("type") not in (None, "StillImage") or not media.get("identifier"):
                continue
            yield ImageCandidate(
                taxon=taxon,
                species=species,
                url=media["identifier"],
                license=normalize_license(media.get("license") or occ.get("license")),
                author=media.get("creator") or media.get("rightsHolder") or occ.get("recordedBy") or "",
                page_url=media.get("references") or page,
                provider="gbif",
            )


def _square(data: bytes, size: int) -> bytes:
    """Decode, centre-crop to a square, resize to ``size`` and re-encode as JPEG (raises on non-images)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=92)
        return out.getvalue()


def _check_image(body: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(body)) as im:
        im.load()  # a truncated JPEG fails here and is fetched again


def fetch_images(
    client: HttpClient,
    cfg: FetchConfig,
    taxon: str,
    images_root: str | Path,
    seen: dict[str, str] | None = None,
) -> tuple[list[ImageEntry], TaxonLog]:
    """Download up to ``cfg.max_per_taxon`` freely licensed photos of ``taxon`` into ``images_root``.

    ``seen`` maps content hashes already saved (across taxa) to their file, for deduplication.
    """
    images_root = Path(images_root)
    seen = {} if seen is None else seen
    log = TaxonLog(taxon, "+".join(cfg.image_sources))
    entries: list[ImageEntry] = []
    makers = {"inaturalist": inat_candidates, "gbif": gbif_candidates}
    for source in cfg.image_sources:
        for cand in makers[source](client, cfg, taxon):
            if len(entries) >= cfg.max_per_taxon:
                break
            log.found += 1
            if cand.license not in cfg.licenses:
                log.drop(f"licence {cand.license}")
                continue
            try:
                data = client.get(cand.url, validate=_check_image)
            except HttpStatusError as exc:
                log.drop(f"HTTP {exc.status}")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                log.drop("duplicate image")
                continue
            rel = f"{slug(taxon)}/{digest[:16]}.jpg"
            target = images_root / rel
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(".part")
                tmp.write_bytes(_square(data, cfg.image_size))
                tmp.replace(target)
            seen[digest] = rel
            entries.append(
                ImageEntry(
                    rel,
                    taxon,
                    cand.species,
                    cand.license,
                    cand.author,
                    cand.url,
                    cand.page_url,
                    cand.provider,
                    digest,
                )
            )
    log.kept = len(entries)
    return entries, log


_IMAGE_COLUMNS = tuple(f.name for f in fields(ImageEntry))


def write_image_manifest(path: str | Path, entries: Iterable[ImageEntry]) -> int:
    """Write ``images.tsv`` (the licence manifest); returns the number of rows."""
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_IMAGE_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            writer.writerow(asdict(entry))
            n += 1
    return n


def read_image_manifest(path: str | Path) -> list[ImageEntry]:
    """Read ``images.tsv`` written by :func:`write_image_manifest`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no image manifest here; run `phenogen fetch images` first")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in _IMAGE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
        return [ImageEntry(**{c: row[c] for c in _IMAGE_COLUMNS}) for row in reader]

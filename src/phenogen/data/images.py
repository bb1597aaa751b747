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
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from phenogen.data.config import FetchConfig
from phenogen.data.http import (
    IMAGE_MAX_BYTES,
    HttpClient,
    HttpStatusError,
    ResponseTooLarge,
    expect,
    json_payload,
)
from phenogen.data.ncbi import TaxonLog
from phenogen.errors import DataError, InputError

__all__ = [
    "ImageCandidate",
    "ImageEntry",
    "normalize_license",
    "inat_candidates",
    "gbif_candidates",
    "parse_inat",
    "parse_gbif",
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


def _results(payload: bytes | str, source: str) -> list[dict[str, Any]]:
    """The ``results`` list of objects of an iNaturalist or GBIF search answer."""
    doc = expect(json_payload(payload, source), dict, source, "<answer>")
    if "results" not in doc:
        raise DataError(f"{source}: answer has no 'results' (keys {sorted(doc)[:8]})")
    results = expect(doc["results"], list, source, "results")
    return [expect(item, dict, source, f"results[{i}]") for i, item in enumerate(results)]


def _text(obj: dict[str, Any], key: str, source: str, where: str) -> str:
    """``obj[key]`` as a string ('' when absent or null); :class:`DataError` for another type."""
    return expect(obj.get(key), str, source, f"{where}.{key}", optional=True) or ""


def _http_url(url: str) -> bool:
    """An http(s) URL this client may fetch (a ``file://`` or broken one from a remote record is skipped)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 host
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= 2000


def parse_inat(
    payload: bytes | str, source: str, taxon: str, photo_size: str = "medium"
) -> list[ImageCandidate]:
    """Photo candidates of an iNaturalist ``/v1/observations`` answer; :class:`DataError` for a wrong shape.

    Photos without an http(s) ``url`` are skipped; ``square`` in a URL is swapped for ``photo_size``.
    """
    out = []
    for i, obs in enumerate(_results(payload, source)):
        where = f"results[{i}]"
        tax = expect(obs.get("taxon"), dict, source, f"{where}.taxon", optional=True) or {}
        species = _text(tax, "name", source, f"{where}.taxon") or taxon
        page = _text(obs, "uri", source, where)
        photos = expect(obs.get("photos"), list, source, f"{where}.photos", optional=True) or []
        for j, photo in enumerate(photos):
            pw = f"{where}.photos[{j}]"
            photo = expect(photo, dict, source, pw)
            url = _text(photo, "url", source, pw)
            if not _http_url(url):
                continue
            if photo_size != "square":
                url = re.sub(r"/square\.(jpe?g|png)", rf"/{photo_size}.\1", url)
            out.append(
                ImageCandidate(
                    taxon=taxon,
                    species=species,
                    url=url,
                    license=normalize_license(_text(photo, "license_code", source, pw)),
                    author=_text(photo, "attribution", source, pw),
                    page_url=page,
                    provider="inaturalist",
                )
            )
    return out


def parse_gbif(payload: bytes | str, source: str, taxon: str) -> list[ImageCandidate]:
    """Still-image candidates of a GBIF ``/v1/occurrence/search`` answer; :class:`DataError` for a wrong shape.

    Media that are not still images or have no http(s) ``identifier`` are skipped.
    """
    out = []
    for i, occ in enumerate(_results(payload, source)):
        where = f"results[{i}]"
        species = _text(occ, "species", source, where) or _text(occ, "scientificName", source, where) or taxon
        key = expect(occ.get("key"), (int, str), source, f"{where}.key", optional=True)
        page = f"https://www.gbif.org/occurrence/{urllib.parse.quote(str(key))}" if key is not None else ""
        media = expect(occ.get("media"), list, source, f"{where}.media", optional=True) or []
        for j, item in enumerate(media):
            mw = f"{where}.media[{j}]"
            item = expect(item, dict, source, mw)
            url = _text(item, "identifier", source, mw)
            if _text(item, "type", source, mw) not in ("", "StillImage") or not _http_url(url):
                continue
            author = (
                _text(item, "creator", source, mw)
                or _text(item, "rightsHolder", source, mw)
                or _text(occ, "recordedBy", source, where)
            )
            lic = _text(item, "license", source, mw) or _text(occ, "license", source, where)
            out.append(
                ImageCandidate(
                    taxon=taxon,
                    species=species,
                    url=url,
                    license=normalize_license(lic),
                    author=author,
                    page_url=_text(item, "references", source, mw) or page,
                    provider="gbif",
                )
            )
    return out


def inat_candidates(client: HttpClient, cfg: FetchConfig, taxon: str) -> Iterator[ImageCandidate]:
    """Photos of research-grade iNaturalist observations of ``taxon`` (most-voted first)."""
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
    url = client.url(cfg.inat_base, "observations", params)
    source = f"iNaturalist observations of {taxon!r}"
    yield from client.get_parsed(url, lambda body: parse_inat(body, source, taxon, cfg.photo_size))


def gbif_candidates(client: HttpClient, cfg: FetchConfig, taxon: str) -> Iterator[ImageCandidate]:
    """Still images attached to GBIF occurrences of ``taxon``."""
    params = {"scientificName": taxon, "mediaType": "StillImage", "limit": min(300, 3 * cfg.max_per_taxon)}
    if cfg.rate_per_s:
        client.set_rate(cfg.gbif_base, cfg.rate_per_s)
    url = client.url(cfg.gbif_base, "occurrence/search", params)
    source = f"GBIF occurrences of {taxon!r}"
    yield from client.get_parsed(url, lambda body: parse_gbif(body, source, taxon))


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
    """Refuse a body that is no image (:class:`DataError`, not retried); one that fails to decode is retried."""
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(io.BytesIO(body))
    except UnidentifiedImageError:
        raise DataError(f"not an image ({len(body):,} bytes starting {body[:24]!r})") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"image refused: {exc}") from None
    with im:
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
                data = client.get(cand.url, validate=_check_image, max_bytes=IMAGE_MAX_BYTES)
            except HttpStatusError as exc:
                log.drop(f"HTTP {exc.status}")
                continue
            except ResponseTooLarge:
                log.drop("image over the size cap")
                continue
            except DataError:
                log.drop("not an image")
                continue
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen:
                log.drop("duplicate image")
                continue
            rel = f"{slug(taxon)}/{digest[:16]}.jpg"
            target = images_root / rel
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    square = _square(data, cfg.image_size)
                except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for undecodable images
                    log.drop(f"undecodable image ({type(exc).__name__})")
                    continue
                tmp = target.with_suffix(".part")
                tmp.write_bytes(square)
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

"""``phenogen fetch barcodes|images --taxa FILE --out DIR``: real data from public services.

``barcodes`` asks NCBI GenBank (E-utilities) and/or BOLD for COI barcodes of every taxon and writes
``barcodes.tsv`` + ``barcodes.fasta``; ``images`` asks iNaturalist and/or GBIF for freely licensed
photos and writes ``images/`` + ``images.tsv`` (licence, author, source URL per file). Both write
``log.tsv`` (per taxon and source: found, kept, filtered and why, error) and ``config.json``.

Every HTTP answer is cached under ``DIR/cache`` once complete, so a rerun after a crash, a kill or a
network failure fetches only what is missing and rewrites the outputs whole (nothing lost or
duplicated). A taxon whose requests still fail after the retries, or whose answer is malformed (the
wrong JSON shape, GenBank text that does not parse — never cached), is logged and the command exits 1
after finishing the others — rerun it later.

Before any request: the ``fetch.*_base`` URLs must be http(s) URLs, ``--out`` and ``--cache`` directories
(not files), and ``--out`` new, empty or an earlier fetch output (phenogen's marker file, which the first
run writes): a directory of the user's is never written into, so no file of theirs is overwritten.

    phenogen fetch barcodes --taxa passerines.txt --out data/passerines/barcodes --set fetch.email=you@uni.edu
    phenogen fetch images --taxa passerines.txt --out data/passerines/photos --set fetch.max_per_taxon=3
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from pathlib import Path

__all__ = [
    "add_arguments",
    "run",
    "check_base_urls",
    "check_dir_path",
    "check_fetch_out",
    "make_client",
    "fetch_barcodes",
    "fetch_all_images",
    "write_log",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("barcodes", "images"), help="what to fetch")
    parser.add_argument(
        "--taxa", required=True, metavar="FILE", help="taxon names, one per line ('#' comments)"
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (its cache/ makes reruns resume)"
    )
    parser.add_argument(
        "--cache", metavar="DIR", default=None, help="HTTP cache directory (default OUT/cache)"
    )


BASE_URL_FIELDS = ("ncbi_base", "bold_base", "bold_v4_base", "inat_base", "gbif_base")


def check_base_urls(cfg) -> None:  # noqa: ANN001 - FetchConfig
    """Refuse a ``fetch.*_base`` that is not an ``http(s)://host/...`` URL before any request is made."""
    from urllib.parse import urlsplit

    from phenogen.errors import ConfigError

    for name in BASE_URL_FIELDS:
        value = getattr(cfg, name, None)
        if value is None:
            continue
        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
            if ok:
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"fetch.{name}={value!r}: not an http:// or https:// URL with a host")


def check_dir_path(path: Path, flag: str) -> None:
    """Refuse a directory argument that is a file, or lies under a file, before anything is fetched."""
    from phenogen.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file, not a directory; give a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a directory")
            break


def check_fetch_out(out: Path) -> None:
    """A rerun continues in its ``--out`` (marked, or from before the marker: its config.json says fetch);
    any other non-empty directory is refused — the outputs would overwrite the user's files of those names."""
    from phenogen.errors import InputError, PhenogenError
    from phenogen.fsio import MARKER, is_phenogen_dir, read_json

    if not out.is_dir() or is_phenogen_dir(out):
        return
    names = {p.name for p in out.iterdir()}
    if names <= {"cache"}:  # empty, or only the HTTP cache of a run killed before its first write
        return
    try:
        earlier = str(read_json(out / "config.json", "fetch settings").get("command", "")).startswith(
            "fetch "
        )
    except PhenogenError:
        earlier = False
    if not earlier:
        raise InputError(
            f"--out {out}: directory is not empty and was not written by phenogen (no {MARKER} file); "
            "choose a new or empty directory — fetch would overwrite files there"
        )


def make_client(cfg, cache_dir: Path):  # noqa: ANN001, ANN201 - FetchConfig -> HttpClient
    """The :class:`~phenogen.data.http.HttpClient` configured by a ``[fetch]`` section."""
    from phenogen.data.http import HttpClient

    return HttpClient(
        cache_dir,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        backoff_s=cfg.backoff_s,
        backoff_max_s=cfg.backoff_max_s,
        user_agent=cfg.user_agent,
        max_bytes=int(cfg.max_body_mb * 2**20),
    )


def write_log(path: Path, logs: list) -> None:
    """``log.tsv``: one row per taxon and source."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["taxon", "source", "found", "kept", "filtered", "error"])
        for log in logs:
            filtered = "; ".join(f"{k}={v}" for k, v in sorted(log.filtered.items()))
            writer.writerow([log.taxon, log.source, log.found, log.kept, filtered, log.error])


def fetch_barcodes(taxa: list[str], out: Path, cfg, client) -> tuple[list, list]:  # noqa: ANN001
    """Fetch, filter and write the barcodes of ``taxa``; returns (barcodes, logs)."""
    from phenogen.data.barcodes import write_barcodes
    from phenogen.data.bold import fetch_bold
    from phenogen.data.ncbi import TaxonLog, fetch_ncbi
    from phenogen.dna.seqio import write_fasta
    from phenogen.errors import DataError, NetworkError

    fetchers = {"ncbi": fetch_ncbi, "bold": fetch_bold}
    barcodes, logs, seen = [], [], set()
    for taxon in taxa:
        for source in cfg.sources:
            try:
                got, log = fetchers[source](client, cfg, taxon)
            except (NetworkError, DataError) as exc:  # unreachable, or a malformed answer (never cached)
                got, log = [], TaxonLog(taxon, source, error=str(exc))
            fresh = [b for b in got if b.record_id not in seen]  # one record found by two queries
            if len(fresh) < len(got):
                log.filtered["duplicate record"] = len(got) - len(fresh)
            seen.update(b.record_id for b in fresh)
            barcodes.extend(fresh)
            logs.append(log)
            print(
                f"{taxon:<32} {source:<5} found {log.found:>4}  kept {len(fresh):>4}"
                + (f"  ERROR {log.error}" if log.error else "")
            )
    out.mkdir(parents=True, exist_ok=True)
    write_barcodes(out / "barcodes.tsv", barcodes)
    write_fasta(out / "barcodes.fasta", [(b.record_id, b.sequence) for b in barcodes])
    write_log(out / "log.tsv", logs)
    return barcodes, logs


def fetch_all_images(taxa: list[str], out: Path, cfg, client) -> tuple[list, list]:  # noqa: ANN001
    """Download, deduplicate, resize and record the photos of ``taxa``; returns (entries, logs)."""
    from phenogen.data.images import fetch_images, write_image_manifest
    from phenogen.data.ncbi import TaxonLog
    from phenogen.errors import DataError, NetworkError

    entries, logs, seen = [], [], {}
    for taxon in taxa:
        try:
            got, log = fetch_images(client, cfg, taxon, out / "images", seen)
        except (NetworkError, DataError) as exc:  # unreachable, or a malformed answer (never cached)
            got, log = [], TaxonLog(taxon, "+".join(cfg.image_sources), error=str(exc))
        entries.extend(got)
        logs.append(log)
        print(
            f"{taxon:<32} found {log.found:>4}  kept {log.kept:>4}"
            + (f"  ERROR {log.error}" if log.error else "")
        )
    out.mkdir(parents=True, exist_ok=True)
    write_image_manifest(out / "images.tsv", entries)
    write_log(out / "log.tsv", logs)
    return entries, logs


def run(args: argparse.Namespace) -> int:
    from phenogen import __version__
    from phenogen.config import load_sections, save_resolved
    from phenogen.data.barcodes import read_taxa
    from phenogen.data.config import FetchConfig
    from phenogen.fsio import MARKER, atomic_write_json, is_phenogen_dir

    cfg: FetchConfig = load_sections({"fetch": FetchConfig}, args.config, args.set)["fetch"]
    check_base_urls(cfg)
    taxa = read_taxa(args.taxa)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else out / "cache"
    check_dir_path(out, "--out")
    if args.cache:
        check_dir_path(cache, "--cache")
    check_fetch_out(out)
    out.mkdir(parents=True, exist_ok=True)
    if not is_phenogen_dir(out):
        atomic_write_json(out / MARKER, {"written_by": f"phenogen fetch {args.what}", "version": __version__})
    shown = dataclasses.replace(cfg, api_key="***" if cfg.api_key else "")  # never write a key to disk
    save_resolved({"fetch": shown}, out, command=f"fetch {args.what}", taxa=taxa, cache=str(cache))
    client = make_client(cfg, cache)
    if args.what == "barcodes":
        items, logs = fetch_barcodes(taxa, out, cfg, client)
        print(f"wrote {out / 'barcodes.tsv'} ({len(items):,} barcodes) and {out / 'barcodes.fasta'}")
    else:
        items, logs = fetch_all_images(taxa, out, cfg, client)
        print(f"wrote {out / 'images.tsv'} ({len(items):,} images under {out / 'images'})")
    s = client.stats
    print(
        f"http: {s.requests} requests, {s.cache_hits} from cache, {s.retries} retries; log in {out / 'log.tsv'}"
    )
    failed = [f"{log.taxon} ({log.source})" for log in logs if log.error]
    if failed:
        print(
            f"{len(failed)} taxon queries failed: {', '.join(failed[:10])}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 1
    return 0

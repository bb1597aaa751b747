"""fetch barcodes / images and dataset build against synthetic answers in each service's format, from 127.0.0.1.

The fixtures are written by ``tests/data/fixtures/make_fixtures.py`` (they are not recordings of the
real services). The second half feeds every source wrong-shaped and malformed answers.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from fixture_server import FIXTURES, FixtureServer, Reply, bold_v5_routes, bold_v5_unmatched, fixture

from phenogen.data.bold import fetch_bold
from phenogen.data.config import FetchConfig
from phenogen.data.dataset import load_dataset
from phenogen.data.http import HttpClient
from phenogen.data.images import fetch_images
from phenogen.data.ncbi import fetch_ncbi

RUNNER = (
    "import argparse, importlib, sys\n"
    "from phenogen.cli import add_common_arguments\n"
    "m = importlib.import_module(sys.argv[1]); p = argparse.ArgumentParser()\n"
    "m.add_arguments(p); add_common_arguments(p); sys.exit(m.run(p.parse_args(sys.argv[2:])))\n"
)
GB_RECORDS = [
    chunk + "//\n"
    for chunk in (FIXTURES / "ncbi_efetch_turdus.gb").read_text().split("//\n")
    if chunk.strip()
]


def cfg_for(base: str, **kwargs) -> FetchConfig:
    opts = dict(
        ncbi_base=base + "/entrez/eutils/",
        bold_base=base + "/bold/api/",
        bold_v4_base=base + "/bold/API_Public/",
        inat_base=base + "/inat/v1/",
        gbif_base=base + "/gbif/v1/",
        email="test@example.org",
        timeout_s=2.0,
        retries=2,
        backoff_s=0.01,
        rate_per_s=1000.0,
        image_size=16,
    )
    return FetchConfig(**{**opts, **kwargs})


def overrides(cfg: FetchConfig) -> list[str]:
    keys = (
        "ncbi_base",
        "bold_base",
        "bold_v4_base",
        "inat_base",
        "gbif_base",
        "email",
        "image_size",
        "rate_per_s",
        "backoff_s",
    )
    return [f"fetch.{k}={getattr(cfg, k)!r}".replace("'", '"') for k in keys]


def run_command(module: str, *argv: str) -> int:
    mod = __import__(module, fromlist=["run"])
    from phenogen.cli import add_common_arguments

    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    add_common_arguments(parser)
    return mod.run(parser.parse_args(list(argv)))


def serve_all(srv: FixtureServer, slow_taxon: str | None = None) -> None:
    """Routes of every service for the taxa Turdus merula and Parus major."""
    srv.add("/entrez/eutils/esearch.fcgi", fixture("ncbi_esearch_empty.json"))
    srv.add(
        "/entrez/eutils/esearch.fcgi",
        fixture("ncbi_esearch_turdus.json"),
        term=FetchConfig().ncbi_term.format(taxon="Turdus merula"),
    )
    srv.add("/entrez/eutils/efetch.fcgi", fixture("ncbi_efetch_turdus.gb"))
    srv.add("/bold/API_Public/combined", Reply(200, b"processid\tspecies_name\tmarkercode\tnucleotides\n"))
    srv.add("/bold/API_Public/combined", fixture("bold_combined_parus.tsv"), taxon="Parus major")
    bold_v5_unmatched(srv)
    bold_v5_routes(srv, "Parus major")
    srv.add("/inat/v1/observations", Reply(200, b'{"total_results": 0, "results": []}'))
    srv.add("/inat/v1/observations", fixture("inat_observations_turdus.json"), taxon_name="Turdus merula")
    for n, name in ((1, "photo_a.jpg"), (4, "photo_a.jpg"), (5, "photo_b.jpg")):
        srv.add(f"/photos/{n}/medium.jpg", fixture(name))
    srv.add("/gbif/v1/occurrence/search", Reply(200, b'{"results": []}'))
    srv.add("/gbif/v1/occurrence/search", fixture("gbif_occurrence_parus.json"), scientificName="Parus major")
    srv.add("/gbif/img1.jpg", fixture("photo_c.jpg"))
    if slow_taxon:
        term = FetchConfig().ncbi_term.format(taxon=slow_taxon)
        srv.add("/entrez/eutils/esearch.fcgi", fixture("ncbi_esearch_empty.json", delay=30), term=term)


@pytest.fixture
def server():
    with FixtureServer() as srv:
        serve_all(srv)
        yield srv


def test_ncbi_extracts_coi_from_barcodes_and_mitogenomes_in_batches(server, tmp_path, monkeypatch):
    """A partial-cds record is kept whole, a mitogenome gives its COX1 CDS, a 16S record is filtered."""
    monkeypatch.setenv("NCBI_API_KEY", "KEY42")
    server.add(
        "/entrez/eutils/efetch.fcgi", Reply(200, "".join(GB_RECORDS[:2]).encode()), id="1786543210,1000000001"
    )
    server.add("/entrez/eutils/efetch.fcgi", Reply(200, GB_RECORDS[2].encode()), id="555000111")
    cfg = cfg_for(server.base, batch_size=2)
    barcodes, log = fetch_ncbi(HttpClient(tmp_path / "c"), cfg, "Turdus merula")
    assert [b.accession for b in barcodes] == ["MN123456.1", "NC_999001.1"]
    assert len(barcodes[0].sequence) == 657 and barcodes[0].sequence[100] == "N"  # R masked
    assert len(barcodes[1].sequence) == 651  # COX1 CDS 801..1451 of the mitogenome
    assert (log.found, log.kept, log.filtered) == (3, 2, {"no COI feature": 1})
    assert "Passeriformes" in barcodes[0].taxonomy and barcodes[0].species == "Turdus merula"
    fetches = [q for p, q in server.requests if p.endswith("efetch.fcgi")]
    assert [q["id"] for q in fetches] == ["1786543210,1000000001", "555000111"]
    assert all(
        q["tool"] == "phenogen" and q["email"] == "test@example.org" and q["api_key"] == "KEY42"
        for q in fetches
    )
    assert fetches[0]["rettype"] == "gb" and fetches[0]["db"] == "nucleotide"


def test_ncbi_rate_follows_the_api_key(monkeypatch):
    """3 requests/s without an API key, 10 with one."""
    monkeypatch.delenv("NCBI_API_KEY", raising=False)
    assert FetchConfig().ncbi_rate() == 3.0
    monkeypatch.setenv("NCBI_API_KEY", "k")
    assert FetchConfig().ncbi_rate() == 10.0


def test_bold_v4_keeps_coi_and_says_why_it_filtered(server, tmp_path):
    """The legacy v4 TSV gives two COI-5P barcodes; a short one and a CYTB row are filtered with reasons."""
    cfg = cfg_for(server.base, bold_api="v4")
    barcodes, log = fetch_bold(HttpClient(tmp_path / "c"), cfg, "Parus major")
    assert [b.record_id for b in barcodes] == ["BROM123-09", "BROM124-09"]
    assert log.filtered == {"too short": 1, "marker CYTB": 1}
    assert barcodes[0].taxonomy[:3] == ("Chordata", "Aves", "Passeriformes")
    assert server.count("/bold/API_Public/combined") == 1 and server.count("/bold/api/query") == 0


def test_bold_v5_preprocessor_query_download(server, tmp_path):
    """v5: the name is resolved, the query started, its id's TSV downloaded; BCDM rows filtered as v4's."""
    barcodes, log = fetch_bold(HttpClient(tmp_path / "c"), cfg_for(server.base), "Parus major")
    assert [(b.record_id, b.accession, b.marker) for b in barcodes] == [
        ("BROM123-09", "KX120000", "COI-5P"),
        ("BROM124-09", "KX120001", "COI-5P"),
    ]
    assert len(barcodes[1].sequence) == 640  # the aligned row's gaps are gone
    assert barcodes[0].taxonomy == ("Chordata", "Aves", "Passeriformes", "Paridae", "Parus")
    assert (log.found, log.kept, log.filtered) == (4, 2, {"too short": 1, "marker CYTB": 1})
    paths = [(p, q) for p, q in server.requests if p.startswith("/bold/")]
    assert paths[0] == ("/bold/api/query/preprocessor", {"query": "tax:Parus major"})
    assert paths[1] == ("/bold/api/query", {"query": "tax:species:Parus major", "extent": "full"})
    assert paths[2] == ("/bold/api/documents/eAErSSwqUchNLCoBABBuA2o%3D/download", {"format": "tsv"})


@pytest.mark.parametrize("status", [200, 400])
def test_bold_v5_unknown_name_is_logged_not_an_error(server, tmp_path, status):
    """A name BOLD does not know (failed_terms, with 200 or 400) gives no barcodes and a reason, no query."""
    body = (FIXTURES / "passerines" / "bold_v5_preprocessor_unmatched.json").read_bytes()
    server.add("/bold/api/query/preprocessor", Reply(status, body), query="tax:Nonexistus fictus")
    barcodes, log = fetch_bold(HttpClient(tmp_path / "c"), cfg_for(server.base), "Nonexistus fictus")
    assert barcodes == [] and log.error == ""
    assert log.filtered == {"name not in BOLD's taxonomy": 1}
    assert server.count("/bold/api/query") == 0


def test_bold_v5_expired_query_id_is_asked_again(server, tmp_path):
    """A run killed between query and download left a query id that has since expired (404): the rerun
    starts the query again, replaces the cached id, and a third run sends nothing."""
    cfg = cfg_for(server.base)
    query_url = HttpClient.url(cfg.bold_base, "query", {"query": "tax:species:Parus major", "extent": "full"})
    stale = server.add("/bold/api/query", Reply(200, b'{"query_id": "STALE=="}'))
    HttpClient(tmp_path / "c").get(query_url)  # what the killed run had cached
    server.routes.remove(stale)
    server.add("/bold/api/documents/STALE%3D%3D/download", Reply(404, b"unknown query id"))
    barcodes, _ = fetch_bold(HttpClient(tmp_path / "c"), cfg, "Parus major")
    assert [b.record_id for b in barcodes] == ["BROM123-09", "BROM124-09"]
    assert (
        server.count("/bold/api/query") == 2 and server.count("/bold/api/documents/STALE%3D%3D/download") == 1
    )
    again = HttpClient(tmp_path / "c")
    assert len(fetch_bold(again, cfg, "Parus major")[0]) == 2 and again.stats.requests == 0


def test_bold_v5_truncated_download_is_fetched_again(server, tmp_path):
    """A TSV cut mid-row (no final newline) is not cached; the retry gets the whole download."""
    path = bold_v5_routes(server, "Cyanistes caeruleus")
    whole = server.routes[0].replies[0].body
    server.add(path, Reply(200, whole[: len(whole) // 2]), Reply(200, whole), format="tsv")
    client = HttpClient(tmp_path / "c", retries=2, backoff_s=0.0)
    barcodes, _ = fetch_bold(client, cfg_for(server.base), "Cyanistes caeruleus")
    assert [b.record_id for b in barcodes] == ["GBIR201-12", "GBIR202-12"]
    assert client.stats.retries == 1 and server.count(path) == 2


def test_inaturalist_images_free_licences_deduplicated_resized(server, tmp_path):
    """Non-free and unlicensed photos are skipped, a byte-identical photo is kept once, files are 16×16."""
    from PIL import Image

    entries, log = fetch_images(
        HttpClient(tmp_path / "c"), cfg_for(server.base), "Turdus merula", tmp_path / "img"
    )
    assert [e.license for e in entries] == ["cc-by", "cc-by-sa"]
    assert log.filtered == {"licence cc-by-nc": 1, "licence unknown": 1, "duplicate image": 1}
    assert entries[0].source_url == server.base + "/photos/1/medium.jpg"
    assert entries[0].author.startswith("(c) Observer 1")
    assert entries[0].page_url == "https://www.inaturalist.org/observations/5001"
    with Image.open(tmp_path / "img" / entries[1].file) as im:
        assert im.size == (16, 16)
    query = next(q for p, q in server.requests if p == "/inat/v1/observations")
    assert query["quality_grade"] == "research" and query["photo_license"] == "cc0,cc-by,cc-by-sa"


def test_gbif_images_keep_only_free_still_images(server, tmp_path):
    """From GBIF media, the CC BY still image is kept; sound and CC BY-NC are not."""
    cfg = cfg_for(server.base, image_sources=["gbif"])
    entries, log = fetch_images(HttpClient(tmp_path / "c"), cfg, "Parus major", tmp_path / "img")
    assert [(e.license, e.author, e.provider) for e in entries] == [("cc-by", "Kari Nordmann", "gbif")]
    assert log.filtered == {"licence cc-by-nc": 1}


def test_one_command_each_barcodes_images_dataset(server, tmp_path):
    """fetch barcodes, fetch images, dataset build: a species-disjoint dataset train-lm can read."""
    from phenogen.lm.data import load_sequences

    taxa = tmp_path / "taxa.txt"
    taxa.write_text("# passerines\nTurdus merula\nParus major\n")
    cfg = cfg_for(server.base, sources=["ncbi", "bold"], image_sources=["inaturalist", "gbif"])
    sets = [x for o in overrides(cfg) for x in ("--set", o)]
    sets += [
        "--set",
        'fetch.sources=["ncbi", "bold"]',
        "--set",
        'fetch.image_sources=["inaturalist", "gbif"]',
    ]
    bc, ph, ds_dir = tmp_path / "barcodes", tmp_path / "photos", tmp_path / "dataset"
    assert (
        run_command("phenogen.data.command_fetch", "barcodes", "--taxa", str(taxa), "--out", str(bc), *sets)
        == 0
    )
    assert (
        run_command("phenogen.data.command_fetch", "images", "--taxa", str(taxa), "--out", str(ph), *sets)
        == 0
    )
    rows = list(csv.DictReader(open(ph / "images.tsv"), delimiter="\t"))
    assert {r["license"] for r in rows} <= {"cc0", "cc-by", "cc-by-sa"} and all(
        r["author"] and r["source_url"] for r in rows
    )
    assert (bc / "log.tsv").read_text().count("\n") == 5  # header + 2 taxa × 2 sources
    build = ["--set", "build.heldout_fraction=0.5"]
    assert (
        run_command(
            "phenogen.data.command_build",
            "build",
            "--barcodes",
            str(bc),
            "--images",
            str(ph),
            "--out",
            str(ds_dir),
            *build,
        )
        == 0
    )
    ds = load_dataset(ds_dir)
    assert len(ds) == 4  # 2 Turdus (NCBI) + 2 Parus (BOLD)
    assert all(r.images and r.node_kind == "living" for r in ds.records())
    train, held = set(ds.species("train")), set(ds.species("heldout"))
    assert train and held and not train & held  # species-disjoint
    assert (ds_dir / "config.json").is_file()
    assert len(load_sequences(ds_dir).train) >= 2
    # the thesis' split: train on one family, test on the others
    out2 = tmp_path / "by_taxon"
    taxon = ["--set", 'build.strategy="taxon"', "--set", 'build.train_taxa=["Turdidae"]']
    run_command(
        "phenogen.data.command_build",
        "build",
        "--barcodes",
        str(bc),
        "--images",
        str(ph),
        "--out",
        str(out2),
        *taxon,
    )
    assert load_dataset(out2).species("train") == ["Turdus merula"]


def test_split_skips_species_that_have_no_photos():
    """A species dropped for want of photos never takes the held-out slot (which would leave heldout empty)."""
    from phenogen.data.barcodes import Barcode
    from phenogen.data.build import barcodes_to_records
    from phenogen.data.config import BuildConfig

    names = ["Parus major", "Turdus merula", "Passer domesticus"]
    barcodes = [
        Barcode(f"r{i}", s, s, "bold", f"A{i}", "COI-5P", (), "ACGT" * 120) for i, s in enumerate(names)
    ]
    photos = {"Parus major": ["images/p.jpg"], "Turdus merula": ["images/t.jpg"]}
    for seed in range(10):
        records = barcodes_to_records(barcodes, photos, BuildConfig(heldout_fraction=0.3, seed=seed))
        assert sorted(r.split for r in records) == ["heldout", "train"], seed


def test_failed_taxon_is_logged_and_rerun_resumes_from_cache(server, tmp_path):
    """A taxon that keeps failing is logged (exit 1); the rerun fetches only that taxon, nothing duplicated."""
    taxa = tmp_path / "taxa.txt"
    taxa.write_text("Turdus merula\nParus major\n")
    cfg = cfg_for(server.base, sources=["ncbi", "bold"])
    argv = [
        "barcodes",
        "--taxa",
        str(taxa),
        "--out",
        str(tmp_path / "o"),
        "--set",
        'fetch.sources=["ncbi","bold"]',
    ]
    argv += [x for o in overrides(cfg) for x in ("--set", o)] + ["--set", 'fetch.api_key="SECRETKEY"']
    download = "/bold/api/documents/eAErSSwqUchNLCoBABBuA2o%3D/download"
    broken = server.add(download, Reply(500, b"down"), format="tsv")
    assert run_command("phenogen.data.command_fetch", *argv) == 1
    assert "gave up" in (tmp_path / "o" / "log.tsv").read_text()
    assert "SECRETKEY" not in (tmp_path / "o" / "config.json").read_text()
    server.routes.remove(broken)
    n_esearch = server.count("/entrez/eutils/esearch.fcgi")
    assert run_command("phenogen.data.command_fetch", *argv) == 0
    assert server.count("/entrez/eutils/esearch.fcgi") == n_esearch  # all NCBI answers came from the cache
    ids = [r["record_id"] for r in csv.DictReader(open(tmp_path / "o" / "barcodes.tsv"), delimiter="\t")]
    assert sorted(ids) == ["BROM123-09", "BROM124-09", "MN123456.1", "NC_999001.1"]


def test_kill_and_rerun_loses_and_duplicates_nothing(tmp_path):
    """kill -9 while a request hangs; the rerun sends no finished request again and writes each record once."""
    taxa = tmp_path / "taxa.txt"
    taxa.write_text("Turdus merula\nParus major\nErithacus rubecula\n")
    out = tmp_path / "o"
    with FixtureServer() as srv:
        serve_all(srv, slow_taxon="Erithacus rubecula")
        cfg = cfg_for(srv.base, sources=["ncbi", "bold"])
        argv = ["barcodes", "--taxa", str(taxa), "--out", str(out), "--set", 'fetch.sources=["ncbi","bold"]']
        argv += [x for o in overrides(cfg) for x in ("--set", o)] + ["--set", "fetch.timeout_s=60.0"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, "phenogen.data.command_fetch", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while not any("Erithacus" in q.get("term", "") for _, q in srv.requests):
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "the fetch never reached the third taxon"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        first = list(srv.requests)
        assert not (out / "barcodes.tsv").exists()
        srv.add(
            "/entrez/eutils/esearch.fcgi",
            fixture("ncbi_esearch_empty.json"),
            term=cfg.ncbi_term.format(taxon="Erithacus rubecula"),
        )
        assert run_command("phenogen.data.command_fetch", *argv) == 0
        again = srv.requests[len(first) :]
    finished = {(p, tuple(sorted(q.items()))) for p, q in first if "Erithacus" not in str(q)}
    assert not finished & {(p, tuple(sorted(q.items()))) for p, q in again}
    ids = [r["record_id"] for r in csv.DictReader(open(out / "barcodes.tsv"), delimiter="\t")]
    assert sorted(ids) == ["BROM123-09", "BROM124-09", "MN123456.1", "NC_999001.1"]
    assert not list((out / "cache").rglob(".tmp-*"))


# ------------------------------------------------------------ wrong shapes from every source (issue 22)
ESEARCH = "/entrez/eutils/esearch.fcgi"
EFETCH = "/entrez/eutils/efetch.fcgi"
PRE, QUERY = "/bold/api/query/preprocessor", "/bold/api/query"
INAT, GBIF = "/inat/v1/observations", "/gbif/v1/occurrence/search"
SHAPES = [
    # (route, body, source, what the one-line message names, retried as possibly truncated?)
    ("ncbi", ESEARCH, b'{"esearchresult": []}', "NCBI esearch", "field 'esearchresult' is a list", False),
    ("ncbi", ESEARCH, b"[1, 2]", "NCBI esearch", "field '<answer>' is a list", False),
    ("ncbi", ESEARCH, b"null", "NCBI esearch", "is null, expected an object", False),
    ("ncbi", ESEARCH, b'{"header": {}}', "NCBI esearch", "no 'esearchresult'", False),
    (
        "ncbi",
        ESEARCH,
        b'{"esearchresult": {"idlist": {"a": 1}}}',
        "NCBI esearch",
        "esearchresult.idlist",
        False,
    ),
    ("ncbi", ESEARCH, b'{"esearchresult": {"idlist": [null]}}', "NCBI esearch", "idlist[0]", False),
    ("ncbi", ESEARCH, b'{"esearchresult": {"idlist": ["1,2"]}}', "NCBI esearch", "not a GenBank id", False),
    ("ncbi", ESEARCH, b'{"esearchresult": {"ERROR": "backend down"}}', "NCBI esearch", "backend down", True),
    ("ncbi", ESEARCH, b'{"esearchresult": {"idl', "NCBI esearch", "not valid JSON", True),
    (
        "ncbi",
        EFETCH,
        b"<?xml version='1.0'?><eFetchResult><ERROR>UID=1: cannot get</ERROR></eFetchResult>",
        "NCBI efetch",
        "NCBI said 'UID=1: cannot get'",
        False,
    ),
    ("ncbi", EFETCH, b"<eFetchResult><ERROR>unterminated", "NCBI efetch", "starts '<eFetchResult>", False),
    ("ncbi", EFETCH, b">MN1.1 Turdus\nACGT\n", "NCBI efetch", "FASTA, not GenBank", False),
    ("ncbi", EFETCH, b"LOCUS       X 5 bp DNA\nORIGIN\n        1 acgt\n", "NCBI efetch", "truncated", True),
    ("ncbi", EFETCH, b"", "NCBI efetch", "empty answer", True),
    (
        "bold",
        "/bold/API_Public/combined",
        b"processid\tfoo\nA1\tx\n",
        "BOLD v4 combined",
        "no column for sequence",
        False,
    ),
    (
        "bold",
        "/bold/API_Public/combined",
        b"<html>maintenance</html>\n",
        "BOLD v4 combined",
        "no column for processid",
        False,
    ),
    (
        "bold",
        "/bold/API_Public/combined",
        b"processid\tnucleotides\nA1\tACG",
        "BOLD v4 combined",
        "truncated",
        True,
    ),
    (
        "bold5",
        PRE,
        b'{"successful_terms": {"a": 1}}',
        "BOLD preprocessor",
        "'successful_terms' is an object",
        False,
    ),
    ("bold5", PRE, b'{"successful_terms": [1]}', "BOLD preprocessor", "successful_terms[0]", False),
    (
        "bold5",
        PRE,
        b'{"successful_terms": [{"matched": 3}]}',
        "BOLD preprocessor",
        "successful_terms[0].matched",
        False,
    ),
    ("bold5", QUERY, b'{"query_id": null}', "BOLD query", "field 'query_id' is null", False),
    ("bold5", QUERY, b"{}", "BOLD query", "no 'query_id'", False),
    ("inat", INAT, b'{"results": [1]}', "iNaturalist observations", "field 'results[0]' is a number", False),
    ("inat", INAT, b'{"results": null}', "iNaturalist observations", "field 'results' is null", False),
    ("inat", INAT, b'{"total_results": 3}', "iNaturalist observations", "no 'results'", False),
    (
        "inat",
        INAT,
        b'{"results": [{"photos": {"a": 1}}]}',
        "iNaturalist observations",
        "results[0].photos",
        False,
    ),
    (
        "inat",
        INAT,
        b'{"results": [{"photos": [{"url": 5}]}]}',
        "iNaturalist observations",
        "photos[0].url",
        False,
    ),
    (
        "inat",
        INAT,
        b'{"results": [{"taxon": "Turdus"}]}',
        "iNaturalist observations",
        "results[0].taxon",
        False,
    ),
    ("gbif", GBIF, b'{"results": {"a": 1}}', "GBIF occurrences", "field 'results' is an object", False),
    (
        "gbif",
        GBIF,
        b'{"results": [{"media": [{"identifier": ["x"]}]}]}',
        "GBIF occurrences",
        "media[0].identifier",
        False,
    ),
    ("gbif", GBIF, b'{"results": [{"key": [1]}]}', "GBIF occurrences", "results[0].key", False),
    ("gbif", GBIF, b'{"results": [{"media": "none"}]}', "GBIF occurrences", "results[0].media", False),
]


@pytest.mark.parametrize(
    "kind, path, body, source, names, retried",
    SHAPES,
    ids=lambda v: v if isinstance(v, str) and "/" not in v and len(v) < 30 else None,
)
def test_wrong_shaped_answers_are_one_typed_error_and_never_cached(
    server, tmp_path, kind, path, body, source, names, retried
):
    """Valid JSON of the wrong shape, error pages, FASTA for GenBank, BOLD TSV without its columns: a
    DataError naming the source, the URL and the field — never AttributeError/KeyError/TypeError — at once
    (or, for what may be a cut transfer, after the retries); and nothing is cached."""
    from phenogen.errors import DataError

    taxon = "Turdus merula" if kind in ("ncbi", "inat") else "Parus major"
    server.add(path, Reply(200, body))
    cfg = cfg_for(
        server.base,
        bold_api="v4" if kind == "bold" else "v5",
        image_sources=["gbif" if kind == "gbif" else "inaturalist"],
    )
    client = HttpClient(tmp_path / "c", retries=2, backoff_s=0.0, timeout_s=2.0)
    fetch = {
        "ncbi": lambda: fetch_ncbi(client, cfg, taxon),
        "bold": lambda: fetch_bold(client, cfg, taxon),
        "bold5": lambda: fetch_bold(client, cfg, taxon),
        "inat": lambda: fetch_images(client, cfg, taxon, tmp_path / "img"),
        "gbif": lambda: fetch_images(client, cfg, taxon, tmp_path / "img"),
    }[kind]
    with pytest.raises(DataError) as info:
        fetch()
    message = str(info.value)
    assert source in message and names in message and "\n" not in message, message
    assert f"GET {server.base}{path}" in message, message
    assert server.count(path) == (3 if retried else 1)
    cached = [json.loads(p.read_text())["url"] for p in (tmp_path / "c").rglob("*.json")]
    assert not [u for u in cached if urllib.parse.urlsplit(u).path == path], cached


def test_a_malformed_answer_is_logged_for_its_taxon_and_the_others_are_fetched(server, tmp_path):
    """fetch barcodes: one taxon's wrong-shaped esearch answer is logged (exit 1 path); the other taxon is kept."""
    from phenogen.data.command_fetch import fetch_barcodes

    term = FetchConfig().ncbi_term.format(taxon="Parus major")
    server.add(ESEARCH, Reply(200, b'{"esearchresult": []}'), term=term)
    cfg = cfg_for(server.base)
    barcodes, logs = fetch_barcodes(
        ["Turdus merula", "Parus major"], tmp_path / "o", cfg, HttpClient(tmp_path / "c")
    )
    assert [b.accession for b in barcodes] == ["MN123456.1", "NC_999001.1"]
    assert logs[0].error == "" and "field 'esearchresult' is a list" in logs[1].error


def test_an_image_url_that_is_no_image_or_too_large_is_dropped_not_retried(server, tmp_path, monkeypatch):
    """An HTML page where a photo should be is dropped at once; a photo over the cap is dropped unread."""
    import phenogen.data.images as images

    server.add("/photos/1/medium.jpg", Reply(200, b"<html>login required</html>"))
    server.add("/photos/5/medium.jpg", Reply(200, size=10_000_000))
    monkeypatch.setattr(images, "IMAGE_MAX_BYTES", 1_000_000)
    client = HttpClient(tmp_path / "c", retries=2, backoff_s=0.0)
    entries, log = fetch_images(client, cfg_for(server.base), "Turdus merula", tmp_path / "img")
    assert [e.source_url.rsplit("/", 2)[1] for e in entries] == ["4"]
    assert log.filtered["not an image"] == 1 and log.filtered["image over the size cap"] == 1
    assert server.count("/photos/1/medium.jpg") == 1 and client.stats.retries == 0

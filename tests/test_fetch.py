"""fetch barcodes / images and dataset build against recorded responses served from 127.0.0.1."""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
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

"""The thesis' passerines end to end, through the `phenogen` CLI, against recorded answers on 127.0.0.1.

One command each: `fetch barcodes` (NCBI + BOLD v5), `fetch images` (iNaturalist + GBIF),
`dataset build`, then `train-lm` and `train-image` (tiny presets, a few steps) accept the dataset and
write a DNA-to-image pipeline that loads and paints. Real-data quirks on the way: a mitogenome whose
COX1 is full length (1551 bp), an aligned BOLD row with gaps, photos of several sizes, a greyscale
photo, a species whose only photo is not freely licensed, names unknown to one of the sources.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import pytest
from fixture_server import (
    PASSERINES,
    FixtureServer,
    Reply,
    bold_v5_routes,
    bold_v5_unmatched,
    fixture,
)

from phenogen.cli import main
from phenogen.data.dataset import load_dataset

TAXA = PASSERINES / "taxa.txt"
TURDUS_IDS = "1786543210,1000000001,555000111"
BOLD_SPECIES = ("Parus major", "Cyanistes caeruleus", "Fringilla coelebs", "Passer domesticus")


def serve_passerines(srv: FixtureServer) -> None:
    """NCBI knows the thrush and the robin, BOLD the tits, the finch and the sparrow; photos from both."""
    term = '"{}"[Organism] AND (COI[Gene] OR COX1[Gene] OR CO1[Gene] OR "cytochrome oxidase subunit 1"[All Fields] OR "cytochrome c oxidase subunit I"[All Fields])'
    srv.add("/ncbi/esearch.fcgi", fixture("ncbi_esearch_empty.json"))
    srv.add("/ncbi/esearch.fcgi", fixture("ncbi_esearch_turdus.json"), term=term.format("Turdus merula"))
    srv.add("/ncbi/efetch.fcgi", fixture("ncbi_efetch_turdus.gb"), id=TURDUS_IDS)
    srv.add(
        "/ncbi/esearch.fcgi",
        fixture("passerines/ncbi_esearch_erithacus.json"),
        term=term.format("Erithacus rubecula"),
    )
    srv.add("/ncbi/efetch.fcgi", fixture("passerines/ncbi_efetch_erithacus.gb"), id="2190000001")
    bold_v5_unmatched(srv)
    for taxon in BOLD_SPECIES:
        bold_v5_routes(srv, taxon)
    srv.add("/inat/observations", Reply(200, b'{"total_results": 0, "results": []}'))
    srv.add("/inat/observations", fixture("inat_observations_turdus.json"), taxon_name="Turdus merula")
    recorded = json.loads((PASSERINES / "inat_observations.json").read_text())
    for taxon in {obs["taxon"]["name"] for obs in recorded["results"]}:
        mine = [obs for obs in recorded["results"] if obs["taxon"]["name"] == taxon]
        body = json.dumps({**recorded, "total_results": len(mine), "results": mine}).encode()
        srv.add(
            "/inat/observations", Reply(200, body, {"Content-Type": "application/json"}), taxon_name=taxon
        )
    for pid in (11, 12, 21, 22, 31, 41):
        srv.add(f"/photos/{pid}/medium.jpg", fixture(f"passerines/photo_{pid}.jpg"))
    for pid, name in ((1, "photo_a.jpg"), (4, "photo_a.jpg"), (5, "photo_b.jpg")):
        srv.add(f"/photos/{pid}/medium.jpg", fixture(name))
    srv.add("/gbif/occurrence/search", Reply(200, b'{"results": []}'))
    srv.add("/gbif/occurrence/search", fixture("gbif_occurrence_parus.json"), scientificName="Parus major")
    srv.add("/gbif/img1.jpg", fixture("photo_c.jpg"))


def write_config(path: Path, base: str, lm_dir: Path) -> Path:
    """One TOML file with every section the five commands read (each ignores the others)."""
    path.write_text(
        f"""
[fetch]
sources = ["ncbi", "bold"]
image_sources = ["inaturalist", "gbif"]
ncbi_base = "{base}/ncbi/"
bold_base = "{base}/bold/api/"
inat_base = "{base}/inat/"
gbif_base = "{base}/gbif/"
email = "test@example.org"
max_per_taxon = 3
image_size = 24          # not the image model's 16 px: train-image resizes
rate_per_s = 1000.0
timeout_s = 5.0
retries = 2
backoff_s = 0.01

[build]
heldout_fraction = 0.2   # species-disjoint: one of the five species with photos is held out
seed = 0

[lm]
preset = "tiny"
epochs = 1
batch_size = 4
n_positions = 272        # the robin's full-length COX1: 1551 bp = 263 tokens (the tiny preset has 256)

[image]
preset = "tiny"
encoder = "gpt2"         # the thesis: the DNA model's hidden states condition the image model
lm_model = "{lm_dir}"
max_steps = 2
vae_steps = 2
batch_size = 4
vae_batch_size = 4
lr_warmup_steps = 1
sample_steps = 2
"""
    )
    return path


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The five commands, once, against the fixture server; the directories they wrote."""
    root = tmp_path_factory.mktemp("passerines")
    dirs = {name: root / name for name in ("barcodes", "photos", "dataset", "lm", "image")}
    with FixtureServer() as srv:
        serve_passerines(srv)
        cfg = str(write_config(root / "passerines.toml", srv.base, dirs["lm"] / "model"))
        taxa = ["--taxa", str(TAXA), "--config", cfg]
        codes = {
            "barcodes": main(["fetch", "barcodes", *taxa, "--out", str(dirs["barcodes"])]),
            "photos": main(["fetch", "images", *taxa, "--out", str(dirs["photos"])]),
        }
    build = ["--barcodes", str(dirs["barcodes"]), "--images", str(dirs["photos"]), "--config", cfg]
    with contextlib.redirect_stdout(io.StringIO()) as said:
        codes["dataset"] = main(["dataset", "build", *build, "--out", str(dirs["dataset"])])
    (root / "build.out").write_text(said.getvalue())
    codes["validate"] = main(["validate", str(dirs["dataset"])])
    data = ["--data", str(dirs["dataset"]), "--config", cfg, "--no-progress"]
    codes["lm"] = main(["train-lm", *data, "--out", str(dirs["lm"])])
    codes["image"] = main(["train-image", *data, "--out", str(dirs["image"])])
    return codes, dirs


def test_every_command_succeeds(run):
    """fetch barcodes, fetch images, dataset build, validate, train-lm, train-image: exit code 0 each."""
    codes, _ = run
    assert codes == dict.fromkeys(("barcodes", "photos", "dataset", "validate", "lm", "image"), 0)


def test_barcodes_table_from_ncbi_and_bold_with_a_log_per_taxon_and_source(run):
    """Each species' barcodes come from the source that knows it; log.tsv says what happened where."""
    _, dirs = run
    got = {(r["species"], r["source"], int(r["length"])) for r in rows(dirs["barcodes"] / "barcodes.tsv")}
    assert {(s, src) for s, src, _ in got} == {
        ("Turdus merula", "ncbi"),
        ("Erithacus rubecula", "ncbi"),
        *((s, "bold") for s in BOLD_SPECIES),
    }
    assert ("Erithacus rubecula", "ncbi", 1551) in got  # the whole COX1 gene cut out of the mitogenome
    assert ("Parus major", "bold", 640) in got  # the aligned BOLD row, its gaps removed
    log = {(r["taxon"], r["source"]): r for r in rows(dirs["barcodes"] / "log.tsv")}
    assert len(log) == 12 and not any(r["error"] for r in log.values())
    assert log["Turdus merula", "bold"]["filtered"] == "name not in BOLD's taxonomy=1"
    assert log["Parus major", "bold"]["filtered"] == "marker CYTB=1; too short=1"
    fasta = (dirs["barcodes"] / "barcodes.fasta").read_text()
    assert fasta.count(">") == len(rows(dirs["barcodes"] / "barcodes.tsv")) == 10


def test_images_folder_with_a_licence_manifest(run):
    """Free photos only, each with licence, author and source; all resized to 24×24 RGB."""
    from PIL import Image

    _, dirs = run
    manifest = rows(dirs["photos"] / "images.tsv")
    assert {r["species"] for r in manifest} == {
        "Turdus merula",
        "Erithacus rubecula",
        "Parus major",
        "Cyanistes caeruleus",
        "Fringilla coelebs",
    }  # the sparrow's only photo is CC BY-NC
    assert {r["license"] for r in manifest} <= {"cc0", "cc-by", "cc-by-sa"}
    assert all(r["author"] and r["source_url"].startswith("http") and r["sha256"] for r in manifest)
    for r in manifest:
        with Image.open(dirs["photos"] / "images" / r["file"]) as im:
            assert (im.size, im.mode) == ((24, 24), "RGB"), r["file"]
    log = {r["taxon"]: r for r in rows(dirs["photos"] / "log.tsv")}
    assert (
        log["Passer domesticus"]["kept"] == "0"
        and "licence cc-by-nc=1" in log["Passer domesticus"]["filtered"]
    )


def test_dataset_is_species_disjoint_and_every_record_has_photos(run):
    """Five species with photos (the sparrow's barcodes are dropped), one held out, no overlap."""
    _, dirs = run
    ds = load_dataset(dirs["dataset"])
    assert len(ds.species()) == 5 and "Passer domesticus" not in ds.species()
    train, held = set(ds.species("train")), set(ds.species("heldout"))
    assert len(held) == 1 and not train & held
    assert all(r.images and not r.traits for r in ds.records())
    assert (dirs["dataset"] / "config.json").is_file()


def test_dataset_build_names_the_context_train_lm_needs(run):
    """The build's length hint equals what the DNA tokenizer really makes of the longest record."""
    from phenogen.dna.tokenizer import KmerTokenizer

    _, dirs = run
    said = (dirs["dataset"].parent / "build.out").read_text()
    need = max(
        len(KmerTokenizer(k=6).encode_dna(r.sequence)) for r in load_dataset(dirs["dataset"]).records()
    )
    assert f"barcodes 640-1551 bp: train-lm (k=6) needs lm.n_positions >= {need} " in said
    assert (
        "1 species left out for want of photos (build.require_images=false keeps them): Passer domesticus"
        in said
    )


def test_train_lm_and_train_image_write_a_pipeline_that_loads_and_paints(run):
    """The LM's model, the image run's pipeline (gpt2 condition = that LM) load; a held-out barcode is painted."""
    import torch

    from phenogen.diffusion.pipeline import DNAToImagePipeline

    _, dirs = run
    assert (dirs["lm"] / "model" / "config.json").is_file()
    losses = json.loads((dirs["image"] / "losses.json").read_text())
    assert len(losses["train"]) == 2
    pipe = DNAToImagePipeline.from_pretrained(dirs["image"] / "pipeline", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    held = load_dataset(dirs["dataset"]).records("heldout")[0]
    out = pipe([held.sequence], num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (16, 16)

"""The BIOSCAN-5M importer streams every row into Parquet row groups: same dataset, bounded memory."""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
from collections import Counter

import pytest
from fixture_server import FIXTURES

from phenogen.data.bioscan import METADATA_FILE, import_bioscan5m
from phenogen.data.columnar import ParquetManifest
from phenogen.data.config import BuildConfig, ImportConfig

N_EXTRA = 1500  # synthetic rows appended to the 8-row fixture (no images: require_image = false)


@pytest.fixture(scope="module")
def bioscan(tmp_path_factory):
    """The BIOSCAN-5M fixture layout with N_EXTRA more metadata rows in the official columns."""
    root = tmp_path_factory.mktemp("bioscan") / "b"
    shutil.copytree(FIXTURES / "bioscan", root)
    meta = root / METADATA_FILE
    header = meta.read_text().splitlines()[0].split(",")
    rng = random.Random(24)
    pool = ["".join(rng.choice("ACGT") for _ in range(700)) for _ in range(16)]  # cut to 660 bp
    with open(meta, "a") as fh:
        for i in range(N_EXTRA):
            genus = f"Genus{i % 7}"
            row = dict.fromkeys(header, "")
            row.update(
                processid=f"SYN{i:06d}-24",
                phylum="Arthropoda",
                **{"class": "Insecta", "order": ("Diptera", "Hymenoptera")[i % 2]},
                family=f"Fam{i % 3}",
                genus=genus,
                species="" if i % 13 == 0 else f"{genus} sp{i % 11}",
                dna_bin=f"BOLD:AAA{i % 50:04d}",
                dna_barcode=pool[i % 16],
                split=("train", "train", "train", "val", "test", "pretrain")[i % 6],
                chunk=format(i % 16, "x"),
            )
            fh.write(",".join(row[c] for c in header) + "\n")
    return root


def _import(root, out, split_from="bioscan", **icfg):
    cfg = ImportConfig(require_image=False, **icfg)
    return import_bioscan5m(root, out, cfg, BuildConfig(heldout_fraction=0.3), split_from=split_from)


def test_streaming_parquet_import_equals_the_in_memory_import(bioscan, tmp_path):
    """Every usable row is kept (no cap); Parquet in row groups of 64 gives the TSV import's records."""
    tsv, s_tsv = _import(bioscan, tmp_path / "tsv", format="tsv")
    pq_ds, s_pq = _import(bioscan, tmp_path / "pq", format="parquet", row_group_size=64)
    assert (tsv.format, pq_ds.format) == ("tsv", "parquet")
    assert pq_ds.records() == tsv.records()
    assert (s_pq.rows, s_pq.records, s_pq.skipped) == (s_tsv.rows, s_tsv.records, s_tsv.skipped)
    usable = s_pq.rows - sum(s_pq.skipped.values())
    assert s_pq.records == usable == len(pq_ds) > 1000 and set(s_pq.skipped) == {"no species label"}
    assert s_pq.peak_held == 64 and s_tsv.peak_held == s_tsv.records  # one row group vs everything
    assert ParquetManifest(pq_ds.manifest, []).num_row_groups == math.ceil(len(pq_ds) / 64)
    assert pq_ds.records("train")[0].images == ("images/cropped_256/train/a/BIOUG001-22.jpg",)
    assert pq_ds.verify_images() == 4  # the fixture's photos were copied as the rows streamed past
    assert (tmp_path / "pq" / "sequences.fasta").read_text() == (
        tmp_path / "tsv" / "sequences.fasta"
    ).read_text()


def test_species_split_streams_twice_with_the_same_result(bioscan, tmp_path):
    """split_from=species: a staging manifest rewritten with the splits — records equal the TSV import's."""
    tsv, _ = _import(bioscan, tmp_path / "tsv", "species", format="tsv")
    pq_ds, summary = _import(bioscan, tmp_path / "pq", "species", format="parquet", row_group_size=50)
    assert pq_ds.records() == tsv.records() and summary.peak_held == 50
    assert not set(pq_ds.species("train")) & set(pq_ds.species("heldout")) and pq_ds.count("heldout")
    assert not (tmp_path / "pq" / ".stage").exists()


def test_auto_format_and_per_species_cap(bioscan, tmp_path):
    """format=auto turns to Parquet past parquet_above; max_per_species still caps each species."""
    ds, summary = _import(bioscan, tmp_path / "ds", parquet_above=200, row_group_size=40, max_per_species=10)
    assert ds.format == "parquet" and summary.peak_held == 201  # the records held before the switch
    per_species = Counter(r.species for r in ds.iter_records())
    assert max(per_species.values()) == 10 and summary.skipped["over max_per_species"] > 0
    assert ds.count(taxon="Hymenoptera") == sum(1 for r in ds.iter_records() if "Hymenoptera" in r.taxonomy)
    small, _ = _import(bioscan, tmp_path / "small", max_records=100)
    assert small.format == "tsv" and len(small) == 100


def test_import_command_writes_parquet_and_records_the_format(bioscan, tmp_path):
    from phenogen.cli import add_common_arguments
    from phenogen.data import command_import

    parser = argparse.ArgumentParser()
    command_import.add_arguments(parser)
    add_common_arguments(parser)
    argv = [
        "bioscan5m",
        "--root",
        str(bioscan),
        "--out",
        str(tmp_path / "ds"),
        "--set",
        'import.format="parquet"',
    ]
    argv += ["--set", "import.require_image=false", "--set", "import.row_group_size=100"]
    assert command_import.run(parser.parse_args(argv)) == 0
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["manifest"] == "manifest.parquet" and sum(info["counts"].values()) > 1000
    saved = json.loads((tmp_path / "ds" / "config.json").read_text())
    assert saved["import"]["format"] == "parquet"

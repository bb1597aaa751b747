"""import folder / bioscan5m / bold into the dataset format, from files on disk."""

from __future__ import annotations

import argparse
import shutil

import pytest
from fixture_server import FIXTURES

from phenogen.data.bioscan import import_bioscan5m, iter_metadata
from phenogen.data.config import BuildConfig, FetchConfig, ImportConfig
from phenogen.data.dataset import load_dataset
from phenogen.data.folder import import_folder
from phenogen.errors import InputError

BIOSCAN = FIXTURES / "bioscan"
SEQ = "ACGTTGCAAC" * 66


def run_import(*argv: str) -> int:
    from phenogen.cli import add_common_arguments
    from phenogen.data import command_import

    parser = argparse.ArgumentParser()
    command_import.add_arguments(parser)
    add_common_arguments(parser)
    return command_import.run(parser.parse_args(list(argv)))


@pytest.fixture
def folder(tmp_path):
    """A user's folder: FASTA, sample CSV, photos in a subfolder."""
    (tmp_path / "photos").mkdir()
    for name in ("photo_a.jpg", "photo_b.jpg", "photo_c.jpg"):
        shutil.copy(FIXTURES / name, tmp_path / "photos" / name)
    (tmp_path / "seqs.fasta").write_text(
        f">r1 Turdus merula\n{SEQ}\n>r2\n{SEQ[:-1]}Y\n>r3\n{SEQ}\n>r4 not in the csv\n{SEQ}\n"
    )
    (tmp_path / "samples.csv").write_text(
        "record_id,species,images,taxonomy\n"
        "r1,Turdus merula,photos/photo_a.jpg;photos/photo_b.jpg,Aves;Passeriformes;Turdidae\n"
        "r2,Turdus merula,photos/photo_c.jpg,Aves;Passeriformes;Turdidae\n"
        "r2,Turdus merula,photos/photo_a.jpg,\n"
        "r3,Parus major,photos/photo_b.jpg,Aves;Passeriformes;Paridae\n"
    )
    return tmp_path


def test_import_folder_copies_images_masks_and_splits_by_species(folder):
    """Repeated rows merge images, ambiguity codes are masked, splits are species-disjoint."""
    ds, summary = import_folder(
        folder / "seqs.fasta",
        folder / "samples.csv",
        folder / "ds",
        ImportConfig(),
        BuildConfig(heldout_fraction=0.5),
    )
    recs = {r.record_id: r for r in ds.records()}
    assert sorted(recs) == ["r1", "r2", "r3"] and summary.skipped == {"not in CSV": 1}
    assert len(recs["r2"].images) == 2 and recs["r2"].sequence.endswith("N")
    assert recs["r1"].taxonomy == ("Aves", "Passeriformes", "Turdidae")
    assert all((folder / "ds" / p).is_file() for r in recs.values() for p in r.images)
    assert recs["r1"].split == recs["r2"].split != recs["r3"].split


def test_import_folder_names_the_row_of_a_missing_image(folder):
    """A CSV naming a photo that does not exist fails with the file and row."""
    with open(folder / "samples.csv", "a") as fh:
        fh.write("r4,Parus major,photos/nope.jpg,\n")
    with pytest.raises(
        InputError, match=r"samples.csv, row 6, record r4, field images: image photos/nope.jpg does not exist"
    ):
        import_folder(
            folder / "seqs.fasta", folder / "samples.csv", folder / "ds", ImportConfig(), BuildConfig()
        )


def test_import_folder_refuses_csv_records_without_sequence(folder):
    """A record in the CSV with no FASTA sequence is an error, not a silent skip."""
    with open(folder / "samples.csv", "a") as fh:
        fh.write("r9,Parus major,photos/photo_a.jpg,\n")
    with pytest.raises(InputError, match="1 record.*no sequence.*r9"):
        import_folder(
            folder / "seqs.fasta", folder / "samples.csv", folder / "ds", ImportConfig(), BuildConfig()
        )


def test_bioscan5m_fixture_imports_with_official_layout(tmp_path):
    """Partitions map train->train, val->heldout; unlabeled and imageless rows are skipped and counted."""
    ds, summary = import_bioscan5m(BIOSCAN, tmp_path / "ds", ImportConfig(), BuildConfig())
    recs = {r.record_id: r for r in ds.records()}
    assert sorted(recs) == ["BIOUG001-22", "BIOUG002-22", "BIOUG003-22", "BIOUG008-22"]
    assert summary.rows == 6  # pretrain and key_unseen rows are not read by default
    assert summary.skipped == {"no species label": 1, "image missing": 1}
    assert recs["BIOUG003-22"].split == "heldout" and recs["BIOUG001-22"].split == "train"
    assert len(recs["BIOUG008-22"].sequence) == 660  # cut like load_bioscan5m_metadata
    assert not recs["BIOUG002-22"].sequence.endswith("N")
    assert recs["BIOUG001-22"].images == ("images/cropped_256/train/a/BIOUG001-22.jpg",)
    assert recs["BIOUG001-22"].taxonomy == ("Arthropoda", "Insecta", "Diptera", "Culicidae", "Aedes")
    assert load_dataset(tmp_path / "ds").info["source"] == "bioscan5m"


def test_bioscan5m_species_split_and_symlinks(tmp_path):
    """--split-from species gives a species-disjoint split; image_mode symlink links instead of copying."""
    icfg = ImportConfig(image_mode="symlink", bioscan_splits=["train", "val", "test", "key_unseen"])
    ds, _ = import_bioscan5m(
        BIOSCAN, tmp_path / "ds", icfg, BuildConfig(heldout_fraction=0.5), split_from="species"
    )
    assert not set(ds.species("train")) & set(ds.species("heldout"))
    assert (tmp_path / "ds" / ds.records()[0].images[0]).is_symlink()


def test_bioscan5m_streams_and_stops_at_max_records(tmp_path):
    """Rows are read lazily; only max_records are held, the rest counted."""
    root = tmp_path / "b"
    shutil.copytree(BIOSCAN, root)
    meta = root / "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
    lines = meta.read_text().splitlines()
    row = lines[1].split(",")
    with open(meta, "a") as fh:
        for i in range(2000):
            fh.write(",".join([f"SYN{i:06d}", *row[1:20], "train", "", "a"]) + "\n")
    rows = iter_metadata(meta, {"train"})
    assert next(rows)["processid"] == "BIOUG001-22"  # a generator: nothing read ahead
    ds, summary = import_bioscan5m(
        root, tmp_path / "ds", ImportConfig(max_records=50, require_image=False), BuildConfig()
    )
    assert len(ds) == 50 and summary.skipped["over max_records"] == summary.rows - 50 - 1  # 1 without species


def test_bioscan5m_missing_metadata_says_where_it_looked(tmp_path):
    with pytest.raises(InputError, match="BIOSCAN_5M_Insect_Dataset_metadata.csv"):
        import_bioscan5m(tmp_path, tmp_path / "ds", ImportConfig(), BuildConfig())


def test_import_bold_tsv_command_v4_and_v5_columns(tmp_path):
    """A BOLD export (v4 columns, and v5 data-package columns) becomes a dataset through the command."""
    rc = run_import(
        "bold",
        "--tsv",
        str(FIXTURES / "bold_combined_parus.tsv"),
        "--out",
        str(tmp_path / "v4"),
        "--set",
        "build.require_images=false",
        "--set",
        "build.heldout_fraction=0.0",
    )
    assert rc == 0
    ds = load_dataset(tmp_path / "v4")
    assert [r.record_id for r in ds.records()] == ["BROM123-09", "BROM124-09"]
    assert (tmp_path / "v4" / "config.json").is_file()
    v5 = tmp_path / "v5.tsv"
    v5.write_text(
        f"processid\tspecies\torder\tmarker_code\tnuc\tinsdc_acs\nX1\tParus major\tPasseriformes\tCOI-5P\t{SEQ}\tKX1\n"
    )
    from phenogen.data.bold import read_bold_file

    barcodes, _ = read_bold_file(v5, FetchConfig(min_length=100))
    assert [(b.species, b.accession, b.taxonomy) for b in barcodes] == [
        ("Parus major", "KX1", ("Passeriformes",))
    ]


def test_import_folder_command_needs_its_files(tmp_path):
    with pytest.raises(InputError, match="needs --fasta and --csv"):
        run_import("folder", "--out", str(tmp_path / "x"))

"""The dataset format: write, read back, and specific errors for malformed directories."""

import json

import pytest

from phenogen.data.dataset import Record, load_dataset, write_dataset
from phenogen.errors import DataError


def _records(tmp_path):
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    return [
        Record(
            "a1",
            "sp a",
            "a_1",
            "train",
            "living",
            "ACGTACGT",
            ("images/a.png",),
            ("Aves", "c1"),
            {"size": 0.5},
        ),
        Record("b1", "sp b", "b_1", "heldout", "living", "ACGTNCGT", (), ("Aves", "c2"), {"size": -1.0}),
        Record("n1", "n1", "n1", "ancestor", "internal", "ACGTACGA", (), (), {"size": 0.1}),
    ]


def test_round_trip(tmp_path):
    """Records, traits, taxonomy and info survive a write/read cycle; FASTA holds model splits only."""
    ds = write_dataset(
        tmp_path, _records(tmp_path), {"source": "test", "trait_names": ["size"]}, "(a1,b1)n1;"
    )
    again = load_dataset(tmp_path)
    assert again.records() == ds.records()
    assert [r.record_id for r in again.records(("train", "heldout"))] == ["a1", "b1"]
    assert again.records("ancestor")[0].traits == {"size": 0.1}
    assert again.records("train")[0].taxonomy == ("Aves", "c1")
    assert again.info["counts"] == {"train": 1, "heldout": 1, "extinct": 0, "ancestor": 1}
    fasta = (tmp_path / "sequences.fasta").read_text()
    assert ">a1" in fasta and ">b1" in fasta and ">n1" not in fasta
    assert again.tree_path is not None and again.species("train") == ["sp a"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows[1].__setitem__(3, "test"), "split 'test' is not one of"),
        (lambda rows: rows[1].__setitem__(5, "ACGU"), "'U' at position 4"),
        (lambda rows: rows[2].__setitem__(0, "a1"), "duplicate record_id 'a1'"),
        (
            lambda rows: rows[1].__setitem__(6, "images/missing.png"),
            "image images/missing.png does not exist",
        ),
        (lambda rows: rows[1].__setitem__(8, "big"), "trait size = 'big' is not a number"),
        (lambda rows: rows[1].pop(), "fields, expected"),
    ],
)
def test_corrupt_manifest_errors_name_row_and_field(tmp_path, mutate, message):
    write_dataset(tmp_path, _records(tmp_path), {"source": "test"})
    path = tmp_path / "manifest.tsv"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    mutate(rows)
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    with pytest.raises(DataError, match="manifest.tsv, row") as info:
        load_dataset(tmp_path)
    assert message in str(info.value)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a dataset directory"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="missing dataset.json"):
        load_dataset(tmp_path)
    write_dataset(tmp_path, _records(tmp_path), {"source": "test"})
    info = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(DataError, match="newer than this phenogen reads"):
        load_dataset(tmp_path)


def test_write_rejects_bad_records(tmp_path):
    rec = Record("x y", "s", "i", "train", "living", "ACGT")
    with pytest.raises(DataError, match="without spaces"):
        write_dataset(tmp_path, [rec], {})
    with pytest.raises(DataError, match="unknown split"):
        write_dataset(tmp_path, _records(tmp_path), {}).records("validation")

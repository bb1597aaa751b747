"""The Parquet manifest: same records as the TSV, filters that read only what they need, clear errors."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phenogen.data.columnar import DuplicateFinder, ParquetManifest, manifest_schema, records_to_table
from phenogen.data.dataset import (
    DatasetWriter,
    Record,
    convert_dataset,
    export_tsv,
    load_dataset,
    write_dataset,
)
from phenogen.errors import DataError, PhenogenError

ORDERS = ("Diptera", "Hymenoptera", "Coleoptera")


def _records(root, n=23):
    """``n`` records over three orders and all four splits, some with images and traits."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "images" / "a.png").write_bytes(b"x")
    recs = []
    for i in range(n):
        order = ORDERS[i % 3]
        split = ("train", "train", "heldout", "extinct", "ancestor")[i % 5]
        recs.append(
            Record(
                f"r{i:03d}",
                f"{order} sp{i % 4}",
                f"ind_{i}",
                split,
                {"extinct": "extinct", "ancestor": "internal"}.get(split, "living"),
                "ACGTN-"[i % 5] + "ACGT" * 5,
                ("images/a.png",) * (i % 2),
                ("Insecta", order, f"Fam{i % 5}"),
                {"size": i / 7, **({"hue": -1.5 * i} if i % 3 else {})},
            )
        )
    return recs


INFO = {"source": "test", "trait_names": ["size", "hue"]}


def test_round_trip_tsv_parquet_tsv(tmp_path):
    """TSV -> Parquet -> TSV in place keeps every record, and the TSV comes back byte for byte."""
    tsv = write_dataset(tmp_path, _records(tmp_path), INFO, format="tsv")
    original = (tmp_path / "manifest.tsv").read_bytes()
    pq_ds = convert_dataset(tmp_path, "parquet", row_group_size=4)
    assert pq_ds.format == "parquet" and not (tmp_path / "manifest.tsv").exists()
    assert json.loads((tmp_path / "dataset.json").read_text())["manifest"] == "manifest.parquet"
    assert pq_ds.records() == tsv.records() and len(pq_ds) == len(tsv) == 23
    assert pq_ds.counts() == tsv.counts() == tsv.info["counts"]
    assert export_tsv(pq_ds, tmp_path / "export.tsv") == 23
    assert (tmp_path / "export.tsv").read_bytes() == original
    back = convert_dataset(tmp_path, "tsv")
    assert back.format == "tsv" and (tmp_path / "manifest.tsv").read_bytes() == original
    assert not (tmp_path / "manifest.parquet").exists() and back.records() == tsv.records()


def test_write_parquet_directly_matches_tsv(tmp_path):
    """write_dataset(format=parquet) and (format=tsv) give equal records, FASTA and counts."""
    a = write_dataset(tmp_path / "a", _records(tmp_path / "a"), INFO, "(x,y);", format="tsv")
    b = write_dataset(tmp_path / "b", _records(tmp_path / "b"), INFO, "(x,y);", format="parquet")
    assert a.records() == b.records() and a.info["counts"] == b.info["counts"]
    assert (a.root / "sequences.fasta").read_text() == (b.root / "sequences.fasta").read_text()
    assert b.tree_path is not None and b.info["version"] == 2 and a.info["version"] == 1


FILTERS = [  # (split, taxon)
    ("train", None),
    (("heldout", "extinct"), None),
    (None, "Diptera"),
    (None, ["Fam1", "Coleoptera sp2"]),
    ("train", "Hymenoptera"),
    ("ancestor", "Fam4"),
    ("heldout", "no such taxon"),
]


@pytest.mark.parametrize(("split", "taxon"), FILTERS)
def test_filters_read_the_right_rows(tmp_path, split, taxon):
    """records/count/species/iter_records filtered by split and taxon agree with a filter in memory."""
    recs = _records(tmp_path, n=40)
    ds = write_dataset(tmp_path, recs, INFO, format="parquet", row_group_size=6)
    splits = None if split is None else ({split} if isinstance(split, str) else set(split))
    taxa = None if taxon is None else ({taxon} if isinstance(taxon, str) else set(taxon))
    want = [
        r
        for r in recs
        if (splits is None or r.split in splits) and (taxa is None or taxa & {r.species, *r.taxonomy})
    ]
    assert ds.records(split, taxon) == want
    assert list(ds.iter_records(split, taxon)) == want
    assert ds.count(split, taxon) == len(want)
    assert ds.species(split, taxon) == list(dict.fromkeys(r.species for r in want))
    tsv = write_dataset(tmp_path / "tsv", _records(tmp_path / "tsv", n=40), INFO, format="tsv")
    assert tsv.records(split, taxon) == want and tsv.count(split, taxon) == len(want)


def test_split_filter_skips_row_groups_and_columns(tmp_path):
    """A manifest sorted by split: one split's records come from its row groups' record columns only."""
    recs = sorted(_records(tmp_path, n=40), key=lambda r: r.split)
    ds = write_dataset(tmp_path, recs, INFO, format="parquet", row_group_size=5)
    table = ParquetManifest(ds.manifest, ds.trait_names)
    assert table.num_row_groups == 8
    held = [rec for _, rec in table.iter_records(("heldout",))]
    assert held == [r for r in recs if r.split == "heldout"] and len(held) == 8
    assert table.groups_read == 2  # the other six groups: only their split column was read
    table.groups_read = 0
    assert sum(len(rows) for rows, _ in table.select(None, frozenset({"Diptera"}), columns=[])) == 14
    assert table.groups_read == 0  # counting reads the filter columns only


def test_shards_are_disjoint_balanced_and_cover_everything(tmp_path):
    recs = _records(tmp_path, n=40)
    for fmt in ("tsv", "parquet"):
        ds = write_dataset(tmp_path / fmt, _records(tmp_path / fmt, n=40), INFO, format=fmt, row_group_size=7)
        shards = [[r.record_id for r in ds.iter_records("train", shard=(k, 3))] for k in range(3)]
        ids = [i for s in shards for i in s]
        assert sorted(ids) == sorted(r.record_id for r in recs if r.split == "train") and len(
            set(ids)
        ) == len(ids)
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        next(ds.iter_records(shard=(3, 3)))


def test_writer_holds_one_row_group_and_auto_switches(tmp_path):
    """DatasetWriter never holds more than a row group (parquet), and auto turns to Parquet past the threshold."""
    with DatasetWriter(tmp_path / "p", INFO, format="parquet", row_group_size=4) as w:
        for rec in _records(tmp_path / "p", n=50):
            w.add(rec)
        ds = w.close()
    assert w.peak_held == 4 and ParquetManifest(ds.manifest, ds.trait_names).num_row_groups == 13
    small = write_dataset(tmp_path / "s", _records(tmp_path / "s", n=5), INFO, parquet_above=5)
    big = write_dataset(tmp_path / "b", _records(tmp_path / "b", n=6), INFO, parquet_above=5)
    assert (small.format, big.format) == ("tsv", "parquet")


def test_duplicate_ids_across_row_groups_are_refused_and_the_old_dataset_kept(tmp_path):
    """A repeated record_id in another row group is one DataError naming both rows; the earlier dataset stays."""
    recs = _records(tmp_path, n=20)
    write_dataset(tmp_path, recs, INFO, format="tsv")
    dup = [*recs, Record(recs[2].record_id, "x", "y", "train", "living", "ACGT")]
    with pytest.raises(
        DataError, match=r"manifest.parquet, row 21: duplicate record_id 'r002' \(first at row 3\)"
    ):
        write_dataset(tmp_path, dup, INFO, format="parquet", row_group_size=4)
    again = load_dataset(tmp_path)
    assert again.format == "tsv" and again.records() == recs
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_duplicate_finder_confirms_candidates_exactly():
    """Filter false positives are dropped on the second pass; a real repeat is found with its rows."""
    finder = DuplicateFinder(log2_bits=6)  # a tiny filter: nearly every id becomes a candidate
    ids = [f"id{i}" for i in range(300)]
    finder.add(ids[:150])
    finder.add(ids[150:])
    assert len(finder.candidates) > 100
    batches = [(1, pa.chunked_array([ids[:150]])), (151, pa.chunked_array([ids[150:]]))]
    assert finder.first_duplicate(batches) is None
    finder.add(["id7"])
    assert finder.first_duplicate([*batches, (301, pa.chunked_array([["id7"]]))]) == ("id7", 8, 301)


def _parquet_dataset(tmp_path, table):
    """A Parquet dataset whose manifest is ``table`` as given (no phenogen writer in between)."""
    pq.write_table(table, tmp_path / "manifest.parquet", row_group_size=4)
    info = {
        "format": "phenogen-dataset",
        "version": 2,
        "manifest": "manifest.parquet",
        "trait_names": ["size"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    return tmp_path


def _table(tmp_path, **changes):
    recs = [
        Record(f"r{i}", "sp", f"i{i}", "train", "living", "ACGT", (), ("A",), {"size": 1.0})
        for i in range(10)
    ]
    table = records_to_table(recs, ["size"])
    for name, (row, value) in changes.items():
        col = table[name].to_pylist()
        col[row] = value
        i = table.schema.get_field_index(name)
        table = table.set_column(
            i, pa.field(name, table.schema.field(name).type), pa.array(col, table[name].type)
        )
    return table


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"split": (5, "test")}, r"manifest.parquet, row 6: record 'r5': split 'test' is not one of"),
        ({"sequence": (8, "ACGU")}, r"manifest.parquet, row 9: record 'r8': sequence has 'U' at position 4"),
        ({"trait:size": (2, float("nan"))}, r"manifest.parquet, row 3: record 'r2': trait size = nan is not a finite"),
        ({"species": (3, None)}, r"manifest.parquet, row 4: record 'r3': field species is null"),
        ({"images": (7, ["../up.png"])}, r"manifest.parquet, row 8: record 'r7': field images: image path \.\./up\.png climbs"),
        ({"images": (1, ["images/none.png"])}, r"manifest.parquet, row 2: record 'r1': field images: image images/none.png does not exist"),
        ({"taxonomy": (9, ["A", None])}, r"manifest.parquet, row 10: record 'r9': field taxonomy is null"),
        ({"record_id": (6, "r1")}, r"manifest.parquet, row 7: duplicate record_id 'r1' \(first at row 2\)"),
    ],
)  # fmt: skip
def test_a_bad_field_is_one_error_naming_file_row_and_field(tmp_path, changes, message):
    root = _parquet_dataset(tmp_path, _table(tmp_path, **changes))
    ds = load_dataset(root)  # opening reads the schema only
    with pytest.raises(DataError, match=message):
        ds.records()
    with pytest.raises(DataError, match=message):
        load_dataset(root).validate()


def test_schema_and_counts_are_checked_when_opened(tmp_path):
    table = _table(tmp_path)
    root = _parquet_dataset(tmp_path, table.drop_columns(["node_kind"]))
    with pytest.raises(DataError, match=r"manifest.parquet: missing column\(s\) node_kind"):
        load_dataset(root)
    wrong = table.set_column(5, "sequence", pa.array(list(range(10))))
    with pytest.raises(DataError, match="column sequence has type int64, expected string"):
        load_dataset(_parquet_dataset(tmp_path, wrong))
    root = _parquet_dataset(tmp_path, table)
    info = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**info, "counts": {"train": 11}}))
    with pytest.raises(DataError, match="field 'counts' adds up to 11 records, manifest.parquet holds 10"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({**info, "manifest": "../x.parquet"}))
    with pytest.raises(DataError, match="field 'manifest' is '../x.parquet'"):
        load_dataset(root)


def test_a_damaged_parquet_file_is_one_data_error(tmp_path):
    """Truncated, overwritten or bit-flipped manifests: a DataError naming manifest.parquet, never another exception."""
    ds = write_dataset(tmp_path, _records(tmp_path, n=60), INFO, format="parquet", row_group_size=8)
    good = ds.manifest.read_bytes()
    rng = random.Random(24)
    cases = [good[: len(good) // 2], good[:-9], b"PAR1" + bytes(100) + b"PAR1", b""]
    for _ in range(40):
        buf = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        cases.append(bytes(buf))
    errors = 0
    for data in cases:
        ds.manifest.write_bytes(data)
        try:
            load_dataset(tmp_path).validate()
        except DataError as exc:
            assert "manifest.parquet" in str(exc) and "\n" not in str(exc)
            errors += 1
        except PhenogenError as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}")
    assert errors >= 4  # at least the truncated and zeroed files


def test_schema_has_the_documented_types():
    schema = manifest_schema(["size"])
    assert [str(schema.field(c).type) for c in ("record_id", "images", "trait:size")] == [
        "string",
        "list<item: string>",
        "double",
    ]

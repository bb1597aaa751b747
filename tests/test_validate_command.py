"""`phenogen validate` through the real CLI entry point: summaries, JSON, datasets, one-line errors."""

import json
from pathlib import Path

import pytest

from phenogen.cli import main
from phenogen.data.dataset import Record, write_dataset

USNM = Path(__file__).resolve().parents[1] / "data" / "usnm_birds_coi" / "unaligned_schindel2017.fasta"
SEQ = "ACGTACGTTAGCCTAGGATC" * 3


def _one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 and exactly one stderr line without a traceback; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("phenogen validate: error: ")
    return lines[0]


def test_usnm_mask_summary_and_json(tmp_path, capsys):
    """The real barcodes validate under 'mask': counts, length range and ambiguous records, plus JSON."""
    out = tmp_path / "report" / "validate.json"
    assert main(["validate", str(USNM), "--policy", "mask", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "records   2,980 (policy mask" in stdout
    assert "507–658 bp, median 652" in stdout
    assert "18 records, 22 bases masked to N" in stdout and "JQ176464 (1)" in stdout
    assert len(stdout.splitlines()) <= 24  # one screen
    facts = json.loads(out.read_text())
    assert facts["validate"] == {"policy": "mask", "allow_gaps": False, "max_listed": 8}
    assert facts["summary"]["n_records"] == 2980 and facts["masked"]["JQ175014"] == 3


def test_usnm_reject_is_one_line_naming_the_record(capsys):
    """Under the default 'reject' policy the real file fails on its first ambiguous base."""
    line = _one_line_error(capsys, ["validate", str(USNM)])
    assert "record 'JQ176464'" in line and "'M' at position 370" in line


def test_drop_lists_dropped_records_from_config(tmp_path, capsys):
    """--set overrides the [validate] section; dropped records are listed up to max_listed."""
    argv = ["validate", str(USNM), "--set", "validate.policy=drop", "--set", "validate.max_listed=2"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "records   2,962 (policy drop" in stdout and "dropped   18 records" in stdout
    assert "… and 16 more" in stdout


def test_allow_gaps_flag(tmp_path, capsys):
    """Aligned input fails without --allow-gaps and passes with it."""
    path = tmp_path / "aln.fasta"
    path.write_text(f">a\n{SEQ}--\n>b\n--{SEQ}\n")
    assert "--allow-gaps" in _one_line_error(capsys, ["validate", str(path)])
    assert main(["validate", str(path), "--allow-gaps"]) == 0
    assert "gaps kept" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"\x00\x01\x02binary", "binary file"),
        (b">p1\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF\n", "looks like a protein sequence"),
        (b"just some notes\n", "expected a '>' header"),
        (f">a\n{SEQ}\n>a\n{SEQ}\n".encode(), "duplicate id 'a' on lines 1 and 3"),
    ],
)
def test_garbage_is_one_line_exit_2(tmp_path, capsys, content, message):
    """Bad files give exit code 2 and one readable line naming the file."""
    path = tmp_path / "in.fasta"
    if content is not None:
        path.write_bytes(content)
    line = _one_line_error(capsys, ["validate", str(path)])
    assert str(path) in line and message in line


def test_bad_config_value_is_one_line(capsys):
    line = _one_line_error(capsys, ["validate", str(USNM), "--set", "validate.policy=fix"])
    assert "'fix' is not one of" in line


@pytest.mark.parametrize("manifest", ["tsv", "parquet"])
def test_dataset_directory_counts_per_split(manifest, tmp_path, capsys):
    """A dataset directory is validated with load_dataset and its records are counted per split, a
    Parquet manifest a row group at a time."""
    recs = [
        Record("a1", "sp_a", "a_1", "train", "living", SEQ),
        Record("a2", "sp_a", "a_2", "train", "living", SEQ),
        Record("b1", "sp_b", "b_1", "heldout", "living", SEQ),
        Record("x1", "sp_x", "x_1", "extinct", "extinct", SEQ),
    ]
    write_dataset(
        tmp_path / "ds", recs, {"source": "test"}, "((a1,a2),b1,x1);", format=manifest, row_group_size=2
    )
    assert (tmp_path / "ds" / f"manifest.{manifest}").is_file()
    assert main(["validate", str(tmp_path / "ds")]) == 0
    stdout = capsys.readouterr().out
    assert "train 2, heldout 1, extinct 1, ancestor 0 (total 4)" in stdout
    assert "species   3 (1 in train)" in stdout and "tree      tree.nwk" in stdout


def test_broken_dataset_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a dataset")
    assert "missing dataset.json" in _one_line_error(capsys, ["validate", str(tmp_path)])

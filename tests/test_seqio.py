"""FASTA reading, validation and writing: headers, policies, garbage inputs, the real USNM bird barcodes."""

import gzip
import logging
from pathlib import Path

import pytest

from phenogen.dna.seqio import (
    FastaRecord,
    clean_sequence,
    parse_header,
    read_fasta,
    summarize,
    write_fasta,
)
from phenogen.errors import ConfigError, InputError, SequenceError

USNM = Path(__file__).resolve().parents[1] / "data" / "usnm_birds_coi" / "unaligned_schindel2017.fasta"
SEQ = "ACGTACGTTAGCCTAGGATC" * 3  # 60 clean bases


def _write(tmp_path: Path, text: str | bytes, name: str = "in.fasta") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# ------------------------------------------------------------------ headers
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("seq1", ("seq1", None, None, None)),
        ("seq1 some free text", ("seq1", None, None, None)),
        (
            "MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene, partial cds; mitochondrial",
            ("MN123456.1", "Turdus merula", "COI", "MN123456.1"),
        ),
        (
            "KJ013278.1 Parus major voucher USNM 12345 cytochrome c oxidase subunit 1 (COX1) gene",
            ("KJ013278.1", "Parus major", "COI", "KJ013278.1"),
        ),
        ("KJ013278", ("KJ013278", None, None, "KJ013278")),
        ("ABCD001-10|Turdus merula|COI-5P|MN123456", ("ABCD001-10", "Turdus merula", "COI-5P", "MN123456")),
        ("ABCD002-10|Turdus merula|COI-5P|", ("ABCD002-10", "Turdus merula", "COI-5P", None)),
        (
            "gi|12345|gb|MN123456.1| Turdus merula COI gene",
            ("gi|12345|gb|MN123456.1|", "Turdus merula", "COI", "MN123456.1"),
        ),
        ("a1 species=sp_012 split=train", ("a1", "sp_012", None, None)),
        ("r7\tspecies=sp_3 marker=COI", ("r7", "sp_3", "COI", None)),
    ],
)
def test_parse_header(header, expected):
    """Plain, GenBank, BOLD, legacy NCBI and key=value headers give id, species, marker, accession."""
    h = parse_header(header)
    assert (h.id, h.species, h.marker, h.accession) == expected
    assert h.description == header.strip()


def test_headers_survive_reading(tmp_path):
    """Header fields reach the records; the description keeps the whole header line."""
    path = _write(
        tmp_path,
        f">MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene\n{SEQ}\n"
        f">BOLD01-10|Parus major|COI-5P|KJ000001\n{SEQ}\n",
    )
    a, b = read_fasta(path).records
    assert (a.id, a.species, a.marker, a.accession) == ("MN123456.1", "Turdus merula", "COI", "MN123456.1")
    assert (b.id, b.species, b.marker, b.accession) == ("BOLD01-10", "Parus major", "COI-5P", "KJ000001")
    assert b.description == "BOLD01-10|Parus major|COI-5P|KJ000001"


# ------------------------------------------------------------------ sequence cleaning
def test_case_crlf_multiline_u_and_whitespace(tmp_path):
    """Lower case, Windows line endings, wrapped lines, U and stray spaces all read as clean DNA."""
    path = _write(tmp_path, ">r1 first\r\nacgu\r\nAC GT\r\n\r\n>r2\r\nTTTT\r\n")
    res = read_fasta(path)
    assert [(r.id, r.sequence) for r in res] == [("r1", "ACGTACGT"), ("r2", "TTTT")]
    assert res.masked == {} and res.dropped == {}


def test_gz_is_read_transparently(tmp_path):
    """A gzip-compressed FASTA reads like the plain one, whatever its name."""
    path = tmp_path / "x.fasta.gz"
    path.write_bytes(gzip.compress(f">r1\n{SEQ}\n>r2\n{SEQ[::-1]}\n".encode()))
    assert [r.sequence for r in read_fasta(path)] == [SEQ, SEQ[::-1]]


@pytest.mark.parametrize(
    ("policy", "sequences", "masked", "dropped"),
    [
        ("mask", {"r1": "ACNTNNGT" + SEQ, "r2": SEQ}, {"r1": 3}, {}),
        ("drop", {"r2": SEQ}, {}, {"r1": "3 ambiguous base(s), first 'R' at position 3"}),
    ],
)
def test_ambiguity_policies(tmp_path, caplog, policy, sequences, masked, dropped):
    """'mask' turns ambiguity codes into N and counts them; 'drop' skips the record and says why."""
    path = _write(tmp_path, f">r1\nACRTNYGT{SEQ}\n>r2\n{SEQ}\n")
    with caplog.at_level(logging.INFO, logger="phenogen.dna.seqio"):
        res = read_fasta(path, policy=policy)
    assert {r.id: r.sequence for r in res} == sequences
    assert res.masked == masked and res.dropped == dropped
    assert ("masked" if policy == "mask" else "dropped") in caplog.text


def test_reject_names_file_record_position_and_line(tmp_path):
    """Under 'reject' the first ambiguous base is named with its 1-based position, line and column."""
    path = _write(tmp_path, f">ok\n{SEQ}\n>bad one\nACGTACGT\nACGYACGT\n")
    with pytest.raises(SequenceError) as info:
        read_fasta(path)
    msg = str(info.value)
    assert str(path) in msg and "'bad'" in msg
    assert "'Y' at position 12 (line 5, column 4)" in msg and "--policy mask" in msg


def test_gaps_refused_unless_allowed(tmp_path):
    """Gaps raise for unaligned input; with allow_gaps they are kept, '.' as '-'."""
    path = _write(tmp_path, f">r1\nAC-GT.A{SEQ}\n")
    with pytest.raises(SequenceError, match=r"gap '-' at position 3.*--allow-gaps"):
        read_fasta(path, policy="mask")
    assert read_fasta(path, allow_gaps=True).records[0].sequence == "AC-GT-A" + SEQ


@pytest.mark.parametrize("policy", ["reject", "mask", "drop"])
@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (
            "ACGTEACGT",
            "'E' at position 5 (line 2, column 5) is an amino-acid letter; this looks like a protein",
        ),
        ("ACGT*", "'*' at position 5 (line 2, column 5) is an amino-acid letter"),
        ("ACGT1ACGT", "'1' at position 5 (line 2, column 5) is a digit"),
        ("ACGT#", "'#' at position 5 (line 2, column 5) is not a nucleotide code"),
        ("MKVRYWSHKDMKVR", "letters are IUPAC ambiguity codes other than N; this looks like a protein"),
    ],
)
def test_never_dna_raises_under_every_policy(tmp_path, policy, seq, message):
    """Protein letters, digits, '*', punctuation and mostly-ambiguous records raise whatever the policy."""
    with pytest.raises(SequenceError, match="record 'p1'") as info:
        read_fasta(_write(tmp_path, f">p1\n{seq}\n"), policy=policy)
    assert message in str(info.value)


def test_clean_sequence():
    """clean_sequence applies the same rules to one string and names the caller's record."""
    assert clean_sequence("acgu", record_id="x") == "ACGT"
    assert clean_sequence("ACGTRACGTT", policy="mask") == "ACGTNACGTT"
    assert clean_sequence("ACGTRACGTT", policy="drop") is None
    assert clean_sequence("AC-G", allow_gaps=True) == "AC-G"
    with pytest.raises(SequenceError, match=r"lm.fasta: record 'x': ambiguous base 'R' at position 5"):
        clean_sequence("ACGTRACGTT", record_id="x", source="lm.fasta")
    with pytest.raises(SequenceError, match="empty sequence"):
        clean_sequence("  ")
    with pytest.raises(ConfigError, match="policy 'fix' is not one of"):
        clean_sequence("ACGT", policy="fix")


# ------------------------------------------------------------------ garbage inputs
GARBAGE = [
    ("missing", None, InputError, "no such file"),
    ("empty", b"", InputError, "empty file"),
    ("blank", b"\n  \r\n\n", InputError, "empty file"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", InputError, "binary file"),
    ("undecodable", b">r1\nACGT\n>r2 \xff\xfe\xfa\nACGT\n", InputError, "not UTF-8 text"),
    (
        "protein",
        b">sp|P69905|HBA_HUMAN Hemoglobin\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYF\n",
        SequenceError,
        "protein",
    ),
    (
        "not fasta",
        b"accession\tspecies\nKJ013278\tTurdus merula\n",
        InputError,
        "line 1: expected a '>' header",
    ),
    ("fastq", b"@read1\nACGT\n+\nIIII\n", InputError, "looks like FASTQ"),
    (
        "no sequence",
        f">r1\n{SEQ}\n>r2\n>r3\n{SEQ}\n".encode(),
        SequenceError,
        "record 'r2' (header on line 3): header has no sequence lines",
    ),
    (
        "last no sequence",
        f">r1\n{SEQ}\n>r2\n".encode(),
        SequenceError,
        "record 'r2' (header on line 3): header has no sequence",
    ),
    (
        "duplicate",
        f">r1\n{SEQ}\n>r2\n{SEQ}\n>r1 again\n{SEQ}\n".encode(),
        SequenceError,
        "duplicate id 'r1' on lines 1 and 5",
    ),
    ("empty id", f">r1\n{SEQ}\n>\n{SEQ}\n".encode(), SequenceError, "line 3: header '>' has an empty id"),
    ("empty bold id", f">|Turdus merula|COI-5P|\n{SEQ}\n".encode(), SequenceError, "line 1: header"),
    ("bad gzip", b"\x1f\x8b\x08\x00garbage", InputError, "gzip"),
]


@pytest.mark.parametrize(("case", "content", "error", "message"), GARBAGE, ids=[g[0] for g in GARBAGE])
def test_garbage_gives_one_clear_error(tmp_path, case, content, error, message):
    """Each kind of bad file raises one typed error naming the file and saying what is wrong."""
    path = tmp_path / "in.fasta" if content is None else _write(tmp_path, content)
    with pytest.raises(error) as info:
        read_fasta(path, policy="mask")
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_directory_is_not_a_fasta(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_fasta(tmp_path)


def test_all_dropped_raises(tmp_path):
    """Dropping every record is an error, not an empty result."""
    with pytest.raises(SequenceError, match="all 2 records hold ambiguity codes"):
        read_fasta(_write(tmp_path, f">a\nN{SEQ}\n>b\nR{SEQ}\n"), policy="drop")


# ------------------------------------------------------------------ writing
@pytest.mark.parametrize("width", [60, 80])
def test_write_round_trip(tmp_path, width):
    """write_fasta wraps at the width and read_fasta gives back the same records, headers included."""
    records = [
        FastaRecord(
            "MN123456.1", SEQ * 3, "MN123456.1 Turdus merula (COI) gene", "Turdus merula", "COI", "MN123456.1"
        ),
        FastaRecord("B-01", "ACGTN" * 40, "B-01|Parus major|COI-5P|", "Parus major", "COI-5P", None),
        FastaRecord("plain", "ACGT", ""),
    ]
    path = write_fasta(tmp_path / "out.fasta", records, width=width)
    lines = path.read_text().splitlines()
    assert max(len(line) for line in lines if not line.startswith(">")) == width
    back = read_fasta(path, policy="mask").records
    assert back[:2] == records[:2] and (back[2].id, back[2].sequence) == ("plain", "ACGT")


def test_write_pairs_and_gz(tmp_path):
    """(id, sequence) pairs work and a .gz path is compressed."""
    path = write_fasta(tmp_path / "out.fa.gz", [("a", "ACGT"), ("b", "TTGCA")])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert [(r.id, r.sequence) for r in read_fasta(path)] == [("a", "ACGT"), ("b", "TTGCA")]


def test_write_refuses_bad_records(tmp_path):
    with pytest.raises(SequenceError, match="ids must be non-empty without spaces"):
        write_fasta(tmp_path / "x.fa", [("a b", "ACGT")])
    with pytest.raises(SequenceError, match="clean it with clean_sequence"):
        write_fasta(tmp_path / "x.fa", [("a", "acgt")])
    with pytest.raises(ConfigError, match="width"):
        write_fasta(tmp_path / "x.fa", [("a", "ACGT")], width=0)


def test_summarize(tmp_path):
    """summarize counts records, lengths, GC (over A/C/G/T only) and masked records."""
    res = read_fasta(_write(tmp_path, ">a\nGGCCNAAT\n>b\nGGCC\n>c\nAATTAA\n"), policy="mask")
    s = summarize(res)
    assert (s["n_records"], s["length_min"], s["length_median"], s["length_max"]) == (3, 4, 6.0, 8)
    assert s["gc"] == pytest.approx(8 / 17)
    assert (s["n_masked_records"], s["n_masked_positions"], s["n_dropped"]) == (1, 1, 0)


# ------------------------------------------------------------------ real data
def test_usnm_mask_reads_everything():
    """All 2,980 real bird barcodes read under 'mask'; the ambiguous ones are counted."""
    res = read_fasta(USNM, policy="mask")
    assert len(res) == 2980 and len({r.id for r in res}) == 2980
    assert len(res.masked) == 18 and sum(res.masked.values()) == 22
    assert res.masked["JQ175014"] == 3
    assert all(set(r.sequence) <= set("ACGTN") for r in res)
    s = summarize(res)
    assert (s["length_min"], s["length_median"], s["length_max"]) == (507, 652.0, 658)
    assert [r.id for r in res if r.accession != r.id] == ["B19312A", "B07322A"]  # lab ids, not accessions


def test_usnm_reject_names_first_bad_record():
    """'reject' stops at the first ambiguous base in file order, with record, position and line."""
    with pytest.raises(SequenceError) as info:
        read_fasta(USNM)
    msg = str(info.value)
    assert "record 'JQ176464'" in msg and "'M' at position 370 (line 2815, column 10)" in msg


def test_usnm_drop_keeps_clean_records():
    """'drop' returns the clean records and says why each of the others went."""
    res = read_fasta(USNM, policy="drop")
    assert len(res) == 2980 - 18 and len(res.dropped) == 18
    assert all(set(r.sequence) <= set("ACGT") for r in res)
    assert res.dropped["JQ176464"] == "1 ambiguous base(s), first 'M' at position 370"
    assert not set(res.dropped) & {r.id for r in res}


def test_write_keeps_id_when_description_does_not_start_with_it(tmp_path):
    """A description that does not begin with the record's own id is written after the id."""
    path = write_fasta(
        tmp_path / "x.fa", [FastaRecord("a", "ACGT", "ab c"), FastaRecord("b", "ACGT", "b|x|COI|")]
    )
    assert path.read_text().splitlines()[::2] == [">a ab c", ">b|x|COI|"]
    assert [r.id for r in read_fasta(path)] == ["a", "b"]


# ------------------------------------------------------------------ hostile inputs (issue 22)
def _big_fasta(n: int = 400, seed: int = 0) -> bytes:
    import random

    rng = random.Random(seed)
    return b"".join(f">r{i}\n{''.join(rng.choice('ACGT') for _ in range(600))}\n".encode() for i in range(n))


def test_corrupt_gzip_at_the_start_is_an_input_error(tmp_path):
    """A flipped bit in the deflate stream used to escape as zlib.error."""
    data = bytearray(gzip.compress(b">a\nACGT\n" * 10))
    data[12] ^= 0xFF
    path = _write(tmp_path, bytes(data), "x.fa.gz")
    with pytest.raises(InputError, match="corrupt gzip file"):
        read_fasta(path)


@pytest.mark.parametrize("cut", ["flip", "truncate"])
def test_gzip_broken_far_into_the_stream_names_the_line(tmp_path, cut):
    data = bytearray(gzip.compress(_big_fasta()))
    if cut == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path = _write(tmp_path, bytes(data), "x.fa.gz")
    with pytest.raises(InputError, match=r"x.fa.gz, line \d+: unreadable") as info:
        read_fasta(path)
    assert "\n" not in str(info.value)


def test_gzip_bomb_stops_at_the_inflated_size_cap(tmp_path, monkeypatch):
    """A small gzip that inflates far beyond the cap is refused, not read into memory."""
    path = _write(tmp_path, gzip.compress(b">a\n" + b"ACGTACGTAC\n" * 200_000), "bomb.gz")  # 2.2 MB of text
    assert path.stat().st_size < 20_000
    with pytest.raises(InputError, match=r"bomb.gz, line \d+: more than 100,000 bytes of text"):
        read_fasta(path, max_bytes=100_000)
    monkeypatch.setattr("phenogen.dna.seqio.MAX_INFLATED_BYTES", 50_000)  # the module default
    with pytest.raises(InputError, match="more than 50,000 bytes"):
        read_fasta(path)


def test_line_record_and_record_count_caps(tmp_path):
    path = _write(tmp_path, f">a\n{SEQ * 10}\n>b\n{SEQ}\n>c\n{SEQ}\n")
    with pytest.raises(InputError, match="line 2: line longer than 100 bytes"):
        read_fasta(path, max_line=100)
    with pytest.raises(SequenceError, match="record 'a' \\(header on line 1\\) is longer than 500 bases"):
        read_fasta(path, max_record=500)
    with pytest.raises(InputError, match="line 5: more than 2 records"):
        read_fasta(path, max_records=2)
    assert len(read_fasta(path)) == 3


def test_single_huge_line_is_refused_without_reading_it_whole(tmp_path):
    path = _write(tmp_path, gzip.compress(b">a\n" + b"A" * 5_000_000), "one-line.gz")
    with pytest.raises(InputError, match="line 2: line longer than 1,000,000 bytes"):
        read_fasta(path, max_line=1_000_000)


def test_non_utf8_and_nul_beyond_the_first_block_name_the_line(tmp_path):
    body = _big_fasta(30)
    path = _write(tmp_path, body + b">late \xff\n" + SEQ.encode() + b"\n")
    with pytest.raises(InputError, match=r"line 61: not UTF-8 text \(byte 7 of the line is b'\\xff'\)"):
        read_fasta(path)
    path = _write(tmp_path, body + b">late\nAC\x00GT\n")
    with pytest.raises(InputError, match="line 62: binary file"):
        read_fasta(path)


@pytest.mark.parametrize("letter", ["ß", "ſ", "ﬀ", "İ"])
def test_non_ascii_letters_are_not_upper_cased_into_bases(tmp_path, letter):
    """str.upper() made 'ß' into 'SS' (two ambiguity codes, masked to NN): a letter that is not DNA."""
    path = _write(tmp_path, f">a\nACGT{letter}ACGT\n")
    with pytest.raises(SequenceError, match=f"'{letter}' at position 5 \\(line 2, column 5\\)"):
        read_fasta(path, policy="mask")


def test_long_ids_are_cut_in_messages(tmp_path):
    path = _write(tmp_path, f">{'x' * 100_000}\n>{'y' * 10}\n{SEQ}\n")
    with pytest.raises(SequenceError, match="header has no sequence lines") as info:
        read_fasta(path)
    assert len(str(info.value)) < 400 and "100,000 characters" in str(info.value)


def test_whitespace_beyond_the_first_block_is_not_an_empty_file(tmp_path):
    path = _write(tmp_path, "\n" * 10_000 + f">a\n{SEQ}\n")
    assert [r.id for r in read_fasta(path)] == ["a"]


def test_clean_sequence_of_a_non_string_is_a_sequence_error():
    with pytest.raises(SequenceError, match="expected the sequence as text, got float"):
        clean_sequence(float("nan"), record_id="r1")  # type: ignore[arg-type]

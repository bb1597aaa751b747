"""Read, validate and write FASTA files of DNA barcodes — the one door every sequence comes in by.

Reading is strict and says exactly what is wrong: the file, the record, the line and the 1-based
position. What happens to IUPAC ambiguity codes (``RYSWKMBDHVN``) is an explicit *policy*:

``"reject"``  raise :class:`~phenogen.errors.SequenceError` at the first ambiguous base;
``"mask"``    turn every ambiguity code into ``N`` and count them per record (``result.masked``);
``"drop"``    skip the record and record why (``result.dropped``).

Whatever the policy: lower case is upper-cased, ``U`` becomes ``T``, gaps (``-``, ``.``) are refused
unless ``allow_gaps=True`` (aligned input; then they are kept as ``-``), and letters that are never
DNA (``E F I L P Q J O X Z``, digits, ``*``) raise — such a file is protein or not a FASTA at all.
Plain, BOLD (``processid|species|marker|accession``) and GenBank headers are understood, and
``.gz`` files are read transparently (detected by their magic bytes).

Reading is bounded, so that no file — corrupt, hostile or merely huge — ends in a traceback: at most
:data:`MAX_INFLATED_BYTES` of (decompressed) text, lines of at most :data:`MAX_LINE_BYTES`, records of
at most :data:`MAX_RECORD_LENGTH` bases and at most :data:`MAX_RECORDS` records; a truncated or corrupt
gzip stream, bytes that are not UTF-8 and NUL bytes are each one :class:`~phenogen.errors.InputError`
naming the file and the line.

>>> clean_sequence("acgu-tt", allow_gaps=True)
'ACGT-TT'
>>> clean_sequence("ACGTRACGTY", policy="mask")
'ACGTNACGTN'
>>> parse_header("MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene").species
'Turdus merula'
"""

from __future__ import annotations

import gzip
import logging
import re
import statistics
import string
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from phenogen.dna.headers import Header, parse_header
from phenogen.errors import ConfigError, InputError, SequenceError

__all__ = [
    "POLICIES",
    "AMBIGUITY_CODES",
    "MAX_INFLATED_BYTES",
    "MAX_LINE_BYTES",
    "MAX_RECORD_LENGTH",
    "MAX_RECORDS",
    "FastaRecord",
    "FastaReadResult",
    "Header",
    "parse_header",
    "clean_sequence",
    "read_fasta",
    "write_fasta",
    "summarize",
]

log = logging.getLogger(__name__)

Policy = Literal["reject", "mask", "drop"]
POLICIES: tuple[str, ...] = ("reject", "mask", "drop")
NUCLEOTIDES = frozenset("ACGT")
AMBIGUITY_CODES = frozenset("RYSWKMBDHVN")
GAPS = frozenset("-.")
PROTEIN_ONLY = frozenset("EFILPQJOXZ*")  # amino-acid letters (and the stop '*') that are never DNA
# A "DNA" record whose letters are mostly two-/three-base codes (N aside) is really protein (MKVRY…).
MAX_AMBIGUOUS_FRACTION = 0.25
_TO_N = str.maketrans(dict.fromkeys("RYSWKMBDHV", "N"))
# ASCII-only upper-casing: str.upper() maps 'ß' to 'SS' and 'ſ' to 'S', turning junk into "bases".
_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)

# First offending position in one pass (not one str.index per distinct junk character).
_NEVER_DNA = re.compile(r"[^ACGTRYSWKMBDHVN.\-]")
_GAP = re.compile(r"[.\-]")
_AMBIGUOUS = re.compile(r"[RYSWKMBDHVN]")

MAX_INFLATED_BYTES = 2 * 1024**3
"""Most bytes of text read from one FASTA file, after gzip decompression (a gzip bomb stops here)."""
MAX_LINE_BYTES = 64 * 1024**2
"""Longest line read (header or sequence); an unwrapped mitogenome is ~17 kB, a barcode 658 bytes."""
MAX_RECORD_LENGTH = 10_000_000
"""Most sequence characters in one record (phenogen reads barcodes, not chromosomes)."""
MAX_RECORDS = 5_000_000
"""Most records in one file (all of BOLD's public animal COI barcodes are fewer)."""
_HEAD_BYTES = 8192


@dataclass(frozen=True)
class FastaRecord:
    """One FASTA record. ``description`` is the whole header line without ``>`` (as in Biopython)."""

    id: str
    sequence: str
    description: str = ""
    species: str | None = None
    marker: str | None = None
    accession: str | None = None


@dataclass
class FastaReadResult:
    """The records read, plus what the ambiguity policy did: ``masked`` (id → ambiguous positions
    now ``N``) and ``dropped`` (id → reason)."""

    records: list[FastaRecord]
    masked: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    policy: str = "reject"
    allow_gaps: bool = False

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[FastaRecord]:
        return iter(self.records)


# ---------------------------------------------------------------- sequences
def _short(text: str, limit: int = 80) -> str:
    """``repr`` of ``text``, cut to ``limit`` characters: messages stay one readable line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"… ({len(text):,} characters)"


def _position(i: int, spans: list[tuple[int, int]] | None) -> str:
    """'position 123' plus the file line and column when the record's line spans are known."""
    text = f"position {i + 1}"
    offset = 0
    for line_no, length in spans or ():
        if i < offset + length:
            return f"{text} (line {line_no}, column {i - offset + 1})"
        offset += length
    return text


def _clean(
    raw: str, where: str, policy: str, allow_gaps: bool, spans: list[tuple[int, int]] | None = None
) -> tuple[str | None, int, str | None]:
    """(cleaned sequence or None when dropped, number of ambiguous positions, drop reason)."""
    if policy not in POLICIES:
        raise ConfigError(f"ambiguity policy {policy!r} is not one of {', '.join(POLICIES)}")
    seq = "".join(raw.split()).translate(_UPPER).replace("U", "T")
    if not seq:
        raise SequenceError(f"{where}: empty sequence")
    extra = set(seq) - NUCLEOTIDES
    if not extra:
        return seq, 0, None
    never = extra - AMBIGUITY_CODES - GAPS
    if never:
        i = _NEVER_DNA.search(seq).start()  # type: ignore[union-attr]
        c = seq[i]
        kind = (
            "an amino-acid letter; this looks like a protein sequence"
            if c in PROTEIN_ONLY
            else "a digit; sequence lines must hold bases only"
            if c.isdigit()
            else "not a nucleotide code"
        )
        raise SequenceError(
            f"{where}: {c!r} at {_position(i, spans)} is {kind}, not DNA — phenogen reads nucleotide FASTA"
        )
    if extra & GAPS and not allow_gaps:
        i = _GAP.search(seq).start()  # type: ignore[union-attr]
        raise SequenceError(
            f"{where}: gap {seq[i]!r} at {_position(i, spans)}; this looks like an alignment — "
            "pass allow_gaps=True (--allow-gaps) for aligned input, or remove the gaps"
        )
    seq = seq.replace(".", "-")
    ambiguous = extra & AMBIGUITY_CODES
    if not ambiguous:
        return seq, 0, None
    n_ambiguous = sum(seq.count(c) for c in ambiguous)
    informative = n_ambiguous - seq.count("N")
    if informative > MAX_AMBIGUOUS_FRACTION * len(seq):
        raise SequenceError(
            f"{where}: {informative} of {len(seq)} letters are IUPAC ambiguity codes other than N; "
            "this looks like a protein sequence, not DNA — phenogen reads nucleotide FASTA"
        )
    i = _AMBIGUOUS.search(seq).start()  # type: ignore[union-attr]
    if policy == "reject":
        raise SequenceError(
            f"{where}: ambiguous base {seq[i]!r} at {_position(i, spans)}, {n_ambiguous} in this record; "
            "use policy 'mask' (--policy mask) to turn ambiguity codes into N, or 'drop' to skip such records"
        )
    if policy == "drop":
        return None, n_ambiguous, f"{n_ambiguous} ambiguous base(s), first {seq[i]!r} at position {i + 1}"
    return seq.translate(_TO_N), n_ambiguous, None


def clean_sequence(
    seq: str,
    *,
    record_id: str = "?",
    source: str = "<input>",
    policy: Policy = "reject",
    allow_gaps: bool = False,
) -> str | None:
    """Validate one sequence: upper case, U→T, gaps and ambiguity codes by policy.

    Returns the cleaned sequence, or ``None`` when ``policy="drop"`` and the sequence holds an
    ambiguity code. Raises :class:`SequenceError` naming ``source``, ``record_id`` and the position.

    >>> clean_sequence("ACGTN", policy="drop") is None
    True
    """
    where = f"{source}: record {_short(str(record_id))}"
    if not isinstance(seq, str):
        raise SequenceError(f"{where}: expected the sequence as text, got {type(seq).__name__}")
    cleaned, _, _ = _clean(seq, where, policy, allow_gaps)
    return cleaned


# ---------------------------------------------------------------- files
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def _open(path: Path) -> IO[bytes]:
    """Open a (possibly gzipped) file as bytes, refusing missing, unreadable and binary files up front."""
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected a FASTA file")
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        raw: IO[bytes] = gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[assignment]
    except (OSError, ValueError) as exc:  # permission denied, a NUL byte in the path
        raise InputError(f"{path}: cannot open ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        head = raw.read(_HEAD_BYTES)
        raw.seek(0)
    except _READ_ERRORS as exc:
        raw.close()
        raise InputError(f"{path}: corrupt {'gzip ' if gzipped else ''}file ({exc})") from None
    if b"\x00" in head:
        raw.close()
        raise InputError(f"{path}: binary file (NUL bytes), not FASTA text")
    return raw


def _lines(raw: IO[bytes], path: Path, max_bytes: int, max_line: int) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line; ``\\n``, ``\\r\\n`` and a lone ``\\r`` end a line.

    Every way the bytes can be bad is one :class:`InputError` naming the file and line: a corrupt or
    truncated gzip stream, more than ``max_bytes`` of text, a line longer than ``max_line`` bytes,
    a NUL byte, bytes that are not UTF-8.
    """
    line_no, total = 0, 0
    while True:
        try:
            data = raw.readline(max_line + 2)
        except _READ_ERRORS as exc:
            raise InputError(
                f"{path}, line {line_no + 1}: unreadable ({exc}); is the gzip file truncated or corrupt?"
            ) from None
        if not data:
            return
        total += len(data)
        if total > max_bytes:
            raise InputError(
                f"{path}, line {line_no + 1}: more than {max_bytes:,} bytes of text "
                "(after decompression); phenogen reads barcode files, not whole genomes"
            )
        if len(data.rstrip(b"\r\n")) > max_line:
            raise InputError(f"{path}, line {line_no + 1}: line longer than {max_line:,} bytes")
        if b"\x00" in data:
            raise InputError(f"{path}, line {line_no + 1}: binary file (NUL bytes), not FASTA text")
        if line_no == 0 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]  # UTF-8 byte-order mark
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{path}, line {line_no + 1}: not UTF-8 text (byte {exc.start + 1} of the line is "
                f"{data[exc.start : exc.start + 1]!r}); is it a binary file?"
            ) from None
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
        for part in text.split("\r"):
            line_no += 1
            yield line_no, part


def _not_fasta(path: Path, line_no: int, line: str) -> InputError:
    hint = (
        "this looks like FASTQ"
        if line.startswith("@")
        else "this looks like a GenBank flat file"
        if line.startswith("LOCUS")
        else "a FASTA file starts with a '>id' header line"
    )
    return InputError(f"{path}, line {line_no}: expected a '>' header, found {line[:40]!r}; {hint}")


def _raw_records(
    lines: Iterable[tuple[int, str]], path: Path, max_record: int
) -> Iterator[tuple[str, int, list[str], list[tuple[int, int]]]]:
    """(header without '>', header line number, sequence chunks, (line number, length) per chunk)."""
    header: str | None = None
    header_line, chunks, spans, length = 0, [], [], 0
    blank = True
    for line_no, line in lines:
        line = line.strip()
        if not line:
            continue
        blank = False
        if line.startswith(">"):
            if header is not None:
                yield header, header_line, chunks, spans
            header, header_line, chunks, spans, length = line[1:], line_no, [], [], 0
        elif header is None:
            raise _not_fasta(path, line_no, line)
        else:
            chunk = "".join(line.split())
            length += len(chunk)
            if length > max_record:
                ident = (header.split() or ["?"])[0]
                raise SequenceError(
                    f"{path}: record {_short(ident)} (header on line {header_line}) is longer than "
                    f"{max_record:,} bases at line {line_no}"
                )
            chunks.append(chunk)
            spans.append((line_no, len(chunk)))
    if blank:
        raise InputError(
            f"{path}: empty file; expected FASTA records ('>id' lines followed by sequence lines)"
        )
    if header is not None:
        yield header, header_line, chunks, spans


def read_fasta(
    path: str | Path,
    *,
    policy: Policy = "reject",
    allow_gaps: bool = False,
    max_bytes: int | None = None,
    max_line: int | None = None,
    max_record: int | None = None,
    max_records: int | None = None,
) -> FastaReadResult:
    """Read and validate a FASTA (or FASTA.gz) file of DNA sequences.

    Parameters
    ----------
    path : FASTA file; gzip-compressed files are recognised by content.
    policy : what to do with IUPAC ambiguity codes: ``"reject"``, ``"mask"`` (→ N) or ``"drop"``.
    allow_gaps : keep ``-``/``.`` gaps (as ``-``) for aligned input instead of raising.
    max_bytes, max_line, max_record, max_records : size limits; ``None`` = :data:`MAX_INFLATED_BYTES`,
        :data:`MAX_LINE_BYTES`, :data:`MAX_RECORD_LENGTH`, :data:`MAX_RECORDS`.

    Raises
    ------
    InputError
        missing, empty, binary, non-UTF-8, corrupt gzip, over-size or non-FASTA files;
        ``SequenceError`` (a subclass) for a bad record:
        empty id, header without sequence, duplicate id, protein or invalid letters, gaps, and
        ambiguity codes under ``"reject"``. Every message names the file, record and line.

    Examples
    --------
    >>> res = read_fasta("data/usnm_birds_coi/unaligned_schindel2017.fasta", policy="mask")  # doctest: +SKIP
    >>> len(res), len(res.masked)  # doctest: +SKIP
    (2980, 20)
    """
    path = Path(path)
    if policy not in POLICIES:
        raise ConfigError(f"ambiguity policy {policy!r} is not one of {', '.join(POLICIES)}")
    result = FastaReadResult(records=[], path=path, policy=policy, allow_gaps=allow_gaps)
    seen: dict[str, int] = {}
    max_bytes = MAX_INFLATED_BYTES if max_bytes is None else max_bytes
    max_line = MAX_LINE_BYTES if max_line is None else max_line
    max_record = MAX_RECORD_LENGTH if max_record is None else max_record
    max_records = MAX_RECORDS if max_records is None else max_records
    with _open(path) as raw:
        lines = _lines(raw, path, max_bytes, max_line)
        for header, line_no, chunks, spans in _raw_records(lines, path, max_record):
            head = parse_header(header)
            if not head.id:
                raise SequenceError(f"{path}, line {line_no}: header {_short('>' + header)} has an empty id")
            where = f"{path}: record {_short(head.id)} (header on line {line_no})"
            if head.id in seen:
                raise SequenceError(
                    f"{path}: duplicate id {_short(head.id)} on lines {seen[head.id]} and {line_no}"
                )
            seen[head.id] = line_no
            if len(seen) > max_records:
                raise InputError(f"{path}, line {line_no}: more than {max_records:,} records")
            if not chunks:
                raise SequenceError(f"{where}: header has no sequence lines")
            seq, n_ambiguous, reason = _clean("".join(chunks), where, policy, allow_gaps, spans)
            if seq is None:
                result.dropped[head.id] = reason or "dropped"
                continue
            if n_ambiguous:
                result.masked[head.id] = n_ambiguous
            result.records.append(
                FastaRecord(head.id, seq, head.description, head.species, head.marker, head.accession)
            )
    if not seen:
        raise InputError(f"{path}: no FASTA records")
    if result.masked:
        log.info(
            "%s: masked %d ambiguous bases to N in %d records",
            path,
            sum(result.masked.values()),
            len(result.masked),
        )
    if result.dropped:
        log.warning("%s: dropped %d of %d records with ambiguous bases", path, len(result.dropped), len(seen))
    if not result.records:
        raise SequenceError(
            f"{path}: all {len(seen)} records hold ambiguity codes and were dropped (policy 'drop')"
        )
    return result


def write_fasta(
    path: str | Path,
    records: Iterable[FastaRecord | tuple[str, str]],
    *,
    width: int = 60,
) -> Path:
    """Write records (or ``(id, sequence)`` pairs) as FASTA, wrapping sequences at ``width`` columns.

    A ``FastaRecord`` keeps its full header (``description``), so a read–write–read round-trips.
    Paths ending in ``.gz`` are gzip-compressed.
    """
    if width < 1:
        raise ConfigError(f"FASTA line width must be >= 1, got {width}")
    path = Path(path)
    lines: list[str] = []
    for rec in records:
        ident, seq, header = (
            (rec.id, rec.sequence, rec.description) if isinstance(rec, FastaRecord) else (rec[0], rec[1], "")
        )
        if not ident or any(c.isspace() for c in ident):
            raise SequenceError(
                f"{path}: cannot write record id {ident!r}; ids must be non-empty without spaces"
            )
        if not seq:
            raise SequenceError(f"{path}: record {ident!r} has an empty sequence")
        bad = set(seq) - NUCLEOTIDES - AMBIGUITY_CODES - {"-"}
        if bad:
            raise SequenceError(
                f"{path}: record {ident!r} holds {''.join(sorted(bad))!r}; clean it with clean_sequence first"
            )
        if not header or parse_header(header).id != ident:
            header = f"{ident} {header}".strip()
        lines.append(">" + header)
        lines.extend(seq[i : i + width] for i in range(0, len(seq), width))
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n" if lines else ""
    with (
        gzip.open(path, "wt", encoding="utf-8") if path.suffix == ".gz" else open(path, "w", encoding="utf-8")
    ) as fh:
        fh.write(text)
    return path


def summarize(result: FastaReadResult) -> dict:
    """Counts for a report: records, length min/median/max, GC fraction, masked and dropped records."""
    lengths = [len(r.sequence) for r in result.records]
    bases = {b: sum(r.sequence.count(b) for r in result.records) for b in "ACGT"}
    acgt = sum(bases.values())
    markers: dict[str, int] = {}
    for r in result.records:
        markers[r.marker or "unknown"] = markers.get(r.marker or "unknown", 0) + 1
    return {
        "n_records": len(result.records),
        "length_min": min(lengths, default=0),
        "length_median": float(statistics.median(lengths)) if lengths else 0.0,
        "length_max": max(lengths, default=0),
        "gc": (bases["G"] + bases["C"]) / acgt if acgt else 0.0,
        "n_masked_records": len(result.masked),
        "n_masked_positions": sum(result.masked.values()),
        "n_dropped": len(result.dropped),
        "n_with_species": sum(r.species is not None for r in result.records),
        "markers": markers,
    }

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

>>> clean_sequence("acgu-tt", allow_gaps=True)
'ACGT-TT'
>>> clean_sequence("ACGTRACGTY", policy="mask")
'ACGTNACGTN'
>>> parse_header("MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene").species
'Turdus merula'
"""

from __future__ import annotations

import gzip
import io
import logging
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from phenogen.dna.headers import Header, parse_header
from phenogen.errors import ConfigError, InputError, SequenceError

__all__ = [
    "POLICIES",
    "AMBIGUITY_CODES",
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
    seq = "".join(raw.split()).upper().replace("U", "T")
    if not seq:
        raise SequenceError(f"{where}: empty sequence")
    extra = set(seq) - NUCLEOTIDES
    if not extra:
        return seq, 0, None
    never = extra - AMBIGUITY_CODES - GAPS
    if never:
        i = min(seq.index(c) for c in never)
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
        i = min(seq.index(c) for c in extra & GAPS)
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
    i = min(seq.index(c) for c in ambiguous)
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
    cleaned, _, _ = _clean(seq, f"{source}: record {record_id!r}", policy, allow_gaps)
    return cleaned


# ---------------------------------------------------------------- files
def _open(path: Path) -> IO[str]:
    """Open a (possibly gzipped) text file, refusing missing, empty and binary files up front."""
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a FASTA file")
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gzipped else open(path, "rb")
    try:
        head = raw.read(8192)
        raw.seek(0)
    except (OSError, EOFError) as exc:
        raw.close()
        raise InputError(f"{path}: corrupt gzip file ({exc})") from exc
    if not head.strip():
        raw.close()
        raise InputError(
            f"{path}: empty file; expected FASTA records ('>id' lines followed by sequence lines)"
        )
    if b"\x00" in head:
        raw.close()
        raise InputError(f"{path}: binary file (NUL bytes), not FASTA text")
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)  # newline=None: \r\n and \r too


def _not_fasta(path: Path, line_no: int, line: str) -> InputError:
    hint = (
        "this looks like FASTQ"
        if line.startswith("@")
        else "this looks like a GenBank flat file"
        if line.startswith("LOCUS")
        else "a FASTA file starts with a '>id' header line"
    )
    return InputError(f"{path}, line {line_no}: expected a '>' header, found {line[:40]!r}; {hint}")


def _raw_records(fh: IO[str], path: Path) -> Iterator[tuple[str, int, list[str], list[tuple[int, int]]]]:
    """(header without '>', header line number, sequence chunks, (line number, length) per chunk)."""
    header: str | None = None
    header_line, chunks, spans = 0, [], []
    line_no = 0
    try:
        for line_no, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, header_line, chunks, spans
                header, header_line, chunks, spans = line[1:], line_no, [], []
            elif header is None:
                raise _not_fasta(path, line_no, line)
            else:
                chunk = "".join(line.split())
                chunks.append(chunk)
                spans.append((line_no, len(chunk)))
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: not UTF-8 text near line {line_no + 1} ({exc.reason}); is it a binary file?"
        ) from exc
    except (OSError, EOFError) as exc:
        raise InputError(
            f"{path}: unreadable near line {line_no + 1} ({exc}); is the gzip file truncated?"
        ) from exc
    if header is not None:
        yield header, header_line, chunks, spans


def read_fasta(path: str | Path, *, policy: Policy = "reject", allow_gaps: bool = False) -> FastaReadResult:
    """Read and validate a FASTA (or FASTA.gz) file of DNA sequences.

    Parameters
    ----------
    path : FASTA file; gzip-compressed files are recognised by content.
    policy : what to do with IUPAC ambiguity codes: ``"reject"``, ``"mask"`` (→ N) or ``"drop"``.
    allow_gaps : keep ``-``/``.`` gaps (as ``-``) for aligned input instead of raising.

    Raises
    ------
    InputError
        missing, empty, binary or non-FASTA files; ``SequenceError`` (a subclass) for a bad record:
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
    with _open(path) as fh:
        for header, line_no, chunks, spans in _raw_records(fh, path):
            head = parse_header(header)
            if not head.id:
                raise SequenceError(f"{path}, line {line_no}: header {('>' + header)!r} has an empty id")
            where = f"{path}: record {head.id!r} (header on line {line_no})"
            if head.id in seen:
                raise SequenceError(
                    f"{path}: duplicate id {head.id!r} on lines {seen[head.id]} and {line_no}"
                )
            seen[head.id] = line_no
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

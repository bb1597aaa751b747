"""Seeded mutation fuzzing of every remote-payload parser: each outcome is a result or a PhenogenError.

Valid fixture payloads (NCBI esearch JSON and efetch GenBank text, BOLD TSV and v5 JSON, iNaturalist
and GBIF JSON, the USNM table) are mutated — JSON values replaced by other types, keys deleted,
values nested in lists and objects; lines deleted, duplicated and swapped; bytes flipped, inserted
and deleted; the text cut anywhere — and handed to the pure ``parse_*`` function the fetcher calls,
followed by what the fetcher does with the result (COI extraction, barcode filtering). Anything other
than a return or a :class:`~phenogen.errors.PhenogenError` (AttributeError, KeyError, TypeError,
IndexError …) fails, as does a case slower than 2 s.

The default run does a few thousand cases per parser; ``-m fuzz`` does 10,000 or more each. Run with
``-s`` to see the per-parser counts.
"""

from __future__ import annotations

import copy
import json
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixture_server import FIXTURES, PASSERINES

from phenogen.data.bold import bold_barcodes, parse_bold_payload, parse_v5_preprocessor, parse_v5_query
from phenogen.data.config import FetchConfig
from phenogen.data.images import parse_gbif, parse_inat
from phenogen.data.ncbi import TaxonLog, coi_from_record, parse_esearch, parse_genbank
from phenogen.data.usnm import USNM_DIR, parse_usnm_tsv
from phenogen.errors import PhenogenError

CFG = FetchConfig()
MAX_CASE_S = 2.0
FUZZ_N = 10_000


def _read(path: Path) -> bytes:
    return path.read_bytes().replace(b"{{BASE}}", b"http://127.0.0.1:9")


def _usnm_seed() -> bytes:
    path = USNM_DIR / "schindel2017.tsv"
    if path.is_file():
        return b"".join(path.read_bytes().splitlines(keepends=True)[:40])
    return b"accession\tscientific_name\nJQ176654\tXiphorhynchus obsoletus\nJQ176549\tTrogon violaceus\n"


def _genbank(payload: bytes) -> object:
    records = parse_genbank(payload, "fuzz efetch")
    return [coi_from_record(r, CFG.max_length) for r in records]


def _bold(payload: bytes) -> object:
    rows = parse_bold_payload(payload, "fuzz BOLD")
    return bold_barcodes(rows, "Parus major", CFG, TaxonLog("Parus major", "bold"))


def _bold_v5_json(payload: bytes) -> object:
    doc = payload.lstrip()
    return (
        parse_v5_query(payload, "fuzz query") if b"query_id" in doc[:40] else parse_v5_preprocessor(payload)
    )


# name -> (seed payloads, parser as the fetcher uses it, is JSON, default cases)
PARSERS: dict[str, tuple[Callable[[], list[bytes]], Callable[[bytes], object], bool, int]] = {
    "ncbi_esearch_json": (
        lambda: [
            _read(FIXTURES / "ncbi_esearch_turdus.json"),
            _read(PASSERINES / "ncbi_esearch_erithacus.json"),
        ],
        lambda b: parse_esearch(b, "fuzz esearch"),
        True,
        3000,
    ),
    "ncbi_efetch_genbank": (
        lambda: [_read(FIXTURES / "ncbi_efetch_turdus.gb"), _read(PASSERINES / "ncbi_efetch_erithacus.gb")],
        _genbank,
        False,
        3000,
    ),
    "bold_tsv": (
        lambda: [_read(FIXTURES / "bold_combined_parus.tsv"), _read(PASSERINES / "bold_v5_documents.tsv")],
        _bold,
        False,
        3000,
    ),
    "bold_v5_json": (
        lambda: [
            _read(PASSERINES / "bold_v5_preprocessor_parus.json"),
            _read(PASSERINES / "bold_v5_preprocessor_unmatched.json"),
            _read(PASSERINES / "bold_v5_query_parus.json"),
        ],
        _bold_v5_json,
        True,
        3000,
    ),
    "inaturalist_json": (
        lambda: [
            _read(FIXTURES / "inat_observations_turdus.json"),
            _read(PASSERINES / "inat_observations.json"),
        ],
        lambda b: parse_inat(b, "fuzz iNaturalist", "Turdus merula", "medium"),
        True,
        3000,
    ),
    "gbif_json": (
        lambda: [_read(FIXTURES / "gbif_occurrence_parus.json")],
        lambda b: parse_gbif(b, "fuzz GBIF", "Parus major"),
        True,
        3000,
    ),
    "usnm_tsv": (lambda: [_usnm_seed()], lambda b: parse_usnm_tsv(b, "fuzz USNM"), False, 3000),
}

# ------------------------------------------------------------ mutations
_ODD_VALUES: list[object] = [
    None, 0, -1, 2**70, 1.5, float("nan"), True, False, "", "x", "1,2", "tax:", "http://", "\x00",
    "é" * 3, [], [1], [None], {}, {"a": 1}, {"results": []}, "A" * 5000,
]  # fmt: skip
_ODD_BYTES = [b"\x00", b"\xff", b"\xfe\xff", b"\t", b"\n", b"\r\n", b"//", b"//\n", b"LOCUS", b"ORIGIN",
              b"FEATURES", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"\\u0000", b"1e999", b">", b"<"]  # fmt: skip


def _odd(rng: random.Random) -> object:
    return copy.deepcopy(rng.choice(_ODD_VALUES))  # never mutate the shared list's containers


def _nodes(doc: object, path: tuple = ()) -> list[tuple]:
    """Paths to every value of a JSON document (the root is ``()``)."""
    out = [path]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _nodes(value, (*path, i))
    return out


def _mutate_json(doc: object, rng: random.Random) -> object:
    """One structural mutation: another type, a deleted key or item, a nesting, a duplicate, a new key."""
    path = rng.choice(_nodes(doc))
    if not path:
        return rng.choice([[doc], {"x": doc}, _odd(rng)])
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    key = path[-1]
    value = parent[key]
    op = rng.randrange(6)
    if op == 0:
        parent[key] = _odd(rng)
    elif op == 1:
        del parent[key]
    elif op == 2:
        parent[key] = rng.choice([[value], {"v": value}, [value, value]])
    elif op == 3:
        parent[key] = _odd(rng) if not isinstance(value, str) else value * rng.randint(0, 3)
    elif op == 4 and isinstance(parent, dict):
        parent[rng.choice(["error", "ERROR", "results", "idlist", "media", "photos", "x"])] = rng.choice(
            _ODD_VALUES
        )
    elif isinstance(parent, list):
        parent.insert(rng.randrange(len(parent) + 1), _odd(rng))
    else:
        parent[key] = [] if isinstance(value, list) else None
    return doc


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One byte- or line-level mutation (flip, insert, delete, duplicate, swap lines, cut)."""
    if not data:
        return rng.choice(_ODD_BYTES)
    op = rng.randrange(8)
    i = rng.randrange(len(data))
    if op == 0:
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if op == 1:
        return data[:i] + rng.choice(_ODD_BYTES) + data[i:]
    if op == 2:
        return data[:i] + data[i + rng.randint(1, 64) :]
    if op == 3:
        j = min(len(data), i + rng.randint(1, 200))
        return data[:j] + data[i:j] + data[j:]
    if op == 4:
        return data[: rng.randrange(len(data) + 1)]
    lines = data.splitlines(keepends=True)
    a, b = rng.randrange(len(lines)), rng.randrange(len(lines))
    if op == 5:
        del lines[a]
    elif op == 6:
        lines.insert(a, lines[b])
    else:
        lines[a], lines[b] = lines[b], lines[a]
    return b"".join(lines)


def _case(seeds: list[bytes], is_json: bool, rng: random.Random) -> bytes:
    data = rng.choice(seeds)
    if is_json and rng.random() < 0.6:
        doc = json.loads(data)
        for _ in range(rng.randint(1, 3)):
            doc = json.loads(json.dumps(_mutate_json(doc, rng)))  # no shared or cyclic containers
        data = json.dumps(doc).encode()
        if rng.random() < 0.2:
            data = _mutate_bytes(data, rng)
        return data
    for _ in range(rng.randint(1, 4)):
        data = _mutate_bytes(data, rng)
    return data


@dataclass
class Outcome:
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    other: list[str] = field(default_factory=list)
    max_s: float = 0.0
    total_s: float = 0.0

    def line(self, name: str) -> str:
        return (
            f"fuzz {name:<20} cases {self.cases:>6}  accepted {self.accepted:>6}  refused {self.refused:>6}  "
            f"other {len(self.other):>3}  max {self.max_s * 1000:7.1f} ms/case  total {self.total_s:6.2f} s"
        )


def fuzz(name: str, n: int, seed: int = 0) -> Outcome:
    """Run ``n`` seeded mutations of ``name``'s fixtures through its parser and classify the outcomes."""
    make_seeds, parse, is_json, _ = PARSERS[name]
    seeds = make_seeds()
    rng = random.Random(zlib.crc32(name.encode()) + seed)
    out = Outcome()
    t_all = time.perf_counter()
    for index in range(n):
        data = _case(seeds, is_json, rng)
        t0 = time.perf_counter()
        try:
            parse(data)
            out.accepted += 1
        except PhenogenError as exc:
            assert str(exc) and "\n" not in str(exc), f"{name} case {index}: message {str(exc)!r}"
            out.refused += 1
        except Exception as exc:  # noqa: BLE001 - exactly what this test hunts
            out.other.append(f"case {index}: {type(exc).__name__}: {exc} on {data[:120]!r}")
        out.max_s = max(out.max_s, time.perf_counter() - t0)
        out.cases += 1
    out.total_s = time.perf_counter() - t_all
    return out


def _check(name: str, out: Outcome) -> None:
    print("\n" + out.line(name))
    assert not out.other, f"{len(out.other)} non-PhenogenError outcome(s), e.g. {out.other[:3]}"
    assert out.max_s < MAX_CASE_S, f"slowest case took {out.max_s:.2f} s"
    assert out.accepted and out.refused  # the mutations reach both sides of the parser


def test_seed_payloads_parse():
    """Every fixture the fuzzer mutates is accepted as it is."""
    for make_seeds, parse, _, _ in PARSERS.values():
        for data in make_seeds():
            parse(data)  # raises on a broken fixture


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_fuzz_quick(name):
    """A few thousand mutated payloads per parser: a result or a PhenogenError, each under 2 s."""
    _check(name, fuzz(name, PARSERS[name][3]))


@pytest.mark.fuzz
@pytest.mark.parametrize("name", sorted(PARSERS))
def test_fuzz_long(name):
    """10,000 more mutated payloads per parser (another seed): ``pytest -m fuzz tests/test_fuzz_http.py``."""
    _check(name, fuzz(name, FUZZ_N, seed=1))

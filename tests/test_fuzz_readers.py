"""Seeded mutation fuzzing of the readers (issue 22): every input ends in a result or a PhenogenError.

Each fuzzer starts from valid inputs, applies 1-4 random mutations (bit flips, inserted special
bytes and tokens, deletions, truncation, duplicated chunks, huge numbers, deep nesting, NUL and
non-UTF-8 bytes), calls the reader and sorts the outcome: accepted, refused with a one-line
:class:`~phenogen.errors.PhenogenError`, or anything else — which fails the test and saves the
input. No case may take 2 s or more. The default run does 2,000 cases per reader; ``-m fuzz`` does
12,000 (``PHENOGEN_FUZZ_CASES`` overrides both). The summary of each run is printed (``-s``)::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -s tests/test_fuzz_readers.py
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -s -m fuzz tests/test_fuzz_readers.py

The end of the file holds targeted tests of the Newick defects (tests/test_seqio.py and
tests/test_config.py hold those of FASTA and config).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import random
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from phenogen.config import load_sections, merge_to_toml, to_jsonable
from phenogen.data.config import BuildConfig, FetchConfig, ImportConfig
from phenogen.diffusion.config import GenerateConfig, ImageConfig
from phenogen.dna.seqio import read_fasta
from phenogen.errors import InputError, PhenogenError
from phenogen.evaluate.config import EvaluateConfig
from phenogen.lm.config import DnaEvalConfig, LMConfig, SampleConfig
from phenogen.phylo.tree import (
    MAX_NEWICK_DEPTH,
    copy_tree,
    fix_branch_lengths,
    name_internal_nodes,
    node_depths,
    parse_newick,
    read_tree,
    root_tree,
    tip_names,
    to_newick,
)
from phenogen.sim.config import SimConfig

DEFAULT_CASES = 2_000
FUZZ_CASES = 12_000
MAX_SECONDS_PER_CASE = 2.0
MAX_INPUT = 1 << 17  # mutated inputs are cut to 128 KiB

SPECS = {
    "sim": SimConfig,
    "lm": LMConfig,
    "sample": SampleConfig,
    "dna_eval": DnaEvalConfig,
    "image": ImageConfig,
    "generate": GenerateConfig,
    "fetch": FetchConfig,
    "import": ImportConfig,
    "build": BuildConfig,
    "evaluate": EvaluateConfig,
}

# ------------------------------------------------------------------------------------ mutations
SPECIAL = [
    b">", b"(", b")", b":", b";", b",", b"'", b"[", b"]", b"{", b"}", b"=", b".", b'"', b"\\", b"-", b"|",
    b"\x00", b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\x1f\x8b", b"\xef\xbb\xbf",
    b"\n", b"\r", b"\r\n", b"\t", b" ", b"\x0b", b"\x7f", "ß".encode(), "İ".encode(), "\u2028".encode(),
    "ſ".encode(), "١".encode(), "😀".encode(), "²".encode(), b"1e400", b"-1e400", b"1e401", b"1e-400", b"nan", b"inf",
    b"-inf", b"-1", b"0", b"-0.0", b"true", b"9" * 30, b"9" * 4301, b"1" * 5000, b"0x1F", b"1_000",
]  # fmt: skip
NESTS = [(b"(", b")"), (b"[", b"]"), (b"{a=", b"}"), (b"[[", b"]]"), (b"(A,", b")"), (b"{", b"}")]


def mutate(data: bytes, rng: random.Random, tokens: list[bytes]) -> bytes:
    """``data`` after 1-4 random mutations; ``tokens`` are reader-specific insertions."""
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        pos = rng.randint(0, len(data))
        if op == 0 and data:  # flip one bit
            i = rng.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
        elif op == 1:
            data = data[:pos] + rng.choice(SPECIAL) + data[pos:]
        elif op == 2:
            data = data[:pos] + rng.choice(tokens) + data[pos:]
        elif op == 3:  # delete a span
            data = data[:pos] + data[pos + rng.randint(1, 16) :]
        elif op == 4:  # truncate
            data = data[:pos]
        elif op == 5:  # duplicate a chunk, once or many times
            a = rng.randint(0, len(data))
            chunk = data[a : a + rng.randint(1, 64)]
            data = data[:pos] + chunk * rng.choice((1, 2, 10, 200)) + data[pos:]
        elif op == 6:  # deep nesting, balanced or not
            opener, closer = rng.choice(NESTS)
            k = rng.choice((2, 20, 300, MAX_NEWICK_DEPTH - 3, MAX_NEWICK_DEPTH + 1, 1200))
            end = rng.randint(pos, len(data))
            closing = closer * k if rng.random() < 0.8 else closer * rng.randint(0, k)
            data = data[:pos] + opener * k + data[pos:end] + closing + data[end:]
        elif op == 7:  # random bytes
            data = data[:pos] + rng.randbytes(rng.randint(1, 8)) + data[pos:]
        elif op == 8 and data:  # overwrite one byte with a special one
            i = rng.randrange(len(data))
            data = data[:i] + rng.choice(SPECIAL)[:1] + data[i + 1 :]
        else:  # swap two halves
            data = data[pos:] + data[:pos]
    return data[:MAX_INPUT]


@dataclass
class Stats:
    reader: str
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    max_s: float = 0.0
    total_s: float = 0.0

    def line(self) -> str:
        return (
            f"fuzz {self.reader}: {self.cases} cases, {self.accepted} accepted, {self.refused} refused "
            f"(PhenogenError), 0 other exceptions, max {self.max_s:.3f} s/case, total {self.total_s:.1f} s"
        )


def run_fuzz(
    reader: str,
    n: int,
    seed: int,
    make: Callable[[random.Random], object],
    call: Callable[[object], None],
    save_dir: Path,
) -> Stats:
    """Run ``n`` cases of ``call(make(rng))``; fail at the first exception that is not a PhenogenError."""
    n = int(os.environ.get("PHENOGEN_FUZZ_CASES", n))
    rng = random.Random(seed)
    stats = Stats(reader)
    start = time.perf_counter()
    for case in range(n):
        data = make(rng)
        t0 = time.process_time()  # CPU time of this process: other jobs on a shared machine do not count
        try:
            call(data)
            stats.accepted += 1
        except PhenogenError as exc:
            stats.refused += 1
            message = str(exc)
            if "\n" in message or len(message) > 2000:
                _fail(save_dir, reader, case, data, f"message not one short line: {message[:300]!r}")
        except Exception as exc:  # noqa: BLE001 - the point of the test
            _fail(save_dir, reader, case, data, f"{type(exc).__name__}: {str(exc)[:300]}")
        elapsed = time.process_time() - t0
        stats.max_s = max(stats.max_s, elapsed)
        if elapsed >= MAX_SECONDS_PER_CASE:
            _fail(save_dir, reader, case, data, f"took {elapsed:.2f} s (limit {MAX_SECONDS_PER_CASE} s)")
        stats.cases += 1
    stats.total_s = time.perf_counter() - start
    print("\n" + stats.line())
    assert stats.cases == n
    return stats


def _fail(save_dir: Path, reader: str, case: int, data: object, what: str) -> None:
    path = save_dir / f"fuzz-{reader}-case{case}.bin"
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode("utf-8", "surrogatepass"))
    shown = data[:300] if isinstance(data, bytes | str) else data
    pytest.fail(f"{reader} case {case}: {what}\ninput (saved to {path}): {shown!r}", pytrace=False)


# ----------------------------------------------------------------------------------- the readers
SEQ = "ACGTACGTTAGCCTAGGATCAAGGCTTAACCGGTTA" * 4
FASTA_SEEDS = [
    f">r1\n{SEQ[:60]}\n{SEQ[60:]}\n>r2 some text\n{SEQ.lower()}\n".encode(),
    f">ABCD001-10|Turdus merula|COI-5P|MN123456\n{SEQ}\n>ABCD002-10|Turdus merula|COI-5P|\n{SEQ[::-1]}\n".encode(),
    f">MN123456.1 Turdus merula cytochrome oxidase subunit I (COI) gene\r\n{SEQ[:50]}NRY{SEQ[50:]}\r\n".encode(),
    f">gi|123|gb|MN123456.1| x\n{SEQ}\n\n>aln\n{SEQ[:20]}--..{SEQ[20:]}\n>u\n{SEQ.replace('T', 'U')}\n".encode(),
]
FASTA_TOKENS = [b">", b">r1\n", b"\n>x\n", b"N", b"R", b"-", b"*", b"E", b"@", b"LOCUS", b"ACGT" * 50]


def _fasta_call(path: Path, gz: bool, rng: random.Random) -> Callable[[object], None]:
    def call(data: object) -> None:
        path.write_bytes(data)  # type: ignore[arg-type]
        limits = {}
        if rng.random() < 0.2:  # small caps, so that the size limits are reached too
            limits = {"max_bytes": 2000, "max_line": 300, "max_record": 500, "max_records": 3}
        read_fasta(
            path, policy=rng.choice(("reject", "mask", "drop")), allow_gaps=rng.random() < 0.5, **limits
        )

    return call


def _fasta_plain(rng: random.Random) -> bytes:
    return mutate(rng.choice(FASTA_SEEDS), rng, FASTA_TOKENS)


def _fasta_gzip(rng: random.Random) -> bytes:
    if rng.random() < 0.5:  # a valid stream of mutated text
        return gzip.compress(_fasta_plain(rng), compresslevel=1, mtime=0)
    return mutate(gzip.compress(rng.choice(FASTA_SEEDS), mtime=0), rng, [b"\x1f\x8b\x08\x00", b"\x00" * 8])


TOML_SEEDS = [
    b"[sim]\nseed = 3\nn_living = 12\nkappa = 8.5\ntree_height = 2.0\ncodon_position_rates = [1.0, 0.5, 2.0]\n"
    b'heldout_unit = "clades"\ntrait_model = "ou"\nstandardize_traits = false\n',
    b'[lm]\npreset = "tiny"\nlr = 3e-4\nstride = 3\ndropout = 0.1\nmax_minutes = 1.5\n[sample]\ntop_p = 0.9\n'
    b'schedule = "rise_fall"\nmax_tokens = 120\n[dna_eval]\nmarkov_orders = [1, 2, 3]\n'
    b"range_quantiles = [0.1, 0.9]\n",
    b'[image]\npreset = "tiny"\nencoder = "onehot"\nsnr_gamma = 5.0\nvae_steps = 10\n[generate]\nsteps = 5\n'
    b'scheduler = "euler-a"\n[fetch]\nsources = ["ncbi", "bold"]\nlicenses = ["cc0"]\ntimeout_s = 3.5\n'
    b'[import]\nbioscan_splits = ["train"]\n[build]\nstrategy = "taxon"\ntrain_taxa = ["Aves"]\n'
    b"[evaluate]\nsplits = ['heldout']\nprobe_lr = 1e-3\nretrieval = false\n[other]\nx = 1979-05-27\n",
]
TOML_TOKENS = [b"[sim]\n", b"[lm.x]\n", b"[[sim]]\n", b"\nlr = ", b"\nkappa = ", b" = ", b'"', b"'''", b'"""',
               b"\nseed = ", b"{x = 1}", b"[1, 2]", b"1979-05-27T07:32:00Z", b"\nsim = 3\n", b"#"]  # fmt: skip


FIELDS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SPECS.items()}


def _default_toml(cls: type, key: str) -> str | None:
    """The field's default as TOML text (None when it has none: an unset optional)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    return None if value is None else json.dumps(to_jsonable(value))  # JSON scalars/arrays are TOML


def _value(rng: random.Random, section: str, key: str) -> str:
    """Mostly the valid default (so whole files get accepted), else an interesting value."""
    default = _default_toml(SPECS[section], key) if key in FIELDS[section] else None
    return default if default is not None and rng.random() < 0.85 else rng.choice(VALUES)


VALUES = [
    "0", "1", "-1", "3", "12", "0.5", "1.5", "2e-3", "1e400", "-1e400", "nan", "inf", "-inf", "+inf", "9" * 30,
    "9" * 5000, "true", "false", '"x"', '"tiny"', '"ou"', '"species"', '"mask"', "'cpu'", '""', '"a\\u0000b"',
    '"' + "a" * 5000 + '"', "[]", "[1, 2]", "[1.0, 0.5, 2.0]", "[nan, 1, 1]", "[1e400, 1, 1]", '["ncbi"]',
    '["train", "zz"]', "[0.1, 0.9]", "[[1]]", "[" * 40 + "]" * 40, "{a = 1}", "{}", "1979-05-27", "07:32:00",
    "1979-05-27T07:32:00Z", "0x1F", "1_000", "-0.0", "1e-400",
]  # fmt: skip


def _toml_structured(rng: random.Random) -> bytes:
    """A TOML file of real sections and keys with interesting values (mutated now and then)."""
    lines = []
    for section in rng.sample(list(SPECS), rng.randint(1, 3)):
        lines.append(f"[{section}]")
        keys = rng.sample(FIELDS[section], rng.randint(1, 4)) + (["nope"] if rng.random() < 0.05 else [])
        lines += [f"{key} = {_value(rng, section, key)}" for key in keys]
    text = "\n".join(lines).encode()
    return mutate(text, rng, TOML_TOKENS) if rng.random() < 0.3 else text


def _toml(rng: random.Random) -> bytes:
    return _toml_structured(rng) if rng.random() < 0.6 else mutate(rng.choice(TOML_SEEDS), rng, TOML_TOKENS)


def _toml_call(path: Path) -> Callable[[object], None]:
    def call(data: object) -> None:
        path.write_bytes(data)  # type: ignore[arg-type]
        cfg = load_sections(SPECS, path)
        json.dumps(to_jsonable(cfg))  # what save_resolved writes
        tomllib.loads(merge_to_toml(path))  # the demo's merged file must read back

    return call


OVERRIDE_SEEDS = [
    "sim.kappa=8.5", "sim.n_living=30", "sim.codon_position_rates=[1, 2, 3]", 'sim.heldout_unit="clades"',
    "lm.lr=3e-4", "lm.stride=3", "lm.dropout=0.2", "lm.mixed_precision=bf16", "sample.top_p=0.5",
    "dna_eval.markov_orders=[1,2]", "image.encoder=kmer", "generate.steps=10", "fetch.sources=['ncbi']",
    "import.max_records=10", "build.heldout_fraction=0.3", "evaluate.splits=['heldout', 'extinct']",
    "evaluate.device=cpu", "fetch.user_agent=hello world", "sim.trait_model=ou", "sim.standardize_traits=false",
]  # fmt: skip
OVERRIDE_TOKENS = [b"=", b".", b"sim.", b"lm.lr", b"[", b"]", b"{a = 1}", b"'", b'"', b"#", b"\\u0000"]


def _overrides(rng: random.Random) -> list[str]:
    # argv text: the bytes decoded as Python decodes a POSIX command line (surrogateescape)
    texts = [
        rng.choice(OVERRIDE_SEEDS).encode()
        if rng.random() < 0.5
        else f"{(sec := rng.choice(list(SPECS)))}.{(key := rng.choice(FIELDS[sec]))}={_value(rng, sec, key)}".encode()
        for _ in range(rng.randint(1, 3))
    ]
    texts = [mutate(t, rng, OVERRIDE_TOKENS) if rng.random() < 0.6 else t for t in texts]
    return [t.decode("utf-8", "surrogateescape") for t in texts]


def _overrides_call(data: object) -> None:
    cfg = load_sections(SPECS, None, data)  # type: ignore[arg-type]
    json.dumps(to_jsonable(cfg))
    tomllib.loads(merge_to_toml(None, data))  # type: ignore[arg-type]


NEWICK_SEEDS = [
    b"((A:1,B:1):1,(C:1,D:1):1);",
    b"(((A:0.1,B:0.2)anc1:0.05,C:0.3)0.97:0.01,(D:1e-3,'E f':0.5)95:2.5E-1)root;\n",
    b"((A,B),(C,(D,E)));",
    b"((T1:0.00054,T2:0.0)0.950:0.1[&rate=1],(T3:1,'it''s':1)1.0:0.2, T4 : 1);",
    b"(A:1,B:-0.5,(C:1,D:1):1):0;",
]
NEWICK_TOKENS = [b"(", b")", b":", b";", b",", b"'", b"[&x]", b":1e401", b":-1", b":nan", b"(A,B)", b"0.5"]


def _newick_call(path: Path) -> Callable[[object], None]:
    def call(data: object) -> None:
        path.write_bytes(data)  # type: ignore[arg-type]
        tree = read_tree(path)
        tip_names(tree)
        name_internal_nodes(tree)
        node_depths(tree)
        text = to_newick(tree)
        try:
            again = parse_newick(text, "round trip")  # what phenogen writes, it reads back
        except InputError as exc:
            raise AssertionError(f"to_newick wrote {text!r}, which parse_newick refuses: {exc}") from None
        assert tip_names(again) == tip_names(tree)
        dup = copy_tree(tree)
        assert to_newick(dup) == text
        fix_branch_lengths(tree, strict=True)  # InputError for a negative length
        root_tree(tree, "midpoint")  # InputError for a tree of one tip

    return call


READERS = {
    "fasta": lambda tmp: (_fasta_plain, _fasta_call(tmp / "in.fasta", False, random.Random(1))),
    "fasta_gzip": lambda tmp: (_fasta_gzip, _fasta_call(tmp / "in.fasta.gz", True, random.Random(2))),
    "toml": lambda tmp: (_toml, _toml_call(tmp / "c.toml")),
    "set": lambda tmp: (_overrides, _overrides_call),
    "newick": lambda tmp: (lambda rng: mutate(rng.choice(NEWICK_SEEDS), rng, NEWICK_TOKENS), _newick_call(tmp / "t.nwk")),
}  # fmt: skip


@pytest.mark.parametrize("reader", list(READERS))
def test_fuzz_readers(reader, tmp_path):
    """A few thousand mutated inputs per reader (the default run)."""
    make, call = READERS[reader](tmp_path)
    stats = run_fuzz(reader, DEFAULT_CASES, seed=22, make=make, call=call, save_dir=tmp_path)
    assert stats.refused > 0 and stats.accepted > 0  # the fuzzer reaches both outcomes


@pytest.mark.fuzz
@pytest.mark.parametrize("reader", list(READERS))
def test_fuzz_readers_long(reader, tmp_path):
    """>= 10,000 mutated inputs per reader, other seeds (``-m fuzz``)."""
    make, call = READERS[reader](tmp_path)
    stats = run_fuzz(reader, FUZZ_CASES, seed=2022, make=make, call=call, save_dir=tmp_path)
    assert stats.refused > 0 and stats.accepted > 0


def test_seed_inputs_are_valid(tmp_path):
    """The fuzzers start from inputs every reader accepts (else they would test only refusals)."""
    for i, seed in enumerate(FASTA_SEEDS):
        (tmp_path / f"{i}.fa").write_bytes(seed)
        assert len(read_fasta(tmp_path / f"{i}.fa", policy="mask", allow_gaps=True)) >= 1
    for i, seed in enumerate(TOML_SEEDS):
        (tmp_path / f"{i}.toml").write_bytes(seed)
        load_sections(SPECS, tmp_path / f"{i}.toml")
    load_sections(SPECS, None, OVERRIDE_SEEDS)
    for seed in NEWICK_SEEDS:
        parse_newick(seed.decode())


# ------------------------------------------------------------------------ targeted: Newick defects
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(" * 5000 + "A" + ")" * 5000 + ";", f"position {MAX_NEWICK_DEPTH + 1}: nested more than"),
        ("(A:1e401,B:1);", "position 4: branch length 1e401 is not a finite number"),
        ("(A:nan,B:1);", "position 4: branch length 'nan' is not a number"),
        ("(A:inf,B:1);", "branch length 'inf' is not a number"),
        ("(A:x,B:1);", "branch length 'x' is not a number"),
        ("(A:1:2,B);", "position 5: second branch length"),
        ("(Homo sapiens,B);", "position 7: second label 'sapiens'"),
        ("((A,B);", "'(' without a matching ')'"),
        ("(A,B));", "position 6: ')' without a matching '('"),
        ("(A,B);(C,D);", "position 7: text after the ';'"),
        ("(A,B)1e400;", "support value 1e400 is not a finite number"),
        ("(A,B)" + "9" * 5000 + ";", "support value of 5000 digits"),
        ("('A,B);", "position 2: unterminated quoted label"),
        ("('" + "\\" * 41 + ",B);", "unterminated quoted label"),  # exponential in Bio.Phylo's regex
        ("(A[&x,B);", "unterminated [comment]"),
        ("(A,B)C(D,E);", "'(' after a label"),
        ("", "empty"),
        ("  \n", "empty"),
        ("(A,\nB:1e999);", "line 2, column 3: branch length"),
    ],
)
def test_bad_newick_is_one_input_error_with_its_position(text, message):
    with pytest.raises(InputError) as info:
        parse_newick(text, "t.nwk")
    assert str(info.value).startswith("t.nwk") and message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_huge_numbers_are_refused_in_linear_time():
    """A failed match of a long run of digits used to backtrack quadratically (minutes for 1 MB)."""
    t0 = time.process_time()  # CPU time: a busy machine slows the wall clock, not the algorithm
    for text in (
        "(A:" + "9" * 300_000 + "x,B);",
        "(A:" + "9" * 300_000 + ".,B);",
        "(A:1." + "0" * 300_000 + "e,B);",
    ):
        with pytest.raises(InputError, match="is not a number"):
            parse_newick(text)
    assert time.process_time() - t0 < 2.0
    for text in ("(A:.5,B:+1.25e-3,C:7);", "(A:1.5E+2,B:-0);"):
        parse_newick(text)


def test_newick_that_bio_reads_well_still_reads():
    tree = parse_newick("((A:1,'B c':1e-3)0.97:1[&rate=1],(C: 2,'it''s':1)anc:1);")
    assert tip_names(tree) == ["A", "B c", "C", "it's"]
    assert [c.branch_length for c in tree.get_terminals()] == [1.0, 1e-3, 2.0, 1.0]
    assert tree.root.clades[0].support == 0.97 and tree.root.clades[1].name == "anc"
    assert parse_newick("(A,B)").count_terminals() == 2  # the ';' may be missing
    negative = parse_newick("(A:-1,B:1);")  # negative lengths are fix_branch_lengths' to refuse (strict)
    with pytest.raises(InputError, match="negative branch length"):
        fix_branch_lengths(negative, strict=True)


def test_deep_trees_copy_and_root_without_recursion_errors():
    """copy.deepcopy fails near 160 levels; copy_tree copies every tree parse_newick accepts."""
    n = MAX_NEWICK_DEPTH
    tree = parse_newick("(" * n + "T0:1" + "".join(f",T{i}:1):1" for i in range(1, n + 1)) + ";")
    dup = copy_tree(tree)
    assert to_newick(dup) == to_newick(tree)
    dup.root.clades[0].name = "changed"
    assert tree.root.clades[0].name != "changed"
    root_tree(dup, "midpoint")
    assert fix_branch_lengths(dup).missing == 0 and name_internal_nodes(dup) > 0
    assert all(c.name for c in dup.get_nonterminals())
    assert len(node_depths(dup)) == len(list(dup.find_clades())) == 2 * dup.count_terminals() - 1
    for text in ("A;", "1;", ":5;", "[&x];"):  # Bio.Phylo: UnboundLocalError / ValueError
        with pytest.raises(InputError, match="at least two tips"):
            root_tree(parse_newick(text), "midpoint")


def test_tree_files_non_utf8_huge_and_missing(tmp_path, monkeypatch):
    path = tmp_path / "t.nwk"
    path.write_bytes(b"(A\xff,B);")
    with pytest.raises(InputError, match=r"t.nwk: tree file is not UTF-8 text \(byte 2"):
        read_tree(path)
    monkeypatch.setattr("phenogen.phylo.tree.MAX_NEWICK_CHARS", 100)
    path.write_text("(" + ",".join(f"T{i}" for i in range(100)) + ");")
    with pytest.raises(InputError, match="more than the 100 allowed"):
        read_tree(path)
    with pytest.raises(InputError, match="does not exist"):
        read_tree(tmp_path / "missing.nwk")
    with pytest.raises(InputError, match="expected Newick text, got bytes"):
        parse_newick(b"(A,B);")  # type: ignore[arg-type]

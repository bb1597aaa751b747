"""Seeded mutation fuzzing of every reader of user files in the dataset layer (issue 22).

Each fuzzer starts from a small valid input built here, mutates it (bytes flipped, inserted, deleted,
duplicated, truncated; cells and fields replaced by hostile values: NaN, huge numbers, deep nesting,
``..`` and absolute paths, 300-byte names, 200,000-character cells, NUL bytes, non-UTF-8 bytes), calls
the reader and requires the outcome to be a success or a :class:`~phenogen.errors.PhenogenError`.
Any other exception fails the test and shows the input that caused it; so does a case slower than
:data:`MAX_CASE_S`.

Readers: (a) ``dataset.json`` and (b) ``manifest.tsv`` through ``load_dataset``; (c) PNG/JPEG bytes
through ``Dataset.verify_images`` (``phenogen validate``), ``check_image``/``read_image``, the
report's embedder and the training/evaluation image loaders; (d) the ``import folder`` sample CSV
through ``read_sample_csv`` (and, for a share of cases, the whole ``import_folder``); (e) the
report's ``metrics.json`` through ``check_metrics`` and the sections that format it.

Default: :data:`N_DEFAULT` cases per reader (a few seconds in all). ``-m fuzz``: :data:`N_FUZZ` each.
Seeds are fixed, so a failure reproduces; ``PHENOGEN_FUZZ_SEED`` changes them.
"""

from __future__ import annotations

import io
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import Record, check_image, load_dataset, read_image, write_dataset
from phenogen.data.folder import import_folder, read_sample_csv
from phenogen.errors import PhenogenError

N_DEFAULT = 1500
N_FUZZ = 10_000
MAX_CASE_S = 2.0
SEED = int(os.environ.get("PHENOGEN_FUZZ_SEED", "22"))
SEQ = "ACGTTGCAAC" * 12

HOSTILE_TEXT = [
    "", " ", "nan", "NaN", "inf", "-inf", "1e999", "-0", "0x10", "1_0", "None", "null", "true",
    "../escape.png", "../../etc/passwd", "/etc/passwd", "C:\\x.png", "images/../../x.png", "images/",
    "images/" + "a" * 300 + ".png", "a" * 5000, "a" * 200_000, "\x00", "images/a\x00.png", "a\tb", "a\nb",
    '"', '""', "'", ";", ";;", "|", "<script>alert(1)</script>", "\ud800", "é", "\ufeff", "\r", "\\",
    "train", "heldout", "extinct", "ancestor", "living", "internal", "ACGT", "acgt", "ACGU", "images/a.png",
]  # fmt: skip
HOSTILE_JSON = [
    None, True, False, 0, 1, -1, 2, 99, 1.5, 10**400, "x", "", [], [1], ["a", "a"], ["a", ""], {}, {"a": 1},
    "phenogen-dataset", ["size", "size"], [None], ["\t"], "/", "../x",
]  # fmt: skip


# ------------------------------------------------------------------------------------ mutations
def mutate_bytes(data: bytes, rng: random.Random, tokens: list[bytes]) -> bytes:
    """1-4 random edits of ``data``: flips, random bytes, deletions, insertions, duplications, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(buf) + 1)
        op = rng.random()
        if op < 0.25 and buf:
            buf[min(k, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op < 0.4 and buf:
            buf[min(k, len(buf) - 1)] = rng.randrange(256)
        elif op < 0.55:
            del buf[k : k + rng.randint(1, 64)]
        elif op < 0.7:
            buf[k:k] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op < 0.8 and buf:
            j = rng.randrange(len(buf))
            buf[k:k] = buf[j : j + rng.randint(1, 200)]
        elif op < 0.9:
            buf[k:k] = rng.choice(tokens)
        else:
            del buf[k:]
    return bytes(buf)


def _tokens(texts: list[str]) -> list[bytes]:
    return [t.encode("utf-8", "surrogatepass") for t in texts] + [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]


class Fuzz:
    """Runs cases, counts outcomes, fails on any non-PhenogenError exception or a slow case."""

    def __init__(self, name: str, collect: bool = False) -> None:
        self.name, self.counts, self.worst, self.start = name, Counter(), 0.0, time.perf_counter()
        self.collect, self.others, self.first_other = collect, Counter(), ""

    def case(self, fn: Callable[[], object], shown: Callable[[], object]) -> None:
        t = time.perf_counter()
        try:
            fn()
            self.counts["accepted"] += 1
        except PhenogenError as exc:
            self.counts["refused"] += 1
            assert "\n" not in str(exc), f"{self.name}: multi-line message {str(exc)!r}"
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is for
            self.counts["other"] += 1
            if self.collect:  # count them all, fail at the end (readers outside the dataset layer)
                self.others[f"{type(exc).__name__}: {exc}"[:80]] += 1
                self.first_other = self.first_other or f"{type(exc).__name__}: {exc}; input {shown()!r:.500}"
                return
            raise AssertionError(
                f"{self.name}: {type(exc).__name__}: {exc}\ninput: {shown()!r:.3000}"
            ) from exc
        took = time.perf_counter() - t
        self.worst = max(self.worst, took)
        assert took < MAX_CASE_S, f"{self.name}: a case took {took:.2f} s; input: {shown()!r:.3000}"

    def report(self) -> str:
        total = time.perf_counter() - self.start
        n = sum(self.counts.values())
        line = (
            f"FUZZ {self.name}: cases {n}, accepted {self.counts['accepted']}, refused {self.counts['refused']}, "
            f"other {self.counts['other']}, max {self.worst:.3f} s/case, total {total:.1f} s"
        )
        if self.others:
            line += f"; other exceptions: {dict(self.others)}"
        print(line)
        return line


# ----------------------------------------------------------------------------------- fixtures
def _png(rng: np.random.Generator, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def small_dataset(root: Path) -> Path:
    """Three records, two PNGs and a JPEG, one trait, a tree: every field of the format is exercised."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(_png(rng))
    (root / "images" / "b.png").write_bytes(_png(rng))
    (root / "images" / "c.jpg").write_bytes(_png(rng, "JPEG"))
    recs = [
        Record("a1", "sp a", "a_1", "train", "living", SEQ, ("images/a.png", "images/c.jpg"), ("Aves",), {"size": 0.5}),
        Record("b1", "sp b", "b_1", "heldout", "living", SEQ, ("images/b.png",), ("Aves", "X"), {"size": -1.0}),
        Record("n1", "n1", "n1", "ancestor", "internal", SEQ[:-1] + "N", (), (), {}),
    ]  # fmt: skip
    write_dataset(root, recs, {"source": "fuzz", "trait_names": ["size"]}, "(a1,b1)n1;")
    return root


def _n(request) -> int:
    return N_FUZZ if request.node.get_closest_marker("fuzz") else N_DEFAULT


# -------------------------------------------------------------------------------------- (a) (b)
def _mutate_json(text: str, rng: random.Random) -> bytes:
    info = json.loads(text)
    op = rng.random()
    if op < 0.35:
        key = rng.choice([*info, "trait_names", "format", "version", "counts", "image_links", "source"])
        info[key] = rng.choice(HOSTILE_JSON)
        return json.dumps(info).encode()
    if op < 0.45:
        depth = rng.choice([10, 63, 65, 1000, 100_000])
        return (
            ("[" * depth + "]" * depth).encode()
            if rng.random() < 0.5
            else json.dumps(
                {**info, "extra": json.loads("[" * min(depth, 900) + "]" * min(depth, 900))}
            ).encode()
        )
    if op < 0.55:
        return json.dumps(rng.choice(HOSTILE_JSON)).encode()
    return mutate_bytes(
        text.encode(), rng, _tokens(HOSTILE_TEXT[:40]) + [b"NaN", b"Infinity", b"[", b"{", b'"']
    )


def _mutate_tsv(text: str, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return mutate_bytes(text.encode(), rng, _tokens(HOSTILE_TEXT))
    rows = [line.split("\t") for line in text.splitlines()]
    for _ in range(rng.randint(1, 3)):
        row = rng.choice(rows)
        op = rng.random()
        if op < 0.8:
            row[rng.randrange(len(row))] = rng.choice(HOSTILE_TEXT)
        elif op < 0.9:
            rows.append(list(rng.choice(rows[1:])))  # a duplicate record
        else:
            del row[rng.randrange(len(row))]
    return "\n".join("\t".join(r) for r in rows).encode("utf-8", "surrogatepass") + b"\n"


def _fuzz_file(
    request, tmp_path, name: str, mutate: Callable[[str, random.Random], bytes], seed: int
) -> None:
    root = small_dataset(tmp_path / "ds")
    path = root / name
    original = path.read_text(encoding="utf-8")
    rng = random.Random(seed)
    fuzz = Fuzz(name)
    data = b""
    for _ in range(_n(request)):
        data = mutate(original, rng)
        path.write_bytes(data)
        fuzz.case(lambda: load_dataset(root), lambda d=data: d)
    path.write_text(original, encoding="utf-8")
    load_dataset(root)  # the fixture itself still loads
    fuzz.report()
    assert fuzz.counts["refused"] > 0 and fuzz.counts["accepted"] > 0


def test_fuzz_dataset_json(request, tmp_path):
    _fuzz_file(request, tmp_path, "dataset.json", _mutate_json, SEED)


def test_fuzz_manifest(request, tmp_path):
    _fuzz_file(request, tmp_path, "manifest.tsv", _mutate_tsv, SEED + 1)


# -------------------------------------------------------------------------------------------- (c)
def _image_readers(root: Path, path: Path) -> list[tuple[str, Callable[[], object]]]:
    from phenogen.report.html import _Embedder

    ds = load_dataset(root)
    embed = _Embedder(roots=[root.resolve()])
    return [
        ("validate", lambda: ds.verify_images()),
        ("check_image", lambda: check_image(path)),
        ("read_image", lambda: read_image(path)),
        ("report", lambda: embed.read(path)),
    ]


def test_fuzz_images(request, tmp_path):
    """PNG and JPEG bytes mutated, read by validate, check_image/read_image and the report's embedder."""
    root = small_dataset(tmp_path / "ds")
    rng = random.Random(SEED + 2)
    targets = {p: p.read_bytes() for p in (root / "images" / "a.png", root / "images" / "c.jpg")}
    fuzz = {name: Fuzz(f"image/{name}") for name in ("validate", "check_image", "read_image", "report")}
    tokens = [b"\xff\xd8", b"\xff\xc0\xff\xff\xff\xff", b"IHDR\xff\xff\xff\xff", b"IEND", b"\x00" * 8]
    for i in range(_n(request)):
        path = list(targets)[i % 2]
        data = mutate_bytes(targets[path], rng, tokens)
        path.write_bytes(data)
        for name, fn in _image_readers(root, path):
            fuzz[name].case(fn, lambda d=data: d)
        path.write_bytes(targets[path])
    for f in fuzz.values():
        f.report()
        assert f.counts["refused"] > 0


def test_fuzz_training_image_loaders(request, tmp_path):
    """The same mutated bytes through the loaders training and evaluation use (diffusion.vae, evaluate.probe).

    Other exceptions are counted over the whole run and fail the test at its end, with the first input.
    """
    from phenogen.diffusion.vae import load_images as vae_load
    from phenogen.evaluate.probe import load_images as probe_load

    root = small_dataset(tmp_path / "ds")
    rng = random.Random(SEED + 3)
    targets = {p: p.read_bytes() for p in (root / "images" / "a.png", root / "images" / "c.jpg")}
    fuzz = {
        "vae": Fuzz("image/train (vae.load_images)", collect=True),
        "probe": Fuzz("image/evaluate (probe.load_images)", collect=True),
    }
    for i in range(_n(request)):
        path = list(targets)[i % 2]
        data = mutate_bytes(targets[path], rng, [b"\xff\xd8", b"IEND", b"\x00" * 8])
        path.write_bytes(data)
        fuzz["vae"].case(lambda p=path: vae_load([p], 24), lambda d=data: d)
        fuzz["probe"].case(lambda p=path: probe_load([p], 24), lambda d=data: d)
    for f in fuzz.values():
        f.report()
    for f in fuzz.values():
        assert not f.others, f"{f.name}: {f.first_other}"


TRUNCATED_IHDR = b"\x89PNG\r\n\x1a\n" + (5).to_bytes(4, "big") + b"IHDR" + b"\x00" * 9  # PIL: ValueError


@pytest.mark.parametrize("kind", ["bomb", "truncated IHDR"])
def test_dataset_image_readers_refuse_bombs_and_truncated_headers(tmp_path, monkeypatch, kind):
    """The dataset layer's readers turn both into a DataError."""
    path = tmp_path / "a.png"
    path.write_bytes(_png(np.random.default_rng(0)) if kind == "bomb" else TRUNCATED_IHDR)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24 x 24 = 576 > 2 x 100: a "bomb"
    for read in (check_image, read_image):
        with pytest.raises(PhenogenError):
            read(path)


@pytest.mark.parametrize("kind", ["bomb", "truncated IHDR"])
def test_training_image_loaders_refuse_bombs_and_truncated_headers(tmp_path, monkeypatch, kind):
    from phenogen.diffusion.vae import load_images as vae_load
    from phenogen.evaluate.probe import load_images as probe_load

    path = tmp_path / "a.png"
    path.write_bytes(_png(np.random.default_rng(0)) if kind == "bomb" else TRUNCATED_IHDR)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for load in (vae_load, probe_load):
        with pytest.raises(PhenogenError):
            load([path], 24)


# -------------------------------------------------------------------------------------------- (d)
def _folder(root: Path) -> Path:
    rng = np.random.default_rng(1)
    (root / "photos").mkdir(parents=True)
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG")):
        (root / "photos" / name).write_bytes(_png(rng, fmt))
    (root / "secret.png").write_bytes(_png(rng))  # inside; the outside one is next to the folder
    (root.parent / "outside.png").write_bytes(_png(rng))
    (root / "seqs.fasta").write_text(f">r1\n{SEQ}\n>r2\n{SEQ}\n>r3\n{SEQ}\n")
    (root / "samples.csv").write_text(
        "record_id,species,images,taxonomy,split\n"
        "r1,Turdus merula,photos/a.png;photos/b.jpg,Aves;Turdidae,train\n"
        "r2,Parus major,photos/b.jpg,Aves;Paridae,heldout\n"
        "r3,Parus major,photos/a.png,,\n"
    )
    return root


CSV_TOKENS = ["../outside.png", "/etc/passwd", "photos/../../outside.png", "seqs.fasta", "photos", "x.txt",
              "photos/a.png", "photos/" + "a" * 300 + ".png", "r1", "r2", "validation", '"a,b"', ",", "\t"]  # fmt: skip


def test_fuzz_import_folder_csv(request, tmp_path):
    """The sample CSV mutated, read by read_sample_csv; every 20th case runs the whole import_folder."""
    root = _folder(tmp_path / "user")
    path = root / "samples.csv"
    original = path.read_text()
    rng = random.Random(SEED + 4)
    fuzz, whole = Fuzz("import-folder CSV"), Fuzz("import_folder (whole)")
    for i in range(_n(request)):
        if rng.random() < 0.5:
            data = mutate_bytes(original.encode(), rng, _tokens(HOSTILE_TEXT + CSV_TOKENS))
        else:
            rows = [line.split(",") for line in original.splitlines()]
            for _ in range(rng.randint(1, 3)):
                row = rng.choice(rows)
                row[rng.randrange(len(row))] = rng.choice(HOSTILE_TEXT + CSV_TOKENS * 3)
            data = "\n".join(",".join(r) for r in rows).encode("utf-8", "surrogatepass") + b"\n"
        path.write_bytes(data)
        fuzz.case(lambda: read_sample_csv(path), lambda d=data: d)
        if i % 20 == 0:
            out = tmp_path / f"out{i}"
            whole.case(
                lambda o=out: import_folder(root / "seqs.fasta", path, o, ImportConfig(), BuildConfig()),
                lambda d=data: d,
            )
            for p in out.rglob("*") if out.exists() else ():
                assert p.resolve().is_relative_to(out.resolve()) or p.is_symlink()
            assert not (tmp_path / f"out{i}.tmp").exists()
    fuzz.report()
    whole.report()
    assert fuzz.counts["refused"] > 0 and fuzz.counts["accepted"] > 0


# -------------------------------------------------------------------------------------------- (e)
METRICS = {
    "headline": {"split": "heldout", "trait_rmse": {"generated": 0.5, "mean": 0.9, "random": 1.1}, "top5": 0.4,
                 "chance_top5": 0.2, "beats_mean": True, "ratio_to_random": 0.45, "top5_over_chance": 2.0},
    "splits": {"heldout": {"n_targets": 3, "n_images": 6, "methods": {
        "generated": {"trait_rmse": 0.5, "trait_rmse_se": 0.01, "top1": 0.3, "top5": 0.4, "chance_top1": 0.1,
                      "chance_top5": 0.2, "note": "x"},
        "nearest": {"trait_rmse": 0.6}, "mean": {"trait_rmse": 0.9}, "oracle": {"trait_rmse": 0.4}}}},
    "probe": {"r2_mean": {"heldout": 0.7}, "prior_renders": 10},
    "retrieval": {"n_candidates": 12},
    "caption_readout": {"traits": ["a"], "splits": {"heldout": {"mean_r": 0.5, "per_trait_r": {"a": 0.5}}}},
    "sequence": {"source": "lm_eval/metrics.json", "metrics": {"bits_per_base": 1.9, "novelty": {"x": 0.1}}},
}  # fmt: skip


def _poke(obj, rng: random.Random):
    """``obj`` with one nested value (chosen at random) replaced by a hostile JSON value."""
    if not isinstance(obj, dict | list) or not obj or rng.random() < 0.3:
        return rng.choice(HOSTILE_JSON)
    if isinstance(obj, dict):
        key = rng.choice(list(obj))
        return {**obj, key: _poke(obj[key], rng)}
    i = rng.randrange(len(obj))
    return [*obj[:i], _poke(obj[i], rng), *obj[i + 1 :]]


def test_fuzz_report_metrics(request, tmp_path):
    """metrics.json (and losses.json) mutated, read and rendered by the report's sections."""
    from phenogen.fsio import read_json
    from phenogen.report.figures import loss_curves
    from phenogen.report.html import (
        RunParts,
        _caption_readout,
        _headline,
        _metric_tables,
        _sequence,
        check_metrics,
    )

    path = tmp_path / "metrics.json"
    text = json.dumps(METRICS)
    rng = random.Random(SEED + 5)
    fuzz = Fuzz("report metrics.json")

    def render() -> None:
        metrics = check_metrics(read_json(path, "metrics.json"), path)
        _headline(metrics), _metric_tables(metrics, tmp_path), _caption_readout(metrics)
        _sequence(RunParts.resolve(tmp_path), metrics)
        loss_curves(metrics)

    for _ in range(_n(request)):
        if rng.random() < 0.6:
            data = json.dumps(_poke(METRICS, rng)).encode()
        else:
            data = mutate_bytes(text.encode(), rng, [b"NaN", b"[", b"{", b'"', b"null", b"1e999", b"true"])
        path.write_bytes(data)
        fuzz.case(render, lambda d=data: d)
    fuzz.report()
    assert fuzz.counts["refused"] > 0 and fuzz.counts["accepted"] > 0


# ------------------------------------------------------------------------------------- -m fuzz
@pytest.mark.fuzz
def test_fuzz_long_dataset_json(request, tmp_path):
    _fuzz_file(request, tmp_path, "dataset.json", _mutate_json, SEED + 100)


@pytest.mark.fuzz
def test_fuzz_long_manifest(request, tmp_path):
    _fuzz_file(request, tmp_path, "manifest.tsv", _mutate_tsv, SEED + 101)


@pytest.mark.fuzz
def test_fuzz_long_images(request, tmp_path):
    test_fuzz_images(request, tmp_path)


@pytest.mark.fuzz
def test_fuzz_long_training_image_loaders(request, tmp_path):
    test_fuzz_training_image_loaders(request, tmp_path)


@pytest.mark.fuzz
def test_fuzz_long_import_folder_csv(request, tmp_path):
    test_fuzz_import_folder_csv(request, tmp_path)


@pytest.mark.fuzz
def test_fuzz_long_report_metrics(request, tmp_path):
    test_fuzz_report_metrics(request, tmp_path)

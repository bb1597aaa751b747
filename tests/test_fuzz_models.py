"""Seeded mutation fuzzing of the model and checkpoint directory loaders (issue 22).

Tiny real models are built once per module: a DNA language model directory (``save_lm``), its
tokenizer files, a DNA-to-image pipeline directory (``save_pretrained``), a ``train-lm`` output with a
resumable ``state/`` (written by ``train-lm``'s own ``write_state``) and a ``train-image`` output with
two checkpoints (written by its own ``save_checkpoint``). Each case mutates *one* file of such a
directory in place — JSON files structurally (wrong types, deleted or renamed keys, huge numbers, NaN,
``1e400``, deep nesting, ``[]``, non-UTF-8 bytes) or byte-wise; safetensors files by truncation, header
length flips, header JSON edits (dtype, shape, offsets) and data byte flips; any file by deletion,
emptying or replacement by a directory — calls the loader, and restores the file. The outcome must be a
success or a one-line :class:`~phenogen.errors.PhenogenError`; anything else fails the test and shows the
mutation. No case may take :data:`MAX_CASE_S` or more. A data-byte flip that keeps the header valid
loads other weights: that counts as accepted.

Loaders: ``load_lm``; ``KmerTokenizer.from_pretrained``; ``load_pipeline``; the ``train-lm --resume``
path (``complete_dir`` + ``_check_resume_config`` + ``read_state`` + ``check_resume_position``); the
``train-image --resume`` path (``check_resumable`` + ``find_checkpoint`` + ``load_checkpoint`` + the
run's VAE through ``load_vae``). For train-image checkpoints half of the cases also rewrite
``complete.json`` with the mutated sizes, so that damaged files reach the loading code and are not only
skipped as incomplete.

Default: :data:`N_DEFAULT` cases per loader; ``-m fuzz``: :data:`N_FUZZ` each; ``PHENOGEN_FUZZ_CASES``
overrides both, ``PHENOGEN_FUZZ_SEED`` changes the seed. Summaries are printed (``-s``)::

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -s tests/test_fuzz_models.py
    OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -p no:cacheprovider -s -m fuzz tests/test_fuzz_models.py
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from phenogen.errors import CheckpointError, PhenogenError

N_DEFAULT = {"lm": 300, "tokenizer": 500, "pipeline": 200, "lm_resume": 300, "image_resume": 120}
N_FUZZ = 10_000
MAX_CASE_S = 5.0
SEED = int(os.environ.get("PHENOGEN_FUZZ_SEED", "22"))


# ------------------------------------------------------------------------------------ the runner
class Fuzz:
    """Runs cases, counts outcomes, fails on any non-PhenogenError exception or a slow case."""

    def __init__(self, name: str) -> None:
        self.name, self.counts, self.worst, self.start = name, Counter(), 0.0, time.perf_counter()
        self.refusals: Counter = Counter()
        self.slowest = ""

    def case(self, fn: Callable[[], object], shown: Callable[[], object]) -> None:
        t = time.perf_counter()
        try:
            fn()
            self.counts["accepted"] += 1
        except PhenogenError as exc:
            self.counts["refused"] += 1
            text = str(exc)
            assert "\n" not in text and len(text) < 3000, (
                f"{self.name}: bad message {text[:500]!r}; {shown()}"
            )
            self.refusals[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - what the fuzzer is for
            self.counts["other"] += 1
            raise AssertionError(
                f"{self.name}: {type(exc).__name__}: {str(exc)[:500]}\nmutation: {shown()!s:.3000}"
            ) from exc
        took = time.perf_counter() - t
        if took > self.worst:
            self.worst, self.slowest = took, str(shown())
        assert took < MAX_CASE_S, f"{self.name}: a case took {took:.2f} s; mutation: {shown()!s:.3000}"

    def report(self) -> str:
        total = time.perf_counter() - self.start
        n = sum(self.counts.values())
        line = (
            f"FUZZ {self.name}: cases {n}, accepted {self.counts['accepted']}, refused {self.counts['refused']}, "
            f"other {self.counts['other']}, max {self.worst:.3f} s/case, total {total:.1f} s"
        )
        print(line)
        print(f"  slowest case: {self.slowest[:200]}")
        return line


def n_cases(name: str, long: bool) -> int:
    return int(os.environ.get("PHENOGEN_FUZZ_CASES", N_FUZZ if long else N_DEFAULT[name]))


# ------------------------------------------------------------------------------------ mutations
HOSTILE = [
    None, True, False, 0, -1, 1, 2, 3, 7, 2**31, 2**63, -(2**63), 10**30, 10**400, 1.5, -0.5, 1e308,
    "", "x", "a" * 5000, "float32", "F16", "I64", "BOOL", "../x", "/etc/passwd", [], [0], [1, 2], [[]], [None],
    {}, {"a": 1}, {"_class_name": "x"}, "NaN", "<pad>", "<unk>", "AAAA", "torch", "diffusers",
    ["diffusers", "UNet2DConditionModel"], ["phenogen.diffusion.conditioning", "DNAConditioner"], [None, None],
    ["os", "system"], ["builtins", "eval"], ["torch", "nn"],
]  # fmt: skip
RAW_VALUES = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"1e-400", b"9" * 5000, b"-0", b"0.0"]
SPECIAL_BYTES = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\\u0000",
    b"\\ud800",
]


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """1-4 random byte edits: flips, random bytes, deletions, insertions, duplications, truncation."""
    buf, done = bytearray(data), []
    for _ in range(rng.randint(1, 4)):
        k = rng.randrange(len(buf) + 1)
        op = rng.random()
        if op < 0.3 and buf:
            i = min(k, len(buf) - 1)
            buf[i] ^= 1 << rng.randrange(8)
            done.append(f"flip@{i}")
        elif op < 0.45 and buf:
            i = min(k, len(buf) - 1)
            buf[i] = rng.randrange(256)
            done.append(f"byte@{i}")
        elif op < 0.6:
            n = rng.randint(1, 64)
            del buf[k : k + n]
            done.append(f"del{n}@{k}")
        elif op < 0.72:
            ins = rng.choice(SPECIAL_BYTES) if rng.random() < 0.5 else rng.randbytes(rng.randint(1, 16))
            buf[k:k] = ins
            done.append(f"ins{ins[:8]!r}@{k}")
        elif op < 0.82 and buf:
            j = rng.randrange(len(buf))
            chunk = buf[j : j + rng.randint(1, 200)]
            buf[k:k] = chunk * rng.choice((1, 2, 50))
            done.append(f"dup@{k}")
        else:
            del buf[k:]
            done.append(f"truncate@{k}")
    return bytes(buf), "bytes " + ",".join(done)


def _paths(obj, prefix=()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON value, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for key, v in obj.items():
            out += _paths(v, (*prefix, key))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            out += _paths(v, (*prefix, i))
    return out


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def _set(obj, path, value):
    if not path:
        return value
    _get(obj, path[:-1])[path[-1]] = value
    return obj


def _dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")


def mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A structural edit of a JSON document (a raw-text edit for non-JSON values), else byte edits."""
    try:
        doc = json.loads(data)
    except ValueError:
        return mutate_bytes(data, rng)
    op = rng.random()
    paths = _paths(doc)
    path = rng.choice(paths)
    if op < 0.3:  # replace a value
        value = rng.choice(HOSTILE)
        return _dumps(_set(doc, path, value)), f"json {list(path)} = {value!r:.80}"
    if op < 0.45 and path:  # delete a key / an element
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
        return _dumps(doc), f"json delete {list(path)}"
    if op < 0.55:  # a value JSON cannot hold: NaN, Infinity, 1e400, 5,000 digits
        marker = "__RAW__"
        raw = rng.choice(RAW_VALUES)
        text = _dumps(_set(doc, path, marker)).replace(b'"__RAW__"', raw)
        return text, f"json {list(path)} = {raw[:20]!r}"
    if op < 0.65:  # deep nesting, balanced or not
        depth = rng.choice((70, 1000, 100_000))
        opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
        closing = closer * depth if rng.random() < 0.8 else closer * rng.randint(0, depth)
        text = _dumps(_set(doc, path, "__RAW__")).replace(b'"__RAW__"', opener * depth + b"1" + closing)
        return text, f"json {list(path)} nested {depth} deep"
    if op < 0.72 and isinstance(_get(doc, path), dict):  # add or rename a key
        target = _get(doc, path)
        if target and rng.random() < 0.5:
            key = rng.choice(list(target))
            target[key + rng.choice(("_", "X", " "))] = target.pop(key)
            return _dumps(doc), f"json rename {list(path)}.{key}"
        key = rng.choice(("_class_name", "k", "stride", "vocab_size", "n_layer", "torch_dtype", "x", ""))
        target[key] = rng.choice(HOSTILE)
        return _dumps(doc), f"json add {list(path)}.{key} = {target[key]!r:.80}"
    if op < 0.78:  # the whole document replaced
        value = rng.choice([[], 1, "x", None, [doc], {"": doc}, True])
        return _dumps(value), f"json document = {value!r:.80}"
    if op < 0.84:  # non-UTF-8 / NUL inside a string or anywhere
        text = _dumps(doc)
        k = rng.randrange(len(text) + 1)
        ins = rng.choice(SPECIAL_BYTES)
        return text[:k] + ins + text[k:], f"json insert {ins!r} at {k}"
    return mutate_bytes(data, rng)


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "x", "", "f32", 1, None]


def mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Truncation, header-length flips, header JSON edits (dtype, shape, offsets), data byte flips."""
    n = struct.unpack("<Q", data[:8])[0]
    header, body = data[8 : 8 + n], data[8 + n :]
    op = rng.random()
    if op < 0.12:
        k = rng.randrange(len(data))
        return data[:k], f"safetensors truncated at {k} of {len(data)}"
    if op < 0.24:
        value = rng.choice(
            (
                0,
                1,
                7,
                n - 1,
                n + 1,
                n + 8,
                len(data),
                len(data) - 8,
                2**32,
                2**63,
                2**64 - 1,
                n ^ (1 << rng.randrange(64)),
            )
        )
        return struct.pack("<Q", value) + data[8:], f"safetensors header length {n} -> {value}"
    if op < 0.34 and body:
        k = rng.randrange(len(body))
        new = body[:k] + bytes([body[k] ^ (1 << rng.randrange(8))]) + body[k + 1 :]
        return data[: 8 + n] + new, f"safetensors data flip at {k}"
    if op < 0.4:
        extra = rng.randbytes(rng.choice((1, 4, 1000)))
        return data + extra, f"safetensors {len(extra)} bytes appended"
    if op < 0.85:
        doc = json.loads(header)
        names = [k for k in doc if k != "__metadata__"]
        name = rng.choice(names)
        t = doc[name]
        sub = rng.random()
        if sub < 0.25:
            t["dtype"] = rng.choice(DTYPES)
            what = f"dtype of {name} = {t['dtype']!r}"
        elif sub < 0.5:
            shape = list(t["shape"])
            choice = rng.random()
            if choice < 0.3 and shape:
                shape[rng.randrange(len(shape))] += rng.choice((-1, 1, 10**6, 2**62))
            elif choice < 0.5:
                shape = shape + [1] if rng.random() < 0.5 else shape[:-1]
            elif choice < 0.7:
                shape = shape[::-1]
            else:
                shape = rng.choice(([-1], [0], ["a"], None, [], [2**64], 3, [1.5]))
            t["shape"] = shape
            what = f"shape of {name} = {shape!r}"
        elif sub < 0.75:
            a, b = t["data_offsets"]
            t["data_offsets"] = rng.choice(
                ([b, a], [a, b + 4], [a - 4, b], [a, a], [0, b], [a, 2**63], [-1, b], [a], None, [str(a), b])
            )
            what = f"data_offsets of {name} = {t['data_offsets']!r}"
        elif sub < 0.85:
            del doc[name]
            what = f"tensor {name} deleted"
        elif sub < 0.92:
            doc[rng.choice(("__metadata__", "extra", name + ".x"))] = rng.choice(HOSTILE)
            what = "key added"
        else:
            new_name = rng.choice(("", "x", name + "_", "\ud800", "a" * 300))
            doc[new_name] = doc.pop(name)
            what = f"tensor {name} renamed {new_name!r:.20}"
        text = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        pad = (-len(text)) % 8
        text += b" " * pad
        if rng.random() < 0.9:
            return struct.pack("<Q", len(text)) + text + body, f"safetensors header: {what}"
        return data[:8] + text + body, f"safetensors header (old length): {what}"
    mutated, what = mutate_bytes(header, rng)
    return struct.pack("<Q", len(mutated)) + mutated + body, f"safetensors header {what}"


def mutate_file(data: bytes, name: str, rng: random.Random) -> tuple[bytes, str]:
    if name.endswith(".json"):
        return mutate_json(data, rng) if rng.random() < 0.75 else mutate_bytes(data, rng)
    if name.endswith(".safetensors") and len(data) >= 8 and rng.random() < 0.8:
        return mutate_safetensors(data, rng)
    return mutate_bytes(data, rng)


class DirMutator:
    """Mutates one file of ``root`` per case, in place, and restores it afterwards."""

    def __init__(self, root: Path, skip: Callable[[str], bool] = lambda rel: False) -> None:
        self.root = root
        self.files = {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not skip(p.relative_to(root).as_posix())
        }
        self.names = sorted(self.files)
        self.touched: list[str] = []

    def apply(self, rng: random.Random) -> str:
        """Mutate one file (deleted, emptied, made a directory, or its bytes edited); return what was done."""
        rel = rng.choice(self.names)
        path = self.root / rel
        self.touched = [rel]
        op = rng.random()
        if op < 0.04:
            path.unlink()
            return f"{rel}: deleted"
        if op < 0.07:
            path.unlink()
            path.mkdir()
            return f"{rel}: replaced by a directory"
        if op < 0.09:
            path.write_bytes(b"")
            return f"{rel}: emptied"
        data, what = mutate_file(self.files[rel], rel, rng)
        path.write_bytes(data)
        return f"{rel}: {what}"

    def write(self, rel: str, data: bytes) -> None:
        """An extra edit of the same case (restored by :meth:`restore`)."""
        self.touched.append(rel)
        (self.root / rel).write_bytes(data)

    def restore(self) -> None:
        for rel in self.touched:
            path = self.root / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self.files[rel])
        self.touched = []


def run_dir_fuzz(name: str, root: Path, call: Callable[[], object], n: int, rng_seed: int,
                 skip: Callable[[str], bool] = lambda rel: False,
                 after: Callable[[DirMutator, random.Random], str] | None = None) -> Fuzz:  # fmt: skip
    """The unmutated directory must load; then ``n`` cases of one mutation each."""
    call()  # the baseline is accepted
    mut = DirMutator(root, skip)
    rng = random.Random(rng_seed)
    fuzz = Fuzz(name)
    for _ in range(n):
        what = mut.apply(rng)
        if after is not None:
            what += after(mut, rng)
        try:
            fuzz.case(call, lambda what=what: what)
        finally:
            mut.restore()
    call()  # the directory is whole again
    fuzz.report()
    assert fuzz.counts["other"] == 0 and sum(fuzz.counts.values()) == n
    return fuzz


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def _quiet_and_single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = torch.get_rng_state()
    loggers = [logging.getLogger(n) for n in ("transformers", "diffusers", "accelerate", "phenogen")]
    from diffusers.utils import logging as diffusers_logging

    diffusers_level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load reports of the damaged models
    yield
    hf_logging.set_verbosity(hf_level)
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)
    diffusers_logging.set_verbosity(diffusers_level)
    torch.set_rng_state(rng)
    torch.set_num_threads(threads)


def _mini_lm(k: int = 2):
    """A GPT-2 of one layer and 16 dimensions with the k-mer vocabulary (loads in milliseconds)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import DnaLM, _set_special_ids

    tok = KmerTokenizer(k=k)
    config = GPT2Config(vocab_size=len(tok), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                        tie_word_embeddings=True)  # fmt: skip
    _set_special_ids(config, tok)
    torch.manual_seed(0)
    return DnaLM(GPT2LMHeadModel(config), tok, {"preset": "mini", "k": k, "stride": k})


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    from phenogen.lm.model import save_lm

    return save_lm(_mini_lm(), tmp_path_factory.mktemp("fuzz_lm") / "model", epoch=1, complete=True)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from phenogen.dna.tokenizer import KmerTokenizer

    out = tmp_path_factory.mktemp("fuzz_tok") / "tok"
    KmerTokenizer(k=2).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    from phenogen.diffusion.components import build_noise_scheduler, build_unet, build_vae
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.pipeline import DNAToImagePipeline, make_scheduler

    torch.manual_seed(0)
    cond = build_conditioner("kmer", 32, kmer_k=2, kmer_segments=2, max_length=24, heads=2)
    pipe = DNAToImagePipeline(
        build_vae("tiny"),
        build_unet("tiny", pooled=True),
        make_scheduler("ddim", build_noise_scheduler().config),
        cond,
    )
    out = tmp_path_factory.mktemp("fuzz_pipe") / "pipeline"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


# -------- train-lm: a real state/ written by write_state, and the objects train_lm resumes into
LM_SETS = {"k": 2, "n_positions": 16, "epochs": 2, "batch_size": 2, "mixed_precision": "no", "seed": 0}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    from transformers import get_cosine_schedule_with_warmup

    from phenogen.accel import new_accelerator
    from phenogen.config import to_jsonable
    from phenogen.lm.config import LMConfig
    from phenogen.lm.state import write_state
    from phenogen.lm.train import _param_groups

    out = tmp_path_factory.mktemp("fuzz_lm_run") / "run"
    out.mkdir()
    cfg = LMConfig(**LM_SETS)
    source = "toy.fasta"
    (out / "config.json").write_text(json.dumps({"lm": to_jsonable(cfg), "data": source, "precision": "no"}))
    lm = _mini_lm(cfg.k)
    accelerator = new_accelerator("no", cpu=True)
    optimizer = torch.optim.AdamW(_param_groups(lm.model, 0.01), lr=1e-3)
    steps_per_epoch = 3
    scheduler = get_cosine_schedule_with_warmup(optimizer, 1, steps_per_epoch * cfg.epochs)
    model, optimizer, scheduler = accelerator.prepare(lm.model, optimizer, scheduler)
    ids = torch.randint(5, 21, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()  # an optimizer state with every buffer
    optimizer.step()
    scheduler.step()
    history = {"steps": [{"step": 1, "epoch": 1 / 3, "loss": 2.5, "lr": 1e-3}], "epochs": []}
    ts = {
        "epoch": 0,
        "step_in_epoch": 1,
        "global_step": 1,
        "elapsed_s": 1.0,
        "history": history,
        "world_size": 1,
    }
    write_state(out / "state", accelerator, model, optimizer, scheduler, ts)
    return {"out": out, "cfg": cfg, "source": source, "accelerator": accelerator, "model": model,
            "optimizer": optimizer, "scheduler": scheduler, "steps_per_epoch": steps_per_epoch}  # fmt: skip


def resume_lm(run: dict) -> dict:
    """What ``train-lm --resume`` does before its loop: choose, check and load the state."""
    from phenogen.fsio import complete_dir
    from phenogen.lm.state import check_resume_position, read_state
    from phenogen.lm.train import _check_resume_config

    out = run["out"]
    state_dir = complete_dir(out / "state")
    if state_dir is None:
        raise CheckpointError(f"{out}: nothing to resume")
    _check_resume_config(out, run["cfg"], run["source"])
    ts = read_state(state_dir, run["accelerator"], run["model"], run["optimizer"], run["scheduler"])
    check_resume_position(ts, run["steps_per_epoch"], run["cfg"].epochs, state_dir)
    return ts


# -------- train-image: real checkpoints written by save_checkpoint, and the objects it resumes into
IMAGE_SETS = {"preset": "tiny", "max_steps": 4, "batch_size": 2, "kmer_k": 2, "kmer_segments": 2,
              "checkpoint_every": 1, "checkpoints_total_limit": 2}  # fmt: skip


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from diffusers import UNet2DConditionModel
    from diffusers.training_utils import EMAModel

    from phenogen.accel import new_accelerator
    from phenogen.config import to_jsonable
    from phenogen.diffusion import components
    from phenogen.diffusion.checkpoints import save_checkpoint
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.config import ImageConfig
    from phenogen.fsio import replace_dir

    out = tmp_path_factory.mktemp("fuzz_image_run") / "run"
    out.mkdir()
    cfg = ImageConfig(**IMAGE_SETS)
    (out / "config.json").write_text(json.dumps({"image": to_jsonable(cfg)}))
    preset = components.get_preset(cfg.preset)
    torch.manual_seed(0)
    vae = components.build_vae(cfg.preset, 16)
    vae.save_pretrained(out / "vae.tmp", safe_serialization=True)
    replace_dir(out / "vae.tmp", out / "vae")
    accelerator = new_accelerator("no", cpu=True, project_dir=str(out))
    # one block, 8 channels: the checkpoint layout of a real run with few tensors (the optimizer state's
    # unpickling costs per tensor); load_checkpoint does not depend on the architecture
    unet = UNet2DConditionModel(
        sample_size=16 // components.vae_scale(vae), in_channels=vae.config.latent_channels,
        out_channels=vae.config.latent_channels, down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",), block_out_channels=(8,), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=preset.cross_attention_dim, attention_head_dim=2,
    )  # fmt: skip
    cond = build_conditioner(cfg.encoder, preset.cross_attention_dim, kmer_k=cfg.kmer_k,
                             kmer_segments=cfg.kmer_segments, max_length=24, heads=preset.cond_heads)  # fmt: skip
    params = list(unet.parameters()) + cond.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    unet, cond, optimizer, scheduler = accelerator.prepare(unet, cond, optimizer, scheduler)
    ema = EMAModel(list(accelerator.unwrap_model(unet).parameters()) + cond.trainable_parameters(), decay=0.9)
    gen = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    scheduler.step()
    for step in (1, 2):
        state = {"global_step": step, "planned_steps": cfg.max_steps, "losses": [0.5] * step, "heldout": []}
        save_checkpoint(accelerator, out / "checkpoints", step, state, gen, ema, cfg.checkpoints_total_limit)
    return {"out": out, "cfg": cfg, "accelerator": accelerator, "gen": gen, "ema": ema}


def resume_image(run: dict) -> dict:
    """What ``train-image --resume`` does with OUT: check it, choose the checkpoint, load it and the VAE."""
    from phenogen.diffusion.checkpoints import find_checkpoint, load_checkpoint
    from phenogen.diffusion.components import load_vae
    from phenogen.diffusion.train import check_resumable

    out = run["out"]
    check_resumable(out, run["cfg"])
    load_vae(out / "vae")
    ckpt = find_checkpoint(out / "checkpoints", announce=False)
    return load_checkpoint(run["accelerator"], ckpt, run["gen"], run["ema"])


def _update_manifest(mut: DirMutator, rng: random.Random) -> str:
    """Half of the cases: ``complete.json`` of the mutated checkpoint lists the mutated sizes."""
    rel = mut.touched[0]
    parts = rel.split("/")
    if len(parts) != 3 or parts[0] != "checkpoints" or parts[2] == "complete.json" or rng.random() < 0.5:
        return ""
    ckpt = mut.root / parts[0] / parts[1]
    manifest = f"{parts[0]}/{parts[1]}/complete.json"
    doc = json.loads(mut.files[manifest])
    if (ckpt / parts[2]).is_file():
        doc["files"][parts[2]] = (ckpt / parts[2]).stat().st_size
    else:
        doc["files"].pop(parts[2], None)
    mut.write(manifest, json.dumps(doc).encode())
    return " (complete.json updated)"


# ------------------------------------------------------------------------------------ the tests
def _lm_call(lm_dir):
    from phenogen.lm.model import load_lm

    return lambda: load_lm(lm_dir)


def _tokenizer_call(tokenizer_dir):
    from phenogen.dna.tokenizer import KmerTokenizer

    def call():
        tok = KmerTokenizer.from_pretrained(tokenizer_dir)
        tok.decode_dna(tok.encode_dna("ACGTAC"))

    return call


def _pipeline_call(pipeline_dir):
    from phenogen.diffusion.pipeline import load_pipeline

    return lambda: load_pipeline(pipeline_dir)


CASES = {
    "lm": (lambda f: (f["lm_dir"], _lm_call(f["lm_dir"]), None)),
    "tokenizer": (lambda f: (f["tokenizer_dir"], _tokenizer_call(f["tokenizer_dir"]), None)),
    "pipeline": (lambda f: (f["pipeline_dir"], _pipeline_call(f["pipeline_dir"]), None)),
    "lm_resume": (lambda f: (f["lm_run"]["out"], lambda: resume_lm(f["lm_run"]), None)),
    "image_resume": (
        lambda f: (f["image_run"]["out"], lambda: resume_image(f["image_run"]), _update_manifest)
    ),
}


def _fixture(request, name):
    key = {"lm": "lm_dir", "tokenizer": "tokenizer_dir", "pipeline": "pipeline_dir", "lm_resume": "lm_run",
           "image_resume": "image_run"}[name]  # fmt: skip
    return {key: request.getfixturevalue(key)}


def _run(request, name: str, long: bool) -> None:
    root, call, after = CASES[name](_fixture(request, name))
    seed = SEED * 1000 + sorted(CASES).index(name) + (500 if long else 0)
    skip = (lambda rel: rel.startswith("phenogen-run")) if name.endswith("resume") else (lambda rel: False)
    run_dir_fuzz(name, root, call, n_cases(name, long), seed, skip=skip, after=after)


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_model_loaders(request, name):
    _run(request, name, long=False)


@pytest.mark.fuzz
@pytest.mark.parametrize("name", list(CASES))
def test_fuzz_model_loaders_long(request, name):
    _run(request, name, long=True)


# ------------------------------------------------------------------------------ targeted cases
def test_resume_position_outside_the_run_is_refused(lm_run):
    """A trainer state whose step lies beyond the epoch would spin the loop forever: refused."""
    from phenogen.lm.state import check_resume_position

    good = {"epoch": 0, "step_in_epoch": 1, "global_step": 1}
    check_resume_position(good, 3, 2, lm_run["out"])
    for bad in (
        {"step_in_epoch": 4},
        {"epoch": 3},
        {"global_step": 99},
        {"step_in_epoch": 4, "global_step": 4},
    ):
        with pytest.raises(CheckpointError, match="trainer_state|step|epoch"):
            check_resume_position(good | bad, 3, 2, lm_run["out"])


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, edit: Callable[[dict], object]) -> None:
    doc = json.loads(path.read_text())
    new = edit(doc)
    path.write_text(json.dumps(doc if new is None else new))


def test_lm_config_without_its_shape_is_refused_before_building_a_gpt2(lm_dir, tmp_path):
    """Deleted shape keys used to build GPT-2's 124M-parameter defaults (2 s) before failing."""
    from phenogen.lm.model import load_lm

    d = _copy(lm_dir, tmp_path)
    _edit_json(d / "config.json", lambda c: {"": c})
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match="n_layer must be a positive integer"):
        load_lm(d)
    assert time.perf_counter() - t < 1.0
    shutil.copy(lm_dir / "config.json", d / "config.json")
    _edit_json(d / "config.json", lambda c: c.update(n_layer=2**31))
    with pytest.raises(CheckpointError, match="n_layer"):
        load_lm(d)


def test_a_weights_file_missing_a_tensor_is_refused_not_loaded_with_random_weights(lm_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from phenogen.lm.model import load_lm

    d = _copy(lm_dir, tmp_path)
    tensors = load_file(d / "model.safetensors")
    name = next(k for k in tensors if k.endswith("ln_f.weight"))
    save_file(
        {k: v for k, v in tensors.items() if k != name}, d / "model.safetensors", metadata={"format": "pt"}
    )
    with pytest.raises(CheckpointError, match="random weights"):
        load_lm(d)


def test_tokenizer_from_pretrained_refuses_damaged_directories(tokenizer_dir, tmp_path):
    from phenogen.dna.tokenizer import KmerTokenizer

    with pytest.raises(CheckpointError, match="does not exist"):
        KmerTokenizer.from_pretrained(tmp_path / "nope")
    d = _copy(tokenizer_dir, tmp_path)
    _edit_json(d / "tokenizer_config.json", lambda c: c.update(k=99))
    with pytest.raises(CheckpointError, match="k must be an integer"):
        KmerTokenizer.from_pretrained(d)
    (d / "tokenizer_config.json").write_text("[]")
    with pytest.raises(CheckpointError, match="tokenizer config"):
        KmerTokenizer.from_pretrained(d)
    (d / "tokenizer_config.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer_config.json: missing"):
        KmerTokenizer.from_pretrained(d)


@pytest.mark.parametrize(
    "file,edit,match",
    [
        ("model_index.json", lambda c: c.update(conditioner=["os", "system"]), "not a component"),
        ("unet/config.json", lambda c: c.update(layers_per_block=2**31), "layers_per_block"),
        (
            "scheduler/scheduler_config.json",
            lambda c: c.update(num_train_timesteps=2**40),
            "num_train_timesteps",
        ),
        ("conditioner/config.json", lambda c: c.update(heads=0.0), "heads"),
        ("vae/config.json", lambda c: c.update(scaling_factor=float("inf")), "Infinity"),
    ],
)
def test_pipeline_configs_no_model_has_are_refused_by_name(pipeline_dir, tmp_path, file, edit, match):
    from phenogen.diffusion.pipeline import load_pipeline

    d = _copy(pipeline_dir, tmp_path)
    _edit_json(d / file, edit)
    with pytest.raises(CheckpointError, match=match):
        load_pipeline(d)


def test_damaged_training_states_are_refused_by_field(lm_run, image_run, tmp_path):
    from phenogen.diffusion.checkpoints import check_loop_state
    from phenogen.lm.state import check_trainer_state

    ts = json.loads((lm_run["out"] / "state" / "trainer_state.json").read_text())
    ts["history"]["steps"][0]["step"] = 10**80  # float() of it overflowed in the loss plot
    with pytest.raises(CheckpointError, match=r"history.steps\[0\]"):
        check_trainer_state(ts, Path("trainer_state.json"))
    state = {"global_step": "2", "losses": [], "heldout": []}
    with pytest.raises(CheckpointError, match="global_step"):
        check_loop_state(state, Path("loop_state.json"))
    with pytest.raises(CheckpointError, match="losses"):
        check_loop_state({"global_step": 1, "losses": [0.1, 0.2], "heldout": []}, Path("loop_state.json"))


def test_any_error_of_torch_load_on_a_damaged_optimizer_state_is_a_checkpoint_error(lm_run, monkeypatch):
    """A flipped byte in optimizer.pt's pickle made torch.load raise AttributeError ('str' object has no
    attribute 'dtype'), which --resume printed as a traceback."""

    def broken(*args, **kwargs):
        raise AttributeError("'str' object has no attribute 'dtype'")

    monkeypatch.setattr(torch, "load", broken)
    with pytest.raises(CheckpointError, match=r"optimizer.pt: cannot be loaded \('str' object"):
        resume_lm(lm_run)

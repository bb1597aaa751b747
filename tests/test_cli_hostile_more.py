"""Wrong invocations of the remaining commands (issue 22): train-lm, train-image, pretrain-image, validate,
import (folder, bioscan5m, bold), report, fetch (barcodes, images) and dataset build.

The same contract as :mod:`test_cli_hostile`: exit code 2, ONE line on stderr starting
``phenogen CMD: error:`` that names the offending file or flag, never a traceback, and nothing of the
user's deleted. Tiny real inputs are built once per module — an image dataset, a FASTA, a train-lm run
stopped after one step, a train-image run with a complete checkpoint, fetch outputs — and copied into
each test's directory before being broken (no ``dataset.json``, ``dataset.json`` = ``[]``, a manifest
without a column, a corrupt PNG, a non-JSON ``config.json``, a truncated state file …).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_server import FIXTURES
from PIL import Image, ImageDraw
from test_cli_hostile import BINARY, NON_UTF8, _rm, _truncate

from phenogen.cli import main
from phenogen.fsio import MARKER

torch.set_num_threads(1)

RNG = random.Random(1)
ROOT_SEQ = "".join(RNG.choice("ACGT") for _ in range(60))


def _mutate(s: str, rate: float) -> str:
    return "".join(c if RNG.random() > rate else RNG.choice("ACGT") for c in s)


PAIRS = [(f"s{sp}_{i}", _mutate(base, 0.02)) for sp, base in
         enumerate(_mutate(ROOT_SEQ, 0.1) for _ in range(5)) for i in range(3)]  # fmt: skip
LM_SETS = {"k": 3, "n_positions": 48, "epochs": 2, "batch_size": 4, "lr": 3e-3, "seed": 0,
           "state_every_steps": 1, "mixed_precision": "no", "preset": "tiny"}  # fmt: skip
LM_ARGS = [a for k, v in LM_SETS.items() for a in ("--set", f"lm.{k}={json.dumps(v)}")]
IMG_SETS = {"preset": "tiny", "max_steps": 2, "batch_size": 4, "vae_steps": 1, "vae_batch_size": 4,
            "kmer_k": 2, "kmer_segments": 2, "sample_steps": 1, "sample_every": 0, "checkpoint_every": 1,
            "lr_warmup_steps": 1, "heldout_every": 0}  # fmt: skip
IMG_ARGS = [a for k, v in IMG_SETS.items() for a in ("--set", f"image.{k}={json.dumps(v)}")]
CPU_PRIOR = str(resources.files("phenogen") / "assets" / "bird_prior_cpu")  # the packaged prior, preset cpu
PNG_GARBAGE = b"\x89PNG\r\n\x1a\n then garbage, not an image"


# ------------------------------------------------------------------------------------------ fixtures
def _dataset(root: Path) -> Path:
    """Coloured discs, 16 px: 4 training species x 2 individuals x 2 images, 1 held-out species."""
    from phenogen.data.dataset import Record, write_dataset

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for s in range(5):
        seq = _mutate(ROOT_SEQ, 0.1)[:48]
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        for i in range(2):
            rels = []
            for k in range(2):
                im = Image.new("RGB", (16, 16), (200, 220, 240))
                ImageDraw.Draw(im).ellipse([3 + k, 4, 12 + k, 11], fill=colour)
                rels.append(f"images/sp{s}_{i}_{k}.png")
                im.save(root / rels[-1])
            split = "heldout" if s == 4 else "train"
            records.append(Record(f"sp{s}_i{i}", f"sp{s}", f"sp{s}_i{i}", split, "living", seq, tuple(rels)))
    return write_dataset(root, records, {"source": "test"}).root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """An image dataset, a FASTA, a train-lm run stopped at step 1, a train-image run with checkpoints,
    the folder a user imports from, fetch outputs (barcodes + images) and a report run directory."""
    from phenogen.data.barcodes import Barcode, write_barcodes
    from phenogen.dna.seqio import write_fasta
    from phenogen.lm.config import LMConfig
    from phenogen.lm.train import train_lm

    root = tmp_path_factory.mktemp("world")
    w: dict[str, Path] = {"ds": _dataset(root / "ds"), "fasta": root / "toy.fasta"}
    write_fasta(w["fasta"], PAIRS)
    # train-lm run stopped after one optimizer step (state/ + config.json)
    w["lmrun"] = root / "lmrun"
    train_lm(w["fasta"], w["lmrun"], LMConfig(**LM_SETS), stop_after_steps=1, progress=False)
    assert (w["lmrun"] / "state").is_dir() and (w["lmrun"] / "config.json").is_file()
    # train-image run: 2 steps, a checkpoint after each
    w["imgrun"] = root / "imgrun"
    assert main(["train-image", "--data", str(w["ds"]), "--out", str(w["imgrun"]), "--no-progress",
                 *IMG_ARGS]) == 0  # fmt: skip
    assert list((w["imgrun"] / "checkpoints").glob("checkpoint-*"))
    # the user's folder for `import folder`
    folder = w["folder"] = root / "folder"
    (folder / "photos").mkdir(parents=True)
    for name in ("photo_a.jpg", "photo_b.jpg"):
        shutil.copy(FIXTURES / name, folder / "photos" / name)
    seq = "ACGTTGCAAC" * 66
    (folder / "seqs.fasta").write_text(f">r1 Turdus merula\n{seq}\n>r2\n{seq}\n>r3\n{seq}\n")
    (folder / "samples.csv").write_text(
        "record_id,species,images\nr1,Turdus merula,photos/photo_a.jpg\nr2,Turdus merula,photos/photo_b.jpg\n"
        "r3,Parus major,photos/photo_b.jpg\n"
    )
    # `fetch barcodes` / `fetch images` outputs for `dataset build`
    bc = w["barcodes"] = root / "barcodes"
    bc.mkdir()
    write_barcodes(bc / "barcodes.tsv", [Barcode(f"b{i}", "Turdus", f"Turdus sp{i % 2}", "ncbi", f"AB{i}", "COI-5P",
                                                  ("Aves", "Turdidae"), seq) for i in range(4)])  # fmt: skip
    # a `fetch images` output: images.tsv + images/ (one photo of each barcode species)
    from phenogen.data.images import ImageEntry, write_image_manifest

    ph = w["photos"] = root / "photos"
    (ph / "images").mkdir(parents=True)
    entries = []
    for i, name in enumerate(("photo_a.jpg", "photo_b.jpg")):
        shutil.copy(FIXTURES / name, ph / "images" / name)
        entries.append(ImageEntry(name, "Turdus", f"Turdus sp{i}", "cc-by", "someone", "http://x/a", "http://x/p",
                                  "inaturalist", "0" * 64))  # fmt: skip
    write_image_manifest(ph / "images.tsv", entries)
    # a run directory for `report`: the dataset as RUN/data
    w["run"] = root / "run"
    shutil.copytree(w["ds"], w["run"] / "data")
    return w


# how a copy of one of the world's directories is broken: (which, relative path, what is done to it)
def _drop_column(column: str) -> Callable[[Path], None]:
    def drop(path: Path) -> None:
        rows = [line.split("\t") for line in path.read_text().splitlines()]
        j = rows[0].index(column)
        path.write_text("".join("\t".join(r[:j] + r[j + 1 :]) + "\n" for r in rows))

    return drop


def _first_image(ds: Path) -> Path:
    return sorted((ds / "images").glob("sp0_*.png"))[0]


# fmt: off
BREAKERS: dict[str, tuple[str, str, Callable[[Path], None]]] = {
    "ds_no_json": ("ds", "dataset.json", _rm),
    "ds_json_list": ("ds", "dataset.json", lambda p: p.write_text("[]")),
    "ds_json_not_json": ("ds", "dataset.json", lambda p: p.write_text("{format: phenogen")),
    "ds_json_not_utf8": ("ds", "dataset.json", lambda p: p.write_bytes(b'{"source": "caf\xe9"}')),
    "ds_json_traits_int": ("ds", "dataset.json",
                           lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "trait_names": 1}))),
    "ds_no_manifest": ("ds", "manifest.tsv", _rm),
    "ds_manifest_no_sequence": ("ds", "manifest.tsv", _drop_column("sequence")),
    "ds_manifest_no_images": ("ds", "manifest.tsv", _drop_column("images")),
    "ds_manifest_binary": ("ds", "manifest.tsv", lambda p: p.write_bytes(BINARY)),
    "ds_manifest_header_only": ("ds", "manifest.tsv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n")),
    "ds_image_corrupt": ("ds", "images", lambda p: _first_image(p.parent).write_bytes(PNG_GARBAGE)),
    "ds_image_truncated": ("ds", "images", lambda p: _truncate(_first_image(p.parent))),
    "ds_image_missing": ("ds", "images", lambda p: _first_image(p.parent).unlink()),
    "lm_config_not_json": ("lmrun", "config.json", lambda p: p.write_text("{lm: 1")),
    "lm_config_list": ("lmrun", "config.json", lambda p: p.write_text("[]")),
    "lm_config_no_section": ("lmrun", "config.json", lambda p: p.write_text('{"data": "x"}')),
    "lm_config_not_utf8": ("lmrun", "config.json", lambda p: p.write_bytes(b'{"lm": "\xff"}')),
    "lm_config_missing": ("lmrun", "config.json", _rm),
    "lm_state_weights_truncated": ("lmrun", "state/model.safetensors", _truncate),
    "lm_state_optimizer_garbage": ("lmrun", "state/optimizer.pt", lambda p: p.write_bytes(b"\x80\x02garbage")),
    "lm_state_trainer_list": ("lmrun", "state/trainer_state.json", lambda p: p.write_text("[]")),
    "lm_state_missing": ("lmrun", "state", _rm),
    "lm_model_truncated": ("lmrun", "model/model.safetensors", _truncate),
    "img_config_not_json": ("imgrun", "config.json", lambda p: p.write_text("not json")),
    "img_config_list": ("imgrun", "config.json", lambda p: p.write_text("[]")),
    "img_config_no_section": ("imgrun", "config.json", lambda p: p.write_text('{"command": "train-image"}')),
    "img_config_not_utf8": ("imgrun", "config.json", lambda p: p.write_bytes(b'{"image": "\xfe"}')),
    "img_no_checkpoints": ("imgrun", "checkpoints", _rm),
    "img_checkpoints_corrupt": ("imgrun", "checkpoints",
                                lambda p: [(c / "complete.json").write_text("[]") for c in p.iterdir()]),
    "img_checkpoint_weights_truncated": ("imgrun", "checkpoints", lambda p: [
        _truncate(f) for c in p.iterdir() for f in c.rglob("*.safetensors")]),
    "csv_not_utf8": ("folder", "samples.csv", lambda p: p.write_bytes(b"record_id,species,images\nr1,caf\xe9,x\n")),
    "csv_binary": ("folder", "samples.csv", lambda p: p.write_bytes(BINARY)),
    "csv_no_images_column": ("folder", "samples.csv", lambda p: p.write_text("record_id,species\nr1,Turdus merula\n")),
    "csv_empty": ("folder", "samples.csv", lambda p: p.write_bytes(b"")),
    "csv_image_missing": ("folder", "samples.csv", lambda p: p.write_text(
        "record_id,species,images\nr1,Turdus merula,photos/nope.jpg\n")),
    "csv_image_outside": ("folder", "samples.csv", lambda p: p.write_text(
        "record_id,species,images\nr1,Turdus merula,../outside.jpg\n")),
    "folder_image_corrupt": ("folder", "photos/photo_a.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff garbage")),
    "folder_fasta_not_utf8": ("folder", "seqs.fasta", lambda p: p.write_bytes(NON_UTF8)),
    "folder_fasta_empty": ("folder", "seqs.fasta", lambda p: p.write_bytes(b"")),
    "bc_not_utf8": ("barcodes", "barcodes.tsv", lambda p: p.write_bytes(p.read_bytes() + b"b9\tcaf\xe9\n")),
    "bc_missing_column": ("barcodes", "barcodes.tsv", _drop_column("sequence")),
    "bc_binary": ("barcodes", "barcodes.tsv", lambda p: p.write_bytes(BINARY)),
    "bc_empty": ("barcodes", "barcodes.tsv", lambda p: p.write_bytes(b"")),
    "bc_bad_sequence": ("barcodes", "barcodes.tsv", lambda p: p.write_text(
        p.read_text().replace("ACGTTGCAAC", "ACGTTGCAAQ", 1))),
    "bc_bad_record_id": ("barcodes", "barcodes.tsv", lambda p: p.write_text(p.read_text().replace("\nb1\t", "\nb 1\t"))),
    "bc_empty_species": ("barcodes", "barcodes.tsv", lambda p: p.write_text(p.read_text().replace("Turdus sp1", ""))),
    "bc_header_only": ("barcodes", "barcodes.tsv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n")),
    "ph_image_missing": ("photos", "images/photo_a.jpg", _rm),
    "ph_image_corrupt": ("photos", "images/photo_a.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff not a JPEG")),
    "ph_image_outside": ("photos", "images.tsv", lambda p: p.write_text(p.read_text().replace("photo_a.jpg",
                                                                                            "../../a.jpg"))),
    "ph_manifest_no_column": ("photos", "images.tsv", _drop_column("species")),
    "run_metrics_not_json": ("run", "eval", lambda p: (p.mkdir(), (p / "metrics.json").write_text("{nope"))),
    "run_metrics_list": ("run", "eval", lambda p: (p.mkdir(), (p / "metrics.json").write_text("[1]"))),
    "run_metrics_not_utf8": ("run", "eval", lambda p: (p.mkdir(), (p / "metrics.json").write_bytes(b"{\"a\": \"\xff\"}"))),
    "run_data_json_list": ("run", "data/dataset.json", lambda p: p.write_text("[]")),
    "run_data_manifest_binary": ("run", "data/manifest.tsv", lambda p: p.write_bytes(BINARY)),
}
# fmt: on


def _env(world: dict[str, Path], tmp: Path, breaker: str | None) -> dict[str, str]:
    """The placeholders of the argv templates; ``{bad}`` is a broken copy of one of the world's directories."""
    files = {
        "afile": b"I am a file\n",
        "latin1.txt": b"Turdus caf\xe9\n",
        "binary.txt": BINARY,
        "empty.txt": b"",
        "comments.txt": b"# only a comment\n\n   \n",
        "taxa.txt": b"Turdus merula\n",
        "latin1.toml": b"[lm]\nseed = 1 # caf\xe9\n",
        "notjson.json": b"{'single': quotes}",
        "udir/mine.txt": b"precious\n",
        f"prev/{MARKER}": b'{"written_by": "phenogen train-lm", "version": "0"}',  # an earlier output
        "prev/old.txt": b"an earlier run\n",
        "latin1.fa": NON_UTF8,
        "binary.fa": BINARY,
        "empty.fa": b"",
        "one.fa": f">only\n{PAIRS[0][1]}\n".encode(),
        "latin1.tsv": b"processid\tspecies\ncaf\xe9\t\xff\n",
        "fakeprior/unet/config.json": b"[]",
        "fakeprior/vae/config.json": b"{}",
        "header.tsv": (FIXTURES / "bold_combined_parus.tsv").read_bytes().split(b"\n")[0] + b"\n",
        "noimg/readme.txt": b"not a fetch images output\n",
        "badimg/images.tsv": b"not\ta\tmanifest\n",
        "latin1img/images.tsv": b"file\tcaf\xe9\n",
    }
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    (tmp / "emptydir").mkdir()
    shutil.copy(BOLD_TSV, tmp / "prev" / "in.tsv")  # inputs kept inside an earlier output
    shutil.copy(world["barcodes"] / "barcodes.tsv", tmp / "prev" / "barcodes.tsv")
    env = {k: str(v) for k, v in world.items()} | {"tmp": str(tmp)}
    if breaker is not None:
        which, rel, how = BREAKERS[breaker]
        bad = tmp / f"bad_{which}"
        shutil.copytree(world[which], bad, symlinks=True)
        how(bad / rel)
        env["bad"] = str(bad)
    return env


# --------------------------------------------------------------------------------- the wrong ones
LM = ["train-lm", "--no-progress", *LM_ARGS]
IMG = ["train-image", "--no-progress", *IMG_ARGS]
PRIOR = ["pretrain-image", "--no-progress", "--set", 'prior.preset="tiny"']
IMPF = ["import", "folder", "--out", "{tmp}/imp"]
BOLD = ["import", "bold", "--out", "{tmp}/imp"]
BIOSCAN = ["import", "bioscan5m", "--out", "{tmp}/imp"]
BUILD = ["dataset", "build", "--out", "{tmp}/built"]
# never the real services: every base URL is a closed local port, no retries, a short timeout
DEAD = ["--set", "fetch.retries=0", "--set", "fetch.timeout_s=2", "--set", "fetch.backoff_s=0",
        *[a for name in ("ncbi_base", "bold_base", "bold_v4_base", "inat_base", "gbif_base")
          for a in ("--set", f'fetch.{name}="http://127.0.0.1:9/"')]]  # fmt: skip
BOLD_TSV = str(FIXTURES / "bold_combined_parus.tsv")
FETCH_BC = ["fetch", "barcodes", "--out", "{tmp}/fb", *DEAD]
FETCH_IM = ["fetch", "images", "--out", "{tmp}/fi", *DEAD]
DS_BREAKS = [b for b in BREAKERS if b.startswith("ds_")]
# fmt: off
CASES: list[tuple[str, list[str], str, str | None]] = [
    # --- train-lm: --data
    ("lm_data_missing", [*LM, "--data", "{tmp}/nope", "--out", "{tmp}/o"], "nope", None),
    ("lm_data_empty_dir", [*LM, "--data", "{tmp}/emptydir", "--out", "{tmp}/o"], "emptydir", None),
    ("lm_data_not_utf8", [*LM, "--data", "{tmp}/latin1.fa", "--out", "{tmp}/o"], "latin1.fa", None),
    ("lm_data_binary", [*LM, "--data", "{tmp}/binary.fa", "--out", "{tmp}/o"], "binary.fa", None),
    ("lm_data_empty", [*LM, "--data", "{tmp}/empty.fa", "--out", "{tmp}/o"], "empty.fa", None),
    ("lm_data_one_record", [*LM, "--data", "{tmp}/one.fa", "--out", "{tmp}/o"], "one.fa", None),
    *[(f"lm_{b}", [*LM, "--data", "{bad}", "--out", "{tmp}/o"], "bad_ds", b)
      for b in DS_BREAKS if not b.startswith("ds_image")],
    # --- train-lm: --out, --force, --resume
    ("lm_out_is_file", [*LM, "--data", "{fasta}", "--out", "{tmp}/afile"], "is a file", None),
    ("lm_out_parent_is_file", [*LM, "--data", "{fasta}", "--out", "{tmp}/afile/run"], "afile", None),
    ("lm_out_foreign", [*LM, "--data", "{fasta}", "--out", "{tmp}/udir"], "not written by phenogen", None),
    ("lm_force_foreign", [*LM, "--data", "{fasta}", "--out", "{tmp}/udir", "--force"], "not written by phenogen",
     None),
    ("lm_out_earlier_run", [*LM, "--data", "{fasta}", "--out", "{bad}"], "--resume", "lm_config_missing"),
    ("lm_resume_missing", [*LM, "--data", "{fasta}", "--out", "{tmp}/nope", "--resume"], "nothing to resume",
     None),
    ("lm_resume_empty", [*LM, "--data", "{fasta}", "--out", "{tmp}/emptydir", "--resume"], "nothing to resume",
     None),
    ("lm_resume_foreign", [*LM, "--data", "{fasta}", "--out", "{tmp}/udir", "--resume"], "udir", None),
    ("lm_resume_and_force", [*LM, "--data", "{fasta}", "--out", "{lmrun}", "--resume", "--force"],
     "contradict", None),
    *[(f"lm_resume_{b}", [*LM, "--data", "{fasta}", "--out", "{bad}", "--resume"], needle, b)
      for b, needle in [
          ("lm_config_not_json", "config.json"),
          ("lm_config_list", "config.json"),
          ("lm_config_no_section", "config.json"),
          ("lm_config_not_utf8", "config.json"),
          ("lm_config_missing", "config.json"),
          ("lm_state_weights_truncated", "model.safetensors"),
          ("lm_state_optimizer_garbage", "optimizer.pt"),
          ("lm_state_trainer_list", "trainer_state.json"),
          ("lm_state_missing", "nothing to resume"),
      ]],
    ("lm_resume_other_settings", [*LM, "--data", "{fasta}", "--out", "{lmrun}", "--resume", "--set", "lm.k=4"],
     "different", None),
    ("lm_resume_other_data", [*LM, "--data", "{ds}", "--out", "{lmrun}", "--resume"], "different data", None),
    # --- train-lm: settings
    ("lm_set_unknown_key", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.colour=1"], "colour", None),
    ("lm_set_unknown_section", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "image.lr=1"], "image",
     None),
    ("lm_set_nan_lr", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.lr=nan"], "lm.lr", None),
    ("lm_set_negative_lr", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.lr=-1"], "lr", None),
    ("lm_set_negative_seed", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.seed=-1"], "seed", None),
    ("lm_set_wrong_type", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.epochs=many"], "lm.epochs",
     None),
    ("lm_set_bad_choice", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", 'lm.preset="huge"'], "preset",
     None),
    ("lm_config_not_utf8_toml", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--config", "{tmp}/latin1.toml"],
     "latin1.toml", None),
    ("lm_init_from_missing", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", 'lm.init_from="{tmp}/nope"'],
     "nope", None),
    ("lm_unknown_flag", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--epochs", "3"], "unrecognized", None),
    ("lm_missing_data", ["train-lm", "--out", "{tmp}/o"], "--data", None),
    # --- train-image
    ("img_data_missing", [*IMG, "--data", "{tmp}/nope", "--out", "{tmp}/o"], "nope", None),
    ("img_data_is_fasta", [*IMG, "--data", "{fasta}", "--out", "{tmp}/o"], "toy.fasta", None),
    *[(f"img_{b}", [*IMG, "--data", "{bad}", "--out", "{tmp}/o"], "bad_ds", b) for b in DS_BREAKS],
    ("img_out_is_file", [*IMG, "--data", "{ds}", "--out", "{tmp}/afile"], "is a file", None),
    ("img_force_foreign", [*IMG, "--data", "{ds}", "--out", "{tmp}/udir", "--force"], "not written by phenogen",
     None),
    ("img_out_earlier_run", [*IMG, "--data", "{ds}", "--out", "{imgrun}"], "--resume", None),
    ("img_resume_missing", [*IMG, "--data", "{ds}", "--out", "{tmp}/nope", "--resume"], "nothing to resume",
     None),
    ("img_resume_empty", [*IMG, "--data", "{ds}", "--out", "{tmp}/emptydir", "--resume"], "nothing to resume",
     None),
    ("img_resume_foreign", [*IMG, "--data", "{ds}", "--out", "{tmp}/udir", "--resume"], "udir", None),
    ("img_resume_and_force", [*IMG, "--data", "{ds}", "--out", "{imgrun}", "--resume", "--force"], "contradict",
     None),
    *[(f"img_resume_{b}", [*IMG, "--data", "{ds}", "--out", "{bad}", "--resume"], needle, b)
      for b, needle in [
          ("img_config_not_json", "config.json"),
          ("img_config_list", "config.json"),
          ("img_config_no_section", "config.json"),
          ("img_config_not_utf8", "config.json"),
          ("img_no_checkpoints", "no complete checkpoint"),
          ("img_checkpoints_corrupt", "no complete checkpoint"),
          ("img_checkpoint_weights_truncated", "checkpoint"),
      ]],
    ("img_resume_other_settings", [*IMG, "--data", "{ds}", "--out", "{imgrun}", "--resume", "--set",
                                   "image.kmer_k=3"], "kmer_k", None),
    ("img_set_unknown_key", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", "image.colour=1"], "colour",
     None),
    ("img_set_nan_lr", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", "image.lr=nan"], "image.lr", None),
    ("img_set_negative_seed", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", "image.seed=-1"], "seed", None),
    ("img_set_wrong_type", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", "image.batch_size=[1]"],
     "image.batch_size", None),
    ("img_set_bad_encoder", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.encoder="bert"'],
     "encoder", None),
    ("img_init_missing", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.init="{tmp}/nope"'], "nope",
     None),
    ("img_vae_missing", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.vae="{tmp}/nope"'],
     "image.vae", None),
    ("img_force_would_delete_data", [*IMG, "--data", "{tmp}/prev/ds", "--out", "{tmp}/prev", "--force"],
     "prev", None),
    ("img_gpt2_without_lm", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.encoder="gpt2"'],
     "image.lm_model", None),
    ("img_gpt2_lm_missing", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.encoder="gpt2"', "--set",
                             'image.lm_model="{tmp}/nolm"'], "image.lm_model='{tmp}/nolm'", None),
    ("img_gpt2_lm_broken", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.encoder="gpt2"',
                            "--set", 'image.lm_model="{bad}"'], "model.safetensors", "lm_model_truncated"),
    ("img_gpt2_lm_is_file", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", 'image.encoder="gpt2"', "--set",
                             'image.lm_model="{tmp}/afile"'], "image.lm_model", None),
    ("img_unknown_flag", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--steps", "3"], "unrecognized", None),
    # --- pretrain-image
    ("prior_out_is_file", [*PRIOR, "--out", "{tmp}/afile"], "is a file", None),
    ("prior_force_foreign", [*PRIOR, "--out", "{tmp}/udir", "--force"], "not written by phenogen", None),
    ("prior_out_earlier_output", [*PRIOR, "--out", "{tmp}/prev"], "--force", None),
    ("prior_bad_preset", ["pretrain-image", "--out", "{tmp}/o", "--set", 'prior.preset="huge"'], "huge", None),
    ("prior_init_missing", [*PRIOR, "--out", "{tmp}/o", "--set", 'prior.init="{tmp}/nope"'], "nope", None),
    ("prior_set_unknown_key", [*PRIOR, "--out", "{tmp}/o", "--set", "prior.colour=1"], "colour", None),
    ("prior_set_nan", [*PRIOR, "--out", "{tmp}/o", "--set", "prior.trait_sd=nan"], "trait_sd", None),
    ("prior_set_negative_images", [*PRIOR, "--out", "{tmp}/o", "--set", "prior.n_images=-5"], "n_images", None),
    ("prior_set_wrong_type", [*PRIOR, "--out", "{tmp}/o", "--set", "prior.n_images=many"], "prior.n_images", None),
    ("prior_resume_unknown", [*PRIOR, "--out", "{tmp}/o", "--resume"], "unrecognized", None),
    # --- validate
    ("val_missing", ["validate", "{tmp}/nope.fa"], "nope.fa", None),
    ("val_not_utf8", ["validate", "{tmp}/latin1.fa"], "latin1.fa", None),
    ("val_binary", ["validate", "{tmp}/binary.fa"], "binary.fa", None),
    ("val_empty", ["validate", "{tmp}/empty.fa"], "empty.fa", None),
    ("val_empty_dir", ["validate", "{tmp}/emptydir"], "emptydir", None),
    *[(f"val_{b}", ["validate", "{bad}"], "bad_ds", b) for b in DS_BREAKS],
    ("val_json_is_dir", ["validate", "{fasta}", "--json", "{tmp}/emptydir"], "--json", None),
    ("val_json_parent_is_file", ["validate", "{fasta}", "--json", "{tmp}/afile/x.json"], "afile", None),
    ("val_json_is_the_input", ["validate", "{tmp}/prev/old.txt", "--json", "{tmp}/prev/old.txt"],
     "is the input", None),
    ("val_json_overwrites_dataset_json", ["validate", "{bad}", "--json", "{bad}/dataset.json"],
     "a file of the dataset", "ds_image_missing"),
    ("val_bad_policy", ["validate", "{fasta}", "--policy", "ignore"], "invalid choice", None),
    ("val_set_unknown", ["validate", "{fasta}", "--set", "validate.colour=1"], "colour", None),
    ("val_set_negative", ["validate", "{fasta}", "--set", "validate.max_listed=-1"], "max_listed", None),
    ("val_set_wrong_type", ["validate", "{fasta}", "--set", "validate.allow_gaps=3"], "allow_gaps", None),
    # --- import folder
    ("impf_needs_csv", [*IMPF, "--fasta", "{folder}/seqs.fasta"], "--csv", None),
    ("impf_fasta_missing", [*IMPF, "--fasta", "{tmp}/nope.fa", "--csv", "{folder}/samples.csv"], "nope.fa", None),
    ("impf_csv_missing", [*IMPF, "--fasta", "{folder}/seqs.fasta", "--csv", "{tmp}/nope.csv"], "nope.csv", None),
    ("impf_csv_is_dir", [*IMPF, "--fasta", "{folder}/seqs.fasta", "--csv", "{tmp}/emptydir"],
     "--csv {tmp}/emptydir: is a directory", None),
    *[(f"impf_{b}", [*IMPF, "--fasta", "{bad}/seqs.fasta", "--csv", "{bad}/samples.csv"], needle, b)
      for b, needle in [
          ("csv_not_utf8", "samples.csv"),
          ("csv_binary", "samples.csv"),
          ("csv_no_images_column", "samples.csv"),
          ("csv_empty", "samples.csv"),
          ("csv_image_missing", "nope.jpg"),
          ("csv_image_outside", "outside.jpg"),
          ("folder_image_corrupt", "photo_a.jpg"),
          ("folder_fasta_not_utf8", "seqs.fasta"),
          ("folder_fasta_empty", "seqs.fasta"),
      ]],
    ("impf_out_is_file", ["import", "folder", "--fasta", "{folder}/seqs.fasta", "--csv", "{folder}/samples.csv",
                          "--out", "{tmp}/afile"], "is a file", None),
    ("impf_force_foreign", ["import", "folder", "--fasta", "{folder}/seqs.fasta", "--csv",
                            "{folder}/samples.csv", "--out", "{tmp}/udir", "--force"], "not written by phenogen",
     None),
    ("impf_set_bad_mode", [*IMPF, "--fasta", "{folder}/seqs.fasta", "--csv", "{folder}/samples.csv", "--set",
                           'import.image_mode="move"'], "image_mode", None),
    ("impf_set_bad_fraction", [*IMPF, "--fasta", "{folder}/seqs.fasta", "--csv", "{folder}/samples.csv",
                               "--set", "build.heldout_fraction=nan"], "heldout_fraction", None),
    ("impf_bad_kind", ["import", "zip", "--out", "{tmp}/imp"], "invalid choice", None),
    # --- import bold / bioscan5m
    ("bold_needs_tsv", BOLD, "--tsv", None),
    ("bold_tsv_missing", [*BOLD, "--tsv", "{tmp}/nope.tsv"], "nope.tsv", None),
    ("bold_tsv_is_dir", [*BOLD, "--tsv", "{tmp}/emptydir"], "--tsv {tmp}/emptydir: is a directory", None),
    ("bold_tsv_binary", [*BOLD, "--tsv", "{tmp}/binary.txt"], "binary.txt", None),
    ("bold_tsv_empty", [*BOLD, "--tsv", "{tmp}/empty.txt"], "empty.txt: BOLD TSV has no data rows", None),
    ("bold_images_no_manifest", [*BOLD, "--tsv", str(FIXTURES / "bold_combined_parus.tsv"), "--images",
                                 "{tmp}/noimg"], "images.tsv", None),
    ("bold_images_bad_manifest", [*BOLD, "--tsv", str(FIXTURES / "bold_combined_parus.tsv"), "--images",
                                  "{tmp}/badimg"], "images.tsv", None),
    ("bold_out_is_file", ["import", "bold", "--tsv", str(FIXTURES / "bold_combined_parus.tsv"), "--out",
                          "{tmp}/afile"], "is a file", None),
    ("bold_tsv_header_only", [*BOLD, "--tsv", "{tmp}/header.tsv"], "header.tsv: BOLD TSV has no data rows", None),
    ("bold_all_rows_filtered", [*BOLD, "--tsv", BOLD_TSV, "--set", "fetch.min_length=5000", "--set",
                                "fetch.max_length=6000"], "bold_combined_parus.tsv: none of the", None),
    ("bold_images_is_file", [*BOLD, "--tsv", BOLD_TSV, "--images", "{tmp}/afile"], "--images {tmp}/afile: is a file",
     None),
    ("bold_images_missing", [*BOLD, "--tsv", BOLD_TSV, "--images", "{tmp}/nope"], "nope", None),
    ("bold_tsv_latin1_header", [*BOLD, "--tsv", "{tmp}/latin1.tsv"], "latin1.tsv", None),
    ("impf_fasta_is_dir", [*IMPF, "--fasta", "{tmp}/emptydir", "--csv", "{folder}/samples.csv"],
     "--fasta {tmp}/emptydir: is a directory", None),
    ("bioscan_needs_root", BIOSCAN, "--root", None),
    ("bioscan_root_missing", [*BIOSCAN, "--root", "{tmp}/nope"], "nope", None),
    ("bioscan_root_empty", [*BIOSCAN, "--root", "{tmp}/emptydir"], "emptydir", None),
    ("bioscan_root_is_file", [*BIOSCAN, "--root", "{tmp}/afile"], "afile", None),
    # --- dataset build
    ("build_barcodes_missing", [*BUILD, "--barcodes", "{tmp}/nope"], "nope", None),
    ("build_barcodes_empty_dir", [*BUILD, "--barcodes", "{tmp}/emptydir"], "barcodes.tsv", None),
    *[(f"build_{b}", [*BUILD, "--barcodes", "{bad}", "--set", "build.require_images=false"], needle, b)
      for b, needle in [
          ("bc_not_utf8", "barcodes.tsv"),
          ("bc_missing_column", "barcodes.tsv: missing column(s) sequence"),
          ("bc_binary", "barcodes.tsv"),
          ("bc_empty", "barcodes.tsv"),
          ("bc_bad_sequence", "barcodes.tsv, data row 1: record 'b0': sequence has 'Q' at position 10"),
          ("bc_bad_record_id", "barcodes.tsv, data row 2: record_id 'b 1'"),
          ("bc_empty_species", "barcodes.tsv, data row 2: record 'b1': species"),
          ("bc_header_only", "barcodes.tsv: barcodes table has no rows"),
      ]],
    *[(f"build_{b}", [*BUILD, "--barcodes", "{barcodes}", "--images", "{bad}"], needle, b)
      for b, needle in [
          ("ph_image_missing", "images.tsv, row 2: field file"),
          ("ph_image_corrupt", "photo_a.jpg"),
          ("ph_image_outside", "images.tsv, row 2: field file"),
          ("ph_manifest_no_column", "images.tsv: missing column(s) species"),
      ]],
    ("build_images_is_file", [*BUILD, "--barcodes", "{barcodes}", "--images", "{tmp}/afile"],
     "--images {tmp}/afile: is a file", None),
    ("build_barcodes_file_not_a_table", [*BUILD, "--barcodes", "{tmp}/latin1.txt"], "latin1.txt", None),
    ("build_images_missing", [*BUILD, "--barcodes", "{barcodes}", "--images", "{tmp}/nope"], "nope", None),
    ("build_images_no_manifest", [*BUILD, "--barcodes", "{barcodes}", "--images", "{tmp}/noimg"], "images.tsv",
     None),
    ("build_images_bad_manifest", [*BUILD, "--barcodes", "{barcodes}", "--images", "{tmp}/badimg"], "images.tsv",
     None),
    ("build_images_manifest_not_utf8", [*BUILD, "--barcodes", "{barcodes}", "--images", "{tmp}/latin1img"],
     "images.tsv", None),
    ("build_no_images_required", [*BUILD, "--barcodes", "{barcodes}"], "image", None),
    ("build_out_is_file", ["dataset", "build", "--barcodes", "{barcodes}", "--out", "{tmp}/afile"], "is a file",
     None),
    ("build_force_foreign", ["dataset", "build", "--barcodes", "{barcodes}", "--out", "{tmp}/udir", "--force"],
     "not written by phenogen", None),
    ("build_set_bad_strategy", [*BUILD, "--barcodes", "{barcodes}", "--set", 'build.strategy="random"'],
     "strategy", None),
    ("build_set_taxon_without_taxa", [*BUILD, "--barcodes", "{barcodes}", "--set", 'build.strategy="taxon"',
                                      "--set", "build.require_images=false"], "train_taxa", None),
    ("build_needs_barcodes", ["dataset", "build", "--out", "{tmp}/built"], "--barcodes", None),
    ("build_bad_action", ["dataset", "merge", "--barcodes", "{barcodes}", "--out", "{tmp}/built"],
     "invalid choice", None),
    # --- report
    ("report_run_missing", ["report", "--run", "{tmp}/nope"], "nope", None),
    ("report_run_is_file", ["report", "--run", "{tmp}/afile"], "--run {tmp}/afile: is a file", None),
    ("report_run_not_a_run", ["report", "--run", "{tmp}/emptydir"], "not a phenogen run", None),
    ("report_out_is_dir", ["report", "--run", "{run}", "--out", "{tmp}/emptydir"], "emptydir", None),
    ("report_out_parent_is_file", ["report", "--run", "{run}", "--out", "{tmp}/afile/r.html"], "afile", None),
    ("report_out_overwrites_manifest", ["report", "--run", "{run}", "--out", "{run}/data/manifest.tsv"],
     "not an HTML report", None),
    ("report_out_overwrites_user_file", ["report", "--run", "{run}", "--out", "{tmp}/afile"], "not an HTML report",
     None),
    ("report_max_targets_zero", ["report", "--run", "{run}", "--out", "{tmp}/r.html", "--max-targets", "0"],
     "max_targets", None),
    ("report_max_targets_not_int", ["report", "--run", "{run}", "--max-targets", "many"], "--max-targets", None),
    ("report_set_unknown", ["report", "--run", "{run}", "--set", "report.colour=1"], "colour", None),
    *[(f"report_{b}", ["report", "--run", "{bad}", "--out", "{tmp}/r.html"], needle, b)
      for b, needle in [
          ("run_metrics_not_json", "metrics.json"),
          ("run_metrics_list", "metrics.json"),
          ("run_metrics_not_utf8", "metrics.json"),
          ("run_data_json_list", "dataset.json"),
          ("run_data_manifest_binary", "manifest.tsv"),
      ]],
    # --- fetch
    ("fetch_no_taxa_flag", ["fetch", "barcodes", "--out", "{tmp}/fb"], "--taxa", None),
    ("fetch_taxa_missing", [*FETCH_BC, "--taxa", "{tmp}/nope.txt"], "nope.txt", None),
    ("fetch_taxa_is_dir", [*FETCH_BC, "--taxa", "{tmp}/emptydir"], "emptydir", None),
    ("fetch_taxa_not_utf8", [*FETCH_BC, "--taxa", "{tmp}/latin1.txt"], "latin1.txt", None),
    ("fetch_taxa_binary", [*FETCH_BC, "--taxa", "{tmp}/binary.txt"], "binary.txt", None),
    ("fetch_taxa_empty", [*FETCH_BC, "--taxa", "{tmp}/empty.txt"], "empty.txt", None),
    ("fetch_taxa_only_comments", [*FETCH_IM, "--taxa", "{tmp}/comments.txt"], "comments.txt", None),
    ("fetch_out_is_file", [*FETCH_BC[:2], "--taxa", "{tmp}/taxa.txt", "--out", "{tmp}/afile", *DEAD],
     "--out {tmp}/afile: is a file", None),
    ("fetch_out_parent_is_file", [*FETCH_IM[:2], "--taxa", "{tmp}/taxa.txt", "--out", "{tmp}/afile/x", *DEAD],
     "{tmp}/afile is a file", None),
    ("fetch_cache_is_file", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--cache", "{tmp}/afile"],
     "--cache {tmp}/afile: is a file", None),
    ("fetch_cache_parent_is_file", [*FETCH_IM, "--taxa", "{tmp}/taxa.txt", "--cache", "{tmp}/afile/c"],
     "--cache", None),
    ("fetch_out_foreign", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--out", "{tmp}/udir"],
     "--out {tmp}/udir: directory is not empty and was not written by phenogen", None),
    ("fetch_set_unknown", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", "fetch.colour=1"], "colour", None),
    ("fetch_set_negative_retries", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", "fetch.retries=-1"],
     "retries", None),
    ("fetch_set_nan_timeout", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", "fetch.timeout_s=nan"],
     "timeout_s", None),
    ("fetch_set_bad_source", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", 'fetch.sources=["genbank"]'],
     "sources", None),
    ("fetch_bad_what", ["fetch", "genomes", "--taxa", "{tmp}/taxa.txt", "--out", "{tmp}/fb"], "invalid choice",
     None),
    ("fetch_base_url_not_http", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", 'fetch.ncbi_base="ftp:/x"'],
     "fetch.ncbi_base='ftp:/x'", None),
    ("fetch_base_url_no_host", [*FETCH_IM, "--taxa", "{tmp}/taxa.txt", "--set", 'fetch.inat_base="https://"'],
     "fetch.inat_base", None),
    ("fetch_base_url_bad_port", [*FETCH_IM, "--taxa", "{tmp}/taxa.txt", "--set",
                                 'fetch.gbif_base="http://127.0.0.1:port/"'], "fetch.gbif_base", None),
    ("fetch_base_url_not_a_string", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", "fetch.bold_base=9"],
     "fetch.bold_base", None),
    ("fetch_config_not_utf8", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--config", "{tmp}/latin1.toml"],
     "latin1.toml", None),
    ("fetch_set_no_equals", [*FETCH_BC, "--taxa", "{tmp}/taxa.txt", "--set", "fetch.retries"], "section.key=value",
     None),
    # --- --force over an earlier phenogen output with a bad input: refused, the earlier output kept
    ("lm_force_bad_data_keeps_earlier", [*LM, "--data", "{tmp}/nope", "--out", "{tmp}/prev", "--force"], "nope",
     None),
    ("lm_force_bad_set_keeps_earlier", [*LM, "--data", "{fasta}", "--out", "{tmp}/prev", "--force", "--set",
                                        "lm.lr=nan"], "lm.lr", None),
    ("img_force_bad_data_keeps_earlier", [*IMG, "--data", "{bad}", "--out", "{tmp}/prev", "--force"], "sp0_0_0.png",
     "ds_image_corrupt"),
    ("img_force_bad_init_keeps_earlier", [*IMG, "--data", "{ds}", "--out", "{tmp}/prev", "--force", "--set",
                                          'image.init="{tmp}/nope"'], "image.init", None),
    ("prior_force_bad_init_keeps_earlier", [*PRIOR, "--out", "{tmp}/prev", "--force", "--set",
                                            'prior.init="{tmp}/nope"'], "prior.init", None),
    ("impf_force_bad_csv_keeps_earlier", ["import", "folder", "--fasta", "{bad}/seqs.fasta", "--csv",
                                          "{bad}/samples.csv", "--out", "{tmp}/prev", "--force"], "nope.jpg",
     "csv_image_missing"),
    ("bold_force_bad_tsv_keeps_earlier", ["import", "bold", "--tsv", "{tmp}/empty.txt", "--out", "{tmp}/prev",
                                          "--force"], "empty.txt", None),
    ("bold_force_would_delete_input", ["import", "bold", "--tsv", "{tmp}/prev/in.tsv", "--out", "{tmp}/prev",
                                       "--force"], "holds the input --tsv", None),
    ("build_force_would_delete_input", ["dataset", "build", "--barcodes", "{tmp}/prev/barcodes.tsv", "--out",
                                        "{tmp}/prev", "--force", "--set", "build.require_images=false"],
     "holds the input --barcodes", None),
    ("build_force_bad_barcodes_keeps_earlier", ["dataset", "build", "--barcodes", "{bad}", "--out", "{tmp}/prev",
                                                "--force", "--set", "build.require_images=false"], "barcodes.tsv",
     "bc_bad_sequence"),
    ("img_force_prior_of_other_preset_keeps_earlier", [*IMG, "--data", "{ds}", "--out", "{tmp}/prev", "--force",
                                                       "--set", f'image.init="{CPU_PRIOR}"'],
     "the prior's UNet has cross_attention_dim 128 (this run needs 32)", None),
    ("prior_force_prior_of_other_preset_keeps_earlier", [*PRIOR, "--out", "{tmp}/prev", "--force", "--set",
                                                         f'prior.init="{CPU_PRIOR}"'], "prior.init=", None),
    ("img_prior_unet_config_broken", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set",
                                      'image.init="{tmp}/fakeprior"'], "fakeprior/unet/config.json", None),
    # --- train-lm / train-image: settings that only the data can refute
    ("lm_positions_too_few", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", "lm.n_positions=8"],
     "n_positions", None),
    ("lm_fp16_on_cpu", [*LM, "--data", "{fasta}", "--out", "{tmp}/o", "--set", 'lm.mixed_precision="fp16"'],
     "fp16", None),
    ("img_batch_zero", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--set", "image.batch_size=0"],
     "batch_size", None),
    ("img_force_truncated_image_keeps_earlier", [*IMG, "--data", "{bad}", "--out", "{tmp}/prev", "--force"],
     "sp0_0_0.png", "ds_image_truncated"),
    ("lm_force_positions_too_few_keeps_earlier", [*LM, "--data", "{fasta}", "--out", "{tmp}/prev", "--force",
                                                  "--set", "lm.n_positions=8"], "n_positions", None),
    ("lm_force_fp16_keeps_earlier", [*LM, "--data", "{fasta}", "--out", "{tmp}/prev", "--force", "--set",
                                     'lm.mixed_precision="fp16"'], "fp16", None),
    ("img_config_missing", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--config", "{tmp}/nope.toml"], "nope.toml",
     None),
    ("img_config_is_dir", [*IMG, "--data", "{ds}", "--out", "{tmp}/o", "--config", "{tmp}/emptydir"], "emptydir",
     None),
]
# fmt: on


@pytest.mark.parametrize(("argv", "needle", "breaker"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_invocation_is_one_line_and_exit_2(argv, needle, breaker, world, tmp_path, capsys):
    env = _env(world, tmp_path, breaker)
    if "{tmp}/prev/ds" in argv:
        shutil.copytree(world["ds"], tmp_path / "prev" / "ds")
    args = [a.format(**env) for a in argv]
    start = time.perf_counter()
    code = main(args)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    cmd = args[0]
    assert code == 2, f"exit {code}: {err}"
    assert err.startswith(f"phenogen {cmd}: error:") and err.count("\n") == 1, err
    assert needle.format(**env) in err, err
    assert elapsed < 20, f"{elapsed:.1f} s: checks must come before any long work"
    assert (tmp_path / "udir" / "mine.txt").read_text() == "precious\n"  # never deleted
    assert sorted(p.name for p in (tmp_path / "udir").iterdir()) == ["mine.txt"]  # nor anything added
    assert (
        tmp_path / "prev" / "old.txt"
    ).read_text() == "an earlier run\n"  # nor an earlier output, on error
    assert (tmp_path / "afile").read_bytes() == b"I am a file\n"


def test_there_are_at_least_60_wrong_invocations():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_every_command_here_is_covered():
    covered = {(c[1][0], c[1][1]) if c[1][0] in ("import", "fetch", "dataset") else c[1][0] for c in CASES}
    assert covered >= {"train-lm", "train-image", "pretrain-image", "validate", "report", ("import", "folder"),
                       ("import", "bioscan5m"), ("import", "bold"), ("fetch", "barcodes"), ("fetch", "images"),
                       ("dataset", "build")}  # fmt: skip


@pytest.mark.parametrize("what", ["barcodes", "images"])
def test_an_unreachable_server_is_logged_and_exit_1_without_a_traceback(what, tmp_path, capsys):
    """Every base URL a closed local port, no retries: each taxon's failure is logged (log.tsv, one stdout
    line), the command finishes, says on ONE stderr line what failed and exits 1 — a rerun resumes."""
    (tmp_path / "taxa.txt").write_text("Turdus merula\nParus major\n")
    sources = [
        "--set",
        'fetch.sources=["ncbi", "bold"]',
        "--set",
        'fetch.image_sources=["inaturalist", "gbif"]',
    ]
    argv = [
        "fetch",
        what,
        "--taxa",
        str(tmp_path / "taxa.txt"),
        "--out",
        str(tmp_path / "f"),
        *DEAD,
        *sources,
    ]
    start = time.perf_counter()
    assert main(argv) == 1
    capsys.readouterr()
    code = main(argv)  # the rerun continues in its own (marked) output directory
    out, err = capsys.readouterr()
    assert time.perf_counter() - start < 20
    assert code == 1 and "Traceback" not in out + err, err
    assert (tmp_path / "f" / MARKER).is_file()
    assert err.count("\n") == 1 and "taxon queries failed" in err and "Turdus merula" in err, err
    assert out.count("ERROR") == (4 if what == "barcodes" else 2), out
    log = (tmp_path / "f" / "log.tsv").read_text().splitlines()
    assert len(log) == (5 if what == "barcodes" else 3) and all(line.split("\t")[-1] for line in log[1:])
    saved = json.loads((tmp_path / "f" / "config.json").read_text())
    assert saved["fetch"]["ncbi_base"] == "http://127.0.0.1:9/"


def test_the_checks_let_valid_invocations_through(world, tmp_path, capsys):
    """The same inputs, unbroken, still work: validate, dataset build, import bold/folder, report, resume."""
    ok = [
        ["validate", str(world["ds"]), "--json", str(tmp_path / "v.json")],
        ["validate", str(world["fasta"])],
        ["dataset", "build", "--barcodes", str(world["barcodes"]), "--images", str(world["photos"]),
         "--out", str(tmp_path / "built"), "--set", "build.heldout_fraction=0.5"],
        ["import", "bold", "--tsv", BOLD_TSV, "--out", str(tmp_path / "bold"), "--set",
         "build.require_images=false"],
        ["import", "folder", "--fasta", str(world["folder"] / "seqs.fasta"), "--csv",
         str(world["folder"] / "samples.csv"), "--out", str(tmp_path / "folder"), "--set",
         "build.heldout_fraction=0.5"],
        ["report", "--run", str(world["run"]), "--out", str(tmp_path / "r.html")],
    ]  # fmt: skip
    for argv in ok:
        assert main(argv) == 0, (argv, capsys.readouterr().err)
    # --force replaces an earlier output of the same command once the inputs check out
    again = [*ok[2][:-2], "--force", *ok[2][-2:]]
    assert main(again) == 0, capsys.readouterr().err
    lmrun = tmp_path / "lmrun"
    shutil.copytree(world["lmrun"], lmrun)
    assert main([*LM, "--data", str(world["fasta"]), "--out", str(lmrun), "--resume"]) == 0, (
        capsys.readouterr().err
    )
    assert (lmrun / "model" / "model.safetensors").is_file()

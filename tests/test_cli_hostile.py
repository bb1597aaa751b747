"""Wrong invocations of every command: each is ONE line on stderr, ``phenogen CMD: error: …`` naming the
file or flag, exit code 2 and never a traceback (issue 22).

Tiny real models are built once per module (an LM, a kmer pipeline, a simulated clade) and copied
into each test's directory before being broken: truncated or empty weights, a missing, ``[]``, non-JSON
or non-UTF-8 config, a component folder without its weights.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from phenogen.cli import main
from phenogen.fsio import MARKER

torch.set_num_threads(1)

RNG = random.Random(0)
SEQS = ["".join(RNG.choice("ACGT") for _ in range(60)) for _ in range(4)]
GOOD_FASTA = "".join(f">s{i}\n{s}\n" for i, s in enumerate(SEQS))
NON_UTF8 = b">s1 caf\xe9\nACGTACGT\n"
BINARY = b"\x00\x01\x02\x89PNG\r\n\x1a\n\x00\x00"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny DNA LM, tiny pipelines (kmer: k=4, 4 segments, as the demo: 32 bp minimum; gpt2 on that LM)
    and a simulated clade."""
    from phenogen.diffusion.components import build_noise_scheduler, build_unet, build_vae
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.pipeline import DNAToImagePipeline, make_scheduler
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    root = tmp_path_factory.mktemp("models")
    lm = save_lm(build_model(KmerTokenizer(k=3), preset="tiny", n_positions=32, seed=0), root / "lm")
    torch.manual_seed(0)
    cond = build_conditioner("kmer", 32, kmer_k=4, kmer_segments=4, max_length=60, heads=2)
    scheduler = make_scheduler("ddim", build_noise_scheduler().config)
    DNAToImagePipeline(build_vae("tiny"), build_unet("tiny"), scheduler, cond).save_pretrained(root / "pipe")
    gpt2 = build_conditioner("gpt2", 32, lm_model=str(lm), heads=2)  # the LM's 32 positions: 90 bp at most
    DNAToImagePipeline(build_vae("tiny"), build_unet("tiny"), scheduler, gpt2).save_pretrained(root / "gpipe")
    data = root / "clade"
    sim = ["--n-living", "4", "--image-size", "32", "--quiet", "--set", "sim.photos_per_individual=1"]
    assert main(["simulate", "--out", str(data), *sim]) == 0
    return {"lm": lm, "pipe": root / "pipe", "gpipe": root / "gpipe", "data": data}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _rm(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


LM_W = "model.safetensors"
PIPE_W = "diffusion_pytorch_model.safetensors"
# how a model copy is broken: (which model, relative path, what is done to it)
# fmt: off
BREAKERS: dict[str, tuple[str, str, Callable[[Path], None]]] = {
    "lm_no_config": ("lm", "config.json", _rm),
    "lm_config_list": ("lm", "config.json", lambda p: p.write_text("[]")),
    "lm_config_not_json": ("lm", "config.json", lambda p: p.write_text("{n_layer: 4")),
    "lm_config_not_utf8": ("lm", "config.json", lambda p: p.write_bytes(b'{"n_layer": "\xff"}')),
    "lm_weights_empty": ("lm", LM_W, lambda p: p.write_bytes(b"")),
    "lm_weights_truncated": ("lm", LM_W, _truncate),
    "lm_weights_garbage": ("lm", LM_W, lambda p: p.write_bytes(b"\xff" * 4096)),
    "lm_weights_is_dir": ("lm", LM_W, lambda p: (p.unlink(), p.mkdir())),
    "lm_vocab_not_json": ("lm", "kmer_vocab.json", lambda p: p.write_text("ACG TTT")),
    "lm_tokenizer_list": ("lm", "tokenizer_config.json", lambda p: p.write_text("[1, 2]")),
    "lm_meta_not_json": ("lm", "phenogen_lm.json", lambda p: p.write_text("{")),
    "pipe_index_list": ("pipe", "model_index.json", lambda p: p.write_text("[]")),
    "pipe_index_not_json": ("pipe", "model_index.json", lambda p: p.write_text("not json")),
    "pipe_index_not_utf8": ("pipe", "model_index.json", lambda p: p.write_bytes(b"\xfe\xff{}")),
    "pipe_index_bad_entry": ("pipe", "model_index.json", lambda p: p.write_text('{"vae": 3, "unet": [], '
                             '"scheduler": [], "conditioner": []}')),
    "pipe_no_index": ("pipe", "model_index.json", _rm),
    "pipe_unet_weights_missing": ("pipe", f"unet/{PIPE_W}", _rm),
    "pipe_vae_weights_truncated": ("pipe", f"vae/{PIPE_W}", _truncate),
    "pipe_vae_weights_empty": ("pipe", f"vae/{PIPE_W}", lambda p: p.write_bytes(b"")),
    "pipe_cond_config_list": ("pipe", "conditioner/config.json", lambda p: p.write_text("[]")),
    "pipe_no_scheduler": ("pipe", "scheduler", _rm),
    "pipe_unet_config_not_utf8": ("pipe", "unet/config.json", lambda p: p.write_bytes(b"\x80\x81")),
}
# fmt: on


def _env(models: dict[str, Path], tmp: Path, breaker: str | None) -> dict[str, str]:
    """The placeholders of the argv templates; ``{bad}`` is a broken copy of a model."""
    files = {
        "fa": GOOD_FASTA.encode(),
        "short.fa": f">s0\n{SEQS[0]}\n>short_one\n{SEQS[1][:29]}\n".encode(),
        "gap.fa": f">s0\n{SEQS[0]}\n>gappy\n{SEQS[1][:30]}--{SEQS[1][30:]}\n".encode(),
        "dot.fa": f">dotty\n{SEQS[1][:30]}..{SEQS[1][30:]}\n".encode(),
        "long.fa": f">s0\n{SEQS[0]}\n>long_one\n{SEQS[1] * 3}\n".encode(),
        "alln.fa": f">s0\n{SEQS[0]}\n>unknown_1\n{'N' * 60}\n".encode(),
        "protein.fa": b">p\nMKVLAAGIVGLLLAEEQQWRST\n",
        "one.fa": f">only\n{SEQS[0]}\n".encode(),
        "latin1.fa": NON_UTF8,
        "binary.fa": BINARY,
        "empty.fa": b"",
        "afile": b"I am a file\n",
        "latin1.txt": b"caf\xe9\n",
        "latin1.toml": b"[sim]\nseed = 1 # caf\xe9\n",
        "notjson.json": b"{'single': quotes}",
        "list.json": b"[1, 2, 3]",
        "bad.nwk": b"((A,B),(C;",
        "caps.tsv": b"record_id\tv0\ns0\t1\n",
        "gen/generated.tsv": b"record_id\tk\timage\ns0\t0\tcaf\xe9.png\n",
        "nogen/readme.txt": b"not a generate output\n",
        "udir/mine.txt": b"precious\n",
        "badds/dataset.json": b"[]",
        "textds/dataset.json": b"this is not json",
        "s.config.json/keep": b"",
        "zz.nwk": b"((s0:0.1,s1:0.1):0.1,(s2:0.1,zz:0.1):0.1);\n",
        "gshort/generated.tsv": b"record_id\tk\timage\ns0\t0\n",
        "gbad/generated.tsv": b"record_id\tk\timage\ns0\t0\tx.png\n",
        f"prev/{MARKER}": b'{"written_by": "phenogen generate", "version": "0"}',  # an earlier output
        "prev/q.fa": GOOD_FASTA.encode(),
        "gbad/x.png": b"\x89PNG\r\n\x1a\n then garbage",
    }
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    (tmp / "emptydir").mkdir()
    env = {k: str(v) for k, v in models.items()} | {"tmp": str(tmp)}
    if breaker is not None:
        which, rel, how = BREAKERS[breaker]
        bad = tmp / f"bad_{which}"
        shutil.copytree(models[which], bad)
        how(bad / rel)
        env["bad"] = str(bad)
    return env


# --------------------------------------------------------------------------------- the wrong ones
# (id, argv template, text the error must hold, breaker); "{tmp}/x" paths are made by _env
GEN = ["generate", "--model", "{pipe}", "--out", "{tmp}/gen_out"]
SAMPLE = ["sample-dna", "--n", "2", "--out", "{tmp}/s.fasta"]
EVDNA = ["evaluate-dna", "--model", "{lm}", "--out", "{tmp}/ev_out"]
ANC = ["ancestors", "--out", "{tmp}/anc_out"]
EVAL = ["evaluate", "--data", "{data}", "--out", "{tmp}/eval_out"]
# fmt: off
CASES: list[tuple[str, list[str], str, str | None]] = [
    # --- the command line itself
    ("no_such_command", ["paint"], "invalid choice", None),
    ("missing_required", ["generate", "--model", "{pipe}"], "required: --out", None),
    ("no_barcodes", [*GEN], "one of the arguments --fasta --sequence is required", None),
    ("sequence_not_dna", [*GEN, "--sequence", "MKVLAAG"], "--sequence: record 'sequence'", None),
    ("not_an_int", [*SAMPLE, "--model", "{lm}", "--seed", "many"], "--seed: invalid int value", None),
    ("unknown_flag", [*GEN, "--fasta", "{tmp}/fa", "--colour"], "unrecognized arguments: --colour", None),
    ("exclusive_flags", [*ANC, "--fasta", "{tmp}/fa", "--dataset", "{data}"], "not allowed with", None),
    ("bad_choice", [*ANC, "--fasta", "{tmp}/fa", "--rooting", "top"], "invalid choice: 'top'", None),
    # --- simulate
    ("sim_out_is_file", ["simulate", "--out", "{tmp}/afile"], "is a file", None),
    ("sim_force_foreign", ["simulate", "--out", "{tmp}/udir", "--force"], "not a 'phenogen simulate'", None),
    ("sim_bad_set_value", ["simulate", "--out", "{tmp}/o", "--set", "sim.n_living=many"], "sim.n_living", None),
    ("sim_bad_set_key", ["simulate", "--out", "{tmp}/o", "--set", "sim.colour=1"], "colour", None),
    ("sim_set_no_equals", ["simulate", "--out", "{tmp}/o", "--set", "sim.n_living"], "section.key=value", None),
    ("sim_config_missing", ["simulate", "--out", "{tmp}/o", "--config", "{tmp}/no.toml"], "no.toml", None),
    ("sim_config_dir", ["simulate", "--out", "{tmp}/o", "--config", "{tmp}/emptydir"], "emptydir", None),
    ("sim_config_not_utf8", ["simulate", "--out", "{tmp}/o", "--config", "{tmp}/latin1.toml"], "latin1.toml",
     None),
    ("sim_negative_seed", ["simulate", "--out", "{tmp}/o", "--seed", "-1"], "seed must be >= 0", None),
    ("sim_impossible_value", ["simulate", "--out", "{tmp}/o", "--n-living", "-3"], "n_living", None),
    # --- demo
    ("demo_out_is_file", ["demo", "--out", "{tmp}/afile"], "is a file", None),
    ("demo_force_foreign", ["demo", "--out", "{tmp}/udir", "--force"], "was not written by phenogen", None),
    ("demo_unknown_section", ["demo", "--out", "{tmp}/o", "--set", "imgae.lr=1"], "imgae", None),
    ("demo_bad_value", ["demo", "--out", "{tmp}/o", "--set", "image.lr=fast"], "image.lr", None),
    # --- sample-dna
    ("sample_out_is_dir", [*SAMPLE[:3], "--model", "{lm}", "--out", "{tmp}/emptydir"], "is a directory", None),
    ("sample_out_parent_is_file", [*SAMPLE[:3], "--model", "{lm}", "--out", "{tmp}/afile/s.fa"], "afile", None),
    ("sample_config_out_is_dir", [*SAMPLE, "--model", "{lm}"], "s.config.json", None),
    ("sample_model_missing", [*SAMPLE[:3], "--out", "{tmp}/x.fa", "--model", "{tmp}/nope"], "does not exist",
     None),
    ("sample_model_is_file", [*SAMPLE[:3], "--out", "{tmp}/x.fa", "--model", "{tmp}/afile"], "afile", None),
    ("sample_model_empty_dir", [*SAMPLE[:3], "--out", "{tmp}/x.fa", "--model", "{tmp}/emptydir"], "missing",
     None),
    ("sample_n_zero", [*SAMPLE[:1], "--n", "0", "--out", "{tmp}/x.fa", "--model", "{lm}"], "n and batch_size",
     None),
    ("sample_bad_top_p", [*SAMPLE[:3], "--out", "{tmp}/x.fa", "--model", "{lm}", "--set", "sample.top_p=2"],
     "top_p", None),
    *[
        (f"sample_{b}", [*SAMPLE[:3], "--out", "{tmp}/x.fa", "--model", "{bad}"], needle, b)
        for b, needle in [
            ("lm_no_config", "config.json"),
            ("lm_config_list", "config.json"),
            ("lm_config_not_json", "config.json"),
            ("lm_config_not_utf8", "config.json"),
            ("lm_weights_empty", "model.safetensors"),
            ("lm_weights_truncated", "model.safetensors"),
            ("lm_weights_garbage", "model.safetensors"),
            ("lm_weights_is_dir", "model.safetensors"),
            ("lm_vocab_not_json", "kmer_vocab.json"),
            ("lm_tokenizer_list", "tokenizer_config.json"),
            ("lm_meta_not_json", "phenogen_lm.json"),
        ]
    ],
    # --- evaluate-dna
    ("evdna_data_missing", [*EVDNA, "--data", "{tmp}/none.fa"], "none.fa", None),
    ("evdna_data_not_utf8", [*EVDNA, "--data", "{tmp}/latin1.fa"], "latin1.fa", None),
    ("evdna_data_binary", [*EVDNA, "--data", "{tmp}/binary.fa"], "binary.fa", None),
    ("evdna_data_empty", [*EVDNA, "--data", "{tmp}/empty.fa"], "empty.fa", None),
    ("evdna_data_bad_dataset", [*EVDNA, "--data", "{tmp}/textds"], "dataset.json", None),
    ("evdna_samples_dir", [*EVDNA, "--data", "{tmp}/fa", "--samples", "{tmp}/emptydir"], "emptydir", None),
    ("evdna_samples_not_utf8", [*EVDNA, "--data", "{tmp}/fa", "--samples", "{tmp}/latin1.fa"], "latin1.fa",
     None),
    ("evdna_out_is_file", ["evaluate-dna", "--model", "{lm}", "--data", "{tmp}/fa", "--out", "{tmp}/afile"],
     "is a file", None),
    ("evdna_out_foreign", ["evaluate-dna", "--model", "{lm}", "--data", "{tmp}/fa", "--out", "{tmp}/udir"],
     "not written by phenogen", None),
    ("evdna_force_would_delete_input", ["evaluate-dna", "--model", "{lm}", "--data", "{tmp}/prev/q.fa",
                                        "--out", "{tmp}/prev", "--force"], "holds the input --data", None),
    ("evdna_select_plain_dir", [*EVDNA, "--data", "{tmp}/fa", "--select-checkpoints"], "checkpoints", None),
    ("evdna_weights_truncated", ["evaluate-dna", "--model", "{bad}", "--data", "{tmp}/fa", "--out", "{tmp}/o"],
     "model.safetensors", "lm_weights_truncated"),
    # --- generate: the barcodes (checked before the model: a broken model must not be reached)
    ("gen_short_record", [*GEN, "--fasta", "{tmp}/short.fa"], "'short_one': 29 bp, shorter than the 32 bp",
     None),
    ("gen_gap", [*GEN, "--fasta", "{tmp}/gap.fa"], "gap.fa: record 'gappy': gap '-' at position 31", None),
    ("gen_dot_gap", [*GEN, "--fasta", "{tmp}/dot.fa"], "record 'dotty': gap", None),
    ("gen_all_n", [*GEN, "--fasta", "{tmp}/alln.fa"], "alln.fa: record 'unknown_1': all 60 bases are N", None),
    ("gen_all_n_before_model", ["generate", "--model", "{bad}", "--out", "{tmp}/o", "--fasta", "{tmp}/alln.fa"],
     "'unknown_1'", "pipe_vae_weights_truncated"),
    ("gen_fasta_missing", [*GEN, "--fasta", "{tmp}/none.fa"], "none.fa", None),
    ("gen_fasta_dir", [*GEN, "--fasta", "{tmp}/emptydir"], "emptydir", None),
    ("gen_fasta_not_utf8", [*GEN, "--fasta", "{tmp}/latin1.fa"], "latin1.fa", None),
    ("gen_fasta_binary", [*GEN, "--fasta", "{tmp}/binary.fa"], "binary.fa", None),
    ("gen_fasta_empty", [*GEN, "--fasta", "{tmp}/empty.fa"], "empty.fa", None),
    ("gen_fasta_protein", [*GEN, "--fasta", "{tmp}/protein.fa"], "protein", None),
    ("gen_out_is_file", ["generate", "--model", "{pipe}", "--fasta", "{tmp}/fa", "--out", "{tmp}/afile"],
     "is a file", None),
    ("gen_force_foreign", ["generate", "--model", "{pipe}", "--fasta", "{tmp}/fa", "--out", "{tmp}/udir",
                           "--force"], "not written by phenogen", None),
    ("gen_force_would_delete_input", ["generate", "--model", "{pipe}", "--fasta", "{tmp}/prev/q.fa", "--out",
                                      "{tmp}/prev", "--force"], "holds the input --fasta", None),
    ("gen_steps_zero", [*GEN, "--fasta", "{tmp}/fa", "--steps", "0"], "steps", None),
    ("gen_bad_scheduler", [*GEN, "--fasta", "{tmp}/fa", "--scheduler", "fastest"], "fastest", None),
    ("gen_bad_set", [*GEN, "--fasta", "{tmp}/fa", "--set", "generate.steps=many"], "generate.steps", None),
    ("gen_gpt2_too_long", ["generate", "--model", "{gpipe}", "--out", "{tmp}/o", "--fasta", "{tmp}/long.fa"],
     "long.fa: record 'long_one': 180 bp = 62 tokens", None),
    ("gen_too_many_steps", [*GEN, "--fasta", "{tmp}/fa", "--steps", "5000"], "more than the 1000 noise", None),
    ("gen_bad_device", [*GEN, "--fasta", "{tmp}/fa", "--device", "gpu9"], "--device", None),
    ("gen_captions_tokens_head", [*GEN, "--fasta", "{tmp}/fa", "--captions", "{tmp}/caps.tsv"], "caption head",
     None),
    ("gen_model_missing", ["generate", "--model", "{tmp}/nope", "--fasta", "{tmp}/fa", "--out", "{tmp}/o"],
     "does not exist", None),
    ("gen_model_is_file", ["generate", "--model", "{tmp}/afile", "--fasta", "{tmp}/fa", "--out", "{tmp}/o"],
     "afile", None),
    *[
        (f"gen_{b}", ["generate", "--model", "{bad}", "--fasta", "{tmp}/fa", "--out", "{tmp}/o"], needle, b)
        for b, needle in [
            ("pipe_index_list", "model_index.json"),
            ("pipe_index_not_json", "model_index.json"),
            ("pipe_index_not_utf8", "model_index.json"),
            ("pipe_index_bad_entry", "model_index.json"),
            ("pipe_no_index", "model_index.json"),
            ("pipe_unet_weights_missing", "unet"),
            ("pipe_vae_weights_truncated", f"vae/{PIPE_W}"),
            ("pipe_vae_weights_empty", f"vae/{PIPE_W}"),
            ("pipe_cond_config_list", "conditioner/config.json"),
            ("pipe_no_scheduler", "scheduler"),
            ("pipe_unet_config_not_utf8", "unet/config.json"),
        ]
    ],
    # --- ancestors
    ("anc_out_is_file", ["ancestors", "--fasta", "{tmp}/fa", "--out", "{tmp}/afile"], "is a file", None),
    ("anc_out_foreign", ["ancestors", "--fasta", "{tmp}/fa", "--out", "{tmp}/udir", "--force"],
     "not written by phenogen", None),
    ("anc_force_would_delete_input", ["ancestors", "--fasta", "{tmp}/prev/q.fa", "--out", "{tmp}/prev",
                                      "--force"], "holds the input --fasta", None),
    ("anc_fasta_not_utf8", [*ANC, "--fasta", "{tmp}/latin1.fa"], "latin1.fa", None),
    ("anc_fasta_dir", [*ANC, "--fasta", "{tmp}/emptydir"], "emptydir", None),
    ("anc_one_sequence", [*ANC, "--fasta", "{tmp}/one.fa"], "one.fa", None),
    ("anc_tree_missing", [*ANC, "--fasta", "{tmp}/fa", "--tree", "{tmp}/none.nwk"], "none.nwk", None),
    ("anc_tree_not_utf8", [*ANC, "--fasta", "{tmp}/fa", "--tree", "{tmp}/latin1.txt"], "latin1.txt", None),
    ("anc_tree_broken", [*ANC, "--fasta", "{tmp}/fa", "--tree", "{tmp}/bad.nwk"], "bad.nwk", None),
    ("anc_tree_names_mismatch", [*ANC, "--fasta", "{tmp}/fa", "--tree", "{tmp}/zz.nwk"], "not in", None),
    ("anc_outgroup_unknown", [*ANC, "--fasta", "{tmp}/fa", "--outgroup", "nobody"], "--outgroup", None),
    ("anc_mrca_unknown", [*ANC, "--fasta", "{tmp}/fa", "--mrca", "s0", "nobody"], "--mrca 'nobody': no tip id", None),
    ("anc_negative_seed", [*ANC, "--fasta", "{tmp}/fa", "--set", "ancestors.seed=-1"], "seed must be >= 0", None),
    ("anc_model_without_nodes", [*ANC, "--fasta", "{tmp}/fa", "--model", "{pipe}"], "--node", None),
    ("anc_model_broken", [*ANC, "--fasta", "{tmp}/fa", "--model", "{bad}", "--all-internal"],
     "model_index.json", "pipe_index_list"),
    ("anc_tree_needs_caption_head", [*ANC, "--fasta", "{tmp}/fa", "--model", "{pipe}", "--all-internal", "--set",
     'ancestors.portrait_condition="tree"'], "'tokens' head", None),
    ("anc_lm_samples_not_utf8", [*ANC, "--dataset", "{data}", "--lm-samples", "{tmp}/latin1.fa"], "latin1.fa",
     None),
    ("anc_dataset_missing", [*ANC, "--dataset", "{tmp}/nods"], "nods", None),
    ("anc_dataset_json_list", [*ANC, "--dataset", "{tmp}/badds"], "dataset.json", None),
    # --- evaluate
    ("eval_no_images", EVAL, "--generated DIR", None),
    ("eval_data_missing", ["evaluate", "--data", "{tmp}/nods", "--generated", "{tmp}/gen", "--out", "{tmp}/o"],
     "nods", None),
    ("eval_dataset_not_json", ["evaluate", "--data", "{tmp}/textds", "--generated", "{tmp}/gen", "--out",
                               "{tmp}/o"], "dataset.json", None),
    ("eval_dataset_json_list", ["evaluate", "--data", "{tmp}/badds", "--generated", "{tmp}/gen", "--out",
                                "{tmp}/o"], "dataset.json", None),
    ("eval_metrics_not_json", [*EVAL, "--generated", "{tmp}/gen", "--sequence-metrics", "{tmp}/notjson.json"],
     "notjson.json", None),
    ("eval_metrics_list", [*EVAL, "--generated", "{tmp}/gen", "--sequence-metrics", "{tmp}/list.json"],
     "list.json", None),
    ("eval_metrics_dir", [*EVAL, "--generated", "{tmp}/gen", "--sequence-metrics", "{tmp}/emptydir"],
     "emptydir", None),
    ("eval_generated_missing", [*EVAL, "--generated", "{tmp}/nogen_dir"], "nogen_dir", None),
    ("eval_generated_no_table", [*EVAL, "--generated", "{tmp}/nogen"], "generated.tsv", None),
    ("eval_generated_not_utf8", [*EVAL, "--generated", "{tmp}/gen"], "generated.tsv", None),
    ("eval_generated_short_row", [*EVAL, "--generated", "{tmp}/gshort"], "row 2: no image", None),
    ("eval_generated_bad_image", [*EVAL, "--generated", "{tmp}/gbad"], "x.png: not a readable image", None),
    ("eval_probe_missing", [*EVAL, "--generated", "{tmp}/gen", "--probe", "{tmp}/noprobe"], "noprobe", None),
    ("eval_model_broken", [*EVAL, "--model", "{bad}"], f"vae/{PIPE_W}", "pipe_vae_weights_truncated"),
    ("eval_negative_seed", [*EVAL, "--generated", "{tmp}/gen", "--seed", "-1"], "seed must be >= 0", None),
    ("eval_force_would_delete_input", ["evaluate", "--data", "{data}", "--generated", "{tmp}/prev", "--out",
                                       "{tmp}/prev", "--force"], "holds the input --generated", None),
    ("eval_out_is_file", ["evaluate", "--data", "{data}", "--generated", "{tmp}/gen", "--out", "{tmp}/afile"],
     "is a file", None),
]
# fmt: on


@pytest.mark.parametrize(("argv", "needle", "breaker"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_invocation_is_one_line_and_exit_2(argv, needle, breaker, models, tmp_path, capsys):
    env = _env(models, tmp_path, breaker)
    args = [a.format(**env) for a in argv]
    start = time.perf_counter()
    code = main(args)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    prefix = "phenogen: error:" if args[0] == "paint" else f"phenogen {args[0]}: error:"
    assert code == 2, err
    assert err.startswith(prefix) and err.count("\n") == 1, err
    assert needle in err, err
    assert elapsed < 30, f"{elapsed:.1f} s: checks must come before any long work"
    assert (tmp_path / "udir" / "mine.txt").read_text() == "precious\n"  # never deleted
    assert (tmp_path / "prev" / "q.fa").read_text() == GOOD_FASTA  # nor an input inside an earlier output


def test_there_are_at_least_50_wrong_invocations():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


def test_force_never_deletes_a_directory_without_the_marker(models, tmp_path, capsys):
    """`demo --force` / `simulate --force` on ~/important: exit 2, the user's file survives, nothing added."""
    important = tmp_path / "important"
    important.mkdir()
    (important / "thesis.tex").write_text("years of work")
    for argv in (
        ["demo", "--force"],
        ["simulate", "--force"],
        ["generate", "--model", str(models["pipe"]), "--fasta", str(tmp_path / "fa"), "--force"],
    ):
        (tmp_path / "fa").write_text(GOOD_FASTA)
        assert main([*argv, "--out", str(important)]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert sorted(p.name for p in important.iterdir()) == ["thesis.tex"]
        assert (important / "thesis.tex").read_text() == "years of work"


def test_simulate_force_replaces_its_own_output_and_marks_it(models, tmp_path, capsys):
    """An earlier simulate output (marker or, from before the marker, dataset.json's generator) is replaced."""
    out = tmp_path / "clade"
    shutil.copytree(models["data"], out)
    assert (out / MARKER).is_file()
    (out / MARKER).unlink()  # as written by an older phenogen: recognised by dataset.json
    sim = ["--n-living", "4", "--image-size", "32", "--quiet", "--set", "sim.photos_per_individual=1"]
    assert main(["simulate", "--out", str(out), *sim]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["simulate", "--out", str(out), "--force", "--seed", "5", *sim]) == 0
    assert json.loads((out / MARKER).read_text())["written_by"] == "phenogen simulate"
    assert json.loads((out / "config.json").read_text())["sim"]["seed"] == 5


def test_generate_force_replaces_an_earlier_generate_output(models, tmp_path, capsys):
    """A second generate into the same directory needs --force, which replaces the earlier output."""
    (tmp_path / "q.fa").write_text(GOOD_FASTA)
    argv = ["generate", "--model", str(models["pipe"]), "--fasta", str(tmp_path / "q.fa"),
            "--out", str(tmp_path / "g"), "--steps", "1", "--n", "1"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "g" / MARKER).is_file()
    capsys.readouterr()
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    (tmp_path / "g" / "stale.txt").write_text("old")
    assert main([*argv, "--force"]) == 0
    assert not (tmp_path / "g" / "stale.txt").exists() and (tmp_path / "g" / "generated.tsv").is_file()


def test_unexpected_errors_stay_tracebacks(monkeypatch):
    """A bug is not a user mistake: anything but PhenogenError / an OSError on a named path propagates."""
    import phenogen.sim.command as sim_command

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(sim_command, "run", boom)
    with pytest.raises(ZeroDivisionError):
        main(["simulate", "--out", "x"])


def test_os_error_on_a_user_path_is_one_line(monkeypatch, capsys):
    """The last net: an OSError carrying the user's path (here a PermissionError) is one line naming it."""
    import phenogen.sim.command as sim_command

    def denied(args):
        raise PermissionError(13, "Permission denied", "/data/locked.fasta")

    monkeypatch.setattr(sim_command, "run", denied)
    assert main(["simulate", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("phenogen simulate: error: /data/locked.fasta: Permission denied")
        and err.count("\n") == 1
    )


def test_the_checks_let_valid_invocations_through(models, tmp_path):
    """The same inputs, unbroken, still run: a gpt2-encoder pipeline on 60-bp barcodes, sample-dna to a file."""
    (tmp_path / "q.fa").write_text(GOOD_FASTA)
    argv = ["generate", "--model", str(models["gpipe"]), "--fasta", str(tmp_path / "q.fa"),
            "--out", str(tmp_path / "g"), "--steps", "1", "--n", "1"]  # fmt: skip
    assert main(argv) == 0 and (tmp_path / "g" / "generated.tsv").is_file()
    out = tmp_path / "deep" / "s.fasta"
    assert main(["sample-dna", "--model", str(models["lm"]), "--n", "2", "--out", str(out)]) == 0
    assert out.read_text().count(">") == 2 and (out.parent / "s.config.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_config_typo_never_costs_the_previous_demo_run(tmp_path, capsys):
    """`demo --force` on an earlier run checks every section first: a bad --set leaves the run untouched."""
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).write_text('{"written_by": "phenogen demo", "version": "0"}')
    (run / "report.html").write_text("last week's results")
    for bad in ("image.lr=fast", "imgae.lr=1", "sim.n_living=2", "generate.steps=0"):
        assert main(["demo", "--out", str(run), "--force", "--set", bad]) == 2
        assert capsys.readouterr().err.count("\n") == 1
        assert (run / "report.html").read_text() == "last week's results"

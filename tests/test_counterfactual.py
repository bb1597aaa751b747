"""Counterfactuals: nested mutations, interpolation, trait swaps, the equal-noise grid, in-silico mutagenesis
attribution and ``phenogen counterfactual`` end to end — on tiny real pipelines built in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from phenogen import counterfactual as cf
from phenogen.api import Model, load_model
from phenogen.cli import main
from phenogen.diffusion.components import build_noise_scheduler, build_unet, build_vae
from phenogen.diffusion.conditioning import DNAConditioner, build_conditioner
from phenogen.diffusion.pipeline import DNAToImagePipeline, make_scheduler
from phenogen.diffusion.prior import CaptionEncoder
from phenogen.errors import ConfigError, InputError, SequenceError

torch.set_num_threads(2)
RNG = np.random.default_rng(7)
SEQ = "".join(RNG.choice(list("ACGT"), 60))
OTHER = "".join(b if RNG.random() < 0.7 else RNG.choice(list("ACGT")) for b in SEQ)


def _differ(a: str, b: str) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def _pipeline(tmp: Path, head: str = "caption") -> DNAToImagePipeline:
    """A tiny untrained pipeline; the caption head gets a random DNA → caption map, so barcodes differ."""
    torch.manual_seed(0)
    kw = {}
    if head == "caption":
        CaptionEncoder(n_traits=3, dim=32, traits=("size", "hue", "lightness")).save_pretrained(tmp / "cap")
        kw = {"head": "caption", "caption_encoder": tmp / "cap"}
    cond = build_conditioner("kmer", 32, kmer_k=2, kmer_segments=3, heads=2, **kw)
    if head == "caption":
        torch.nn.init.normal_(cond.to_caption.weight, std=0.3)
    pipe = DNAToImagePipeline(
        build_vae("tiny"), build_unet("tiny"), make_scheduler("ddim", build_noise_scheduler().config), cond
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Saved tiny pipelines (caption and tokens heads) and a FASTA with two barcodes of equal length."""
    tmp = tmp_path_factory.mktemp("cf")
    _pipeline(tmp, "caption").save_pretrained(tmp / "caption")
    _pipeline(tmp, "tokens").save_pretrained(tmp / "tokens")
    (tmp / "q.fasta").write_text(f">a\n{SEQ}\n>b\n{OTHER}\n")
    return tmp


# ------------------------------------------------------------------------------------ mutations
def test_mutate_changes_exactly_n_sites_each_to_another_base():
    """n sites differ, no more, no less, for every n; N sites are never chosen; 0 % is the barcode itself."""
    seq = SEQ[:20] + "NN" + SEQ[22:]
    for n in range(0, 59):
        out = cf.mutate(seq, n=n, seed=3)
        assert len(out) == len(seq) and len(_differ(seq, out)) == n
        assert out[20:22] == "NN"
    assert cf.mutate(seq, 0.0, seed=5) == seq
    assert len(_differ(seq, cf.mutate(seq, 0.25, seed=1))) == round(0.25 * 58)  # of the 58 A/C/G/T sites
    with pytest.raises(InputError, match="58 mutable"):
        cf.mutate(seq, n=59)


def test_new_bases_are_uniform_among_the_other_three():
    """Every site of an all-A barcode mutated: C, G and T each about a third."""
    out = cf.mutate("A" * 900, 1.0, seed=0)
    counts = [out.count(b) for b in "CGT"]
    assert out.count("A") == 0 and all(240 < c < 360 for c in counts), counts


def test_mutation_levels_are_nested_for_one_seed():
    """The sites (and new bases) at 5 % are among those at 20 %, and so on; another seed picks other sites."""
    long = SEQ * 10  # 600 bp
    levels = [cf.mutate(long, p, seed=11) for p in (0.01, 0.05, 0.2, 0.5)]
    for low, high in zip(levels, levels[1:], strict=False):
        changed = _differ(long, low)
        assert set(changed) < set(_differ(long, high))
        assert all(high[i] == low[i] for i in changed)
    assert _differ(long, cf.mutate(long, 0.2, seed=12)) != _differ(long, levels[2])
    assert cf.mutate(long, 0.2, seed=11) == levels[2]  # reproducible


@pytest.mark.parametrize("where", ["codon1", "codon2", "codon3"])
def test_codon_position_restriction_is_honoured(where):
    """Only sites at that codon position (counted from base 1) change; the fraction is of those sites."""
    out = cf.mutate(SEQ, 0.5, where=where, seed=2)
    changed = _differ(SEQ, out)
    assert changed and {i % 3 + 1 for i in changed} == {int(where[-1])}
    assert len(changed) == 10  # half of the 20 sites at that position


def test_region_restriction_is_honoured():
    """A 1-based inclusive region, as a tuple or START-END text, bounds the mutated sites."""
    out = cf.mutate(SEQ, 1.0, where=(5, 14), seed=0)
    assert _differ(SEQ, out) == list(range(4, 14))
    assert cf.mutate(SEQ, n=3, where="5-14", seed=4) == cf.mutate(SEQ, n=3, where=(5, 14), seed=4)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: cf.parse_where("codon4"), InputError, "random, codon1"),
        (lambda: cf.parse_where("20-5"), InputError, "START <= END"),
        (lambda: cf.parse_where("0-5"), InputError, "START <= END"),
        (lambda: cf.mutate(SEQ, where=(50, 70), n=1), InputError, "has 60 bp"),
        (lambda: cf.mutate(SEQ), InputError, "either a fraction"),
        (lambda: cf.mutate(SEQ, 0.1, n=2), InputError, "either a fraction"),
        (lambda: cf.mutate(SEQ, 1.5), InputError, r"outside \[0, 1\]"),
        (lambda: cf.mutate(SEQ, n=-1), InputError, "whole number"),
        (lambda: cf.interpolate(SEQ, SEQ[:-1], 3), SequenceError, "equal length"),
        (lambda: cf.interpolate(SEQ, OTHER, 1), InputError, "at least 2"),
        (lambda: cf.parse_swap("hue"), InputError, "trait=value"),
        (lambda: cf.parse_swap("hue=abc"), InputError, "trait=value"),
        (lambda: cf.parse_swap("hue=1,hue=2"), InputError, "set twice"),
    ],
)
def test_bad_inputs_are_clear_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_interpolation_runs_from_a_to_b_through_nested_barcodes():
    """First = a, last = b; each step keeps the changes of the one before; only a's or b's bases appear."""
    path = cf.interpolate(SEQ, OTHER, 5, seed=1)
    assert len(path) == 5 and path[0] == SEQ and path[-1] == OTHER
    d = len(_differ(SEQ, OTHER))
    assert [len(_differ(SEQ, s)) for s in path] == [round(i / 4 * d) for i in range(5)]
    for low, high in zip(path, path[1:], strict=False):
        assert set(_differ(SEQ, low)) <= set(_differ(SEQ, high))
    assert all(c in (x, y) for s in path for c, x, y in zip(s, SEQ, OTHER, strict=True))
    assert cf.interpolate(SEQ, SEQ, 3) == [SEQ] * 3


# ---------------------------------------------------------------------------------- attribution
def _caption_conditioner(weights: torch.Tensor) -> DNAConditioner:
    cond = DNAConditioner(encoder="kmer", cross_attention_dim=32, kmer_k=2, kmer_segments=3, heads=2,
                          head="caption", caption_n=weights.shape[0], caption_traits=("a", "b", "c"))  # fmt: skip
    with torch.no_grad():
        cond.to_caption.weight.copy_(weights)
    return cond.eval()


def test_attribution_equals_brute_force_mutagenesis():
    """The batched ISM equals a loop over the 3 L single mutants, |Δ| and signed."""
    torch.manual_seed(1)
    cond = _caption_conditioner(torch.randn(3, 4 * 16) * 0.3)
    ref = cond.caption_matrix([SEQ])[0]
    want_abs, want_signed = np.zeros((3, len(SEQ))), np.zeros((3, len(SEQ)))
    for i in range(len(SEQ)):
        for b in "ACGT".replace(SEQ[i], ""):
            d = cond.caption_matrix([SEQ[:i] + b + SEQ[i + 1 :]])[0] - ref
            want_abs[:, i] += np.abs(d) / 3
            want_signed[:, i] += d / 3
    np.testing.assert_allclose(cf.attribution(cond, SEQ, batch_size=7), want_abs, atol=1e-5)
    np.testing.assert_allclose(cf.attribution(cond, SEQ, signed=True), want_signed, atol=1e-5)


def test_attribution_is_zero_where_the_map_has_no_weight():
    """Trait a reads only the k-mer profile of segment 2: positions whose 2-mer windows all lie outside that
    segment score 0 for a, positions inside it do not; traits b, c (weights everywhere) score everywhere."""
    w = torch.randn(3, 4 * 16, generator=torch.Generator().manual_seed(0))
    w[0] = 0.0
    w[0, 2 * 16 : 3 * 16] = 1.0 + torch.rand(16)  # token 2 = the third segment's profile
    cond = _caption_conditioner(w)
    attr = cf.attribution(cond, SEQ)
    n_win = len(SEQ) - 1
    lo, hi = np.linspace(0, n_win, 4).round().astype(int)[2:4]  # windows of segment 2
    windows = [{max(p - 1, 0), min(p, n_win - 1)} for p in range(len(SEQ))]  # the 2-mers holding position p
    outside = [p for p, ws in enumerate(windows) if all(not lo <= x < hi for x in ws)]
    inside = [p for p, ws in enumerate(windows) if all(lo <= x < hi for x in ws)]
    assert outside and inside
    assert np.abs(attr[0, outside]).max() < 1e-6 and attr[0, inside].min() > 1e-3  # 0 up to float32 rounding
    assert np.all(attr[1:] > 0)


def test_attribution_and_swaps_refuse_other_heads(tmp_path):
    """A tokens-head model writes no caption: attribution and trait swaps are ConfigErrors naming the head."""
    model = Model(_pipeline(tmp_path, "tokens"), tmp_path / "tokens")
    with pytest.raises(ConfigError, match="'tokens' head"):
        cf.attribution(model, SEQ)
    with pytest.raises(ConfigError, match="'tokens' head"):
        cf.swap_trait(model, SEQ, {"hue": 1.0})


def test_attribution_figure_is_written(tmp_path):
    """One panel per chosen trait, a PNG; unknown traits are an InputError."""
    attr = np.abs(np.random.default_rng(0).normal(size=(3, len(SEQ))))
    path = cf.attribution_figure(attr, ["size", "hue", "lightness"], tmp_path / "a.png", record_id="x")
    assert Image.open(path).size[0] > 500
    with pytest.raises(InputError, match="trait"):
        cf.attribution_figure(attr, ["size", "hue", "lightness"], tmp_path / "b.png", traits=["crest"])


# --------------------------------------------------------------------------------- swap and grid
def test_swap_and_grid_paint_every_variant_at_the_same_noise(tmp_path):
    """A swap keeps every other written value; the grid's original row is the barcode painted alone with
    shared noise, bit for bit; a caption row equals paint(captions=…) under the original barcode."""
    model = Model(_pipeline(tmp_path), tmp_path)
    written = model.describe({"x": SEQ})["x"]
    swapped = cf.swap_trait(model, SEQ, {"hue": 2.5})
    assert swapped["hue"] == 2.5 and all(
        swapped[k] == pytest.approx(written[k]) for k in ("size", "lightness")
    )
    with pytest.raises(InputError, match="unknown trait"):
        cf.swap_trait(model, SEQ, {"crest": 1.0})
    settings = {"steps": 2, "seed": 3}
    sheet, rows = cf.counterfactual_grid(
        model,
        SEQ,
        [("orig", SEQ), ("mut", cf.mutate(SEQ, 0.2)), ("swap", swapped)],
        images=2,
        scale=2,
        **settings,
    )
    assert [r.label for r in rows] == ["orig", "mut", "swap"] and [r.n_sites for r in rows] == [0, 12, 0]
    assert rows[2].given and rows[2].caption["hue"] == 2.5 and rows[1].caption != rows[0].caption
    alone = model.paint({"z": SEQ}, images=2, shared_noise=True, **settings).images["z"]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(alone, rows[0].images, strict=True)
    )
    given = model.paint({"z": SEQ}, images=1, shared_noise=True, captions={"z": {"hue": 2.5}}, **settings)
    assert np.array_equal(np.asarray(given.images["z"][0]), np.asarray(rows[2].images[0]))
    assert sheet.size[1] == 3 * max(2 * 16, 12 * 3 + 4) and sheet.size[0] > 4 * 16


# -------------------------------------------------------------------------------------- command
def test_counterfactual_command_writes_grid_variants_attribution_and_config(models, tmp_path):
    """Exit 0; every file written; variants.tsv names the sites changed; the original row is the barcode
    painted alone with shared noise; attribution.tsv matches the library."""
    out = tmp_path / "cf"
    argv = ["counterfactual", "--model", str(models / "caption"), "--fasta", str(models / "q.fasta"),
            "--record", "a", "--out", str(out), "--mutate", "0,10,50", "--where", "codon3", "--swap", "hue=1.5",
            "--interpolate-to", "b", "--interpolate-steps", "3", "--n", "1", "--steps", "2", "--seed", "4",
            "--attribution"]  # fmt: skip
    assert main(argv) == 0
    for name in (
        "grid.png",
        "variants.fasta",
        "variants.tsv",
        "attribution.png",
        "attribution.tsv",
        "config.json",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "variants.tsv").open(), delimiter="\t"))
    assert [r["kind"] for r in rows] == [
        "original",
        "mutated",
        "mutated",
        "interpolated",
        "interpolated",
        "swapped",
    ]
    d = len(_differ(SEQ, OTHER))
    assert [int(r["n_sites"]) for r in rows] == [0, 2, 10, round(d / 2), d, 0]
    assert float(rows[-1]["hue"]) == 1.5 and rows[-1]["size"] == rows[0]["size"]
    fasta = (out / "variants.fasta").read_text().splitlines()
    assert fasta[1] == SEQ and fasta[9] == OTHER and fasta[3] == cf.mutate(SEQ, 0.1, where="codon3", seed=4)
    model = load_model(models / "caption")
    alone = model.paint({"a": SEQ}, images=1, steps=2, seed=4, shared_noise=True).images["a"][0]
    assert np.array_equal(np.asarray(Image.open(out / "images" / "original_0.png")), np.asarray(alone))
    table = np.loadtxt(out / "attribution.tsv", delimiter="\t", skiprows=1, usecols=(3, 4, 5))
    np.testing.assert_allclose(table.T, cf.attribution(model, SEQ), rtol=1e-5, atol=1e-7)
    config = json.loads((out / "config.json").read_text())
    assert config["shared_noise"] and config["seed"] == 4 and config["settings"]["steps"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--record", "a", "--where", "codon4"], "--where 'codon4': use random, codon1"),
        (["--record", "zz"], "--record zz: no such record"),
        (["--record", "a", "--swap", "crest=1"], "--swap: unknown trait(s) crest"),
        (["--record", "a", "--mutate", "5,abc"], "--mutate '5,abc'"),
        ([], "holds 2 records; choose one with --record"),
        (["--record", "a", "--interpolate-to", "a", "--interpolate-fasta", "MISSING"], "MISSING"),
    ],
)
def test_counterfactual_command_errors_are_one_line_before_any_model_loads(
    models, tmp_path, capsys, extra, message
):
    out = tmp_path / "out"
    argv = [
        "counterfactual",
        "--model",
        str(models / "caption"),
        "--fasta",
        str(models / "q.fasta"),
        "--out",
        str(out),
    ]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_counterfactual_command_refuses_attribution_on_a_tokens_model(models, tmp_path, capsys):
    argv = ["counterfactual", "--model", str(models / "tokens"), "--sequence", SEQ, "--out", str(tmp_path / "o"),
            "--attribution"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "--attribution needs a caption-head model" in err[0] and "'tokens' head" in err[0]
    )
    assert not (tmp_path / "o").exists()


def test_counterfactual_command_reads_a_run_directory_and_a_bare_sequence(models, tmp_path, capsys):
    """--run RUN paints with RUN/image/pipeline; --sequence needs no FASTA; a missing run is one clear line."""
    run = tmp_path / "run"
    (run / "image").mkdir(parents=True)
    (run / "image" / "pipeline").symlink_to(models / "caption", target_is_directory=True)
    out = tmp_path / "o"
    argv = ["counterfactual", "--run", str(run), "--sequence", SEQ.lower(), "--mutate", "0,10", "--n", "1",
            "--steps", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert [r["label"] for r in csv.DictReader((out / "variants.tsv").open(), delimiter="\t")] == [
        "original",
        "mutated 10%",
    ]
    assert (
        main(
            [
                "counterfactual",
                "--run",
                str(tmp_path / "nope"),
                "--sequence",
                SEQ,
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    assert "not a run directory" in capsys.readouterr().err

"""The non-diffusion generator framework (phenogen.generators) and the conditional VAE, with tiny real models
at 16 px on a toy clade: export round trip, exact resume, config errors, generate/evaluate --model, concept
vectors and the featurizer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_clade import make_clade

from phenogen.cli import main
from phenogen.errors import ConfigError, InputError
from phenogen.fsio import prepare_output_dir
from phenogen.generators.base import Generator, build_family, load_generator, save_generator
from phenogen.generators.cvae import CvaeFamily
from phenogen.generators.features import Featurizer
from phenogen.generators.train import GeneratorConfig, train_generator

torch.set_num_threads(2)
TINY_PARAMS = {
    "cvae": {"z_dim": 4, "width": 8, "cond_embed": 8, "max_width": 16},
    "gan": {"z_dim": 4, "cond_embed": 8, "g_width": 4, "d_width": 4, "max_width": 16},
}
SET = [
    "--set", "generator.resolution=16", "--set", "generator.steps=4", "--set", "generator.batch_size=4",
    "--set", "generator.kmer_k=2", "--set", "generator.kmer_segments=2",
    "--set", "generator.params={z_dim=4, width=8, cond_embed=8, max_width=16}",
]  # fmt: skip


def _cfg(family: str = "cvae", **kw) -> GeneratorConfig:
    base = dict(family=family, resolution=16, steps=4, batch_size=4, checkpoint_every=2, kmer_k=2,
                kmer_segments=2, params=TINY_PARAMS[family])  # fmt: skip
    return GeneratorConfig(**(base | kw))


def _train(data: Path, out: Path, cfg: GeneratorConfig, **kw):
    prepare_output_dir(out, "train-generator", resume=kw.get("resume", False))
    return train_generator(data, out, cfg, progress=False, **kw)


@pytest.fixture(scope="module")
def clade(tmp_path_factory):
    return make_clade(tmp_path_factory.mktemp("clade") / "data", n_tips=8, n_extinct=1, seq_len=120)


@pytest.fixture(scope="module")
def trained(clade, tmp_path_factory):
    out = tmp_path_factory.mktemp("cvae") / "run"
    result = _train(clade.root, out, _cfg())
    return out, result


def _records(ds, split="train", n=3):
    return [(r.record_id, r.sequence) for r in ds.records(split)][:n]


# ------------------------------------------------------------------------------------ config
def test_default_resolution_is_the_demo_cpu_preset():
    """generator.resolution defaults to the cpu preset's image side (the demo's)."""
    from phenogen.diffusion.components import get_preset

    assert GeneratorConfig().resolution == get_preset("cpu").resolution


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ('generator.family="dcgan"', "unknown generator family"),
        ("generator.resolution=20", "resolution"),
        ("generator.steps=0", "steps"),
        ("generator.params={z_dim=4, zdim=3}", "unknown params zdim"),
        ("generator.params={beta=-1.0}", "beta"),
    ],
)
def test_bad_configs_are_one_line_exit_2_before_anything_is_written(clade, tmp_path, capsys, setting, words):
    """Unknown family, bad resolution, steps < 1, unknown or bad params: exit 2, one line, no --out."""
    out = tmp_path / "run"
    code = main(["train-generator", "--data", str(clade.root), "--out", str(out), *SET, "--set", setting])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unknown_family_is_a_config_error():
    with pytest.raises(ConfigError, match="known: .*cvae"):
        build_family("nope", {"resolution": 16, "cond_dim": 3})


# ------------------------------------------------------------------------------------ features
def test_featurizer_standardises_on_training_barcodes_and_reloads_identically(clade, tmp_path):
    """kmer features: mean ~0 / std ~1 on the fitted barcodes; save + load gives the same numbers."""
    seqs = [r.sequence for r in clade.records("train")]
    f = Featurizer.fit(seqs, kmer_k=2, kmer_segments=2)
    x = f(seqs)
    assert x.shape == (len(seqs), 3 * 16)
    assert x.mean(0).abs().max() < 1e-4
    f.save(tmp_path)
    again = Featurizer.load(tmp_path)
    other = [r.sequence for r in clade.records("heldout")]
    assert torch.equal(again(other), f(other)) and again.config == f.config


def test_gpt2_featurizer_pools_the_lm_and_reloads_identically(clade, tmp_path):
    """gpt2: mean-pooled hidden states of a (tiny) DNA LM, whose weights travel with the featurizer."""
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    lm_dir = save_lm(build_model(KmerTokenizer(k=3), preset="tiny", n_positions=64, seed=0), tmp_path / "lm")
    seqs = [r.sequence for r in clade.records("train")][:6]
    f = Featurizer.fit(seqs, "gpt2", lm_model=lm_dir)
    f.save(tmp_path / "feat")
    again = Featurizer.load(tmp_path / "feat")
    x = f(seqs)
    assert x.shape == (6, f.dim) and torch.isfinite(x).all() and x.std() > 0
    assert torch.equal(again(seqs), x)


# ------------------------------------------------------------------------------------ export / resume
@pytest.mark.parametrize("family", ["cvae", "gan"])
def test_save_load_round_trip_paints_identical_images(clade, tmp_path, family):
    """An exported generator, loaded again, paints the same pixels for the same seed; other seeds differ."""
    seqs = [r.sequence for r in clade.records("train")]
    featurizer = Featurizer.fit(seqs, kmer_k=2, kmer_segments=2)
    torch.manual_seed(0)
    model = build_family(family, {**TINY_PARAMS[family], "resolution": 16, "cond_dim": featurizer.dim})
    before = Generator(model, featurizer)
    save_generator(model, featurizer, tmp_path / "generator")
    after = load_generator(tmp_path)  # OUT/generator found from OUT
    recs = _records(clade)
    a = [im.tobytes() for *_, im in before.paint(recs, images_per_sequence=2, seed=5)]
    b = [im.tobytes() for *_, im in after.paint(recs, images_per_sequence=2, seed=5)]
    c = [im.tobytes() for *_, im in after.paint(recs, images_per_sequence=2, seed=6)]
    assert a == b and a != c
    assert after.name == family


@pytest.mark.parametrize("family", ["cvae", "gan"])
def test_resume_equals_an_uninterrupted_run(clade, tmp_path, family):
    """Stopped after 2 of 4 steps and resumed: the same losses and, bit for bit, the same weights."""
    whole = _train(clade.root, tmp_path / "whole", _cfg(family))
    part = _train(clade.root, tmp_path / "part", _cfg(family), stop_after_steps=2)
    assert part.stopped == "stop_after_steps" and part.generator_dir is None
    assert (tmp_path / "part" / "checkpoints" / "step-000002" / "complete.json").is_file()
    resumed = _train(clade.root, tmp_path / "part", _cfg(family), resume=True)
    assert resumed.losses == whole.losses and len(whole.losses) == 4
    a = load_file(str(tmp_path / "whole" / "generator" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "generator" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_writes_its_artifacts_and_measurements(trained):
    """losses.json, samples.png, train_metrics.json (diversity, speed, minutes), checkpoints, the export."""
    out, result = trained
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["sampling_images_per_second"] > 0
    assert metrics["training_minutes"] > 0
    div = metrics["diversity"]
    assert div["n_barcodes"] >= 1 and div["real_pairwise_l1"] > 0 and div["diversity"] > 0
    assert len(json.loads((out / "losses.json").read_text())["losses"]) == 4
    assert (out / "samples.png").is_file() and (out / "generator" / "generator.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]


# ------------------------------------------------------------------------------------ concepts
def test_concept_vectors_move_a_portrait_along_a_trait(trained, clade):
    """Every dataset trait gets a vector; amount 0 is the portrait itself, other amounts change it."""
    out, _ = trained
    gen = load_generator(out)
    assert gen.concept_names == clade.trait_names
    rec = _records(clade, n=1)[0]
    moved = gen.move(rec, "body_size", [-3.0, 0.0, 3.0], seed=2)
    ((_, _, plain),) = gen.paint([rec], seed=2)
    diff = lambda a, b: (torch.tensor(list(a.tobytes())) - torch.tensor(list(b.tobytes()))).abs()  # noqa: E731
    assert diff(moved[1], plain).max() <= 1  # the same latent (batching may round one level differently)
    assert diff(moved[0], moved[2]).float().mean() > 0.5
    with pytest.raises(InputError, match="no concept vector for trait"):
        gen.move(rec, "wingspan", [1.0])


def test_no_traits_no_concepts():
    """A dataset without trait values gives no concept vectors, says so, and refuses to move."""
    model = CvaeFamily({**TINY_PARAMS["cvae"], "resolution": 16, "cond_dim": 3})
    notes = model.after_training(torch.zeros(4, 3, 16, 16, dtype=torch.uint8), torch.zeros(4, 3), {})
    assert notes["concepts"] == [] and "no trait" in notes["note"]
    assert model.extra_state() == {}
    with pytest.raises(InputError, match="no concept vectors"):
        model.move(torch.zeros(1, 3), torch.zeros(1, 4), "body_size", [1.0])


# ------------------------------------------------------------------------------------ generate / evaluate
def test_generate_model_paints_a_generator_run(trained, clade, tmp_path, capsys):
    """`generate --model OUT` writes generated.tsv / images / grid.png as for a diffusion pipeline."""
    out, _ = trained
    fasta = tmp_path / "q.fasta"
    fasta.write_text("".join(f">{rid}\n{seq}\n" for rid, seq in _records(clade, "heldout", 2)))
    code = main(
        ["generate", "--model", str(out), "--fasta", str(fasta), "--out", str(tmp_path / "g"), "--n", "2"]
    )
    assert code == 0, capsys.readouterr().err
    with open(tmp_path / "g" / "generated.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 4 and all((tmp_path / "g" / r["image"]).is_file() for r in rows)
    assert (tmp_path / "g" / "grid.png").is_file()
    code = main(["generate", "--model", str(out / "generator"), "--fasta", str(fasta), "--out",
                 str(tmp_path / "g2"), "--lora-scale", "0.5"])  # fmt: skip
    assert code == 2 and "no LoRA" in capsys.readouterr().err


def test_evaluate_model_scores_a_generator_run(trained, clade, tmp_path, capsys):
    """`evaluate --model OUT` generates with the generator and writes metrics.json."""
    out, _ = trained
    fast = ["probe_image_size=16", "probe_width=8", "probe_epochs=2", "retrieval_epochs=2", "kid_subsets=2"]
    sets = [x for s in fast for x in ("--set", f"evaluate.{s}")]
    code = main(
        ["evaluate", "--data", str(clade.root), "--model", str(out), "--out", str(tmp_path / "e"), *sets]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert "heldout" in metrics["splits"]
    assert (tmp_path / "e" / "generated" / "generated.tsv").is_file()

"""DNA-conditioned latent diffusion with tiny real components: encoders, null condition and dropout,
pipeline save/load, guidance, schedulers, input checks, exact resume, and the generate command."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from phenogen.data.dataset import Record, write_dataset
from phenogen.diffusion.components import build_noise_scheduler, build_unet, build_vae
from phenogen.diffusion.conditioning import DNAConditioner, build_conditioner, kmer_profile_tokens
from phenogen.diffusion.config import GenerateConfig, ImageConfig
from phenogen.diffusion.pipeline import SCHEDULERS, DNAToImagePipeline, load_pipeline, make_scheduler
from phenogen.diffusion.train import train_image_model
from phenogen.errors import CheckpointError, ConfigError, InputError, SequenceError

torch.set_num_threads(2)
SEQS = ["ACGTACGTTTGACAACGTAGGCT", "ACGGGTACCATTGACAACNTAGG"]


def _tiny_dataset(root: Path, n_species: int = 5, seed: int = 0, length: int = 48, wide: bool = False):
    """Coloured discs on a pale background, one colour per species; the last species is held out.

    ``length``-bp barcodes (a fifth of the sites differ between species); ``wide``: the first photo of
    each species is 24 x 16 (not square), the disc in its middle."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    base = rng.choice(list("ACGT"), length)
    records = []
    for s in range(n_species):
        sp = base.copy()
        sp[rng.choice(length, length // 5, replace=False)] = rng.choice(list("ACGT"), length // 5)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        split = "heldout" if s == n_species - 1 else "train"
        for i in range(2):
            seq = sp.copy()
            seq[rng.integers(length)] = rng.choice(list("ACGT"))
            rels = []
            for k in range(2):
                size = (24, 16) if wide and (i, k) == (0, 0) else (16, 16)
                x0 = (size[0] - 16) // 2
                im = Image.new("RGB", size, (200, 220, 240))
                ImageDraw.Draw(im).ellipse([x0 + 3 + k, 4, x0 + 12 + k, 11], fill=colour)
                rel = f"images/sp{s}_{i}_{k}.png"
                im.save(root / rel)
                rels.append(rel)
            records.append(
                Record(f"sp{s}_i{i}", f"sp{s}", f"sp{s}_i{i}", split, "living", "".join(seq), tuple(rels))
            )
    return write_dataset(root, records, {"source": "test"})


def _tiny_cfg(**kw) -> ImageConfig:
    base = dict(preset="tiny", max_steps=4, batch_size=4, vae_steps=4, vae_batch_size=4, lr_warmup_steps=1,
                kmer_k=2, kmer_segments=2, sample_steps=2)  # fmt: skip
    return ImageConfig(**(base | kw))


def _tiny_lm_dir(tmp: Path) -> Path:
    from phenogen.dna.tokenizer import KmerTokenizer
    from phenogen.lm.model import build_model, save_lm

    lm = build_model(KmerTokenizer(k=3), preset="tiny", n_positions=32, seed=0)
    return save_lm(lm, tmp / "lm")


def _tiny_pipeline(encoder: str = "kmer", null: str = "learned") -> DNAToImagePipeline:
    torch.manual_seed(0)
    cond = build_conditioner(encoder, 32, kmer_k=2, kmer_segments=3, onehot_window=8, max_length=24, heads=2,
                             null_condition=null)  # fmt: skip
    unet = build_unet("tiny", pooled=True)
    torch.nn.init.normal_(unet.class_embedding.linear_2.weight, std=0.02)  # as after training: it matters
    pipe = DNAToImagePipeline(
        build_vae("tiny"), unet, make_scheduler("ddim", build_noise_scheduler().config), cond
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("clade"))


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return _tiny_lm_dir(tmp_path_factory.mktemp("lm"))


# ------------------------------------------------------------------------------------- encoders
@pytest.mark.parametrize(
    ("encoder", "tokens", "features"),
    [("kmer", 4, 16), ("onehot", 3, 32), ("gpt2", 11, 128)],  # gpt2: <bos> + 7 words + 2 tail bases + <eos>
)
def test_each_encoder_builds_and_gives_the_right_shapes(encoder, tokens, features, lm_dir):
    """featurize gives (B, T, F) + mask; the head maps them to (B, T, D)."""
    cond = build_conditioner(encoder, 32, lm_model=str(lm_dir), kmer_k=2, kmer_segments=3, onehot_window=8,
                             max_length=24, heads=2)  # fmt: skip
    feats, mask = cond.featurize(SEQS)
    assert tuple(feats.shape) == (2, tokens, features)
    hidden, out_mask = cond.eval()(feats, mask)
    assert tuple(hidden.shape) == (2, tokens, 32)
    assert torch.isfinite(hidden).all() and out_mask.dtype == torch.bool


def test_gpt2_encoder_is_frozen_and_saved_with_the_conditioner(lm_dir, tmp_path):
    """The LM's weights travel inside the conditioner; only the head is trainable."""
    cond = build_conditioner("gpt2", 32, lm_model=str(lm_dir), heads=2)
    trainable = {id(p) for p in cond.trainable_parameters()}
    assert all(id(p) not in trainable and not p.requires_grad for p in cond.lm.parameters())
    cond.save_pretrained(tmp_path / "c")
    again = DNAConditioner.from_pretrained(tmp_path / "c")
    a, _ = cond.featurize(SEQS)
    b, _ = again.featurize(SEQS)
    assert torch.equal(a, b)


def test_gpt2_encoder_without_lm_is_a_config_error():
    with pytest.raises(ConfigError, match="lm_model"):
        build_conditioner("gpt2", 32)


def test_mash_distance_orders_relatives_and_needs_no_alignment():
    from phenogen.diffusion.conditioning import kmer_set, mash_distance

    rng = np.random.default_rng(0)
    base = "".join(rng.choice(list("ACGT"), 600))

    def mutate(seq, n):
        s = list(seq)
        for i in rng.choice(len(s), n, replace=False):
            s[i] = {"A": "C", "C": "G", "G": "T", "T": "A"}[s[i]]
        return "".join(s)

    close, far = mutate(base, 6), mutate(base, 60)
    k = 8
    d_close, d_far = (mash_distance(kmer_set(base, k), kmer_set(x, k), k) for x in (close, far))
    assert mash_distance(kmer_set(base, k), kmer_set(base, k), k) == 0
    assert 0.003 < d_close < 0.03 < d_far < 0.2  # ~ the share of differing sites (1 % and 10 %)
    shifted = "ACG" + base  # an unaligned copy: still (almost) zero
    assert mash_distance(kmer_set(base, k), kmer_set(shifted, k), k) < 0.002
    assert mash_distance(kmer_set(base, k), kmer_set("", k), k) == 1.0


def test_relatives_encoder_paints_a_barcode_from_its_closest_reference(tmp_path):
    """A new barcode's condition is near its closest reference's; in training the own reference is left
    out with relatives_self_drop, so a species is then drawn from its relatives alone; save/load exact."""
    rng = np.random.default_rng(1)
    a = "".join(rng.choice(list("ACGT"), 300))
    b = "".join(rng.choice(list("ACGT"), 300))
    a_sister = a[:150] + ("C" if a[150] != "C" else "G") + a[151:]
    torch.manual_seed(0)
    cond = build_conditioner("relatives", 32, references=[a, b, a], relatives_tokens=3, heads=2,
                             relatives_self_drop=0.99, cond_dropout=0.0)  # fmt: skip
    assert cond.config.relatives_n == 2  # references are deduplicated
    feats, mask = cond.featurize([a, b, a_sister])
    assert feats.shape == (3, 1, 2) and feats[0, 0, 0] == 0 and 0 < feats[2, 0, 0] < 0.02 < feats[2, 0, 1]
    with torch.no_grad():
        h_a, h_b, h_sister = cond.eval()(feats, mask)[0]
        assert h_a.shape == (3, 32)
        assert (h_sister - h_a).norm() < 0.2 * (h_sister - h_b).norm()
        h_train = cond.train()(feats[:1], mask[:1], generator=torch.Generator().manual_seed(0))[0][0]
    assert torch.allclose(h_train, h_b, atol=1e-4)  # a left out: drawn from b, its only relative
    cond.save_pretrained(tmp_path / "rel", safe_serialization=True)
    again = DNAConditioner.from_pretrained(tmp_path / "rel").eval()
    assert torch.equal(again.featurize([a_sister])[0], feats[2:])
    with torch.no_grad():
        assert torch.allclose(again(feats, mask)[0][2], h_sister, atol=1e-6)
    with pytest.raises(ConfigError, match="reference barcodes"):
        build_conditioner("relatives", 32)


def test_kmer_profiles_count_words_per_segment():
    """'AAAA' + 'CCCC' at k=2 with 2 segments: all AA in the first half, all CC in the second."""
    prof = kmer_profile_tokens("AAAACCCC", k=2, segments=2)  # 7 windows: AA AA AA AC CC CC CC
    assert prof.shape == (3, 16)
    assert prof[0, 0] > 0 and prof[0, 5] == 0  # AA (index 0) yes, CC (index 5) no
    assert prof[1, 5] > 0 and prof[1, 0] == 0
    assert np.isclose(prof[2].mean(), 1.0)  # frequencies x 4**k have mean 1
    assert kmer_profile_tokens("NNNN", 2, 2).sum() == 0


# ------------------------------------------------------------------------------------- null + dropout
@pytest.mark.parametrize("null", ["learned", "empty_sequence"])
def test_condition_dropout_produces_null_conditions_at_the_configured_rate(null):
    """In training mode ~cond_dropout of the rows become exactly the null condition; none in eval."""
    cond = build_conditioner(
        "kmer", 32, kmer_k=2, kmer_segments=3, heads=2, null_condition=null, cond_dropout=0.25
    )
    feats, mask = cond.featurize(["ACGTTGCAACGGTACCA"] * 2000)
    null, _ = cond.null_condition(1, feats.shape[1])
    with torch.no_grad():
        cond.train()
        out, _ = cond(feats, mask, generator=torch.Generator().manual_seed(0))
        is_null = torch.isclose(out, null.expand_as(out), atol=1e-6).flatten(1).all(1)
        assert 0.22 < is_null.float().mean().item() < 0.28
        cond.eval()
        out_eval, _ = cond(feats, mask)
        assert not torch.isclose(out_eval, null.expand_as(out_eval), atol=1e-6).flatten(1).all(1).any()


def test_empty_sequence_null_is_the_encoding_of_an_empty_barcode(lm_dir):
    """The thesis' null: the head applied to the LM features of '' (<bos><eos>)."""
    cond = build_conditioner(
        "gpt2", 32, lm_model=str(lm_dir), heads=2, null_condition="empty_sequence"
    ).eval()
    feats, mask = cond.featurize([""])
    expected, _ = cond(feats, mask, drop=torch.zeros(1, dtype=torch.bool))
    null, null_mask = cond.null_condition(1, 12)
    assert null_mask[0, :2].all() and not null_mask[0, 2:].any()
    assert torch.allclose(null[:, :2], expected, atol=1e-5)


# ------------------------------------------------------------------------------------- pipeline
def test_pipeline_save_load_round_trip_gives_identical_images(tmp_path):
    pipe = _tiny_pipeline()
    a = pipe(SEQS, num_inference_steps=3, generator=torch.Generator().manual_seed(1), output_type="np").images
    pipe.save_pretrained(tmp_path / "p")
    assert (tmp_path / "p" / "conditioner" / "diffusion_pytorch_model.safetensors").is_file()
    again = load_pipeline(tmp_path / "p")
    b = again(
        SEQS, num_inference_steps=3, generator=torch.Generator().manual_seed(1), output_type="np"
    ).images
    assert a.shape == (2, 16, 16, 3)
    assert np.array_equal(a, b)


def test_guidance_scale_one_equals_the_conditional_only_prediction():
    """CFG at scale 1 is the conditional prediction, and the pipeline then equals a conditional-only loop."""
    pipe = _tiny_pipeline()
    cond, _ = pipe.conditioner.eval().encode(SEQS)
    uncond, umask = pipe.conditioner.null_condition(2, cond.shape[1])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    with torch.no_grad():
        batched = pipe.guided_prediction(latents, t, cond, None, uncond, None, 1.0 + 1e-9)
        plain = pipe.unet(latents, t, encoder_hidden_states=cond, class_labels=cond.mean(1)).sample
        assert torch.allclose(batched, plain, atol=1e-5)
        # the whole pipeline at guidance 1 against a hand-written conditional-only DDIM loop
        images = pipe(SEQS, num_inference_steps=4, guidance_scale=1.0, output_type="pt",
                      latents=latents.clone()).images  # fmt: skip
        sched = make_scheduler("ddim", pipe.scheduler.config)
        sched.set_timesteps(4)
        x = latents.clone()
        for step_t in sched.timesteps:
            eps = pipe.unet(x, step_t, encoder_hidden_states=cond, class_labels=cond.mean(1)).sample
            x = sched.step(eps, step_t, x).prev_sample
        decoded = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
        assert torch.allclose(images, (decoded / 2 + 0.5).clamp(0, 1), atol=1e-5)
        # and guidance really does something at 8
        guided = pipe(
            SEQS, num_inference_steps=4, guidance_scale=8.0, output_type="pt", latents=latents.clone()
        ).images
        assert not torch.allclose(guided, images, atol=1e-3)


def test_pooled_condition_starts_as_a_no_op_then_carries_the_dna_on_its_own():
    """add_pooled_condition keeps a pretrained UNet's outputs; once trained, the pooled pathway alone
    (cross-attention zeroed) tells conditions apart, and padded tokens do not count in the mean."""
    from phenogen.diffusion.components import add_pooled_condition, denoise, pooled_condition
    from phenogen.diffusion.prior import zero_cross_attention_out

    torch.manual_seed(0)
    plain = build_unet("tiny")
    zero_cross_attention_out(plain)  # a prior: the condition does not enter at all
    pooled = add_pooled_condition(plain)
    assert pooled.config.class_embed_type == "projection" and add_pooled_condition(pooled) is pooled
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    a, b = torch.randn(2, 3, 32), torch.randn(2, 3, 32)
    with torch.no_grad():
        base = plain(x, t, encoder_hidden_states=a).sample
        assert torch.allclose(denoise(pooled, x, t, a), base, atol=1e-6)
        assert torch.allclose(denoise(pooled, x, t, b), base, atol=1e-6)
        torch.nn.init.normal_(pooled.class_embedding.linear_2.weight, std=0.5)
        assert not torch.allclose(denoise(pooled, x, t, a), denoise(pooled, x, t, b), atol=1e-4)
        mask = torch.tensor([[True, True, False], [True, True, False]])
        padded = a.clone()
        padded[:, 2] = 100.0
        assert torch.allclose(pooled_condition(padded, mask), a[:, :2].mean(1))
        assert torch.allclose(denoise(pooled, x, t, padded, mask), denoise(pooled, x, t, a[:, :2]), atol=1e-5)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_each_scheduler_runs_and_is_reproducible(name):
    pipe = _tiny_pipeline()
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)

    def run():
        gen = torch.Generator().manual_seed(2)
        return pipe(SEQS, num_inference_steps=3, generator=gen, output_type="np").images

    a, b = run(), run()
    assert a.shape == (2, 16, 16, 3) and np.isfinite(a).all()
    assert np.array_equal(a, b)
    assert type(pipe.scheduler).__name__ in {"DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler",
                                             "UniPCMultistepScheduler", "EulerDiscreteScheduler",
                                             "EulerAncestralDiscreteScheduler"}  # fmt: skip


def test_per_image_generators_make_images_independent_of_the_batch():
    pipe = _tiny_pipeline()
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = pipe(SEQS, num_inference_steps=2, generator=gens([5, 6]), output_type="np").images
    second = pipe(SEQS[1:], num_inference_steps=2, generator=gens([6]), output_type="np").images
    assert np.allclose(both[1], second[0], atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sequences": ["ACGTXQ"]}, SequenceError, "#0"),
        ({"sequences": []}, InputError, "no sequences"),
        ({"sequences": "ACGT"}, InputError, "not one string"),
        ({"guidance_scale": -1.0}, InputError, "guidance_scale"),
        ({"num_inference_steps": 0}, InputError, "num_inference_steps"),
        ({"num_images_per_sequence": 0}, InputError, "num_images_per_sequence"),
        ({"generator": [torch.Generator()]}, InputError, "generators"),
    ],
)
def test_check_inputs_raises_clear_errors(kwargs, error, message):
    pipe = _tiny_pipeline()
    args = {"sequences": SEQS, "num_inference_steps": 2} | kwargs
    with pytest.raises(error, match=message):
        pipe(**args)


def test_configs_reject_impossible_values():
    with pytest.raises(ValueError, match="cond_dropout"):
        ImageConfig(cond_dropout=1.0)
    with pytest.raises(ValueError, match="steps"):
        GenerateConfig(steps=0)
    with pytest.raises(ValueError, match="guidance_scale"):
        GenerateConfig(guidance_scale=-2)


# ------------------------------------------------------------------------------------- training
def test_resume_after_interruption_equals_an_uninterrupted_run(dataset, tmp_path):
    """Stop after step 3 (last checkpoint at step 2), resume, and land on the same weights and losses."""
    cfg = _tiny_cfg(max_steps=6, checkpoint_every=2, grad_accum=2, hflip=True)
    full = train_image_model(dataset.root, tmp_path / "full", cfg, progress=False)
    cut = train_image_model(dataset.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    assert cut.stopped == "interrupted" and not (tmp_path / "cut" / "pipeline").exists()
    resumed = train_image_model(dataset.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.global_step == full.global_step == 6
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    a = load_file(tmp_path / "full" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "cut" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len(list((tmp_path / "cut" / "checkpoints").glob("checkpoint-*"))) == cfg.checkpoints_total_limit


def test_resume_of_prompt_tuning_equals_an_uninterrupted_run(dataset, tmp_path, captioned_prior):
    """With the UNet frozen (not wrapped by accelerate), checkpoints hold the conditioner and optimizer;
    a resumed run lands on the same conditioner and losses, and the UNet is still the prior's."""
    cfg = _tiny_cfg(init=str(captioned_prior), cond_head="caption", train_unet=False, max_steps=4,
                    checkpoint_every=2, lr=1e-2)  # fmt: skip
    full = train_image_model(dataset.root, tmp_path / "full", cfg, progress=False)
    train_image_model(dataset.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(dataset.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.global_step == full.global_step == 4
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    a = load_file(tmp_path / "full" / "pipeline" / "conditioner" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "cut" / "pipeline" / "conditioner" / "diffusion_pytorch_model.safetensors")
    assert a["to_caption.weight"].abs().max() > 0
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    u = load_file(tmp_path / "cut" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    prior = load_file(captioned_prior / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(u[k].float(), prior[k].float()) for k in prior)


def test_training_uses_the_train_split_only_and_writes_its_artifacts(dataset, tmp_path):
    cfg = _tiny_cfg(max_steps=3)
    result = train_image_model(dataset.root, tmp_path / "run", cfg, progress=False)
    n_train_images = sum(len(r.images) for r in dataset.records("train"))
    cache = load_file(tmp_path / "run" / "cache" / "train_latents.safetensors")
    assert cache["mean"].shape[0] == n_train_images  # the held-out species never enters the fit
    losses = json.loads((tmp_path / "run" / "losses.json").read_text())
    assert len(losses["train"]) == result.global_step == 3 and losses["heldout"]
    for name in ("loss_curve.png", "samples/step-000003.png", "pipeline/model_index.json", "vae/config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    vae_cfg = json.loads((tmp_path / "run" / "pipeline" / "vae" / "config.json").read_text())
    assert vae_cfg["scaling_factor"] != 1.0  # fitted from the latents


def test_relatives_encoder_trains_with_the_training_barcodes_as_references(dataset, tmp_path):
    """train-image stores the training split's barcodes (only) as the references, and the saved
    pipeline paints a held-out barcode; a VAE trained with per-channel latent statistics saves them."""
    cfg = _tiny_cfg(max_steps=2, encoder="relatives", relatives_k=5, latent_norm="channel")
    result = train_image_model(dataset.root, tmp_path / "run", cfg, progress=False)
    pipe = load_pipeline(result.pipeline_dir)
    train_seqs = {r.sequence for r in dataset.records("train")}
    assert pipe.conditioner.config.relatives_n == len(train_seqs)
    assert len(pipe.vae.config.latents_mean) == pipe.vae.config.latent_channels
    held = [r.sequence for r in dataset.records("heldout")][:1]
    images = pipe(
        held, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape[0] == 1 and np.isfinite(images).all()


def test_resume_with_changed_settings_is_refused(dataset, tmp_path):
    from phenogen.cli import main

    out = tmp_path / "run"
    base = ["train-image", "--data", str(dataset.root), "--out", str(out), "--no-progress", "--set", "image.preset=tiny",
            "--set", "image.max_steps=1", "--set", "image.vae_steps=1", "--set", "image.batch_size=4"]  # fmt: skip
    assert main(base) == 0
    assert main(base) == 2  # an existing run needs --resume or --force
    with pytest.raises(CheckpointError, match="encoder"):
        from phenogen.diffusion.train import check_resumable

        check_resumable(out, _tiny_cfg(encoder="onehot", max_steps=1, vae_steps=1))


def test_generate_command_writes_images_table_grid_and_config(dataset, tmp_path):
    from phenogen.cli import main

    pipe = _tiny_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    fasta = tmp_path / "q.fasta"
    fasta.write_text(">sp4_i0 held out\nACGTACGTTTGACAACGTAGG\n>odd|id\nACGGGTACRATTGACA\n")
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(tmp_path / "model"), "--fasta", str(fasta), "--out", str(out), "--n", "2",
                 "--steps", "2", "--scheduler", "euler-a"])  # fmt: skip
    assert code == 0
    with open(out / "generated.tsv") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [(r["record_id"], r["k"]) for r in rows] == [
        ("sp4_i0", "0"),
        ("sp4_i0", "1"),
        ("odd", "0"),
        ("odd", "1"),
    ]
    assert all((out / r["image"]).is_file() for r in rows)
    assert Image.open(out / "grid.png").height == 2 * 16
    timing = json.loads((out / "timing.json").read_text())  # the sampling speed the families table shows
    assert timing["images"] == 4 and timing["seconds"] > 0 and timing["images_per_second"] > 0
    settings = json.loads((out / "config.json").read_text())
    assert settings["generate"]["scheduler"] == "euler-a" and settings["generate"]["images_per_sequence"] == 2


def test_generate_with_a_missing_model_is_one_clear_error(tmp_path):
    from phenogen.cli import main

    fasta = tmp_path / "q.fasta"
    fasta.write_text(">a\nACGT\n")
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "nope"),
                "--fasta",
                str(fasta),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def test_a_time_budget_stops_cleanly_and_still_saves(dataset, tmp_path, capsys):
    """max_minutes is a safety cap: the planned steps stay fixed (no refit to the time left), a run the
    cap stops says so loudly, and the pipeline is still exported."""
    cfg = _tiny_cfg(max_steps=100_000, max_minutes=0.08, vae_steps=100_000)
    result = train_image_model(dataset.root, tmp_path / "run", cfg, progress=False)
    assert result.stopped == "budget"
    assert 0 < result.global_step < 100_000
    assert result.total_steps == 100_000  # the schedule was not shortened to fit the cap
    assert "WARNING: the safety cap image.max_minutes = 0.08 stopped training" in capsys.readouterr().err
    assert (tmp_path / "run" / "pipeline" / "model_index.json").is_file()
    assert len(json.loads((tmp_path / "run" / "vae_losses.json").read_text())) < 100_000


# --- the pretrained bird prior ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    from phenogen.cli import main

    out = tmp_path_factory.mktemp("prior") / "prior"
    sets = ["prior.preset=tiny", "prior.n_images=32", "prior.vae_steps=4", "prior.unet_steps=6", "prior.batch_size=8",
            "prior.vae_minutes=1", "prior.unet_minutes=1", "prior.decoder_minutes=0.02"]  # fmt: skip
    assert (
        main(["pretrain-image", "--out", str(out), "--no-progress", *[a for s in sets for a in ("--set", s)]])
        == 0
    )
    return out


def test_pretrained_prior_saves_vae_unet_and_a_zero_cross_attention(tiny_prior):
    """The prior is two diffusers directories + prior.json; cross-attention outputs are exactly zero, so
    the UNet's prediction does not depend on the context it is given (the DNA enters as a no-op)."""
    from phenogen.diffusion.prior import load_prior_unet

    record = json.loads((tiny_prior / "prior.json").read_text())
    assert (
        record["unet_steps"] == 6 and record["vae_steps"] == 4 and record["cross_attention_layers_zeroed"] > 0
    )
    assert (tiny_prior / "samples.png").is_file() and (tiny_prior / "vae_recon.png").is_file()
    unet = load_prior_unet(tiny_prior, cross_attention_dim=32, sample_size=8)
    assert unet.dtype == torch.float32  # stored fp16, loaded for training in fp32
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        a = unet(x, t, encoder_hidden_states=torch.randn(2, 3, 32)).sample
        b = unet(x, t, encoder_hidden_states=torch.zeros(2, 1, 32)).sample
    assert torch.equal(a, b)


def test_caption_encoder_tokens_depend_on_each_trait_and_round_trip(tmp_path):
    """One token per trait, moved by that trait's value only through that token (before the shared
    norm/MLP, which act per token); a wrong trait count is a clear error; save/load is exact."""
    from phenogen.diffusion.prior import CaptionEncoder

    torch.manual_seed(0)
    enc = CaptionEncoder(n_traits=4, dim=16, traits=("a", "b", "c", "d")).eval()
    traits = torch.zeros(1, 4)
    moved = traits.clone()
    moved[0, 2] = 1.5
    with torch.no_grad():
        a, b = enc(traits), enc(moved)
    changed = (a - b).abs().amax(-1)[0]  # per token
    assert changed[2] > 0.1 and torch.all(changed[[0, 1, 3]] == 0)
    with pytest.raises(ValueError, match=r"expected traits \(B, 4\)"):
        enc(torch.zeros(2, 3))
    enc.save_pretrained(tmp_path / "cap", safe_serialization=True)
    back = CaptionEncoder.from_pretrained(tmp_path / "cap")
    assert back.config.traits == ["a", "b", "c", "d"] or back.config.traits == ("a", "b", "c", "d")
    with torch.no_grad():
        assert torch.equal(back(moved), b)
    assert not list((tmp_path / "cap").glob("*.bin"))  # safetensors only


@pytest.fixture(scope="module")
def captioned_prior(tmp_path_factory, tiny_prior):
    """A captioned prior continued from the unconditional tiny prior (``init``), Stable Diffusion style."""
    from phenogen.cli import main

    out = tmp_path_factory.mktemp("captioned") / "prior"
    sets = ["prior.preset=tiny", "prior.n_images=32", "prior.unet_steps=8", "prior.batch_size=8", "prior.lr=1e-2",
            "prior.unet_minutes=1", "prior.captions=true", f"prior.init={tiny_prior}",
            "prior.reader_renders=32", "prior.reader_epochs=1",
            "prior.latent_norm=channel"]  # fmt: skip
    argv = ["pretrain-image", "--out", str(out), "--no-progress", *[a for s in sets for a in ("--set", s)]]
    assert main(argv) == 0
    return out


def test_a_captioned_prior_reads_its_captions_and_keeps_the_init_vae(captioned_prior, tiny_prior):
    """Continuing a prior keeps its VAE weights bit for bit (no VAE steps) and records where it came from; with
    captions the cross-attention is trained, so the UNet's prediction depends on the context, and the
    caption encoder and a caption-vs-sample sheet are saved."""
    from phenogen.diffusion.prior import CaptionEncoder, load_prior_unet

    record = json.loads((captioned_prior / "prior.json").read_text())
    assert record["captions"] and record["vae_steps"] == 0 and record["unet_steps"] == 8
    assert record["init"] == str(tiny_prior) and record["init_record"]["vae_steps"] == 4
    assert "unet_losses" not in record["init_record"]
    old = load_file(tiny_prior / "vae" / "diffusion_pytorch_model.safetensors")
    new = load_file(captioned_prior / "vae" / "diffusion_pytorch_model.safetensors")
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    # latent_norm=channel on a global-scaled init: per-channel statistics fitted, recorded, saved
    vae_cfg = json.loads((captioned_prior / "vae" / "config.json").read_text())
    assert len(vae_cfg["latents_mean"]) == 4 and record["latents_std"] == vae_cfg["latents_std"]
    assert (captioned_prior / "caption_samples.png").is_file()
    assert record["reader"]["renders"] == 32 and (captioned_prior / "reader" / "probe.json").is_file()
    enc = CaptionEncoder.from_pretrained(captioned_prior / "caption_encoder")
    unet = load_prior_unet(captioned_prior, cross_attention_dim=32, sample_size=8)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    with torch.no_grad():
        ctx = enc(torch.randn(2, enc.config.n_traits))
        a = unet(x, t, encoder_hidden_states=ctx).sample
        b = unet(x, t, encoder_hidden_states=torch.zeros_like(ctx)).sample
    assert (a - b).abs().max() > 1e-4


def test_continuing_a_captioned_prior_keeps_its_caption_encoder(tmp_path, captioned_prior):
    """A captioned prior continued with captions starts from its own caption encoder (the UNet already
    reads those tokens), not a fresh one: with a zero learning rate the encoder comes out unchanged."""
    from phenogen.diffusion.prior import CaptionEncoder, PriorConfig, pretrain_prior

    cfg = PriorConfig(preset="tiny", n_images=16, unet_steps=2, batch_size=4, lr=1e-12, unet_minutes=1,
                      captions=True, init=str(captioned_prior), reader_renders=0)  # fmt: skip
    record = pretrain_prior(tmp_path / "next", cfg, progress=False)
    assert record["caption_encoder_from"] == str(captioned_prior / "caption_encoder")
    # reader_renders = 0: the init's reader travels with the continued prior
    assert record["reader"] == {"from": str(captioned_prior / "reader")}
    assert (tmp_path / "next" / "reader" / "probe.safetensors").is_file()
    before = CaptionEncoder.from_pretrained(captioned_prior / "caption_encoder")
    after = CaptionEncoder.from_pretrained(tmp_path / "next" / "caption_encoder")
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_continuing_a_prior_with_a_broken_record_fails_before_training(tmp_path, captioned_prior):
    """The init's prior.json (provenance, nested into the new record) is read before anything is rendered or
    trained: a NaN literal in it once failed a 50-minute build at its very last step."""
    import shutil

    from phenogen.diffusion.prior import PriorConfig, pretrain_prior

    init = tmp_path / "init"
    shutil.copytree(captioned_prior, init)
    record = (init / "prior.json").read_text()
    (init / "prior.json").write_text(record.replace("{", '{"unet_loss_last100": NaN, ', 1))
    cfg = PriorConfig(preset="tiny", n_images=16, unet_steps=2, batch_size=4, unet_minutes=1, captions=True, reader_renders=0,
                      init=str(init))  # fmt: skip
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match="prior.json.*not valid JSON"):
        pretrain_prior(tmp_path / "next", cfg, progress=False)
    assert time.perf_counter() - t0 < 5 and not (tmp_path / "next" / "unet").exists()


def test_config_lists_match_what_the_builders_accept():
    """ImageConfig's lists (kept free of diffusers imports) name exactly the presets and encoders the
    builders know: the cpu2x preset was once built by components but rejected by the config."""
    from typing import get_args, get_type_hints

    from phenogen.diffusion import components, conditioning, config

    assert set(config.PRESETS) == set(components.PRESETS)
    assert set(config.ENCODERS) == set(conditioning.ENCODERS)
    assert set(config.HEADS) == set(conditioning.HEADS)
    hints = get_type_hints(config.ImageConfig)
    for name, values in (
        ("preset", config.PRESETS),
        ("encoder", config.ENCODERS),
        ("cond_head", config.HEADS),
    ):
        assert set(get_args(hints[name])) == set(values), name


def test_captioned_prior_config_errors():
    from phenogen.diffusion.prior import PriorConfig

    with pytest.raises(ValueError, match="caption_dropout"):
        PriorConfig(caption_dropout=1.0)
    assert ImageConfig(preset="cpu2x").preset == "cpu2x"  # the preset is accepted by train-image


def test_latent_normalisation_global_or_per_channel_and_its_inverse(tmp_path):
    """Global: one shift/scale; per channel: every channel mean 0 / std 1 even when channels differ 5x
    in spread (what a single scale cannot do); unscale inverts scale; the choice survives save/load."""
    from phenogen.diffusion.components import load_vae
    from phenogen.diffusion.vae import fit_latent_scaling, scale_latents, unscale_latents

    gen = torch.Generator().manual_seed(0)
    spread = torch.tensor([3.0, 0.6, 1.0, 0.3]).view(1, 4, 1, 1)
    offset = torch.tensor([1.0, -2.0, 0.0, 0.5]).view(1, 4, 1, 1)
    mean = torch.randn(256, 4, 4, 4, generator=gen) * spread + offset
    std = torch.full_like(mean, 1e-3)
    vae = build_vae("tiny")
    fit_latent_scaling(vae, mean, std)
    g = scale_latents(vae, mean)
    assert abs(float(g.std()) - 1) < 0.02 and g.std((0, 2, 3)).min() < 0.3  # one scale: channels unequal
    fit_latent_scaling(vae, mean, std, per_channel=True)
    c = scale_latents(vae, mean)
    assert torch.allclose(c.mean((0, 2, 3)), torch.zeros(4), atol=0.02)
    assert torch.allclose(c.std((0, 2, 3)), torch.ones(4), atol=0.02)
    assert torch.allclose(unscale_latents(vae, c), mean, atol=1e-5)
    vae.save_pretrained(tmp_path / "vae", safe_serialization=True)
    assert torch.allclose(scale_latents(load_vae(tmp_path / "vae"), mean), c, atol=1e-5)
    fit_latent_scaling(vae, mean, std)  # back to global clears the per-channel statistics
    assert vae.config.latents_mean is None and torch.allclose(scale_latents(vae, mean), g)


def test_decoder_fine_tuning_keeps_the_latent_space():
    """Only the decoder trains: the encoder's latents are bit-identical, reconstructions improve."""
    from phenogen.diffusion.vae import encode_latent_dist, finetune_decoder, to_model_range

    torch.manual_seed(0)
    vae = build_vae("tiny")
    images = torch.zeros(8, 3, 16, 16, dtype=torch.uint8)
    images[:, 0, 4:12, 4:12] = 220  # red squares on black
    before, _ = encode_latent_dist(vae, images)
    with torch.no_grad():
        err0 = (vae.decode(before).sample - to_model_range(images)).pow(2).mean()
    losses = finetune_decoder(vae, images, max_seconds=60, steps=30, batch_size=4, crop=8)
    after, _ = encode_latent_dist(vae, images)
    with torch.no_grad():
        err1 = (vae.decode(after).sample - to_model_range(images)).pow(2).mean()
    assert len(losses) == 30 and torch.equal(before, after) and err1 < 0.5 * err0


def test_foreground_weights_single_out_the_subject_and_steer_the_vae_loss():
    """Pixels unlike the image's median colour (the background) weigh 1 + w, the rest 1, mean 1; the
    weighted loss grows when the error sits on the subject rather than on the background."""
    from phenogen.diffusion.vae import foreground_weights, vae_loss

    x = torch.full((2, 3, 16, 16), -0.6)
    x[:, 0, 6:10, 6:10] = 0.9  # a small red bird on a dark grey background
    w = foreground_weights(x, weight=10.0)
    assert w.shape == (2, 1, 16, 16) and torch.allclose(w.mean(), torch.tensor(1.0))
    assert torch.allclose(w[0, 0, 7, 7] / w[0, 0, 0, 0], torch.tensor(11.0))
    torch.manual_seed(0)
    vae = build_vae("tiny")
    plain, _ = vae_loss(vae, x, torch.Generator().manual_seed(0))
    weighted, _ = vae_loss(vae, x, torch.Generator().manual_seed(0), foreground_weight=10.0)
    assert not torch.allclose(plain, weighted)  # the weights reach the loss


def test_latent_colour_loss_asks_the_latents_for_each_cells_mean_colour():
    """Zero when a 1x1 read-out of the latents gives every latent cell's mean colour, positive when the
    latents hold the wrong colours; train_vae trains the read-out with the VAE; no head is a clear error."""
    from phenogen.diffusion.vae import latent_colour_loss, train_vae, vae_loss

    x = torch.rand(2, 3, 16, 16) * 2 - 1
    cells = torch.nn.functional.avg_pool2d(x, 2)  # (2, 3, 8, 8): what an 8x8 latent should carry
    head = torch.nn.Conv2d(4, 3, 1, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:3, :3, 0, 0] = torch.eye(3)
    z = torch.cat([cells, torch.randn(2, 1, 8, 8)], dim=1)
    assert latent_colour_loss(z, x, head).item() < 1e-6
    assert latent_colour_loss(z.flip(0), x, head).item() > 0.1
    vae = build_vae("tiny")
    with pytest.raises(ValueError, match="colour_head"):
        vae_loss(vae, x, colour_weight=1.0)
    _, parts = vae_loss(vae, x, colour_weight=1.0, colour_head=head)
    assert parts["colour"] > 0
    images = (torch.rand(8, 3, 16, 16) * 255).to(torch.uint8)
    assert len(train_vae(vae, images, steps=3, batch_size=4, colour_weight=5.0)) == 3


def test_widening_the_latent_channels_is_exact_at_first():
    """A widened VAE encodes the old channels and decodes exactly as the old VAE, whatever the new
    channels hold; a widened UNet predicts the old channels as before and 0 for the new ones."""
    from phenogen.diffusion.components import widen_unet, widen_vae

    torch.manual_seed(0)
    vae = build_vae("tiny")
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.05 * torch.randn_like(p))  # no accidental zeros or identities to lean on
    wide = widen_vae(vae, 2)
    assert wide.config.latent_channels == 6 and wide.config.latents_mean is None
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = vae.encode(x).latent_dist, wide.encode(x).latent_dist
        assert torch.allclose(a.mean, b.mean[:, :4], atol=1e-6) and torch.allclose(
            a.logvar, b.logvar[:, :4], atol=1e-6
        )
        assert b.std[:, 4:].max() < 0.05  # the new channels start nearly deterministic
        z = torch.cat([a.mean, 3 * torch.randn(3, 2, 8, 8)], dim=1)
        assert torch.allclose(vae.decode(a.mean).sample, wide.decode(z).sample, atol=1e-6)
    unet = build_unet("tiny", cross_attention_dim=32)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    wunet = widen_unet(unet, 6)
    assert (wunet.config.in_channels, wunet.config.out_channels) == (6, 6)
    s, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 3, 32)
    with torch.no_grad():
        old = unet(s, t, encoder_hidden_states=ctx).sample
        new = wunet(torch.cat([s, torch.randn(2, 2, 8, 8)], 1), t, encoder_hidden_states=ctx).sample
    assert torch.allclose(old, new[:, :4], atol=1e-5) and torch.equal(new[:, 4:], torch.zeros(2, 2, 8, 8))
    with pytest.raises(ConfigError, match="extra latent channels"):
        widen_vae(vae, 0)
    with pytest.raises(ConfigError, match="cannot widen"):
        widen_unet(wunet, 4)


def test_anchored_training_holds_the_old_channels_and_keeps_their_normalisation():
    """Training a widened VAE with its old VAE as anchor moves the old channels far less than training it
    free; the latent colour loss then reads the new channels only; the fitted normalisation keeps the
    old channels' numbers exactly (a UNet trained on them sees the same inputs)."""
    from phenogen.diffusion.components import widen_vae
    from phenogen.diffusion.vae import encode_latent_dist, fit_latent_scaling, scale_latents, train_vae

    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(16, 3, 16, 16, dtype=torch.uint8) + 40
    for i in range(16):  # squares of random colours on a dark background
        images[i, :, 4:12, 4:12] = torch.randint(60, 255, (3, 1, 1), generator=gen).to(torch.uint8)
    torch.manual_seed(0)
    old = build_vae("tiny")
    train_vae(old, images, steps=10, batch_size=4)
    before, std = encode_latent_dist(old, images)
    drift = {}
    for weight in (0.0, 10.0):
        wide = widen_vae(old, 2)
        losses = train_vae(
            wide, images, steps=25, batch_size=4, colour_weight=5.0, anchor=old, anchor_weight=weight
        )
        assert len(losses) == 25
        after, _ = encode_latent_dist(wide, images)
        drift[weight] = float(((after[:, :4] - before) ** 2).mean() / before.var())
    assert drift[10.0] < 0.5 * drift[0.0], drift
    with pytest.raises(ValueError, match="fewer latent channels"):
        train_vae(old, images, steps=1, anchor=wide)
    fit_latent_scaling(old, before, std)  # the old VAE's global shift/scale
    mean, std = encode_latent_dist(wide, images)
    fit_latent_scaling(wide, mean, std, per_channel=True, keep=old)
    assert torch.allclose(scale_latents(wide, mean)[:, :4], scale_latents(old, mean[:, :4]), atol=1e-5)
    assert len(wide.config.latents_std) == 6
    with pytest.raises(ValueError, match="per_channel"):
        fit_latent_scaling(wide, mean, std, keep=old)


def test_cpu2x_preset_builds_a_colour_keeping_vae_shape_and_its_unet():
    """cpu2x: 64 px -> 32 x 32 x 8 latents (2x VAE), and a UNet that takes them, pooled pathway included."""
    from phenogen.diffusion.components import denoise

    vae = build_vae("cpu2x")
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
        assert tuple(z.shape) == (1, 8, 32, 32)
        unet = build_unet("cpu2x", 128, sample_size=32, latent_channels=8, pooled=True)
        assert tuple(denoise(unet, z, torch.tensor([5]), torch.zeros(1, 3, 128)).shape) == (1, 8, 32, 32)


def test_train_image_fine_tunes_the_prior(dataset, tmp_path, tiny_prior):
    """init=DIR starts from the prior's UNet and VAE (not a fresh one) and trains the DNA condition in."""
    from phenogen.diffusion.prior import load_prior_unet

    result = train_image_model(
        dataset.root, tmp_path / "run", _tiny_cfg(init=str(tiny_prior), max_steps=3), progress=False
    )
    pipe = DNAToImagePipeline.from_pretrained(result.pipeline_dir)
    prior = load_prior_unet(tiny_prior, 32, 8)
    fresh = build_unet("tiny", cross_attention_dim=32)
    tuned = pipe.unet.conv_in.weight.detach()
    assert (tuned - prior.conv_in.weight).abs().max() < (tuned - fresh.conv_in.weight).abs().max() / 5
    prior_vae = load_file(tiny_prior / "vae" / "diffusion_pytorch_model.safetensors")
    assert torch.allclose(pipe.vae.encoder.conv_in.weight, prior_vae["encoder.conv_in.weight"].float())
    attn2 = [m for n, m in pipe.unet.named_modules() if n.endswith("attn2")]
    assert any(m.to_out[0].weight.abs().sum() > 0 for m in attn2)  # the condition has started to enter


def test_train_image_fine_tunes_a_captioned_per_channel_prior(dataset, tmp_path, captioned_prior):
    """A captioned prior with per-channel latent statistics fine-tunes like any prior: the pipeline keeps
    the prior's statistics, and its latents decode through them (scale → unscale is the identity)."""
    from phenogen.diffusion.vae import scale_latents, unscale_latents

    result = train_image_model(
        dataset.root, tmp_path / "run", _tiny_cfg(init=str(captioned_prior), max_steps=2), progress=False
    )
    pipe = load_pipeline(result.pipeline_dir)
    prior_cfg = json.loads((captioned_prior / "vae" / "config.json").read_text())
    assert np.allclose(pipe.vae.config.latents_std, prior_cfg["latents_std"])
    latents = pipe(SEQS, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                   output_type="latent").images  # fmt: skip
    assert torch.isfinite(latents).all()
    assert torch.allclose(scale_latents(pipe.vae, unscale_latents(pipe.vae, latents)), latents, atol=1e-5)


def test_a_prior_widened_for_colour_fine_tunes_and_paints(dataset, tmp_path, captioned_prior):
    """``vae_widen`` on a captioned prior: a VAE with more latent channels whose old channels stay where
    the prior's VAE put them, a UNet widened to match, per-channel statistics with the old channels'
    numbers kept; ``train-image`` fine-tunes it and the pipeline paints with it. Without init: an error."""
    from phenogen.diffusion.components import load_vae
    from phenogen.diffusion.prior import PriorConfig, load_prior_unet, pretrain_prior
    from phenogen.diffusion.vae import scale_latents

    with pytest.raises(ValueError, match="vae_widen widens an existing prior"):
        PriorConfig(vae_widen=2)
    cfg = PriorConfig(preset="tiny", n_images=16, vae_steps=6, unet_steps=3, batch_size=4, unet_minutes=1,
                      vae_minutes=1, captions=True, init=str(captioned_prior), vae_widen=2, reader_renders=0,
                      vae_colour_weight=5.0)  # fmt: skip
    record = pretrain_prior(tmp_path / "wide", cfg, progress=False)
    assert record["vae_widened_from"] == 4 and record["vae_steps"] == 6 and record["unet_steps"] == 3
    assert record["latent_statistics"] == "per_channel"  # whatever prior.latent_norm says
    old, wide = load_vae(captioned_prior / "vae"), load_vae(tmp_path / "wide" / "vae")
    assert wide.config.latent_channels == 6 and len(wide.config.latents_mean) == 6
    z = torch.randn(2, 6, 8, 8)
    assert torch.allclose(scale_latents(wide, z)[:, :4], scale_latents(old, z[:, :4]), atol=1e-4)
    assert load_prior_unet(tmp_path / "wide", 32, 8).config.in_channels == 6
    result = train_image_model(
        dataset.root, tmp_path / "run", _tiny_cfg(init=str(tmp_path / "wide"), max_steps=2), progress=False
    )
    pipe = load_pipeline(result.pipeline_dir)
    images = pipe(
        SEQS, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()


def test_caption_head_writes_captions_for_the_prior_caption_encoder(tmp_path, captioned_prior):
    """The caption head carries the prior's caption encoder exactly; every barcode starts as the zero
    caption (the prior's average bird) and the null is the prior's all-zero context; a few optimizer
    steps make different barcodes write different captions; save/load is
    exact and describe() names the values after the prior's traits."""
    from phenogen.diffusion.prior import CaptionEncoder

    prior_enc = CaptionEncoder.from_pretrained(captioned_prior / "caption_encoder")
    n = prior_enc.config.n_traits
    cond = build_conditioner("kmer", 32, kmer_k=2, kmer_segments=2, head="caption",
                             caption_encoder=captioned_prior / "caption_encoder", cond_dropout=0.0)  # fmt: skip
    for key, value in prior_enc.state_dict().items():
        assert torch.equal(cond.caption.state_dict()[key], value)
    cond.eval()
    hidden, mask = cond.encode(SEQS)
    assert tuple(hidden.shape) == (2, n, 32) and bool(mask.all())
    with torch.no_grad():
        average = prior_enc(torch.zeros(1, n))[0]
    assert torch.equal(hidden[0], hidden[1]) and torch.allclose(hidden[0], average, atol=1e-6)
    null, _ = cond.null_condition(2, hidden.shape[1])
    assert tuple(null.shape) == (2, n, 32) and not null.any()

    cond.train()
    feats, fmask = cond.featurize(SEQS)
    target = torch.zeros(2, n)
    target[0, 0], target[1, 0] = 1.0, -1.0  # the two barcodes should describe opposite birds
    opt = torch.optim.Adam(cond.trainable_parameters(), lr=1e-2)
    for _ in range(20):
        loss = (cond.caption_values(feats, fmask) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    described = cond.eval().describe(SEQS)
    assert list(described) == list(prior_enc.config.traits)
    first = described[prior_enc.config.traits[0]]
    assert first[0] > 0.3 and first[1] < -0.3

    cond.save_pretrained(tmp_path / "cond", safe_serialization=True)
    back = DNAConditioner.from_pretrained(tmp_path / "cond").eval()
    with torch.no_grad():
        assert torch.equal(back.encode(SEQS)[0], cond.encode(SEQS)[0])


def test_train_image_with_the_caption_head(dataset, tmp_path, captioned_prior, tiny_prior):
    """train-image with cond_head=caption fine-tunes a captioned prior; the saved pipeline paints from
    captions the barcodes write. Without a captioned prior it is a clear error, before the UNet trains."""
    cfg = _tiny_cfg(init=str(captioned_prior), max_steps=3, cond_head="caption", feature_dropout=0.1, lr=1e-2)
    result = train_image_model(dataset.root, tmp_path / "run", cfg, progress=False)
    pipe = load_pipeline(result.pipeline_dir)
    assert pipe.conditioner.config.head == "caption"
    # the prior's reader travels with the pipeline and reads the captions it writes (best-of-K sampling)
    assert pipe.reader is not None and pipe.reader.spec.trait_names == pipe.conditioner.caption_names
    described = pipe.conditioner.describe(SEQS)
    values = np.stack(list(described.values()), axis=1)
    assert np.abs(values).max() > 0 and not np.allclose(values[0], values[1])  # trained, barcode-specific
    images = pipe(
        SEQS, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert images.shape[0] == 2 and np.isfinite(images).all()
    # prompt tuning: the prior's UNet and caption encoder stay exactly as they were, only the DNA map learns
    from phenogen.diffusion.prior import CaptionEncoder, load_prior_unet

    frozen = _tiny_cfg(init=str(captioned_prior), max_steps=3, cond_head="caption", lr=1e-2, train_unet=False,
                       train_caption_encoder=False)  # fmt: skip
    pipe = load_pipeline(
        train_image_model(dataset.root, tmp_path / "frozen", frozen, progress=False).pipeline_dir
    )
    prior_unet = load_prior_unet(captioned_prior, 32, 8).state_dict()
    assert all(torch.equal(v.float(), prior_unet[k]) for k, v in pipe.unet.state_dict().items())
    prior_caption = CaptionEncoder.from_pretrained(captioned_prior / "caption_encoder").state_dict()
    assert all(torch.equal(v, prior_caption[k]) for k, v in pipe.conditioner.caption.state_dict().items())
    assert pipe.conditioner.to_caption.weight.abs().max() > 0
    with pytest.raises(ValueError, match="set image.init to a prior"):
        ImageConfig(train_unet=False)
    with pytest.raises(ValueError, match="captioned prior: set image.init"):
        ImageConfig(cond_head="caption")  # refused before any VAE training, not after
    with pytest.raises(ConfigError, match="captioned prior"):
        train_image_model(dataset.root, tmp_path / "bad", _tiny_cfg(init=str(tiny_prior), cond_head="caption"),
                          progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="caption head reads barcode features"):
        DNAConditioner(encoder="relatives", head="caption", caption_n=3, relatives_n=2, relatives_length=8)
    with pytest.raises(ConfigError, match="head must be one of"):
        DNAConditioner(encoder="kmer", head="pooled")
    with pytest.raises(ValueError, match="feature_dropout"):
        ImageConfig(feature_dropout=1.0)


def test_prior_errors_are_specific(tmp_path, tiny_prior):
    from phenogen.diffusion.prior import load_prior_unet, resolve_init

    with pytest.raises(ConfigError, match="pretrain-image"):
        resolve_init(str(tmp_path), "tiny")
    with pytest.raises(CheckpointError, match="cross_attention_dim=32"):
        load_prior_unet(tiny_prior, cross_attention_dim=64, sample_size=8)
    with pytest.raises(ValueError, match="init brings its own VAE"):
        ImageConfig(preset="tiny", init=str(tiny_prior), vae=str(tmp_path))


def test_the_shipped_cpu_prior_loads_and_reconstructs_birds():
    """The prior in the package (what the demo fine-tunes) is a real, trained one: its VAE reconstructs
    fresh renders of random birds well (an untrained VAE scores ~0.3), its UNet fits the cpu preset and
    its predictions change with the caption it is given."""
    from phenogen.diffusion import components
    from phenogen.diffusion.prior import load_prior_unet, reconstruction_mse, resolve_init
    from phenogen.evaluate.probe import prior_renders
    from phenogen.fsio import read_json
    from phenogen.sim.traitspec import CONTINUOUS, DISCRETE

    path = resolve_init("builtin", "cpu")
    record = read_json(path / "prior.json", "prior record")  # strict: continuing it reads it the same way
    chain = [record]  # provenance: a chain of continued priors down to the one built from scratch
    while chain[-1].get("init_record"):
        chain.append(chain[-1]["init_record"])
    assert sum(r["unet_steps"] for r in chain) >= 10_000 and record["vae_recon_mse_fresh"] < 0.02
    images, traits_np = prior_renders(CONTINUOUS, DISCRETE, 16, 64, np.random.default_rng(123), sd=1.2)
    vae = components.load_vae(path / "vae").float()
    with torch.no_grad():
        assert reconstruction_mse(vae, images) < 0.025
    # the caption decoder (built on top, in continued runs) decodes fresh renders better than the VAE's own
    from phenogen.diffusion.caption_decoder import CaptionDecoder
    from phenogen.diffusion.prior import _caption_decoder_mse

    assert sum((r.get("caption_decoder") or {}).get("steps", 0) for r in chain) > 3000
    dec = CaptionDecoder.from_pretrained(path / "caption_decoder", torch_dtype=torch.float32)
    assert tuple(dec.config.traits) == (*CONTINUOUS, *DISCRETE)
    assert _caption_decoder_mse(vae, dec, images, traits_np) < 0.9 * _caption_decoder_mse(
        vae, None, images, traits_np
    )
    unet = load_prior_unet(path, cross_attention_dim=128, sample_size=16)
    assert unet.config.in_channels == 4
    # captioned (Stable Diffusion style): the UNet reads its caption encoder's tokens
    from phenogen.diffusion.prior import CaptionEncoder

    assert record["captions"]
    root = chain[-1]
    assert root["vae_steps"] > 1000 and not root.get("captions")  # v2: VAE trained there, unconditional
    enc = CaptionEncoder.from_pretrained(path / "caption_encoder")
    assert tuple(enc.config.traits) == (*CONTINUOUS, *DISCRETE)
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([300, 300])
    traits = torch.zeros(2, enc.config.n_traits)
    traits[1, 1] = 2.5  # a different plumage hue
    with torch.no_grad():
        eps = unet(torch.cat([x[:1], x[:1]]), t, encoder_hidden_states=enc(traits)).sample
        null = unet(x[:1], t[:1], encoder_hidden_states=torch.zeros(1, 1, 128)).sample
    assert (eps[0] - eps[1]).abs().mean() > 1e-3 and (eps[0] - null[0]).abs().mean() > 1e-3


def _caption_pipeline(tmp: Path) -> DNAToImagePipeline:
    """A tiny pipeline with the caption head (random DNA → caption map, so barcodes write different captions)."""
    from phenogen.diffusion.prior import CaptionEncoder

    torch.manual_seed(0)
    CaptionEncoder(n_traits=3, dim=32, traits=("size", "hue", "crest")).save_pretrained(tmp / "cap")
    cond = build_conditioner(
        "kmer", 32, kmer_k=2, kmer_segments=3, head="caption", caption_encoder=tmp / "cap"
    )
    torch.nn.init.normal_(cond.to_caption.weight, std=0.3)
    pipe = DNAToImagePipeline(
        build_vae("tiny"), build_unet("tiny"), make_scheduler("ddim", build_noise_scheduler().config), cond
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_captions_given_directly_paint_what_the_barcode_would(tmp_path):
    """encode_captions(caption_matrix(seqs)) is encode(seqs), so pipe(captions=…) of the captions two barcodes
    write paints their images bit for bit; another caption paints another image; mistakes are clear errors."""
    pipe = _caption_pipeline(tmp_path)
    cond = pipe.conditioner.eval()
    values = cond.caption_matrix(SEQS)
    assert values.shape == (2, 3) and not np.allclose(values[0], values[1])
    assert cond.caption_names == ["size", "hue", "crest"]
    with torch.no_grad():
        assert torch.equal(cond.encode_captions(values)[0], cond.encode(SEQS)[0])

    def paint(**given):
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        return pipe(**given, num_inference_steps=2, generator=gens, output_type="np").images

    from_dna = paint(sequences=SEQS)
    assert np.array_equal(paint(captions=values), from_dna)
    other = values.copy()
    other[1] += 3.0
    changed = paint(captions=other)
    assert np.array_equal(changed[0], from_dna[0]) and not np.allclose(changed[1], from_dna[1])
    with pytest.raises(InputError, match="either sequences"):
        pipe(SEQS, captions=values)
    with pytest.raises(InputError, match="either sequences"):
        pipe()
    with pytest.raises(InputError, match=r"captions must be \(N, 3\)"):
        pipe(captions=values[:, :2], num_inference_steps=1)
    with pytest.raises(InputError, match="NaN"):
        pipe(captions=np.full((1, 3), np.nan), num_inference_steps=1)
    with pytest.raises(InputError, match="caption head"):
        _tiny_pipeline()(captions=values, num_inference_steps=1)


def test_generate_paints_records_from_a_captions_file(tmp_path, capsys):
    """`generate --captions`: the listed records are painted from their caption (the others exactly as from
    their barcode), captions.tsv records what was given; bad files are specific errors."""
    from phenogen.cli import main
    from phenogen.diffusion.generate import read_captions

    pipe = _caption_pipeline(tmp_path)
    pipe.save_pretrained(tmp_path / "model")
    fasta = tmp_path / "q.fasta"
    fasta.write_text(f">a\n{SEQS[0]}\n>b\n{SEQS[1]}\n")
    caps = tmp_path / "caps.tsv"
    caps.write_text("record_id\tcrest\tsize\thue\nb\t2.0\t-1.5\t0.5\n")  # any column order
    assert read_captions(caps, ["size", "hue", "crest"]) == {"b": [-1.5, 0.5, 2.0]}
    base = ["generate", "--model", str(tmp_path / "model"), "--fasta", str(fasta), "--n", "1", "--steps", "2"]
    assert main([*base, "--out", str(tmp_path / "dna")]) == 0
    assert main([*base, "--out", str(tmp_path / "capgen"), "--captions", str(caps)]) == 0
    same = [np.asarray(Image.open(tmp_path / d / "images" / "a_0.png")) for d in ("dna", "capgen")]
    diff = [np.asarray(Image.open(tmp_path / d / "images" / "b_0.png")) for d in ("dna", "capgen")]
    assert np.array_equal(*same) and not np.array_equal(*diff)
    assert (tmp_path / "capgen" / "captions.tsv").read_text().splitlines() == [
        "record_id\tsize\thue\tcrest",
        "b\t-1.5\t0.5\t2",
    ]
    assert not (tmp_path / "dna" / "captions.tsv").exists()

    bad = tmp_path / "bad.tsv"
    bad.write_text("record_id\tsize\thue\nb\t1\t2\n")
    with pytest.raises(InputError, match="missing column"):
        read_captions(bad, ["size", "hue", "crest"])
    bad.write_text("record_id\tsize\thue\tcrest\nb\t1\tx\t2\n")
    with pytest.raises(InputError, match="line 2"):
        read_captions(bad, ["size", "hue", "crest"])
    bad.write_text("record_id\tsize\thue\tcrest\nzz\t1\t1\t2\n")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x"), "--captions", str(bad)]) != 0
    assert "captions for record(s) zz that are not among the records" in capsys.readouterr().err
    _tiny_pipeline().save_pretrained(tmp_path / "tokens")
    assert main(["generate", "--model", str(tmp_path / "tokens"), "--fasta", str(fasta), "--out", str(tmp_path / "y"),
                 "--captions", str(caps)]) != 0  # fmt: skip
    assert "--captions needs a model with the caption head" in capsys.readouterr().err

"""The caption decoder (VAE decoder + FiLM on the caption): starts as the VAE's decoder, learns colour
from the caption, travels with priors and pipelines, and trains the written caption in train-image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from phenogen.cli import main
from phenogen.diffusion.caption_decoder import CaptionDecoder, train_caption_decoder
from phenogen.diffusion.components import build_vae, vae_scale
from phenogen.diffusion.config import ImageConfig
from phenogen.diffusion.pipeline import load_pipeline
from phenogen.diffusion.train import train_image_model

torch.set_num_threads(2)


def _prior(out: Path, *sets: str) -> Path:
    argv = ["pretrain-image", "--out", str(out), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def cd_prior(tmp_path_factory):
    """A tiny captioned prior with a caption decoder (the stage after the UNet)."""
    out = tmp_path_factory.mktemp("cdprior") / "prior"
    return _prior(out, "prior.preset=tiny", "prior.n_images=32", "prior.vae_steps=4", "prior.unet_steps=4",
                  "prior.batch_size=8", "prior.vae_minutes=1", "prior.unet_minutes=1", "prior.captions=true", "prior.reader_renders=0",
                  "prior.caption_decoder_minutes=1", "prior.caption_decoder_steps=6")  # fmt: skip


def _two_colour_images(n: int, size: int = 16, seed: int = 0):
    """Discs whose colour (red or blue) is the caption's only first value; everything else is equal."""
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        red = bool(rng.random() < 0.5)
        im = Image.new("RGB", (size, size), (220, 220, 220))
        ImageDraw.Draw(im).ellipse([3, 3, 12, 12], fill=(220, 30, 30) if red else (30, 30, 220))
        images.append(np.asarray(im))
        captions.append([1.0 if red else -1.0, 0.0])
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(captions)


def test_it_starts_as_the_vae_decoder_and_learns_the_colour_from_the_caption():
    """FiLM at zero: bit for bit the VAE's decoder. Given latents that hold no colour (a VAE that maps red
    and blue discs alike — here: the same latent for every image) the trained decoder paints each disc in
    the colour its caption names, which the plain decoder cannot."""
    torch.manual_seed(0)
    vae = build_vae("tiny")
    dec = CaptionDecoder.from_vae(vae, n_traits=2)
    z = torch.randn(3, vae.config.latent_channels, 4, 4)
    with torch.no_grad():
        assert torch.allclose(dec(z, torch.randn(3, 2)), vae.decode(z).sample, atol=1e-5)
    images, captions = _two_colour_images(32)
    side = 16 // vae_scale(vae)
    mean = torch.zeros(32, vae.config.latent_channels, side, side)  # colour-blind latents
    losses = train_caption_decoder(dec, mean, torch.zeros_like(mean), captions, images, steps=150,
                                   batch_size=16, lr=3e-3, foreground_weight=0.0, latent_noise=0.0)  # fmt: skip
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    with torch.no_grad():
        out = dec(mean[:2], torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))  # red, blue
    centre = out[:, :, 6:10, 6:10].mean(dim=(2, 3))  # (2, 3) RGB in [-1, 1]
    assert centre[0, 0] > centre[0, 2] + 0.3  # red disc
    assert centre[1, 2] > centre[1, 0] + 0.3  # blue disc
    with pytest.raises(ValueError, match="expected a caption"):
        dec(mean[:2], torch.zeros(2, 3))


def test_the_prior_stage_saves_a_caption_decoder_and_unet_minutes_zero_keeps_the_unet(cd_prior, tmp_path):
    record = json.loads((cd_prior / "prior.json").read_text())
    cd = record["caption_decoder"]
    assert cd["steps"] == 6 and cd["recon_mse_fresh"] > 0 and cd["recon_mse_fresh_plain_decoder"] > 0
    dec = CaptionDecoder.from_pretrained(cd_prior / "caption_decoder")
    assert dec.config.n_traits == 15 and len(dec.config.traits) == 15

    # continue the prior with the UNet untouched: its weights and the caption decoder are kept exactly
    nxt = _prior(tmp_path / "next", "prior.preset=tiny", "prior.n_images=16", "prior.captions=true", "prior.reader_renders=0",
                 f"prior.init={cd_prior}", "prior.unet_minutes=0")  # fmt: skip
    assert json.loads((nxt / "prior.json").read_text())["unet_steps"] == 0
    for part in ("unet", "caption_decoder"):
        a = load_file(cd_prior / part / "diffusion_pytorch_model.safetensors")
        b = load_file(nxt / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_prior_config_checks_the_caption_decoder_settings():
    from phenogen.diffusion.prior import PriorConfig

    with pytest.raises(ValueError, match="needs captions"):
        PriorConfig(caption_decoder_minutes=1.0)
    with pytest.raises(ValueError, match="keeps an init prior's UNet"):
        PriorConfig(unet_minutes=0.0)


def _cfg(prior: Path, **kw) -> ImageConfig:
    base = dict(preset="tiny", max_steps=4, batch_size=4, lr_warmup_steps=1, kmer_k=2, kmer_segments=2,
                sample_steps=2, init=str(prior), cond_head="caption", train_unet=False, lr=1e-2)  # fmt: skip
    return ImageConfig(**(base | kw))


def test_train_image_uses_the_caption_decoder_and_its_loss_trains_the_written_caption(cd_prior, tmp_path):
    """With a prior that has a caption decoder, the pipeline decodes with the written caption (saved and
    loaded with it), and the decoder loss changes what the barcodes write (versus weight 0, same seed)."""
    from test_diffusion import _tiny_dataset

    ds = _tiny_dataset(tmp_path / "data")
    a = train_image_model(ds.root, tmp_path / "a", _cfg(cd_prior), progress=False)
    b = train_image_model(ds.root, tmp_path / "b", _cfg(cd_prior, decoder_loss_weight=0.0), progress=False)
    pipe_a, pipe_b = load_pipeline(a.pipeline_dir), load_pipeline(b.pipeline_dir)
    assert isinstance(pipe_a.caption_decoder, CaptionDecoder)
    index = json.loads((a.pipeline_dir / "model_index.json").read_text())
    assert index["caption_decoder"][1] == "CaptionDecoder"
    seqs = [r.sequence for r in ds.records("train")]
    wa, wb = pipe_a.conditioner.caption_matrix(seqs), pipe_b.conditioner.caption_matrix(seqs)
    assert not np.allclose(wa, wb, atol=1e-6)

    # a fresh process (as `phenogen generate` is) loads it too: diffusers only finds imported modules
    import subprocess
    import sys

    code = ("import sys; from phenogen.diffusion.pipeline import load_pipeline; "
            "print(type(load_pipeline(sys.argv[1]).caption_decoder).__name__)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(a.pipeline_dir)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "CaptionDecoder", out.stderr[-2000:]

    # the decoder paints with the caption: the same latents, another caption -> another picture
    g = torch.Generator().manual_seed(0)
    caps = np.zeros((2, 15), dtype=np.float32)
    caps[1] = 2.0
    dec = pipe_a.caption_decoder
    with torch.no_grad():  # FiLM is no longer zero after the prior's stage
        assert max(lin.weight.abs().max().item() for lin in dec.film) > 0
    imgs = pipe_a(
        captions=caps, num_inference_steps=2, guidance_scale=1.0, generator=g, output_type="np"
    ).images
    assert imgs.shape == (2, 16, 16, 3)
    pipe_a.caption_decoder = None  # the plain VAE decoder on the same noise differs
    g = torch.Generator().manual_seed(0)
    plain = pipe_a(
        captions=caps, num_inference_steps=2, guidance_scale=1.0, generator=g, output_type="np"
    ).images
    assert not np.allclose(imgs, plain)


def test_a_pipeline_without_a_caption_decoder_still_saves_and_loads(tmp_path):
    """The component is optional: pipelines saved before it (or with the tokens head) load unchanged."""
    from test_diffusion import _tiny_pipeline

    pipe = _tiny_pipeline()
    assert pipe.caption_decoder is None
    pipe.save_pretrained(tmp_path / "p", safe_serialization=True)
    back = load_pipeline(tmp_path / "p")
    assert back.caption_decoder is None
    g = torch.Generator().manual_seed(0)
    out = back(["ACGTACGTTTGACAACGTAGGCT"], num_inference_steps=2, generator=g, output_type="np").images
    assert out.shape[0] == 1


def test_crops_and_denoised_latents_train_the_same_decoder():
    """crop > 0 trains on latent-aligned windows (the image and latent windows match, so the loss falls as
    with whole images); the UNet denoiser hands back latents of the same shape, different from its input."""
    from phenogen.diffusion.caption_decoder import unet_denoiser
    from phenogen.diffusion.components import build_noise_scheduler, build_unet
    from phenogen.diffusion.prior import CaptionEncoder

    torch.manual_seed(0)
    vae = build_vae("tiny")
    images, captions = _two_colour_images(16)
    side = 16 // vae_scale(vae)
    mean = torch.zeros(16, vae.config.latent_channels, side, side)
    dec = CaptionDecoder.from_vae(vae, n_traits=2)
    losses = train_caption_decoder(dec, mean, torch.zeros_like(mean), captions, images, steps=60, batch_size=8,
                                   lr=3e-3, foreground_weight=0.0, latent_noise=0.0, crop=8)  # fmt: skip
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])

    unet = build_unet("tiny", 32, sample_size=side, latent_channels=vae.config.latent_channels).eval()
    enc = CaptionEncoder(n_traits=2, dim=32).eval()
    denoise = unet_denoiser(unet, enc, vae, build_noise_scheduler(), max_t=0.5)
    z = torch.randn(4, vae.config.latent_channels, side, side)
    out = denoise(z, captions[:4], torch.Generator().manual_seed(0))
    assert out.shape == z.shape and torch.isfinite(out).all() and not torch.allclose(out, z)
    calls = []

    def spy(zz, cc, gen):
        calls.append(len(zz))
        return denoise(zz, cc, gen)

    train_caption_decoder(dec, mean, torch.zeros_like(mean), captions, images, steps=2, batch_size=8,
                          denoiser=spy, denoised_fraction=0.5)  # fmt: skip
    assert calls == [4, 4]  # half of each batch of 8 went through the denoiser


def test_caption_prior_keeps_the_written_caption_near_the_prior_mean(cd_prior, tmp_path):
    """image.caption_prior_weight (a Gaussian prior on what the barcodes write) shrinks the written captions
    towards 0 against the same run without it (same seed), and is refused without the caption head."""
    from test_diffusion import _tiny_dataset

    ds = _tiny_dataset(tmp_path / "data")
    a = train_image_model(ds.root, tmp_path / "a", _cfg(cd_prior), progress=False)
    b = train_image_model(ds.root, tmp_path / "b", _cfg(cd_prior, caption_prior_weight=50.0), progress=False)
    seqs = [r.sequence for r in ds.records("train")]
    wa = load_pipeline(a.pipeline_dir).conditioner.caption_matrix(seqs)
    wb = load_pipeline(b.pipeline_dir).conditioner.caption_matrix(seqs)
    assert float(np.mean(wb**2)) < 0.9 * float(np.mean(wa**2))
    with pytest.raises(ValueError, match="caption_prior_weight"):
        ImageConfig(preset="tiny", caption_prior_weight=-1.0)
    with pytest.raises(ValueError, match="caption head"):
        ImageConfig(preset="tiny", cond_head="tokens", caption_prior_weight=0.1)


@pytest.fixture(scope="module")
def wavy_prior(cd_prior, tmp_path_factory):
    """cd_prior with its caption decoder's caption embedding and FiLM drawn large (seeded), so that the
    colour it paints wanders back and forth along each value: a loss with several minima, as a hue's."""
    import shutil

    out = tmp_path_factory.mktemp("wavy") / "prior"
    shutil.copytree(cd_prior, out)
    dec = CaptionDecoder.from_pretrained(out / "caption_decoder")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in (dec.embed[0], dec.embed[2], *dec.film):
            scale = 3.0 if lin is dec.embed[0] else 0.5
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * scale)
    dec.save_pretrained(out / "caption_decoder", safe_serialization=True)
    return out


def test_caption_scan_moves_captions_pulls_the_written_ones_there_and_resumes(wavy_prior, tmp_path):
    """image.caption_scan_at: at that step the written caption of every training species is scanned through
    the caption decoder (caption_scan.json, kept in checkpoints); the moved values pull what the species'
    barcodes write towards where the scan found them (versus the same run without the pull); a run cut
    after the scan resumes to the same losses and weights."""
    from safetensors.torch import load_file as load
    from test_diffusion import _tiny_dataset

    cd_prior = wavy_prior
    ds = _tiny_dataset(tmp_path / "data")
    cfg = _cfg(cd_prior, max_steps=6, checkpoint_every=2, caption_scan_at=0.3, caption_scan_margin=0.0,
               caption_scan_images=2, caption_anchor_weight=100.0, lr=0.2)  # fmt: skip
    full = train_image_model(ds.root, tmp_path / "full", cfg, progress=False)
    scan = json.loads((tmp_path / "full" / "caption_scan.json").read_text())
    assert scan["step"] == 2 and scan["species"] == 4  # round(0.3 x 6); the four training species
    assert scan["moves"] and {m["trait"] for m in scan["moves"]} <= {"body_hue", "wing_hue", "head_hue"}
    loose = train_image_model(ds.root, tmp_path / "loose", _cfg(cd_prior, **(cfg.__dict__ | {"caption_anchor_weight": 0.0})),
                              progress=False)  # fmt: skip
    assert json.loads((tmp_path / "loose" / "caption_scan.json").read_text())["moves"] == scan["moves"]
    names = load_pipeline(full.pipeline_dir).conditioner.caption_names

    def distance(run) -> float:  # of the moved values, from where the scan put them
        cond = load_pipeline(run.pipeline_dir).conditioner
        d = []
        for mv in scan["moves"]:
            seqs = [r.sequence for r in ds.records("train") if r.species == mv["species"]]
            d.append(np.abs(cond.caption_matrix(seqs)[:, names.index(mv["trait"])] - mv["after"]).mean())
        return float(np.mean(d))

    assert distance(full) < 0.8 * distance(loose)

    train_image_model(ds.root, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    state = json.loads(
        (tmp_path / "cut" / "checkpoints" / "checkpoint-000002" / "loop_state.json").read_text()
    )
    assert state["caption_anchors"]["moves"] == scan["moves"]
    resumed = train_image_model(ds.root, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-6)
    a = load(tmp_path / "full" / "pipeline" / "conditioner" / "diffusion_pytorch_model.safetensors")
    b = load(tmp_path / "cut" / "pipeline" / "conditioner" / "diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_caption_scan_settings_are_checked_before_anything_runs(cd_prior, tmp_path):
    from test_diffusion import _tiny_dataset

    from phenogen.diffusion.train import check_inputs
    from phenogen.errors import ConfigError

    ds = _tiny_dataset(tmp_path / "data")
    with pytest.raises(ConfigError, match="plumage not among the caption's values"):
        check_inputs(ds.root, _cfg(cd_prior, caption_scan_at=0.3, caption_scan_traits="wing_hue, plumage"))
    check_inputs(ds.root, _cfg(cd_prior, caption_scan_at=0.3))
    for bad in ({"caption_scan_at": 1.0}, {"caption_scan_margin": -0.1}, {"caption_scan_images": 0},
                {"caption_anchor_weight": -1.0}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            _cfg(cd_prior, **bad)
    with pytest.raises(ValueError, match="caption head"):
        ImageConfig(preset="tiny", cond_head="tokens", caption_scan_at=0.3)

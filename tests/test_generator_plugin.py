"""The plugin-network generator family: a small net steering a frozen, pretrained AutoencoderKL's latents.

Tiny real components, as diffusers' ``get_dummy_components``: an ``AutoencoderKL`` at 16 px built and
briefly trained here on two images (a red disc on white, a blue square on black), saved with
``save_pretrained`` and used as ``base_vae``.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from phenogen.errors import ConfigError
from phenogen.generators.base import build_family, load_family, save_generator
from phenogen.generators.plugin import PluginFamily, builtin_base_vae

R = 16
COND_DIM = 8


def _two_images() -> torch.Tensor:
    """(2, 3, 16, 16) in [-1, 1]: A = red disc on white, B = blue square on black."""
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    disc = ((yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 25).float()
    square = ((yy - 7.5).abs() < 4).float() * ((xx - 7.5).abs() < 4).float()
    a = torch.ones(3, R, R)
    a[1:] -= 2 * disc  # white, red where the disc is
    b = -torch.ones(3, R, R)
    b[2] += 2 * square  # black, blue where the square is
    return torch.stack([a, b])


def _conds() -> torch.Tensor:
    return torch.randn(2, COND_DIM, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def base_vae(tmp_path_factory):
    """A tiny AutoencoderKL (16 px → 4 x 8 x 8 latents), trained 60 steps on the two images, saved."""
    from diffusers import AutoencoderKL

    from phenogen.diffusion.vae import train_vae

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4, sample_size=R,
    )  # fmt: skip
    train_vae(vae, _two_images(), steps=60, batch_size=2, lr=5e-3)
    path = tmp_path_factory.mktemp("base") / "vae"
    vae.save_pretrained(path, safe_serialization=True)
    return path


def _family(base_vae, **over) -> PluginFamily:
    torch.manual_seed(0)
    config = {"resolution": R, "cond_dim": COND_DIM, "base_vae": str(base_vae), "hidden": 32, "depth": 2}
    return build_family("plugin", {**config, **over})


def _train(model, optimizers, steps: int, start: int = 0, seed: int = 0) -> list[dict]:
    x, c = _two_images(), _conds()
    return [
        model.train_step(x, c, optimizers, torch.Generator().manual_seed(seed * 1000 + s))
        for s in range(start, start + steps)
    ]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_step_updates_only_the_plugin(base_vae):
    """The optimizer holds the plugin only; the VAE has no gradients and its weights do not move."""
    model = _family(base_vae, pixel_weight=0.5)
    opts = model.make_optimizers(1e-3)
    assert {id(p) for g in opts["plugin"].param_groups for p in g["params"]} == {
        id(p) for p in model.plugin.parameters()
    }
    assert not any(p.requires_grad for p in model.vae.parameters())
    vae0, plugin0 = _snapshot(model.vae), _snapshot(model.plugin)
    model.train()
    assert not model.vae.training and model.plugin.training
    losses = _train(model, opts, 3)
    assert set(losses[0]) == {"loss", "nll", "pixel"} and all(v == v for v in losses[-1].values())
    assert _same(_snapshot(model.vae), vae0)
    assert all(p.grad is None for p in model.vae.parameters())
    assert not _same(_snapshot(model.plugin), plugin0)


def test_same_seed_same_weights(base_vae):
    """Two runs from the same seed give bit-identical weights (the pixel path's noise included)."""
    runs = []
    for _ in range(2):
        model = _family(base_vae, pixel_weight=0.5)
        _train(model.train(), model.make_optimizers(1e-3), 4)
        runs.append(_snapshot(model))
    assert _same(*runs)
    other = _family(base_vae, pixel_weight=0.5)
    _train(other.train(), other.make_optimizers(1e-3), 4, seed=1)
    assert not _same(runs[0], _snapshot(other))


def test_resume_equals_uninterrupted(base_vae):
    """3 steps, model + optimizer state dicts into a fresh module (built from the saved config), 3 more
    steps == 6 uninterrupted steps, bit for bit."""
    full = _family(base_vae, pixel_weight=0.5)
    _train(full.train(), full.make_optimizers(1e-3), 6)

    first = _family(base_vae, pixel_weight=0.5)
    opts = first.make_optimizers(1e-3)
    _train(first.train(), opts, 3)
    model_state, opt_state = _snapshot(first), {k: o.state_dict() for k, o in opts.items()}
    torch.manual_seed(123)  # the resumed module starts from other weights
    second = PluginFamily.from_config(first.config)
    second.load_state_dict(model_state, strict=True)
    opts2 = second.make_optimizers(1e-3)
    for k, o in opts2.items():
        o.load_state_dict(opt_state[k])
    _train(second.train(), opts2, 3, start=3)
    assert _same(_snapshot(second), _snapshot(full))


def test_sample_shape_range_and_determinism(base_vae):
    """sample() is a function of (cond, noise): right shape, in [-1, 1], same noise → same images."""
    model = _family(base_vae)
    _train(model.train(), model.make_optimizers(1e-2), 5)
    model.eval()
    assert model.noise_shape() == (4, 8, 8)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(3, *model.noise_shape(), generator=gen)
    cond = torch.randn(3, COND_DIM, generator=gen)
    a, b = model.sample(cond, noise), model.sample(cond, noise)
    assert a.shape == (3, 3, R, R) and a.dtype == torch.float32
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, model.sample(cond, torch.randn(noise.shape, generator=gen)))
    one = model.sample(cond[1:2], noise[1:2])
    assert torch.allclose(one, a[1:2], atol=1e-5)  # does not depend on the batch
    still = _family(base_vae, latent_noise=0.0)
    still.load_state_dict(model.state_dict())
    assert torch.equal(still.sample(cond, noise), still.sample(cond, torch.zeros_like(noise)))


def test_export_is_self_contained(base_vae, tmp_path):
    """The config carries the VAE's architecture, the state dict its weights: an export loads and paints
    the same images after the base VAE folder is gone."""
    from phenogen.generators.features import Featurizer

    copy = tmp_path / "vae"
    shutil.copytree(base_vae, copy)
    model = _family(copy)
    assert model.config["base_vae"] == str(copy.resolve())
    assert model.config["vae_config"]["latent_channels"] == 4
    _train(model.train(), model.make_optimizers(1e-2), 3)
    model.eval()
    featurizer = Featurizer.fit(["ACGTACGTTTGACCA" * 4, "TTGACCAACGTACGT" * 4])
    save_generator(model, featurizer, tmp_path / "gen")
    shutil.rmtree(copy)
    loaded = load_family(tmp_path / "gen")
    noise = torch.randn(2, *model.noise_shape(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.sample(_conds(), noise), model.sample(_conds(), noise))
    assert _same(_snapshot(loaded.vae), _snapshot(model.vae))


@pytest.mark.parametrize("kind", ["missing", "empty", "not_a_vae"])
def test_bad_base_vae_names_the_path(tmp_path, kind):
    """A base_vae that is missing, empty or not an AutoencoderKL is a ConfigError naming the path."""
    path = tmp_path / "nope"
    if kind != "missing":
        path.mkdir()
    if kind == "not_a_vae":
        (path / "config.json").write_text('{"_class_name": "AutoencoderKL", "latent_channels": "x"}')
        (path / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="base_vae") as info:
        build_family("plugin", {"resolution": R, "cond_dim": COND_DIM, "base_vae": str(path)})
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "over, match",
    [({"hidden": 0}, "hidden"), ({"depth": 1.5}, "depth"), ({"latent_noise": -1}, "latent_noise"),
     ({"pixel_weight": "big"}, "pixel_weight"), ({"widht": 3}, "widht")],
)  # fmt: skip
def test_bad_config_is_a_config_error(base_vae, over, match):
    """Bad hyper-parameters and unknown keys are ConfigErrors naming the key."""
    with pytest.raises(ConfigError, match=match):
        _family(base_vae, **over)


def test_other_resolution_resizes(base_vae):
    """resolution 32 on a 16 px VAE: photos resized for the encoder, images resized back to 32 px."""
    model = _family(base_vae, resolution=32)
    assert model.noise_shape() == (4, 8, 8)
    images = torch.nn.functional.interpolate(_two_images(), size=(32, 32), mode="nearest")
    losses = model.train().train_step(images, _conds(), model.make_optimizers(1e-3), torch.Generator())
    assert losses["nll"] == losses["nll"]
    out = model.eval().sample(_conds(), torch.zeros(2, *model.noise_shape()))
    assert out.shape == (2, 3, 32, 32)


def test_learns_which_condition_is_which(base_vae):
    """After 100 steps on 2 photos with 2 conditions, condition A's samples are closer to photo A than to
    photo B, and the other way round; the learned sigma shrinks below its initial 1."""
    model = _family(base_vae, hidden=64)
    logs = _train(model.train(), model.make_optimizers(3e-3), 100)
    assert logs[-1]["nll"] < logs[0]["nll"] - 1.0
    model.eval()
    x, c = _two_images(), _conds()
    noise = torch.randn(4, *model.noise_shape(), generator=torch.Generator().manual_seed(2))
    out = model.sample(c.repeat(2, 1), noise)  # (4, 3, R, R): A, B, A, B
    err = ((out[:, None] - x[None]) ** 2).mean(dim=(2, 3, 4))  # (4 samples, 2 photos)
    assert (err[0::2, 0] < err[0::2, 1]).all() and (err[1::2, 1] < err[1::2, 0]).all(), err
    _, log_sigma = model.plugin(c)
    assert log_sigma.exp().mean() < 0.5


def test_shipped_prior_vae_as_base():
    """The default base_vae is the shipped bird prior's VAE: it loads, and one sample at its 64 px works."""
    path = builtin_base_vae()
    if not (path / "config.json").is_file():
        pytest.skip("the package's bird prior asset is not installed")
    model = build_family("plugin", {"resolution": 64, "cond_dim": 4})
    assert model.config["base_vae"] == str(path.resolve())
    assert model.vae_resolution == 64 and model.noise_shape() == (4, 16, 16)
    out = model.eval().sample(torch.zeros(1, 4), torch.zeros(1, *model.noise_shape()))
    assert out.shape == (1, 3, 64, 64) and out.min() >= -1 and out.max() <= 1
    assert out.std() > 0.01  # the decoder of the mean latent paints something, not a flat field


def test_train_generator_end_to_end(base_vae, tmp_path):
    """train-generator's loop trains the plugin family on a toy clade and exports it; a run stopped at a
    checkpoint and resumed ends, bit for bit, where an uninterrupted one does, with the VAE untouched."""
    from safetensors.torch import load_file
    from toy_clade import make_clade

    from phenogen.fsio import prepare_output_dir
    from phenogen.generators.base import load_generator
    from phenogen.generators.train import GeneratorConfig, train_generator

    make_clade(tmp_path / "data", n_tips=6, n_extinct=1, seq_len=120)
    cfg = GeneratorConfig(
        family="plugin", resolution=R, steps=4, batch_size=4, checkpoint_every=2, kmer_k=2, kmer_segments=2,
        lr=1e-3, params={"base_vae": str(base_vae), "hidden": 16, "depth": 1, "pixel_weight": 0.5},
    )  # fmt: skip

    def run(name: str, **kw):
        prepare_output_dir(tmp_path / name, "train-generator", resume=kw.get("resume", False))
        return train_generator(tmp_path / "data", tmp_path / name, cfg, progress=False, **kw)

    whole = run("whole")
    assert whole.stopped == "done" and {"loss", "nll", "pixel"} <= set(whole.losses[-1])
    painted = load_generator(tmp_path / "whole").paint([("x", "ACGT" * 30)], images_per_sequence=2)
    assert painted[0][2].size == (R, R) and painted[0][2].tobytes() != painted[1][2].tobytes()
    assert run("part", stop_after_steps=2).stopped == "stop_after_steps"
    run("part", resume=True)
    a = load_file(str(tmp_path / "whole" / "generator" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "generator" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    vae = load_file(str(base_vae / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(a["vae." + k], v.float()) for k, v in vae.items())


def test_per_channel_latent_scaling_matches_scale_latents(base_vae):
    """With a per-channel latent normalisation (latents_mean / latents_std) the posterior std is scaled as
    scale_latents scales a latent, and the VAE is rebuilt from vae_config without reading base_vae."""
    from phenogen.diffusion.vae import scale_latents

    config = dict(_family(base_vae).config)
    config["vae_config"] = {**config["vae_config"], "latents_mean": [0.5, -1.0, 0.0, 2.0],
                            "latents_std": [2.0, 0.5, 1.0, 4.0], "scaling_factor": 0.7}  # fmt: skip
    config["base_vae"] = "/nowhere"  # provenance only once vae_config is there
    model = PluginFamily.from_config(config)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    expected = scale_latents(model.vae, z) - scale_latents(model.vae, torch.zeros_like(z))
    assert torch.allclose(z * model._latent_gain(), expected, atol=1e-6)
    assert not torch.allclose(z * 0.7, expected)

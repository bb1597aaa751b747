"""The conditional GAN family (phenogen.generators.gan): tiny real models at 16 px, a few steps each."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch.nn.utils import parametrize

from phenogen.errors import ConfigError
from phenogen.generators.base import FAMILIES, build_family
from phenogen.generators.gan import GanFamily

TINY = {
    "resolution": 16,
    "cond_dim": 3,
    "z_dim": 4,
    "cond_embed": 8,
    "g_width": 4,
    "d_width": 4,
    "max_width": 16,
}


def make(seed: int = 0, **over) -> GanFamily:
    torch.manual_seed(seed)
    return GanFamily({**TINY, **over})


def batch(b: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    cond = torch.randn(b, TINY["cond_dim"], generator=g)
    return images, cond


def run(model: GanFamily, opts: dict, steps: range) -> list[dict]:
    images, cond = batch()
    return [model.train_step(images, cond, opts, torch.Generator().manual_seed(1000 + s)) for s in steps]


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in model.state_dict().values()])


def test_registered():
    """The module registers itself as "gan" and build_family builds it."""
    assert FAMILIES["gan"] is GanFamily
    assert isinstance(build_family("gan", TINY), GanFamily)


@pytest.mark.parametrize("loss", ["hinge", "non_saturating"])
@pytest.mark.parametrize("extra", [{}, {"r1": 1.0, "n_critic": 2, "norm": "batch", "upsample": "transposed"}])
def test_train_step_updates_both_nets(loss, extra):
    """One step changes G's and D's weights and returns finite losses and critic means."""
    model = make(loss=loss, **extra)
    opts = model.make_optimizers(1e-3)
    assert set(opts) == {"g", "d"}
    g0, d0 = flat(model.G), flat(model.D)
    (losses,) = run(model, opts, range(1))
    assert not torch.equal(g0, flat(model.G))
    assert not torch.equal(d0, flat(model.D))
    want = {"loss_d", "loss_g", "d_real", "d_fake", "fake_std", "real_std"} | (
        {"r1"} if "r1" in extra else set()
    )
    assert set(losses) == want
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


def test_same_seed_same_weights():
    """Two runs from the same seed end with identical weights; another noise seed gives other weights."""
    a, b = make(), make()
    run(a, a.make_optimizers(1e-3), range(3))
    run(b, b.make_optimizers(1e-3), range(3))
    assert torch.equal(flat(a), flat(b))
    c = make()
    opts = c.make_optimizers(1e-3)
    images, cond = batch()
    for s in range(3):
        c.train_step(images, cond, opts, torch.Generator().manual_seed(7 + s))
    assert not torch.equal(flat(a), flat(c))


@pytest.mark.parametrize("over", [{}, {"norm": "batch", "r1": 0.5, "n_critic": 2}])
def test_resume_is_exact(over):
    """N steps, then model + optimizer state reloaded into a fresh instance, then M steps == N + M steps."""
    whole = make(**over)
    run(whole, whole.make_optimizers(1e-3), range(5))

    first = make(**over)
    opts = first.make_optimizers(1e-3)
    run(first, opts, range(3))
    weights = save_safetensors({k: v.contiguous() for k, v in first.state_dict().items()})
    buf = io.BytesIO()
    torch.save({k: o.state_dict() for k, o in opts.items()}, buf)

    resumed = make(seed=123, **over)  # other initial weights: everything must come from the checkpoint
    resumed.load_state_dict(load_safetensors(weights), strict=True)
    opts2 = resumed.make_optimizers(1e-3)
    buf.seek(0)
    for k, state in torch.load(buf, weights_only=True).items():
        opts2[k].load_state_dict(state)
    run(resumed, opts2, range(3, 5))
    for (k, v), (k2, v2) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2), k


def test_sample_deterministic_in_noise():
    """sample: (B, 3, R, R) in [-1, 1], equal for equal noise, batch-independent, other noise differs."""
    model = make()
    run(model, model.make_optimizers(1e-3), range(2))
    cond = torch.randn(3, TINY["cond_dim"])
    noise = torch.randn(3, *model.noise_shape())
    x = model.sample(cond, noise)
    assert x.shape == (3, 3, 16, 16)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x, model.sample(cond, noise))
    torch.testing.assert_close(model.sample(cond[1:2], noise[1:2]), x[1:2], atol=1e-6, rtol=0)
    assert not torch.allclose(x, model.sample(cond, noise + 1))


def test_diversity():
    """diversity: one value per condition, 0 when every noise draw is the same, > 0 for different draws."""
    model = make()
    cond = torch.randn(2, TINY["cond_dim"])
    noise = torch.randn(2, 4, TINY["z_dim"])
    div = model.diversity(cond, noise)
    assert div.shape == (2,) and (div > 0).all()
    same = noise[:, :1].expand(2, 4, TINY["z_dim"])
    assert torch.allclose(model.diversity(cond, same), torch.zeros(2), atol=1e-5)


def test_spectral_norm_in_discriminator():
    """Every weight of D (convolutions, psi, the projection embedding) is spectrally normalised; G has none."""
    model = make()
    layers = [m for m in model.D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 2 + 2 * 2 + 1  # from_rgb, psi, embed; two convs per level (16 -> 8 -> 4)
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in model.G.modules())


@pytest.mark.parametrize("resolution", [8, 32, 64])
def test_resolutions(resolution):
    """The family builds and samples at 8, 32 and 64 px (the demo's cpu preset paints 64 px)."""
    model = make(resolution=resolution)
    out = model.sample(torch.zeros(1, 3), torch.zeros(1, TINY["z_dim"]))
    assert out.shape == (1, 3, resolution, resolution)


@pytest.mark.parametrize(
    "over, match",
    [
        ({"loss": "wasserstein"}, "loss = 'wasserstein'"),
        ({"z_dim": 0}, "z_dim = 0"),
        ({"resolution": 24}, "resolution = 24"),
        ({"resolution": 4}, "resolution = 4"),
        ({"norm": "layer"}, "norm = 'layer'"),
        ({"betas": [0.5]}, "betas"),
        ({"ema": 1.0}, "ema = 1.0"),
        ({"n_critic": 0}, "n_critic = 0"),
        ({"lossf": "hinge"}, "unknown config key"),
    ],
)
def test_bad_config(over, match):
    """A bad value gives ConfigError with a one-line message naming the key."""
    with pytest.raises(ConfigError, match=match) as info:
        GanFamily({**TINY, **over})
    assert "\n" not in str(info.value)


def test_learns_condition():
    """On two fixed 16 px images with two conditions, G paints each condition's colours (~200 steps)."""
    red = torch.tensor([0.8, -0.6, -0.6]).view(3, 1, 1).expand(3, 16, 16).clone()
    blue = torch.tensor([-0.6, -0.4, 0.8]).view(3, 1, 1).expand(3, 16, 16).clone()
    red[:, 4:12, 4:12] = 0.2  # some structure: a square in the middle
    blue[:, :, :8] = -0.9
    images = torch.stack([red, blue] * 4)  # (8, 3, 16, 16)
    cond = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]] * 4)
    model = make(g_width=8, d_width=8, max_width=32, z_dim=4)
    opts = model.make_optimizers(2e-3)
    for s in range(200):
        model.train_step(images, cond, opts, torch.Generator().manual_seed(s))
    noise = torch.randn(8, TINY["z_dim"], generator=torch.Generator().manual_seed(99))
    for c, own, other in ((cond[0], red, blue), (cond[1], blue, red)):
        x = model.sample(c.expand(8, 3), noise)
        mean = x.mean(dim=(0, 2, 3))  # (3,) mean colour; untrained: 0.6-0.9 from both images
        assert (mean - own.mean(dim=(1, 2))).norm() < 0.3 < 1.0 < (mean - other.mean(dim=(1, 2))).norm()
        assert (x - own).pow(2).mean().sqrt() < 0.3  # the layout too (measured 0.10-0.16), not just colour


def test_export_round_trip(tmp_path):
    """save_generator -> load_generator paints the very same images for the same seed (EMA G included)."""
    from phenogen.generators.base import Generator, load_generator, save_generator
    from phenogen.generators.features import Featurizer

    seqs = ["ACGTACGTTTGACCA" * 4, "TTGACCAACGTACGT" * 4]
    featurizer = Featurizer.fit(seqs)
    model = make(cond_dim=featurizer.dim, norm="batch")
    opts = model.make_optimizers(1e-3)
    images, _ = batch()
    cond = featurizer(seqs * 2)
    for s in range(3):
        model.train_step(images, cond, opts, torch.Generator().manual_seed(s))
    model.eval()
    save_generator(model, featurizer, tmp_path / "gen")
    records = [("a", seqs[0]), ("b", seqs[1])]
    want = Generator(model, featurizer).paint(records, images_per_sequence=2, seed=5)
    got = load_generator(tmp_path / "gen").paint(records, images_per_sequence=2, seed=5)
    assert [(r, k) for r, k, _ in got] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert all(a.tobytes() == b.tobytes() for (_, _, a), (_, _, b) in zip(want, got, strict=True))
    assert got[0][2].size == (16, 16) and got[0][2].tobytes() != got[1][2].tobytes()


def test_train_generator_end_to_end(tmp_path, capsys):
    """``phenogen train-generator --family gan`` trains on a toy clade and exports a generator that
    ``generate`` paints with; a bad family param is exit 2 with one line; a run stopped at a checkpoint
    and resumed ends with the same weights as an uninterrupted one."""
    from safetensors.torch import load_file
    from toy_clade import make_clade

    from phenogen.cli import main
    from phenogen.generators.train import GeneratorConfig, train_generator

    data = tmp_path / "data"
    make_clade(data, n_tips=6, n_extinct=1)
    params = {k: v for k, v in TINY.items() if k not in ("resolution", "cond_dim")}
    toml = "{" + ", ".join(f"{k} = {v}" for k, v in params.items()) + "}"
    sets = [
        "--set",
        "generator.resolution=16",
        "--set",
        "generator.steps=4",
        "--set",
        "generator.batch_size=4",
    ]
    sets += ["--set", "generator.checkpoint_every=2", "--set", f"generator.params={toml}"]
    run_dir = tmp_path / "whole"
    assert (
        main(
            [
                "train-generator",
                "--family",
                "gan",
                "--data",
                str(data),
                "--out",
                str(run_dir),
                "--no-progress",
                *sets,
            ]
        )
        == 0
    )
    assert "d_real" in capsys.readouterr().err
    metrics = json.loads((run_dir / "train_metrics.json").read_text())
    assert metrics["family"] == "gan" and metrics["diversity"]["generated_pairwise_l1"] > 0
    losses = json.loads((run_dir / "losses.json").read_text())["losses"]
    assert len(losses) == 4 and {"d_real", "d_fake", "loss_d", "loss_g"} <= set(losses[-1])
    gen_out = tmp_path / "painted"
    assert main(["generate", "--model", str(run_dir), "--sequence", "ACGT" * 60, "--out", str(gen_out)]) == 0
    (png,) = (gen_out / "images").rglob("*.png")
    assert Image.open(png).size == (16, 16)

    capsys.readouterr()
    bad = ["--set", "generator.params={loss = 'wgan'}"]
    assert (
        main(
            ["train-generator", "--family", "gan", "--data", str(data), "--out", str(tmp_path / "bad"), *bad]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "loss = 'wgan'" in err and "\n" not in err and not (tmp_path / "bad").exists()

    cfg = GeneratorConfig(
        family="gan", resolution=16, steps=4, batch_size=4, checkpoint_every=2, params=params
    )
    part = train_generator(data, tmp_path / "part", cfg, progress=False, stop_after_steps=2)
    assert part.stopped == "stop_after_steps"
    train_generator(data, tmp_path / "part", cfg, progress=False, resume=True)
    a = load_file(str(run_dir / "generator" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "generator" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

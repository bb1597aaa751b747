"""Caption inversion: fitting a caption to images through a frozen caption decoder recovers the caption that
painted them, deterministically, without touching the decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenogen.diffusion.caption_decoder import CaptionDecoder
from phenogen.diffusion.components import build_vae
from phenogen.diffusion.invert import invert_captions, scan_captions

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def painted():
    """A tiny real caption decoder whose FiLM reads the caption (random, not zero, weights), four latents
    per group and the images it decodes from them with each group's true caption."""
    torch.manual_seed(0)
    vae = build_vae("tiny")
    dec = CaptionDecoder.from_vae(vae, n_traits=3, embed_dim=16).eval()
    with torch.no_grad():
        for lin in dec.film:
            lin.weight.normal_(0.0, 0.3)
    true = torch.tensor([[1.0, -0.5, 0.8], [-1.0, 0.7, -0.3]])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    z = torch.randn(8, vae.config.latent_channels, 4, 4)
    with torch.no_grad():
        x = dec(z, true[groups]).clamp(-1, 1)
    return dec, z, x, groups, true


def test_inversion_recovers_the_painting_caption_better_than_its_start(painted):
    dec, z, x, groups, true = painted
    start = np.zeros((2, 3))
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    fitted = invert_captions(dec, z, x, groups, start, steps=150, lr=0.05, foreground_weight=0.0, seed=0)
    err_start = np.linalg.norm(start - true.numpy(), axis=1)
    err_fit = np.linalg.norm(fitted - true.numpy(), axis=1)
    assert (err_fit < 0.5 * err_start).all(), (err_fit, err_start)
    assert all(torch.equal(before[k], v) for k, v in dec.state_dict().items())  # the decoder stays frozen
    assert all(p.requires_grad for p in dec.parameters())  # and its flags are restored


def test_inversion_is_deterministic_and_the_pull_keeps_it_near_the_start(painted):
    dec, z, x, groups, true = painted
    start = np.zeros((2, 3))
    a = invert_captions(dec, z, x, groups, start, steps=20, per_group=2, seed=3)
    b = invert_captions(dec, z, x, groups, start, steps=20, per_group=2, seed=3)
    np.testing.assert_array_equal(a, b)
    pulled = invert_captions(dec, z, x, groups, start, steps=20, per_group=2, seed=3, prior_weight=50.0)
    assert np.abs(pulled).mean() < np.abs(a).mean()
    np.testing.assert_array_equal(invert_captions(dec, z, x, groups, start, steps=0), start)


def test_inversion_rejects_mismatched_inputs(painted):
    dec, z, x, groups, _ = painted
    with pytest.raises(ValueError, match="groups"):
        invert_captions(dec, z, x, groups + 5, np.zeros((2, 3)), steps=1)
    with pytest.raises(ValueError, match="differ"):
        invert_captions(dec, z[:3], x, groups, np.zeros((2, 3)), steps=1)


class _RampDecoder(torch.nn.Module):
    """Paints a flat image whose colour is a position on a colour ramp (the caption's first value), as the
    bird renderer paints a hue: red at -3.6, yellow at -1.8, wine at 0, violet at 1.8, blue at 3.6. Painting
    blue from near red, the loss has a local minimum at the red end, behind the yellow."""

    knots = torch.linspace(-3.6, 3.6, 5)
    colours = torch.tensor(
        [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.8, 0.0, 0.2], [0.2, 0.0, 0.8], [0.0, 0.0, 1.0]]
    )

    def forward(self, z: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
        c = caption[:, 0].clamp(-3.6, 3.6)
        i = torch.bucketize(c, self.knots[1:-1])
        t = ((c - self.knots[i]) / (self.knots[i + 1] - self.knots[i]))[:, None]
        rgb = (1 - t) * self.colours[i] + t * self.colours[i + 1]  # (B, 3) in [0, 1]
        side = z.shape[-1] * 2
        return (rgb * 2 - 1)[:, :, None, None].expand(-1, -1, side, side) + 0 * z.mean()


def test_scan_finds_the_far_minimum_that_gradient_descent_misses():
    dec = _RampDecoder()
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    true = torch.tensor([[3.6, 0.0], [-1.8, 0.0], [3.6, 0.0]])  # blue, yellow, blue
    z = torch.zeros(6, 4, 8, 8)
    x = dec(z, true[groups])
    # group 0 near red (the wrong minimum); group 1 right; group 2 on the slope down to blue, no barrier
    # on the way (gradient descent gets there by itself)
    start = np.array([[-3.2, 0.0], [-1.7, 0.0], [0.5, 0.0]])
    descended = invert_captions(dec, z, x, groups, start, steps=150, lr=0.05, foreground_weight=0.0)
    assert descended[0, 0] < -3.0 and descended[2, 0] > 1.5  # Adam stays at the red end, slides to blue
    scanned, moves = scan_captions(dec, z, x, groups, start, [0], foreground_weight=0.0, crop=0)
    assert [(m.group, m.trait) for m in moves] == [(0, 0)]  # only the stuck one, only its first value
    assert abs(scanned[0, 0] - 3.6) < 0.3 and moves[0].loss_after < 0.1 * moves[0].loss_before
    np.testing.assert_allclose(scanned[1:], start[1:])  # in its minimum, or on its slope: left to descent
    np.testing.assert_allclose(scanned[0, 1], 0.0)  # values not scanned stay
    noisy = x + 2.0 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))  # a loss floor
    _, found = scan_captions(dec, z, noisy, groups, start, [0], foreground_weight=0.0, crop=0)
    gain = 1 - found[0].loss_after / found[0].loss_before
    assert 0.05 < gain < 0.9, gain
    _, none = scan_captions(
        dec, z, noisy, groups, start, [0], foreground_weight=0.0, crop=0, margin=gain + 0.01
    )
    assert none == []  # the margin: a jump must lower the loss by that fraction
    _, again = scan_captions(dec, z, x, groups, scanned, [0], foreground_weight=0.0, crop=0)
    assert again == []  # scanning its own result moves nothing


def test_scan_rejects_mismatched_inputs(painted):
    dec, z, x, groups, _ = painted
    with pytest.raises(ValueError, match="traits"):
        scan_captions(dec, z, x, groups, np.zeros((2, 3)), [3])
    with pytest.raises(ValueError, match="groups"):
        scan_captions(dec, z, x, groups + 5, np.zeros((2, 3)), [0])

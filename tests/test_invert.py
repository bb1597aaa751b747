"""Caption inversion: fitting a caption to images through a frozen caption decoder recovers the caption that
painted them, deterministically, without touching the decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phenogen.diffusion.caption_decoder import CaptionDecoder
from phenogen.diffusion.components import build_vae
from phenogen.diffusion.invert import invert_captions

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

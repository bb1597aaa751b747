"""FID and KID in the trait probe's feature space (torchmetrics with a custom feature extractor).

Inception features know nothing about 64-pixel cartoon birds; the probe's penultimate layer
(:meth:`~phenogen.evaluate.probe.TraitProbe.features`, ``probe_features`` wide) is trained to see
exactly the traits that matter here. With the small samples of a demo (tens of images per split)
FID is biased upwards and noisy: compare rows of the same table (same image counts), not across
runs of different sizes. KID is unbiased; its subset size is lowered to the smaller sample when needed.

>>> import torch
>>> from phenogen.evaluate.probe import ProbeSpec, TraitProbe
>>> probe = TraitProbe(ProbeSpec(["a"], [], [0.0], [1.0], image_size=16, width=8, features=8))
>>> real = torch.randint(0, 255, (12, 3, 16, 16), dtype=torch.uint8)
>>> sorted(fid_kid(probe, real, real.clone(), kid_subset_size=6, kid_subsets=5))
['fid', 'kid_mean', 'kid_std']
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from phenogen.evaluate.probe import TraitProbe

__all__ = ["probe_features", "fid_kid_features", "fid_kid"]


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics consume features computed once, up front."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()  # (B, F)


@torch.no_grad()
def probe_features(probe: TraitProbe, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, 3, H, W) → probe features (N, F), float64."""
    probe.eval()
    chunks = [
        probe.features(images[i : i + batch_size]).double() for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, probe.spec.features, dtype=torch.float64)


@torch.no_grad()
def fid_kid_features(
    real: torch.Tensor, fake: torch.Tensor, *, kid_subset_size: int = 50, kid_subsets: int = 50, seed: int = 0
) -> dict[str, float | None]:
    """FID and KID (mean, std) between two feature sets (N, F); ``None`` below 2 samples each."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if real.shape[0] < 2 or fake.shape[0] < 2:
        return {"fid": None, "kid_mean": None, "kid_std": None}
    feats = _Precomputed(real.shape[1])
    fid = FrechetInceptionDistance(feature=feats, reset_real_features=True)
    subset = min(kid_subset_size, real.shape[0], fake.shape[0])
    with warnings.catch_warnings():  # "KID will save all extracted features": a few hundred here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=feats, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    with torch.random.fork_rng():  # KID draws its subsets from the global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"fid": max(0.0, float(fid.compute())), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


def fid_kid(
    probe: TraitProbe,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    kid_subset_size: int = 50,
    kid_subsets: int = 50,
    seed: int = 0,
) -> dict[str, float | None]:
    """FID and KID (mean, std) between two uint8 image sets (N, 3, H, W) in probe feature space."""
    return fid_kid_features(
        probe_features(probe, real),
        probe_features(probe, fake),
        kid_subset_size=kid_subset_size,
        kid_subsets=kid_subsets,
        seed=seed,
    )

"""Caption inversion (analysis by synthesis): the caption that makes the frozen image model paint a species' photos.

Why: held-out, extinct and ancestral species are painted from the Brownian-motion conditional mean, on the
tree, of the training species' captions (:mod:`phenogen.phylo.portraits`). The captions the training
species' *barcodes write* (one linear k-mer map for all of them) are off their traits (BENCHMARKS.md: caption
RMSE ~0.84 on the training species themselves), and that error is carried to every target read through
them. The training species also have photos. :func:`invert_captions` fits one caption per species to its
photos through the frozen :class:`~phenogen.diffusion.caption_decoder.CaptionDecoder` (the VAE decoder +
FiLM on the caption, trained on the prior's random renders only): it minimises the decoder's
reconstruction loss of each photo from the photo's own VAE latent, over the species' caption, by Adam from
a starting caption (what the barcode writes), with an optional pull towards it. The latent holds the
bird's layout and lightness, so what the caption must supply is what the latent lost — hue above all.

:func:`scan_captions` searches instead of descending: a hue is a position on a colour ramp, so the decoder's
loss over it has several minima, and a caption that gradient descent (the decoder loss of ``train-image``)
carried into the wrong one stays there (BENCHMARKS.md: a slate-blue species written ochre behind a
barrier). The scan evaluates the loss along each named value's whole range and reports the jumps to a
clearly lower minimum; ``train-image`` then pulls the written caption over the barrier
(``image.caption_scan_at``).

No true trait is read here: only photos, their latents and the frozen decoder.

>>> from phenogen.diffusion.components import build_vae
>>> vae = build_vae("tiny")
>>> dec = CaptionDecoder.from_vae(vae, n_traits=3)
>>> z, x = torch.randn(4, vae.config.latent_channels, 8, 8), torch.rand(4, 3, 16, 16) * 2 - 1
>>> invert_captions(dec, z, x, torch.tensor([0, 0, 1, 1]), torch.zeros(2, 3), steps=3).shape
(2, 3)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch

from phenogen.diffusion.caption_decoder import CaptionDecoder, caption_decoder_loss, latent_window

__all__ = ["SCAN_GRID", "CaptionMove", "invert_captions", "invert_species_captions", "scan_captions"]

log = logging.getLogger(__name__)


def invert_captions(
    decoder: CaptionDecoder,
    latents: torch.Tensor,
    images: torch.Tensor,
    groups: torch.Tensor,
    init: torch.Tensor | np.ndarray,
    *,
    steps: int = 200,
    lr: float = 0.05,
    prior_weight: float = 0.0,
    per_group: int = 4,
    crop: int = 0,
    foreground_weight: float = 10.0,
    seed: int = 0,
) -> np.ndarray:
    """One caption per group (species) fitted to its images through the frozen ``decoder``; ``(G, n)`` float64.

    ``latents (N, C, h, w)`` are the images' raw VAE latents (posterior means), ``images (N, 3, H, W)``
    uint8 or floats in [-1, 1], ``groups (N,)`` each image's group in ``0 … G-1`` and ``init (G, n)`` the
    starting captions. Each Adam step decodes ``per_group`` images of every group (drawn with a seeded
    generator, so every caption gets a gradient every step) and minimises
    :func:`~phenogen.diffusion.caption_decoder.caption_decoder_loss` + ``prior_weight · mean((c − init)²)``;
    ``crop > 0`` decodes one random ``crop``-pixel window per step (the decoder is convolutional and its
    FiLM global, so a window still reads the whole caption), ~(H / crop)² times cheaper a step.
    Captions only move where the decoder reads them; values it ignores stay at ``init``.
    """
    from phenogen.diffusion.vae import to_model_range

    init_t = torch.as_tensor(np.asarray(init, dtype=np.float32))
    groups = torch.as_tensor(groups, dtype=torch.long)
    n_groups = init_t.shape[0]
    if len(latents) != len(images) or len(images) != len(groups):
        raise ValueError(f"{len(latents)} latents, {len(images)} images and {len(groups)} groups differ")
    if len(groups) and (int(groups.min()) < 0 or int(groups.max()) >= n_groups):
        raise ValueError(f"groups must lie in 0 … {n_groups - 1}")
    x_all = to_model_range(images) if images.dtype == torch.uint8 else images.float()
    members = [torch.nonzero(groups == g).flatten() for g in range(n_groups)]
    caption = init_t.clone().requires_grad_(True)
    if steps <= 0 or not len(groups):
        return caption.detach().double().numpy()
    was_training = decoder.training
    decoder.eval()
    params = list(decoder.parameters())
    frozen = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    opt = torch.optim.Adam([caption], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    try:
        for _ in range(steps):
            picks = [
                m[torch.randint(0, len(m), (min(per_group, len(m)),), generator=gen)]
                for m in members
                if len(m)
            ]
            idx = torch.cat(picks)
            z, x = latent_window(latents[idx].float(), x_all[idx], crop, gen)
            loss = caption_decoder_loss(
                decoder, z, caption[groups[idx]], x, foreground_weight=foreground_weight
            )
            if prior_weight > 0:
                loss = loss + prior_weight * (caption - init_t).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p, flag in zip(params, frozen, strict=True):
            p.requires_grad_(flag)
        decoder.train(was_training)
    log.info("inverted %d captions in %.1f s (%d steps)", n_groups, time.perf_counter() - start, steps)
    return caption.detach().double().numpy()


SCAN_GRID = tuple(float(v) for v in np.linspace(-3.6, 3.6, 9))  # +-3 sd of the prior's N(0, 1.2^2) captions


@dataclass(frozen=True)
class CaptionMove:
    """One jump :func:`scan_captions` found: group ``group``'s value ``trait`` from ``before`` to ``after``,
    the decoder's loss on the group's images from ``loss_before`` to ``loss_after``."""

    group: int
    trait: int
    before: float
    after: float
    loss_before: float
    loss_after: float


def _image_losses(decoder, z: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None, captions: torch.Tensor,
                  edge_weight: float = 0.5) -> torch.Tensor:  # fmt: skip
    """:func:`~phenogen.diffusion.caption_decoder.caption_decoder_loss` of the images ``(P, ...)`` under each
    caption of ``captions (K, n)``, averaged over the images: ``(K,)``."""
    k, p = len(captions), len(z)
    recon = decoder(z.repeat(k, 1, 1, 1), captions.repeat_interleave(p, 0)).float()
    xx = x.repeat(k, 1, 1, 1)
    err = recon - xx
    ww = w.repeat(k, 1, 1, 1) if w is not None else 1.0
    per = (ww * err.abs()).flatten(1).mean(1) + (ww * err**2).flatten(1).mean(1)
    dx = (err[..., :, 1:] - err[..., :, :-1]).abs().flatten(1).mean(1)
    dy = (err[..., 1:, :] - err[..., :-1, :]).abs().flatten(1).mean(1)
    return (per + edge_weight * (dx + dy)).view(k, p).mean(1)


def _behind_barrier(
    start: float, start_loss: float, end: float, grid: torch.Tensor, losses: torch.Tensor
) -> bool:
    """Whether the loss rises somewhere on the way from ``start`` to ``end`` (read at the grid points between
    them): ``end`` lies in another minimum. Where it only falls, gradient descent gets there by itself."""
    between = [
        (float(v), float(lo))
        for v, lo in zip(grid, losses, strict=True)
        if min(start, end) < v < max(start, end)
    ]
    path = [start_loss] + [lo for _, lo in sorted(between, reverse=end < start)]
    return any(b > a for a, b in pairwise(path))


@torch.no_grad()
def scan_captions(
    decoder: CaptionDecoder,
    latents: torch.Tensor,
    images: torch.Tensor,
    groups: torch.Tensor,
    start: torch.Tensor | np.ndarray,
    traits: list[int],
    *,
    grid: tuple[float, ...] = SCAN_GRID,
    margin: float = 0.05,
    crop: int = 32,
    foreground_weight: float = 10.0,
    progress: bool = False,
) -> tuple[np.ndarray, list[CaptionMove]]:
    """Coordinate-wise grid search of each group's caption over the values ``traits`` (indices), from ``start``.

    ``latents (N, C, h, w)`` are the images' raw VAE latents, ``images (N, 3, H, W)`` uint8 or floats in
    [-1, 1], ``groups (N,)`` each image's group in ``0 … G-1``, ``start (G, n)``. For each group, value by
    value: the decoder's loss on the group's images (the central ``crop``-pixel window, deterministic; 0 =
    whole images) is evaluated at every ``grid`` point and then at 5 points around the best one (a quarter
    grid step apart); the value jumps there when that lowers the loss by more than ``margin`` (relative)
    and the loss rises somewhere on the way (at a grid point between the two) — a move to another minimum,
    not a slide down the same slope, which gradient descent makes by itself. Returns the scanned captions
    ``(G, n)`` float64 and the moves made.
    """
    from tqdm.auto import tqdm

    from phenogen.diffusion.vae import foreground_weights, to_model_range

    dev = next(iter(decoder.parameters()), latents).device  # the decoder's device (else the latents')
    caps = torch.as_tensor(np.asarray(start, dtype=np.float32)).clone().to(dev)
    groups = torch.as_tensor(groups, dtype=torch.long).cpu()
    if len(latents) != len(images) or len(images) != len(groups):
        raise ValueError(f"{len(latents)} latents, {len(images)} images and {len(groups)} groups differ")
    if len(groups) and (int(groups.min()) < 0 or int(groups.max()) >= len(caps)):
        raise ValueError(f"groups must lie in 0 … {len(caps) - 1}")
    if any(not 0 <= j < caps.shape[1] for j in traits):
        raise ValueError(f"traits must lie in 0 … {caps.shape[1] - 1}, got {traits}")
    x_all = (to_model_range(images) if images.dtype == torch.uint8 else images.float()).to(dev)
    latents = latents.to(dev)
    if 0 < crop < x_all.shape[-1]:  # the central window, aligned to the latent grid
        scale = x_all.shape[-1] // latents.shape[-1]
        side = max(1, crop // scale)
        a = (latents.shape[-1] - side) // 2
        latents = latents[..., a : a + side, a : a + side]
        x_all = x_all[..., a * scale : (a + side) * scale, a * scale : (a + side) * scale]
    values = torch.tensor(grid, dtype=torch.float32, device=dev)
    step = float(values[1] - values[0]) if len(values) > 1 else 1.0
    fine = torch.linspace(-step / 2, step / 2, 5, device=dev)
    was_training = decoder.training
    decoder.eval()
    moves: list[CaptionMove] = []
    start_t = time.perf_counter()
    try:
        for g in tqdm(range(len(caps)), desc="caption scan", disable=not progress, leave=False):
            members = torch.nonzero(groups == g).flatten()
            if not len(members) or not traits:
                continue
            z, x = latents[members].float(), x_all[members]
            w = foreground_weights(x, foreground_weight) if foreground_weight > 0 else None
            c = caps[g]
            current = float(_image_losses(decoder, z, x, w, c[None])[0])
            for j in traits:
                cands = c[None].repeat(len(values), 1)
                cands[:, j] = values
                coarse = _image_losses(decoder, z, x, w, cands)
                best = values[int(coarse.argmin())]
                if not (float(coarse.min()) < current and _behind_barrier(float(c[j]), current, float(best), values,
                                                                          coarse)):  # fmt: skip
                    continue  # no lower minimum elsewhere on the grid: nothing to refine
                cands = c[None].repeat(len(fine), 1)
                cands[:, j] = (best + fine).clamp(values[0], values[-1])  # within the grid's range
                losses = _image_losses(decoder, z, x, w, cands)
                k = int(losses.argmin())
                value, loss = float(cands[k, j]), float(losses[k])
                if loss < current * (1.0 - margin) and _behind_barrier(
                    float(c[j]), current, value, values, coarse
                ):
                    moves.append(CaptionMove(g, j, float(c[j]), value, current, loss))
                    c[j], current = value, loss
    finally:
        decoder.train(was_training)
    log.info("scanned %d captions over %d values in %.1f s: %d moves", len(caps), len(traits),
             time.perf_counter() - start_t, len(moves))  # fmt: skip
    return caps.double().cpu().numpy(), moves


def invert_species_captions(
    pipeline_dir: str | Path,
    dataset_dir: str | Path,
    init: Mapping[str, np.ndarray] | None = None,
    *,
    split: str = "train",
    steps: int = 200,
    lr: float = 0.05,
    prior_weight: float = 0.0,
    per_group: int = 4,
    crop: int = 0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``species -> caption`` for every species of ``split`` with photos, inverted through a trained pipeline's
    VAE encoder and caption decoder (:func:`invert_captions`).

    ``init`` gives each species' starting caption (e.g. what its tip barcode writes); species missing from
    it, or ``init = None``, start from the mean caption their individuals' barcodes write.

    Raises
    ------
    CheckpointError
        The pipeline has no caption decoder or no caption head.
    """
    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.diffusion.vae import encode_latent_dist, load_images
    from phenogen.errors import CheckpointError

    pipe = load_pipeline(Path(pipeline_dir))
    cond, decoder = pipe.conditioner, pipe.caption_decoder
    if decoder is None or cond.config.head != "caption":
        raise CheckpointError(
            f"{pipeline_dir}: caption inversion needs the caption head and a caption decoder"
        )
    ds = load_dataset(dataset_dir)
    species: list[str] = []
    paths: list[Path] = []
    groups: list[int] = []
    seqs: dict[str, list[str]] = {}
    for rec in ds.records(split):
        if not rec.images:
            continue
        if rec.species not in seqs:
            seqs[rec.species] = []
            species.append(rec.species)
        seqs[rec.species].append(rec.sequence)
        for rel in rec.images:
            paths.append(ds.image_path(rel))
            groups.append(species.index(rec.species))
    if not species:
        return {}
    from phenogen.diffusion.components import vae_scale

    side = int(pipe.unet.config.sample_size) * vae_scale(pipe.vae)
    images = load_images(paths, side)
    with torch.no_grad():
        latents, _ = encode_latent_dist(pipe.vae.float(), images)
    start = np.stack([
        np.asarray(init[s], dtype=np.float64) if init is not None and s in init
        else cond.caption_matrix(seqs[s]).mean(0)
        for s in species
    ])  # fmt: skip
    fitted = invert_captions(decoder.float(), latents, images, torch.tensor(groups), start, steps=steps, lr=lr,
                             prior_weight=prior_weight, per_group=per_group, crop=crop, seed=seed)  # fmt: skip
    return dict(zip(species, fitted, strict=True))

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
from pathlib import Path

import numpy as np
import torch

from phenogen.diffusion.caption_decoder import CaptionDecoder, caption_decoder_loss, latent_window

__all__ = ["invert_captions", "invert_species_captions"]

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

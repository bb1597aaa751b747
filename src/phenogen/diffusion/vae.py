"""The image side of latent diffusion: load images, train the small VAE, scale and cache latents.

The small ``AutoencoderKL`` of the ``tiny``/``cpu``/``gpu`` presets is trained on the training split's
images with an L1 + L2 reconstruction loss, a light edge term (L1 between image gradients, which keeps
beaks and legs sharp without a perceptual network) and a small KL term. Afterwards the latent
statistics set ``shift_factor`` (mean) and ``scaling_factor`` (1 / std) so that the diffusion model sees
latents of unit variance, as Stable Diffusion's 0.18215 does for its VAE — or, with
``per_channel=True``, ``latents_mean`` / ``latents_std`` per latent channel (diffusers' SDXL-VAE
convention, EDM2's normalisation of SD latents): every channel gets mean 0 and std 1. That matters
when channels differ in spread (the ``cpu2x`` VAE's 8 channels span 5x): with one global scale the
low-spread channels — where the latent colour loss puts colour — are drowned by the noise first and
the UNet's errors there decode as coloured speckle.

Latent caching: :func:`encode_latent_dist` runs the encoder once and keeps the posterior's mean and
std; the training loop samples ``mean + std * noise`` from them every step, which is exactly what
encoding every step would draw, at a fraction of the cost.

>>> import torch
>>> from phenogen.diffusion.components import build_vae
>>> vae = build_vae("tiny")
>>> images = torch.rand(4, 3, 16, 16) * 2 - 1
>>> losses = train_vae(vae, images, steps=2, batch_size=2)
>>> len(losses)
2
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from phenogen.errors import DataError

__all__ = [
    "load_images",
    "to_model_range",
    "vae_loss",
    "train_vae",
    "finetune_decoder",
    "encode_latent_dist",
    "fit_latent_scaling",
    "scale_latents",
]

log = logging.getLogger(__name__)


def load_images(paths: Sequence[str | Path], resolution: int) -> torch.Tensor:
    """Images as one ``(N, 3, R, R)`` uint8 tensor (RGB, Lanczos-resized to ``R`` px square).

    A photo that is not square is scaled so that its shorter side is ``R`` and centre-cropped to ``R x R``
    (Stable Diffusion's fine-tuning recipe; the subject of a specimen photo sits in the middle), never
    stretched. A path may name a zip member, ``ARCHIVE.zip!/MEMBER``
    (:func:`~phenogen.data.archive.open_image`: an archive-backed dataset's ``str(ds.image_path(rel))``).
    """
    from PIL import Image

    from phenogen.data.archive import open_image

    out = np.zeros((len(paths), resolution, resolution, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with open_image(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                if w != h:  # centre square of the photo
                    side = min(w, h)
                    left, top = (w - side) // 2, (h - side) // 2
                    im = im.crop((left, top, left + side, top + side))
                if im.size != (resolution, resolution):
                    im = im.resize((resolution, resolution), Image.Resampling.LANCZOS)
                out[i] = np.asarray(im)
        except DataError:  # a missing archive or member: the message names both
            raise
        except Exception as exc:  # noqa: BLE001 - PIL plugins raise OSError, ValueError, SyntaxError, struct.error ...
            raise DataError(f"{path}: cannot read the image ({exc})") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` → float ``[-1, 1]``."""
    return images.float() / 127.5 - 1.0


def _grad_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def foreground_weights(x: torch.Tensor, weight: float, threshold: float = 0.15) -> torch.Tensor:
    """Per-pixel loss weights ``(B, 1, H, W)``, mean 1: ``1 + weight`` where a pixel differs from its image's
    median colour (the background, in photos and renders alike) by more than ``threshold`` (on [-1, 1]).

    A small subject on a plain background is a few percent of the pixels, so an unweighted
    reconstruction loss is satisfied by a sharp background and a bird of the average colour: measured on
    the bird renders, plumage hue was lost entirely (the trait probe read it no better than the mean).
    """
    background = x.flatten(2).median(dim=-1).values[..., None, None]  # (B, 3, 1, 1)
    fg = ((x - background).norm(dim=1, keepdim=True) > threshold).float()
    w = 1.0 + weight * fg
    return w / w.mean()


def _pixel_losses(
    recon: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, L2) of a reconstruction, per pixel weighted by ``w (B, 1, H, W)`` when given."""
    err = recon - x
    if w is None:
        return err.abs().mean(), (err**2).mean()
    return (w * err.abs()).mean(), (w * err**2).mean()


def vae_loss(
    vae: AutoencoderKL,
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    kl_weight: float = 1e-6,
    edge_weight: float = 0.5,
    foreground_weight: float = 0.0,
    colour_weight: float = 0.0,
    colour_head: torch.nn.Module | None = None,
    colour_from: int = 0,
    anchor_mean: torch.Tensor | None = None,
    anchor_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch ``x (B, 3, H, W)`` in [-1, 1]: L1 + L2 + edge + colour + KL; returns (loss, parts).

    ``foreground_weight`` > 0 weights L1 and L2 towards the subject (:func:`foreground_weights`).
    ``colour_weight`` > 0 adds :func:`latent_colour_loss` through ``colour_head`` (same weighting), read
    from latent channels ``colour_from`` on. ``anchor_mean (B, C', h, w)`` holds the posterior means of
    the first ``C'`` channels in place (MSE relative to the anchor's variance, times ``anchor_weight``)."""
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator=generator)  # (B, C, h, w)
    recon = vae.decode(z).sample
    w = foreground_weights(x, foreground_weight) if foreground_weight > 0 else None
    l1, l2 = _pixel_losses(recon, x, w)
    edge = _grad_l1(recon, x)
    kl = posterior.kl().mean() / x[0].numel()
    loss = l1 + l2 + edge_weight * edge + kl_weight * kl
    parts = {"l1": l1.item(), "l2": l2.item(), "edge": edge.item(), "kl": kl.item()}
    if colour_weight > 0:
        if colour_head is None:
            raise ValueError("colour_weight > 0 needs a colour_head (a 1x1 conv, latent channels -> 3)")
        colour = latent_colour_loss(posterior.mean[:, colour_from:], x, colour_head, w)
        loss = loss + colour_weight * colour
        parts["colour"] = colour.item()
    if anchor_mean is not None:
        held = posterior.mean[:, : anchor_mean.shape[1]]
        anchor = ((held - anchor_mean) ** 2).mean() / anchor_mean.var().clamp_min(1e-6)
        loss = loss + anchor_weight * anchor
        parts["anchor"] = anchor.item()
    return loss, parts


def latent_colour_loss(
    z: torch.Tensor, x: torch.Tensor, head: torch.nn.Module, w: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 between a linear read-out of the latents ``head(z)`` and the mean colour of each latent cell.

    Pixel losses with an edge term are met first by sharp luminance; chroma comes much later (measured:
    VAEs trained for minutes on many birds paint every bird in the average brown, while the same VAE
    keeps colour when it can memorise 8 images). Asking the latents to hold each cell's colour linearly
    from the first step hands the decoder the colour to use. ``head`` is a 1x1 convolution
    (latent channels → 3) trained with the VAE and then thrown away.
    """
    scale = x.shape[-1] // z.shape[-1]
    pool = torch.nn.functional.avg_pool2d
    err = (head(z) - pool(x, scale)).abs()
    if w is None:
        return err.mean()
    return (pool(w, scale) * err).mean()


def train_vae(
    vae: AutoencoderKL,
    images: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    max_seconds: float = 0.0,
    hflip: bool = False,
    crop: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    foreground_weight: float = 0.0,
    colour_weight: float = 0.0,
    anchor: AutoencoderKL | None = None,
    anchor_weight: float = 1.0,
) -> list[float]:
    """Train ``vae`` in place on ``images`` (uint8 ``(N, 3, H, W)`` or float in [-1, 1]).

    ``anchor`` (a frozen VAE with fewer latent channels, e.g. the one :func:`~phenogen.diffusion.
    components.widen_vae` widened) keeps ``vae``'s first channels where the anchor's encoder puts them,
    so a UNet trained on the anchor's latents stays valid on them; the latent colour loss is then read
    from the new channels only, which is where the colour has to go.

    AdamW with a short warmup and cosine decay; stops early when ``max_seconds`` (> 0) is spent.
    With ``max_seconds``, the number of steps is re-fitted every 10 steps to the time left (so the
    learning rate still decays to zero). ``crop > 0`` trains on one random ``crop x crop`` window per batch (a fully convolutional VAE
    then works on whole images; 4x cheaper per step at half the side). Returns the loss of every step.
    """
    if steps == 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    vae.to(device).train()
    head = None
    params = list(vae.parameters())
    colour_from = 0 if anchor is None else anchor.config.latent_channels
    if anchor is not None:
        if anchor.config.latent_channels >= vae.config.latent_channels:
            raise ValueError("an anchor VAE must have fewer latent channels than the VAE it anchors")
        anchor.to(device).eval().requires_grad_(False)
    if colour_weight > 0:  # the latent colour read-out (latent_colour_loss), trained alongside, not kept
        head = torch.nn.Conv2d(vae.config.latent_channels - colour_from, 3, 1).to(device)
        params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    plan = {"steps": steps}  # a time budget shortens it, so the cosine still ends at zero

    def lr_factor(s: int) -> float:
        warmup = max(1, plan["steps"] // 20)
        return min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / plan["steps"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    n = len(images)
    losses: list[float] = []
    start = time.perf_counter()
    perm, pos = torch.randperm(n, generator=gen), 0
    bar = tqdm(range(steps), desc="vae", disable=not progress, leave=False)
    for step in bar:
        if step >= plan["steps"]:
            break
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        x = images[idx]
        x = to_model_range(x) if x.dtype == torch.uint8 else x.float()
        if hflip:
            flip = torch.rand(len(x), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if 0 < crop < min(x.shape[-2:]):
            i, j = (int(v) for v in torch.randint(0, min(x.shape[-2:]) - crop + 1, (2,), generator=gen))
            x = x[..., i : i + crop, j : j + crop]
        x = x.to(device)
        anchor_mean = None
        if anchor is not None:
            with torch.no_grad():
                anchor_mean = anchor.encode(x).latent_dist.mean
        loss, parts = vae_loss(
            vae,
            x,
            noise_gen,
            kl_weight,
            foreground_weight=foreground_weight,
            colour_weight=colour_weight,
            colour_head=head,
            colour_from=colour_from,
            anchor_mean=anchor_mean,
            anchor_weight=anchor_weight,
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.4f}")
        elapsed = time.perf_counter() - start
        if max_seconds and step >= 10 and step % 10 == 0:
            plan["steps"] = min(steps, max(step + 2, int(max_seconds / (elapsed / (step + 1)))))
            bar.total = plan["steps"]
        if max_seconds and elapsed > max_seconds:
            log.warning(
                "VAE training stopped at step %d of %d: time budget of %.0f s spent",
                step + 1,
                steps,
                max_seconds,
            )
            break
    vae.eval()
    return losses


def finetune_decoder(
    vae: AutoencoderKL,
    images: torch.Tensor,
    max_seconds: float,
    steps: int = 100_000,
    batch_size: int = 16,
    lr: float = 1e-3,
    crop: int = 32,
    seed: int = 0,
    progress: bool = False,
    foreground_weight: float = 0.0,
) -> list[float]:
    """Train only the decoder (and ``post_quant_conv``) with the encoder frozen; returns the losses.

    The latent space does not move, so a diffusion model trained on it stays valid — Stable Diffusion's
    ft-MSE decoder was made this way. Posterior means are computed once; each step decodes a random
    ``crop``-pixel window (the decoder is fully convolutional) of a batch. ``foreground_weight`` > 0
    weights the subject's pixels up (:func:`foreground_weights`, computed on the whole image).
    """
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    mean, _ = encode_latent_dist(vae, images)  # (N, C, h, w)
    target = to_model_range(images) if images.dtype == torch.uint8 else images.float()
    weights = (
        torch.cat(
            [foreground_weights(target[i : i + 256], foreground_weight) for i in range(0, len(target), 256)]
        )
        if foreground_weight > 0
        else None
    )
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    vae.decoder.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    plan = {"steps": steps}
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / plan["steps"])))
    )
    gen = torch.Generator().manual_seed(seed)
    side = mean.shape[-1]
    lc = min(side, max(1, crop // scale))
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="vae decoder", disable=not progress, leave=False)
    for step in range(steps):
        if step >= plan["steps"]:
            break
        idx = torch.randint(0, len(mean), (batch_size,), generator=gen)
        i, j = (int(v) for v in torch.randint(0, side - lc + 1, (2,), generator=gen))
        z = mean[idx, :, i : i + lc, j : j + lc]
        x = target[idx, :, i * scale : (i + lc) * scale, j * scale : (j + lc) * scale]
        recon = vae.decode(z).sample
        w = (
            None
            if weights is None
            else weights[idx, :, i * scale : (i + lc) * scale, j * scale : (j + lc) * scale]
        )
        l1, l2 = _pixel_losses(recon, x, w)
        loss = l1 + l2 + 0.5 * _grad_l1(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.update(1)
        elapsed = time.perf_counter() - start
        if step >= 10 and step % 10 == 0:
            plan["steps"] = min(steps, max(step + 2, int(max_seconds / (elapsed / (step + 1)))))
            bar.total = plan["steps"]
        if elapsed > max_seconds:
            break
    bar.close()
    vae.requires_grad_(False)
    vae.eval()
    return losses


@torch.no_grad()
def encode_latent_dist(
    vae: AutoencoderKL,
    images: torch.Tensor,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, std)`` of every image, each ``(N, C, h, w)`` float32 on CPU (unscaled).

    ``batch_size`` unset: 64 images up to 128 px, fewer for larger ones (the same pixels per batch, at
    least 4: a Stable Diffusion VAE at 512 px holds ~1 GB of activations per image in float32).
    """
    if batch_size is None:
        side = int(images.shape[-1]) if images.ndim == 4 else 128
        batch_size = max(4, min(64, 64 * 128 * 128 // max(1, side * side)))
    vae.eval()
    means, stds = [], []
    for a in range(0, len(images), batch_size):
        x = images[a : a + batch_size]
        x = to_model_range(x) if x.dtype == torch.uint8 else x.float()
        dist = vae.encode(x.to(device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
    return torch.cat(means), torch.cat(stds)


def fit_latent_scaling(
    vae: AutoencoderKL,
    mean: torch.Tensor,
    std: torch.Tensor,
    per_channel: bool = False,
    keep: AutoencoderKL | None = None,
) -> tuple[float, float]:
    """Set the VAE's latent normalisation so that latent samples have mean 0, std 1.

    Global (default): ``shift_factor`` and ``scaling_factor``; returns ``(shift, scale)``. Per channel:
    ``latents_mean`` / ``latents_std`` (one value per channel) with ``shift_factor = 0`` and
    ``scaling_factor = 1``; returns ``(0.0, 1.0)``. Stored in ``vae.config`` (saved with the pipeline).
    ``keep`` (per channel only): a VAE with fewer channels whose normalisation the first channels keep
    exactly (a widened VAE's old channels, so the UNet trained on them sees the same numbers).
    """
    gen = torch.Generator().manual_seed(0)
    z = mean + std * torch.randn(mean.shape, generator=gen)
    if keep is not None and not per_channel:
        raise ValueError("keep= needs per_channel=True")
    if per_channel:
        dims = [d for d in range(z.ndim) if d != 1]
        c_mean = z.mean(dims).tolist()
        c_std = z.std(dim=dims).clamp_min(1e-6).tolist()
        if keep is not None:
            k = keep.config.latent_channels
            k_mean, k_std = _latent_stats(keep, z[:1, :k])
            k_std = torch.as_tensor(k_std, dtype=z.dtype) / keep.config.scaling_factor
            c_mean[:k] = torch.as_tensor(k_mean, dtype=z.dtype).expand(1, k, 1, 1).flatten().tolist()
            c_std[:k] = k_std.expand(1, k, 1, 1).flatten().tolist()
        vae.register_to_config(shift_factor=0.0, scaling_factor=1.0, latents_mean=c_mean, latents_std=c_std)
        return 0.0, 1.0
    shift = float(z.mean())
    scale = float(1.0 / z.std().clamp_min(1e-6))
    vae.register_to_config(shift_factor=shift, scaling_factor=scale, latents_mean=None, latents_std=None)
    return shift, scale


def _latent_stats(vae: AutoencoderKL, z: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """``(mean, std)`` that normalise the latents: per channel (``latents_mean`` / ``latents_std``,
    shaped to broadcast over ``z``) or the global ``shift_factor`` with std 1."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return getattr(vae.config, "shift_factor", None) or 0.0, 1.0
    shape = (1, -1, 1, 1)
    return (torch.tensor(mean, dtype=z.dtype, device=z.device).view(shape),
            torch.tensor(std, dtype=z.dtype, device=z.device).view(shape))  # fmt: skip


def scale_latents(vae: AutoencoderKL, z: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents → the diffusion model's space: ``(z - mean) * scaling_factor / std``, with the
    global ``shift_factor`` (std 1) or the per-channel ``latents_mean`` / ``latents_std``."""
    mean, std = _latent_stats(vae, z)
    return (z - mean) * vae.config.scaling_factor / std


def unscale_latents(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    """The diffusion model's space → raw VAE latents (the inverse of :func:`scale_latents`)."""
    mean, std = _latent_stats(vae, x)
    return x * std / vae.config.scaling_factor + mean

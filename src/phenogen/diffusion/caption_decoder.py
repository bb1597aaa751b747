"""A VAE decoder that also reads the caption: latents carry the layout, the caption carries the colour.

Why: the shipped prior's 4× VAE (64 px → 16×16×4) draws every bird in the average olive-brown. Its
latents hold the bird's layout (pose, build, where the wing and head are) and its lightness, but hue is
lost on the way — measured: true renders encoded and decoded score held-out trait RMSE 0.825 against
0.627 for the renders themselves, and what is lost is hue. A new latent space would throw away the
UNet's ~90 CPU minutes of training; widening it (stop 15) left the UNet to learn colour channels it
could not learn in CPU minutes.

:class:`CaptionDecoder` keeps the latent space and the UNet exactly as they are and changes only the
decoder: the VAE's own decoder (its weights as the starting point) with FiLM modulation (Perez et al.
2018) after its input convolution, its middle block and each up block — ``h ← h · (1 + γ(c)) + β(c)``,
``c`` an embedding of the caption, γ and β zero-initialised so that at the start it decodes bit for bit
as the VAE does. It is trained (:func:`train_caption_decoder`) on renders of random birds (the prior's
data: no clade, tree or barcode) to reconstruct each render from its VAE latent *and its caption*, so
the colour a latent cannot hold comes from the description. At sampling time the pipeline hands it the
same caption the UNet was conditioned on (what the DNA writes, or a caption given directly), so the
portrait is painted in the colours it was told. Heads without a caption (``tokens``) keep the plain VAE
decoder.

Saved like every diffusers model (``save_pretrained`` → ``config.json`` + safetensors) in a prior's or
pipeline's ``caption_decoder/`` folder; ``CaptionDecoder.from_pretrained(dir)`` reads it back.

>>> from phenogen.diffusion.components import build_vae
>>> vae = build_vae("tiny")
>>> dec = CaptionDecoder.from_vae(vae, n_traits=3)
>>> z = torch.randn(2, vae.config.latent_channels, 4, 4)
>>> bool(torch.allclose(dec(z, torch.randn(2, 3)), vae.decode(z).sample, atol=1e-5))
True
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import Decoder
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "CaptionDecoder",
    "train_caption_decoder",
    "caption_decoder_loss",
    "latent_window",
    "unet_denoiser",
]

log = logging.getLogger(__name__)


class CaptionDecoder(ModelMixin, ConfigMixin):
    """``(z (B, C, h, w) raw VAE latents, caption (B, n_traits))`` → image ``(B, 3, H, W)`` in [-1, 1]."""

    @register_to_config
    def __init__(
        self,
        n_traits: int,
        traits: tuple[str, ...] = (),
        latent_channels: int = 4,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",) * 3,
        layers_per_block: int = 1,
        norm_num_groups: int = 16,
        act_fn: str = "silu",
        mid_block_add_attention: bool = False,
        use_post_quant_conv: bool = True,
        embed_dim: int = 128,
    ):
        super().__init__()
        if n_traits < 1:
            raise ValueError(f"n_traits must be >= 1, got {n_traits}")
        self.post_quant_conv = (
            nn.Conv2d(latent_channels, latent_channels, 1) if use_post_quant_conv else nn.Identity()
        )
        self.decoder = Decoder(
            in_channels=latent_channels,
            out_channels=out_channels,
            up_block_types=tuple(up_block_types),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
        )
        self.embed = nn.Sequential(
            nn.Linear(n_traits, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim), nn.SiLU()
        )
        top = block_out_channels[-1]
        widths = [top, top] + [block_out_channels[-1 - i] for i in range(len(up_block_types))]
        self.film = nn.ModuleList(nn.Linear(embed_dim, 2 * w) for w in widths)
        for lin in self.film:  # start as the plain decoder
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    @classmethod
    def from_vae(cls, vae: AutoencoderKL, n_traits: int, traits: tuple[str, ...] = (), embed_dim: int = 128):
        """A caption decoder that starts as ``vae``'s decoder exactly (its weights copied, FiLM at zero)."""
        c = vae.config
        dec = cls(
            n_traits=n_traits,
            traits=tuple(traits),
            latent_channels=c.latent_channels,
            out_channels=c.out_channels,
            block_out_channels=tuple(c.block_out_channels),
            up_block_types=tuple(c.up_block_types),
            layers_per_block=c.layers_per_block,
            norm_num_groups=c.norm_num_groups,
            act_fn=c.act_fn,
            mid_block_add_attention=getattr(c, "mid_block_add_attention", True),
            use_post_quant_conv=getattr(c, "use_post_quant_conv", True),
            embed_dim=embed_dim,
        )
        dec.decoder.load_state_dict(vae.decoder.state_dict())
        if isinstance(dec.post_quant_conv, nn.Conv2d):
            dec.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
        return dec.to(torch.float32)

    def _film(self, i: int, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film[i](e).to(h.dtype).chunk(2, dim=1)
        return h * (1 + gamma[..., None, None]) + beta[..., None, None]

    def forward(self, z: torch.Tensor, caption: torch.Tensor) -> torch.Tensor:
        if caption.ndim != 2 or caption.shape[1] != self.config.n_traits or caption.shape[0] != z.shape[0]:
            raise ValueError(
                f"expected a caption ({z.shape[0]}, {self.config.n_traits}), got {tuple(caption.shape)}"
            )
        d = self.decoder
        e = self.embed(caption.to(self.embed[0].weight.dtype))
        h = d.conv_in(self.post_quant_conv(z.to(d.conv_in.weight.dtype)))
        h = self._film(0, h, e)
        h = self._film(1, d.mid_block(h, None), e)
        for i, up in enumerate(d.up_blocks):
            h = self._film(2 + i, up(h, None), e)
        return d.conv_out(d.conv_act(d.conv_norm_out(h)))


def latent_window(
    z: torch.Tensor, x: torch.Tensor, crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random window of ``crop`` pixels of images ``x (B, 3, H, W)`` and the matching window of their
    latents ``z (B, C, h, w)`` (aligned to the latent grid); ``crop`` 0 or ≥ H leaves both whole."""
    if not 0 < crop < x.shape[-1]:
        return z, x
    scale = x.shape[-1] // z.shape[-1]
    side = max(1, crop // scale)
    i, j = (int(v) for v in torch.randint(0, z.shape[-1] - side + 1, (2,), generator=generator,
                                          device=generator.device))  # fmt: skip
    return z[..., i : i + side, j : j + side], x[
        ..., i * scale : (i + side) * scale, j * scale : (j + side) * scale
    ]


def caption_decoder_loss(
    decoder: CaptionDecoder,
    z: torch.Tensor,
    caption: torch.Tensor,
    x: torch.Tensor,
    foreground_weight: float = 10.0,
    edge_weight: float = 0.5,
) -> torch.Tensor:
    """L1 + L2 (weighted towards the subject) + edge loss of decoding ``z`` with ``caption`` against ``x``."""
    from phenogen.diffusion.vae import _grad_l1, _pixel_losses, foreground_weights

    recon = decoder(z, caption)
    w = foreground_weights(x, foreground_weight) if foreground_weight > 0 else None
    l1, l2 = _pixel_losses(recon, x, w)
    return l1 + l2 + edge_weight * _grad_l1(recon, x)


def train_caption_decoder(
    decoder: CaptionDecoder,
    latent_mean: torch.Tensor,
    latent_std: torch.Tensor,
    captions: torch.Tensor,
    images: torch.Tensor,
    steps: int,
    batch_size: int = 32,
    lr: float = 5e-4,
    max_seconds: float = 0.0,
    seed: int = 0,
    latent_noise: float = 0.1,
    caption_noise: float = 0.05,
    foreground_weight: float = 10.0,
    crop: int = 0,
    denoiser=None,
    denoised_fraction: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """Train ``decoder`` in place to reconstruct ``images`` (uint8 ``(N, 3, H, W)``) from their latents
    (posterior ``mean + std·ε``, unscaled) and ``captions (N, n_traits)``; returns the loss of every step.

    ``latent_noise`` adds Gaussian noise of that fraction of each latent channel's spread, so the decoder
    also paints the slightly-off latents a UNet samples rather than only the encoder's; ``caption_noise``
    jitters the caption values (a DNA-written caption is never exact). ``crop > 0`` trains on one random
    ``crop``-pixel window per batch (aligned to the latent grid; the decoder is fully convolutional and
    FiLM is global), as the VAE itself was trained. AdamW, warmup + cosine; with ``max_seconds`` the step
    count is refitted to the time left, so the schedule still ends at zero.

    ``denoiser(z, captions, generator) -> z'`` (optional, with ``denoised_fraction`` > 0): that fraction
    of each batch is decoded from ``z'`` instead — e.g. the UNet's one-step estimate of the clean latent
    from a noised copy (:func:`unet_denoiser`) — so the decoder learns to paint the soft latents a
    diffusion model actually samples, not only the encoder's sharp ones (the decoder-side fix Stable
    Diffusion's community VAEs and consistency decoders use).
    """
    from phenogen.diffusion.vae import to_model_range

    if steps <= 0:
        return []
    gen = torch.Generator().manual_seed(seed)
    decoder.train()
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    plan = {"steps": steps}

    def lr_factor(s: int) -> float:
        warmup = max(1, min(100, plan["steps"] // 20))
        return min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / plan["steps"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    spread = latent_mean.std(dim=(0, 2, 3), keepdim=True)
    captions = captions.float()
    n = len(images)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="caption decoder", disable=not progress, dynamic_ncols=True)
    step = 0
    while step < plan["steps"]:
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        z = latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=gen)
        if latent_noise > 0:
            z = z + latent_noise * spread * torch.randn(z.shape, generator=gen)
        c = captions[idx]
        if denoiser is not None and denoised_fraction > 0:
            m = int(round(denoised_fraction * len(z)))
            if m:
                with torch.no_grad():
                    z = torch.cat([denoiser(z[:m], c[:m], gen).to(z.dtype), z[m:]])
        if caption_noise > 0:
            c = c + caption_noise * torch.randn(c.shape, generator=gen)
        z, x = latent_window(z, to_model_range(images[idx]), crop, gen)
        loss = caption_decoder_loss(decoder, z, c, x, foreground_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        elapsed = time.perf_counter() - start
        if max_seconds and step >= 10 and step % 10 == 0:
            plan["steps"] = min(steps, max(step + 1, int(max_seconds / (elapsed / step))))
            bar.total = plan["steps"]
        if max_seconds and elapsed > max_seconds:
            break
    bar.close()
    decoder.eval()
    return losses


def unet_denoiser(unet, caption_encoder, vae, noise_scheduler, max_t: float = 0.6):
    """A ``denoiser`` for :func:`train_caption_decoder`: noise raw latents ``z`` to a random timestep in
    ``[0, max_t · T)``, predict the noise with the captioned UNet (its caption tokens, no guidance) and
    return its clean-latent estimate ``x̂₀ = (x_t − √(1−ᾱ)·ε̂) / √ᾱ``, unscaled back to raw latents."""
    from phenogen.diffusion.vae import scale_latents, unscale_latents

    alphas = noise_scheduler.alphas_cumprod
    top = max(1, int(max_t * noise_scheduler.config.num_train_timesteps))

    @torch.no_grad()
    def denoise(z: torch.Tensor, captions: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x0 = scale_latents(vae, z)
        t = torch.randint(0, top, (len(z),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = noise_scheduler.add_noise(x0, noise, t)
        eps = unet(xt, t, encoder_hidden_states=caption_encoder(captions)).sample
        a = alphas[t].to(x0.dtype)[:, None, None, None]
        return unscale_latents(vae, (xt - (1 - a).sqrt() * eps) / a.sqrt())

    return denoise

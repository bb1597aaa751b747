"""A pretrained bird prior: the VAE and a UNet (unconditional or captioned), trained on renders of random birds.

The thesis fine-tuned a *pretrained* Stable Diffusion on (photo, barcode) pairs; nothing in it learned
to paint from its few hundred photos alone. phenogen's synthetic world has no Stable Diffusion, so
``phenogen pretrain-image`` builds the equivalent: the preset's ``AutoencoderKL`` and
``UNet2DConditionModel`` trained on thousands of renders of *random* birds (every trait drawn from the
prior, N(0, 1.2²) on the z-scored scale, random pose, light and background). No clade, tree, barcode
or species is involved, so the prior carries no information about any species' traits — only what a
bird photo looks like. ``train-image`` with ``[image] init = DIR`` (or ``"builtin"``, the prior shipped
in the package) then starts from it and fine-tunes the UNet with the DNA conditioner, as the thesis did.

Two kinds of prior:

*unconditional* (``captions = false``; v1/v2)
    The UNet's cross-attention sees an all-zero context (one token), and the output projections of its
    cross-attention layers start at zero and stay there (their input is zero), so at fine-tuning time
    the new DNA condition enters as an exact no-op and grows from there (ControlNet's zero-convolution
    idea). The DNA pathway must learn to *read* cross-attention from nothing.
*captioned* (``captions = true``)
    Like Stable Diffusion, which the thesis fine-tuned: the UNet is trained on (image, caption) pairs,
    so its cross-attention already reads a description of what to draw when the DNA arrives. A
    caption is what a person would write about the random bird — its body size, plumage hue and
    lightness, beak shape, tail, crest, patterns — given as the renderer's trait values to a small
    :class:`CaptionEncoder` (SD's text encoder) trained with the UNet; 10 % of captions are dropped
    to the all-zero null context. The DNA conditioner then replaces the caption encoder at fine-tuning
    time (the thesis replaced CLIP by GPT-2): it has to learn to *speak* the prior's condition space,
    not to teach the UNet to listen. The captions describe random birds only — never a species of a
    clade — so the prior still carries no information about any species.

``init = DIR`` continues from an existing prior: its VAE is kept as it is (no VAE training) and its
UNet is trained on, e.g. an unconditional prior taught to read captions.

``vae_widen = N`` (with ``init``) gives the prior's VAE N more latent channels instead
(:func:`phenogen.diffusion.components.widen_vae`): the old channels keep their weights and are held in
place by an anchor loss to the old encoder while the VAE trains on, the latent colour loss is read from
the new channels only, and the UNet is widened to match (:func:`~phenogen.diffusion.components.
widen_unet`: new input channels enter through zeros, new outputs start at zero), with per-channel latent
statistics that keep the old channels' numbers. So the UNet keeps everything it learned about the old
latent space and only has to learn what the new channels add — the way Stable Diffusion's inpainting
UNet was widened. Measured (BENCHMARKS.md): 6 minutes bring the 4x VAE's lost plumage colour back
(the VAE alone now costs the demo's portraits 0.01-0.02 trait RMSE instead of 0.13-0.20) without the
4x slower UNet a 2x VAE needs; a UNet widened and trained on for 48 CPU minutes paints the captions'
colours but on speckled backgrounds of unnatural colours, and scores worse than the shipped prior, so
the shipped prior is not widened yet.

The VAE's loss weights the bird's pixels up (``vae_foreground_weight``; the bird is a few percent of
the image). The ``cpu`` preset's 4x VAE still paints every bird in the average brown after minutes of
training; with ``--set prior.preset=cpu2x --set prior.vae_colour_weight=5`` (2x VAE, 8 latent
channels, and :func:`phenogen.diffusion.vae.latent_colour_loss`) the colours are kept, but a UNet
trained on those larger latents for 27 minutes on 2 cores painted speckled birds (less so with
``latent_norm = "channel"``), and fine-tuned it generalised worse to held-out species, so the shipped
prior is the ``cpu`` one: v2 (unconditional, 35 min) continued for 43 min with captions, in two runs
(its ``prior.json``; BENCHMARKS.md, "The image model at demo scale").

Outputs of :func:`pretrain_prior` (``OUT``)::

    vae/   unet/         diffusers ``save_pretrained`` directories (safetensors + JSON config; each written
                         aside and renamed into place, prior.json written last); with
                         ``decoder_minutes`` > 0 the VAE's decoder is fine-tuned last with the encoder
                         frozen (same latent space; measured: it did not sharpen the colours)
    prior.json           settings, seconds, losses, VAE reconstruction error on fresh renders
    samples.png          unconditional samples of the EMA UNet (DDIM, zero context)
    vae_recon.png        fresh renders (top) and their VAE reconstructions (bottom)
    caption_encoder/     (captioned priors) the CaptionEncoder, safetensors + JSON config
    caption_samples.png  (captioned priors) fresh renders (top) and samples drawn from their captions
    reader/              (captioned priors) a trait probe of random renders → their captions, which
                         best-of-K sampling keeps candidates with (phenogen.diffusion.reader)

>>> PriorConfig(n_images=64, vae_minutes=0.1).preset
'cpu'
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from phenogen.diffusion.config import LATENT_NORMS
from phenogen.errors import CheckpointError, ConfigError

__all__ = [
    "PriorConfig",
    "CaptionEncoder",
    "pretrain_prior",
    "resolve_init",
    "load_prior_unet",
    "zero_cross_attention_out",
]

log = logging.getLogger(__name__)


@dataclass
class PriorConfig:
    """The ``[prior]`` section of ``phenogen pretrain-image``."""

    preset: str = field(default="cpu", metadata={"help": "model preset (see phenogen.diffusion.components)"})
    n_images: int = field(default=6000, metadata={"help": "renders of random birds to train on"})
    trait_sd: float = field(default=1.2, metadata={"help": "sd of the random z-scored traits"})
    vae_minutes: float = field(default=10.0, metadata={"help": "wall-clock budget of the VAE"})
    vae_steps: int = field(default=6000, metadata={"help": "VAE steps (the budget may stop it earlier)"})
    vae_foreground_weight: float = field(
        default=10.0, metadata={"help": "extra VAE loss weight on the bird's pixels (keeps plumage hue)"}
    )
    vae_colour_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the VAE's latent colour loss (latents must hold each cell's mean colour; "
            "5 with the cpu2x preset keeps plumage colour)"
        },
    )
    decoder_minutes: float = field(
        default=0.0, metadata={"help": "decoder-only fine-tuning after the UNet (encoder frozen); 0 = none"}
    )
    unet_minutes: float = field(
        default=30.0, metadata={"help": "wall-clock budget of the UNet (0 with init: keep its UNet as it is)"}
    )
    caption_decoder_minutes: float = field(
        default=0.0,
        metadata={
            "help": "captioned priors: train a caption decoder (the VAE decoder + FiLM on the caption, "
            "phenogen.diffusion.caption_decoder) for this many minutes after the UNet; 0 = none (an init "
            "prior's caption decoder is kept)"
        },
    )
    caption_decoder_steps: int = field(
        default=20000, metadata={"help": "caption decoder steps (the budget may stop it earlier)"}
    )
    caption_decoder_batch: int = field(default=32, metadata={"help": "caption decoder batch size"})
    caption_decoder_denoised: float = field(
        default=0.0,
        metadata={
            "help": "caption decoder: fraction of each batch decoded from the UNet's one-step clean-latent "
            "estimate of a noised copy (the soft latents sampling gives) instead of the encoder's"
        },
    )
    caption_decoder_crop: int = field(
        default=0, metadata={"help": "caption decoder: train on random crops of this side (0 = whole images)"}
    )
    reader_renders: int = field(
        default=6000,
        metadata={
            "help": "captioned priors: train the reader (phenogen.diffusion.reader: renders of random birds -> "
            "their captions; best-of-K sampling) on this many renders; 0 = none (an init prior's reader is kept)"
        },
    )
    reader_epochs: int = field(default=20, metadata={"help": "reader training epochs"})
    unet_steps: int = field(default=40000, metadata={"help": "UNet steps (the budget may stop it earlier)"})
    batch_size: int = field(default=32, metadata={"help": "UNet batch size"})
    lr: float = field(default=1e-3, metadata={"help": "UNet peak learning rate (AdamW, cosine)"})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the saved UNet"})
    save_fp16: bool = field(default=True, metadata={"help": "store weights as fp16 (half the size)"})
    seed: int = field(default=0, metadata={"help": "seed of renders, initialisation and noise"})
    captions: bool = field(
        default=False,
        metadata={
            "help": "train the UNet on (render, caption) pairs, Stable Diffusion style: the caption is the "
            "random bird's description (trait values) through a small caption encoder"
        },
    )
    caption_dropout: float = field(
        default=0.1, metadata={"help": "captions replaced by the null (all-zero) context, for guidance"}
    )
    latent_norm: str = field(
        default="global",
        metadata={
            "help": "latent normalisation: global (one shift/scale) or channel (mean/std per latent channel; "
            "refitted on an init prior that has none)"
        },
    )
    init: str = field(
        default="",
        metadata={
            "help": "continue from this prior directory ('builtin' = the shipped one): keep its VAE, train "
            "its UNet on; '' = build from scratch"
        },
    )
    vae_widen: int = field(
        default=0,
        metadata={
            "help": "with init: add this many latent channels to the init prior's VAE and train it for "
            "vae_minutes with its old channels anchored and the latent colour loss on the new ones; the "
            "UNet is widened to match (new channels start at zero). 0 = keep the VAE as it is"
        },
    )
    anchor_weight: float = field(
        default=1.0, metadata={"help": "with vae_widen: weight that holds the old latent channels in place"}
    )

    def __post_init__(self) -> None:
        from phenogen.config import require_finite

        require_finite(self)
        if self.latent_norm not in LATENT_NORMS:
            raise ValueError(
                f"latent_norm must be one of {', '.join(LATENT_NORMS)}, got {self.latent_norm!r}"
            )
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.n_images < 8 or self.batch_size < 1:
            raise ValueError("n_images must be >= 8 and batch_size >= 1")
        if self.decoder_minutes < 0:
            raise ValueError(f"decoder_minutes must be >= 0, got {self.decoder_minutes}")
        if self.vae_minutes <= 0 or self.unet_minutes < 0 or min(self.vae_steps, self.unet_steps) < 1:
            raise ValueError("vae minutes must be > 0, unet minutes >= 0 and steps >= 1")
        if not 0 < self.trait_sd <= 3:
            raise ValueError(f"trait_sd must be in (0, 3], got {self.trait_sd}")
        if self.vae_widen < 0 or self.anchor_weight < 0:
            raise ValueError("vae_widen and anchor_weight must be >= 0")
        if not 0.0 <= self.caption_decoder_denoised <= 1.0:
            raise ValueError(
                f"caption_decoder_denoised must be in [0, 1], got {self.caption_decoder_denoised}"
            )
        if self.caption_decoder_batch < 1 or self.caption_decoder_crop < 0:
            raise ValueError("caption_decoder_batch must be >= 1 and caption_decoder_crop >= 0")
        if self.reader_renders < 0 or self.reader_epochs < 1:
            raise ValueError("reader_renders must be >= 0 and reader_epochs >= 1")
        if self.unet_minutes < 0 or self.caption_decoder_minutes < 0:
            raise ValueError("unet_minutes and caption_decoder_minutes must be >= 0")
        if self.unet_minutes == 0 and not self.init:
            raise ValueError(
                "unet_minutes = 0 keeps an init prior's UNet: set init (a prior directory or 'builtin')"
            )
        if self.caption_decoder_minutes > 0 and not self.captions:
            raise ValueError("caption_decoder_minutes needs captions = true (it decodes with the caption)")
        if self.vae_widen and not self.init:
            raise ValueError(
                "vae_widen widens an existing prior's VAE: set init (a prior directory or 'builtin'); "
                "a prior built from scratch sets its latent channels through its preset"
            )


class CaptionEncoder(ModelMixin, ConfigMixin):
    """A captioned prior's text encoder: a bird's description (trait values) → cross-attention tokens.

    One token per trait: a learned embedding of *which* trait plus the value times a learned direction,
    refined by a residual MLP and layer-normalised like the DNA conditioner's output, so the UNet sees
    tokens of the same scale from either. ``(B, n_traits)`` → ``(B, n_traits, dim)``.

    >>> enc = CaptionEncoder(n_traits=3, dim=8)
    >>> tuple(enc(torch.zeros(2, 3)).shape)
    (2, 3, 8)
    """

    @register_to_config
    def __init__(self, n_traits: int, dim: int, traits: tuple[str, ...] = ()):
        super().__init__()
        if n_traits < 1 or dim < 1:
            raise ValueError(f"n_traits and dim must be >= 1, got {n_traits}, {dim}")
        self.kind = nn.Parameter(torch.randn(n_traits, dim))
        self.direction = nn.Parameter(torch.randn(n_traits, dim))
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
        )
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, traits: torch.Tensor) -> torch.Tensor:
        if traits.ndim != 2 or traits.shape[1] != self.config.n_traits:
            raise ValueError(f"expected traits (B, {self.config.n_traits}), got {tuple(traits.shape)}")
        x = self.kind + traits[..., None] * self.direction  # (B, n, D)
        return self.out_norm(x + self.mlp(x))


def builtin_prior_dir(preset: str) -> Path:
    return Path(str(resources.files("phenogen") / "assets" / f"bird_prior_{preset}"))


def resolve_init(init: str, preset: str) -> Path | None:
    """``[image] init`` → a prior directory (``""`` → None, ``"builtin"`` → the packaged prior)."""
    if not init:
        return None
    path = builtin_prior_dir(preset) if init == "builtin" else Path(init)
    if not ((path / "vae" / "config.json").is_file() and (path / "unet" / "config.json").is_file()):
        hint = "the package ships none for this preset; " if init == "builtin" else ""
        raise ConfigError(
            f"image.init={init!r}: {path} is not a prior directory (needs vae/ and unet/); "
            f"{hint}build one with `phenogen pretrain-image --out DIR`"
        )
    return path


def load_prior_unet(path: Path, cross_attention_dim: int, sample_size: int):
    """The prior's UNet in fp32, checked against the shapes the fine-tuning run needs."""
    from diffusers import UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.from_pretrained(
            path / "unet", torch_dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path / 'unet'}: cannot load the prior UNet ({exc})") from exc
    got = (unet.config.cross_attention_dim, unet.config.sample_size)
    if got != (cross_attention_dim, sample_size):
        raise CheckpointError(
            f"{path}: prior UNet has cross_attention_dim={got[0]}, latent side {got[1]}; this run needs "
            f"{cross_attention_dim} and {sample_size} (same preset and resolution as the prior)"
        )
    return unet


def zero_cross_attention_out(unet) -> int:
    """Zero the output projection of every cross-attention layer (``attn2``); returns how many."""
    n = 0
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            torch.nn.init.zeros_(module.to_out[0].weight)
            torch.nn.init.zeros_(module.to_out[0].bias)
            n += 1
    return n


@torch.no_grad()
def sample_unconditional(
    unet,
    vae,
    n: int,
    steps: int,
    seed: int,
    context: torch.Tensor | None = None,
    guidance: float = 1.0,
    caption_decoder=None,
    captions: torch.Tensor | None = None,
) -> torch.Tensor:
    """``n`` images ``(n, 3, H, W)`` in [0, 1] (DDIM): unconditional (zero context), or from caption
    tokens ``context (n, T, D)`` with classifier-free guidance ``guidance`` against the zero context;
    decoded by ``caption_decoder`` with ``captions (n, n_traits)`` when both are given."""
    from diffusers import DDIMScheduler

    from phenogen.diffusion.components import build_noise_scheduler

    sched = DDIMScheduler.from_config(build_noise_scheduler().config)
    sched.set_timesteps(steps)
    side = unet.config.sample_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, unet.config.in_channels, side, side, generator=gen)
    null = torch.zeros(n, 1 if context is None else context.shape[1], unet.config.cross_attention_dim)
    for t in sched.timesteps:
        if context is None:
            eps = unet(x, t, encoder_hidden_states=null).sample
        else:
            eps_u, eps_c = unet(
                torch.cat([x, x]), t, encoder_hidden_states=torch.cat([null, context])
            ).sample.chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        x = sched.step(eps, t, x).prev_sample
    from phenogen.diffusion.vae import unscale_latents

    z = unscale_latents(vae, x)
    if caption_decoder is not None and captions is not None:
        images = caption_decoder(z, captions.to(z.dtype))
    else:
        images = vae.decode(z).sample
    return ((images + 1) / 2).clamp(0, 1)


@torch.no_grad()
def _caption_decoder_mse(vae, caption_decoder, images: torch.Tensor, traits) -> float:
    """MSE (on [-1, 1]) of decoding uint8 ``images``' posterior means with ``caption_decoder`` and their
    captions (``None``: the VAE's own decoder)."""
    from phenogen.diffusion.vae import to_model_range

    if caption_decoder is None:
        return reconstruction_mse(vae, images)
    x = to_model_range(images)
    caption_decoder.eval()
    recon = caption_decoder(vae.encode(x).latent_dist.mean, torch.as_tensor(traits, dtype=torch.float32))
    return float(((recon - x) ** 2).mean())


@torch.no_grad()
def reconstruction_mse(vae, images: torch.Tensor, path: Path | None = None) -> float:
    """MSE (on [-1, 1]) of the VAE's reconstructions of uint8 ``images``; a before/after sheet at ``path``."""
    from phenogen.diffusion.vae import to_model_range

    x = to_model_range(images)
    recon = vae.decode(vae.encode(x).latent_dist.mean).sample
    if path is not None:
        _grid(((torch.cat([x[:8], recon[:8]]) + 1) / 2).clamp(0, 1), 8, path)
    return float(((recon - x) ** 2).mean())


def _grid(images: torch.Tensor, cols: int, path: Path) -> None:
    from PIL import Image

    arr = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (N, H, W, 3)
    n, h, w, _ = arr.shape
    rows = math.ceil(n / cols)
    sheet = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = arr[i]
    Image.fromarray(sheet).save(path)


def _init_record(init_dir: Path | None) -> dict | None:
    """The ``prior.json`` of the prior this one continued (its provenance), without the loss curve."""
    from phenogen.fsio import read_json

    if init_dir is None or not (init_dir / "prior.json").is_file():
        return None
    record = read_json(init_dir / "prior.json", "prior record", error=CheckpointError)
    record.pop("unet_losses", None)
    return record


def _save_model(model, path: Path) -> None:
    """``save_pretrained`` into ``PATH.tmp``, then renamed over ``path``: a kill never leaves half a model."""
    from phenogen.fsio import replace_dir

    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    replace_dir(tmp, path)


def pretrain_prior(out_dir: str | Path, cfg: PriorConfig, progress: bool = True) -> dict:
    """Render random birds, train the VAE, then the UNet (unconditional or captioned); save (module doc)."""
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from phenogen.diffusion import components
    from phenogen.diffusion.vae import (
        encode_latent_dist,
        finetune_decoder,
        fit_latent_scaling,
        scale_latents,
        train_vae,
    )
    from phenogen.evaluate.probe import prior_renders
    from phenogen.sim.traitspec import CONTINUOUS, DISCRETE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preset = components.get_preset(cfg.preset)
    res = preset.resolution
    seconds: dict[str, float] = {}
    torch.manual_seed(cfg.seed)
    init_dir = resolve_init(cfg.init, cfg.preset)
    init_record = _init_record(
        init_dir
    )  # read before any training: a broken record fails now, not at the save

    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 7])
    images, traits = prior_renders(
        CONTINUOUS, DISCRETE, cfg.n_images, res, rng, sd=cfg.trait_sd
    )  # (N, 3, R, R)
    fresh, fresh_traits = prior_renders(
        CONTINUOUS, DISCRETE, 64, res, np.random.default_rng([cfg.seed, 8]), sd=cfg.trait_sd
    )
    seconds["render"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    anchor = None
    if init_dir is not None and not cfg.vae_widen:  # continue an existing prior: its VAE as it is
        vae = components.load_vae(init_dir / "vae").to(torch.float32)
        vae_losses: list[float] = []
    else:  # a new VAE, or the init prior's widened with its old channels held in place
        if init_dir is not None:
            anchor = components.load_vae(init_dir / "vae")
            vae = components.widen_vae(anchor, cfg.vae_widen)
        else:
            vae = components.build_vae(cfg.preset, res)
        lr = 2e-3 if anchor is None else 1e-3  # a widened VAE's old weights are trained already
        vae_losses = train_vae(vae, images, cfg.vae_steps, preset.vae_batch, lr, 1e-6, cfg.seed, cfg.vae_minutes * 60,
                               False, preset.vae_crop, "cpu", progress, cfg.vae_foreground_weight,
                               cfg.vae_colour_weight, anchor=anchor, anchor_weight=cfg.anchor_weight)  # fmt: skip
    vae.eval().requires_grad_(False)
    mean, std = encode_latent_dist(vae, images)
    per_channel = cfg.latent_norm == "channel"
    if anchor is not None:  # per channel, the old channels normalised exactly as the UNet knows them
        shift, scale = fit_latent_scaling(vae, mean, std, per_channel=True, keep=anchor)
    elif init_dir is None or (per_channel and getattr(vae.config, "latents_mean", None) is None):
        shift, scale = fit_latent_scaling(vae, mean, std, per_channel)  # the UNet (re)learns this space
    else:
        shift, scale = vae.config.shift_factor or 0.0, vae.config.scaling_factor
    recon_mse = reconstruction_mse(vae, fresh, out / "vae_recon.png")
    seconds["vae"] = time.perf_counter() - t0
    log.info("prior VAE: %d steps, recon MSE %.4f on fresh renders", len(vae_losses), recon_mse)
    _save_model(vae, out / "vae")  # kept if the UNet stage is interrupted

    t0 = time.perf_counter()
    side = res // components.vae_scale(vae)
    if init_dir is not None:
        unet = load_prior_unet(init_dir, preset.cross_attention_dim, side)
        if anchor is not None:
            unet = components.widen_unet(unet, vae.config.latent_channels)
        n_zeroed = 0
    else:
        unet = components.build_unet(cfg.preset, preset.cross_attention_dim, sample_size=side,
                                     latent_channels=vae.config.latent_channels)  # fmt: skip
        n_zeroed = 0 if cfg.captions else zero_cross_attention_out(unet)
    unet.train()
    captioner = None
    params = list(unet.parameters())
    caption_init = None
    if cfg.captions:
        if init_dir is not None and (init_dir / "caption_encoder" / "config.json").is_file():
            caption_init = init_dir / "caption_encoder"  # a captioned prior goes on with its own encoder
            captioner = CaptionEncoder.from_pretrained(caption_init, torch_dtype=torch.float32)
        else:
            captioner = CaptionEncoder(len(CONTINUOUS) + len(DISCRETE), preset.cross_attention_dim,
                                       traits=(*CONTINUOUS, *DISCRETE))  # fmt: skip
        if tuple(captioner.config.traits) != (*CONTINUOUS, *DISCRETE):
            raise CheckpointError(f"{caption_init}: the caption encoder describes other traits")
        captioner.train()
        params += list(captioner.parameters())
    traits_t = torch.as_tensor(traits, dtype=torch.float32)
    sched = components.build_noise_scheduler()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    plan = {"steps": cfg.unet_steps}
    warmup = 200

    def lr_factor(s: int) -> float:
        return min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / plan["steps"])))

    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=True, foreach=params[0].is_cuda)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    null_ctx = torch.zeros(cfg.batch_size, 1, preset.cross_attention_dim)
    budget, losses, start = cfg.unet_minutes * 60, [], time.perf_counter()
    bar = tqdm(total=plan["steps"], desc="prior unet", disable=not progress, dynamic_ncols=True)
    step = 0
    if cfg.unet_minutes == 0:  # keep the init prior's UNet (and caption encoder) exactly
        plan["steps"] = 0
    while step < plan["steps"]:
        idx = torch.randint(0, len(mean), (cfg.batch_size,), generator=gen)
        z = scale_latents(vae, mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen))
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(z),), generator=gen)
        if captioner is None:
            ctx = null_ctx[: len(z)]
        else:  # caption tokens; dropped rows get the all-zero null context (classifier-free guidance)
            ctx = captioner(traits_t[idx])
            keep = torch.rand(len(z), generator=gen) >= cfg.caption_dropout
            ctx = ctx * keep[:, None, None].to(ctx.dtype)
        pred = unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=ctx).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        ema.step(params)
        losses.append(loss.item())
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        elapsed = time.perf_counter() - start
        if step >= 20 and step % 20 == 0:  # fit the cosine to the time left
            plan["steps"] = min(cfg.unet_steps, max(step + 1, int(budget / (elapsed / step))))
            bar.total = plan["steps"]
        if elapsed > budget:
            break
    bar.close()
    if step:
        ema.copy_to(params)
    unet.eval()
    seconds["unet"] = time.perf_counter() - t0

    caption_decoder, cd_record = None, None
    cd_init = None if init_dir is None or cfg.vae_widen else init_dir / "caption_decoder"
    if cd_init is not None and (cd_init / "config.json").is_file():  # the init prior's: kept or continued
        from phenogen.diffusion.caption_decoder import CaptionDecoder

        caption_decoder = CaptionDecoder.from_pretrained(cd_init, torch_dtype=torch.float32)
    else:
        cd_init = None
    if cfg.caption_decoder_minutes > 0:  # the colours the latents cannot hold, read from the caption
        from phenogen.diffusion.caption_decoder import CaptionDecoder, train_caption_decoder, unet_denoiser

        t0 = time.perf_counter()
        if caption_decoder is None:  # start as the VAE's own decoder
            caption_decoder = CaptionDecoder.from_vae(vae, traits_t.shape[1], traits=(*CONTINUOUS, *DISCRETE))
        plain = reconstruction_mse(vae, fresh)
        denoiser = None
        if cfg.caption_decoder_denoised > 0:
            captioner.eval()
            denoiser = unet_denoiser(unet.eval(), captioner, vae, sched)
        cd_losses = train_caption_decoder(
            caption_decoder, mean, std, traits_t, images, cfg.caption_decoder_steps, batch_size=cfg.caption_decoder_batch,
            max_seconds=cfg.caption_decoder_minutes * 60, seed=cfg.seed, foreground_weight=cfg.vae_foreground_weight,
            crop=cfg.caption_decoder_crop, denoiser=denoiser, denoised_fraction=cfg.caption_decoder_denoised,
            progress=progress,
        )  # fmt: skip
        cd_record = {
            "init": str(cd_init) if cd_init is not None else "the VAE's decoder",
            "steps": len(cd_losses),
            "loss_last100": float(np.mean(cd_losses[-100:])),
            "recon_mse_fresh": _caption_decoder_mse(vae, caption_decoder, fresh, fresh_traits),
            "recon_mse_fresh_plain_decoder": plain,
        }
        seconds["caption_decoder"] = time.perf_counter() - t0
        log.info("caption decoder: %d steps, recon MSE %.4f (plain decoder %.4f)", len(cd_losses),
                 cd_record["recon_mse_fresh"], plain)  # fmt: skip

    decoder_steps, recon_after = 0, recon_mse
    if cfg.decoder_minutes > 0:  # sharper colours without moving the latent space the UNet learned
        t0 = time.perf_counter()
        decoder_steps = len(
            finetune_decoder(
                vae,
                images,
                cfg.decoder_minutes * 60,
                seed=cfg.seed,
                progress=progress,
                foreground_weight=cfg.vae_foreground_weight,
            )
        )
        recon_after = reconstruction_mse(vae, fresh, out / "vae_recon.png")
        seconds["decoder"] = time.perf_counter() - t0
    _grid(sample_unconditional(unet, vae, 32, 25, cfg.seed), 8, out / "samples.png")
    if captioner is not None:
        captioner.eval()
        with torch.no_grad():
            context = captioner(torch.as_tensor(fresh_traits[:8], dtype=torch.float32))
        caps = torch.as_tensor(fresh_traits[:8], dtype=torch.float32)
        drawn = sample_unconditional(unet, vae, 8, 25, cfg.seed, context=context, guidance=3.0,
                                     caption_decoder=caption_decoder, captions=caps)  # fmt: skip
        _grid(torch.cat([fresh[:8].float() / 255, drawn]), 8, out / "caption_samples.png")
        _save_model(captioner, out / "caption_encoder")
    if caption_decoder is not None:
        dt = torch.float16 if cfg.save_fp16 else torch.float32
        _save_model(caption_decoder.to(dt), out / "caption_decoder")
    reader_record = None
    if cfg.captions and cfg.reader_renders > 0:  # reads a portrait back into its caption: best-of-K sampling
        from phenogen.diffusion.reader import build_reader

        t0 = time.perf_counter()
        reader_record = build_reader(out, (*CONTINUOUS, *DISCRETE), n=cfg.reader_renders, epochs=cfg.reader_epochs,
                                     seed=cfg.seed + 11, size=res)  # fmt: skip
        seconds["reader"] = time.perf_counter() - t0
    elif cfg.captions and init_dir is not None and (init_dir / "reader" / "probe.json").is_file():
        import shutil

        shutil.rmtree(out / "reader", ignore_errors=True)
        shutil.copytree(init_dir / "reader", out / "reader")
        reader_record = {"from": str(init_dir / "reader")}
    dtype = torch.float16 if cfg.save_fp16 else torch.float32
    _save_model(vae.to(dtype), out / "vae")
    _save_model(unet.to(dtype), out / "unet")
    every = max(1, len(losses) // 500)
    record = {
        "config": asdict(cfg),
        "seconds": seconds,
        "vae_steps": len(vae_losses),
        "vae_widened_from": anchor.config.latent_channels if anchor is not None else None,
        "vae_recon_mse_fresh": recon_after,
        "vae_recon_mse_fresh_before_decoder": recon_mse,
        "decoder_steps": decoder_steps,
        "latent_shift": shift,
        "latent_scale": scale,
        "latent_statistics": "per_channel" if getattr(vae.config, "latents_mean", None) else "global",
        "latents_mean": getattr(vae.config, "latents_mean", None),
        "latents_std": getattr(vae.config, "latents_std", None),
        "unet_steps": step,
        "unet_loss_last100": float(np.mean(losses[-100:])) if losses else None,
        "unet_losses_every": every,
        "unet_losses": losses[::every],
        "cross_attention_layers_zeroed": n_zeroed,
        "captions": cfg.captions,
        "init": str(init_dir) if init_dir is not None else None,
        "init_record": init_record,
        "caption_encoder_from": str(caption_init) if caption_init is not None else None,
        "caption_decoder": cd_record,
        "reader": reader_record,
        "note": "renders of random birds only (captions: their own trait values): no clade, tree, "
        "barcode or species went into this prior",
    }
    from phenogen.fsio import atomic_write_text

    # written last: a prior directory with prior.json is complete (the models were renamed into place)
    atomic_write_text(out / "prior.json", json.dumps(record, indent=1) + "\n")
    return record

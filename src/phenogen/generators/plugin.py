"""Plugin network: a small trained network steers a frozen, pretrained, unconditional VAE decoder.

The recipe of plugin networks (Koperski et al., "Plugin networks for inference in neural networks") and
of conditional control of a pretrained generator's latent space: the generator is *not* trained; a small
network — the plugin — learns where in its latent space each condition lives. Here the generator is the
decoder of an ``AutoencoderKL`` (default: the VAE of the bird prior shipped with the package,
``phenogen/assets/bird_prior_cpu/vae``) and the condition is the DNA feature vector.

Model
    The plugin is an MLP ``c -> h`` (``depth`` layers of width ``hidden``, SiLU) with two linear heads
    that give a diagonal Gaussian over the VAE's latent map ``(C, h, w)``: ``mu(c)`` and ``log sigma(c)``,
    in the prior's *scaled* latent space (:func:`~phenogen.diffusion.vae.scale_latents`: unit variance,
    which an MLP predicts far better than the raw latents' offset and spread). Both heads start at zero,
    i.e. at ``N(0, 1)``, the latent distribution of all photos together.

Training (:meth:`PluginFamily.train_step`)
    The frozen encoder gives each photo's posterior ``N(m, s^2)`` (no gradients). The loss is the
    Gaussian NLL of a posterior sample ``z ~ N(m, s^2)`` under the plugin's ``N(mu, sigma^2)``, taken in
    closed form — ``0.5 ((m - mu)^2 + s^2) / sigma^2 + log sigma + 0.5 log 2 pi`` per latent element, the
    expectation of the sampled NLL over ``z``: the same gradient on average without the sampling noise.
    Its optimum is ``mu`` = the mean latent of a species' photos and ``sigma^2`` = their spread (plus the
    posterior's own variance), so ``sigma`` is a learned within-species variation, not a free knob.
    ``pixel_weight`` > 0 adds L1 + L2 between the photo and the frozen decoder's image of a
    reparameterised sample ``mu + sigma * eps`` (``eps`` from the step's ``generator``); gradients flow
    through the frozen decoder into the plugin only. Default 0, measured: with the shipped prior at
    64 px (batch 16, 2 CPU threads) a step costs 1.1 s without it and 3.1 s with it; on a tiny case
    (16 px VAE, two conditions with two photos each, 200 steps) weight 10 lowered the mean portrait's
    pixel MSE by 1.4 % (0.1587 -> 0.1565) and raised the samples' by 16 % (0.120 -> 0.139); with one
    photo per condition both ended equal. The NLL alone already puts ``mu`` where the decoder paints
    the species.

Sampling (:meth:`PluginFamily.sample`)
    ``noise_shape()`` is the latent shape ``(C, h, w)``; an image is the decoder's image of
    ``mu + latent_noise * sigma * noise`` (``latent_noise`` = 0: every image of a barcode is the mean
    portrait), clamped to [-1, 1].

Resolution
    The VAE's latent grid is fixed by its natural resolution (its config's ``sample_size``; 64 px for the
    shipped prior). When the family's ``resolution`` differs, photos are resized (bilinear, antialiased)
    to the natural resolution for the encoder and the decoded images are resized back to ``resolution``:
    every family of the benchmark then paints at the same size, and the plugin works on the latent grid
    the VAE was trained on (running a convolutional VAE at another size moves the subject's scale off
    what the decoder knows).

Frozen weights: self-contained export
    The VAE is a registered submodule with ``requires_grad=False``: its weights are part of
    ``state_dict()`` and so of ``model.safetensors`` and of every checkpoint (2.6 M parameters, 10 MB in
    float32, for the shipped prior, beside the plugin's 0.9 M on the demo's 1,280 k-mer features: a
    checkpoint of ~14 MB, small enough not to need a separate path), and the optimizer holds the
    plugin's parameters only. ``config`` keeps ``base_vae`` (the path, as provenance) and ``vae_config``
    (the AutoencoderKL's architecture and latent scaling); a config that has ``vae_config`` rebuilds the
    VAE from it without reading ``base_vae``, so an exported generator loads the weights it was trained
    with even if the asset changes or is gone.

>>> # family = build_family("plugin", {"resolution": 64, "cond_dim": 32})   # the shipped prior's VAE
>>> # family.noise_shape()
>>> # (4, 16, 16)
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phenogen.errors import CheckpointError, ConfigError
from phenogen.generators.base import GeneratorFamily, register_family

__all__ = ["PluginFamily", "PluginNet", "DEFAULTS", "builtin_base_vae"]

DEFAULTS: dict = {"base_vae": None, "hidden": 256, "depth": 2, "latent_noise": 1.0, "pixel_weight": 0.0}
"""The plugin's hyper-parameters (``base_vae`` None: :func:`builtin_base_vae`)."""

LOG_SIGMA_RANGE = (-9.0, 3.0)
"""Bounds of the predicted log sigma (the shipped prior's posterior std is ~1e-3 .. 1e-2 in scaled units)."""

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def builtin_base_vae() -> Path:
    """The VAE directory of the bird prior shipped with the package (the default ``base_vae``)."""
    return Path(str(resources.files("phenogen") / "assets" / "bird_prior_cpu" / "vae"))


class PluginNet(nn.Module):
    """The plugin: ``cond (B, cond_dim)`` → ``mu, log_sigma``, each ``(B, *latent_shape)``."""

    def __init__(self, cond_dim: int, hidden: int, depth: int, latent_shape: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        width = cond_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.trunk = nn.Sequential(*layers)
        self.latent_shape = tuple(latent_shape)
        n = math.prod(self.latent_shape)
        self.mu = nn.Linear(hidden, n)
        self.log_sigma = nn.Linear(hidden, n)
        for head in (self.mu, self.log_sigma):  # start at N(0, 1): all photos' latent distribution
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, cond: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(cond)  # (B, hidden)
        mu = self.mu(h).view(len(cond), *self.latent_shape)  # (B, C, h, w)
        log_sigma = self.log_sigma(h).view(len(cond), *self.latent_shape).clamp(*LOG_SIGMA_RANGE)
        return mu, log_sigma


def _positive_int(config: dict, key: str) -> int:
    value = config[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"generator family plugin: {key} must be a positive integer, got {value!r}")
    return value


def _non_negative(config: dict, key: str) -> float:
    value = config[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"generator family plugin: {key} must be a number >= 0, got {value!r}")
    return float(value)


def _load_base_vae(raw: str | None):
    """``(vae, resolved path)`` of ``base_vae``; :class:`ConfigError` naming the path when unusable."""
    from phenogen.diffusion.components import load_vae

    path = builtin_base_vae() if raw is None else Path(raw)
    if not path.is_dir():
        hint = "the package's bird prior is missing; reinstall phenogen" if raw is None else "give a folder"
        raise ConfigError(
            f"generator family plugin: base_vae {str(path)!r} is not a directory ({hint} holding a saved "
            "AutoencoderKL: config.json + diffusion_pytorch_model.safetensors; unset = the shipped prior's VAE)"
        )
    try:
        vae = load_vae(path)
    except CheckpointError as exc:
        raise ConfigError(f"generator family plugin: base_vae {str(path)!r}: {exc}") from None
    if (path / "vae" / "config.json").is_file():  # a prior directory: load_vae read its vae/
        path = path / "vae"
    return vae, path.resolve()


def _vae_config(vae) -> dict:
    """The AutoencoderKL's config as plain JSON (architecture + latent scaling; no ``_`` keys)."""
    return json.loads(json.dumps({k: v for k, v in vae.config.items() if not k.startswith("_")}))


def _side(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


@register_family("plugin")
class PluginFamily(GeneratorFamily):
    """DNA condition → a Gaussian over a frozen pretrained VAE's latents → the frozen decoder's image.

    Parameters
    ----------
    config : dict
        ``resolution``, ``cond_dim`` (required) and, optional: ``base_vae`` (a saved AutoencoderKL folder,
        or a prior folder with ``vae/``; default the shipped bird prior's), ``hidden`` (256), ``depth``
        (2), ``latent_noise`` (1.0: the scale of the learned sigma at sampling), ``pixel_weight`` (0.0).
        ``vae_config`` is filled in from the base VAE; when present, the VAE is built from it and its
        weights come with the state dict (``base_vae`` is then provenance only).
    """

    def __init__(self, config: dict):
        super().__init__(config)
        from diffusers import AutoencoderKL

        known = {"resolution", "cond_dim", "vae_config", *DEFAULTS}
        unknown = sorted(set(self.config) - known)
        if unknown:
            raise ConfigError(
                f"generator family plugin: unknown config key(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known - {'vae_config'}))}"
            )
        config = {**DEFAULTS, **self.config}
        hidden, depth = _positive_int(config, "hidden"), _positive_int(config, "depth")
        _non_negative(config, "latent_noise")
        _non_negative(config, "pixel_weight")
        if config["base_vae"] is not None and not isinstance(config["base_vae"], str):
            raise ConfigError(f"generator family plugin: base_vae must be a path, got {config['base_vae']!r}")
        if config.get("vae_config") is None:  # a new model: the frozen VAE's weights come from base_vae
            vae, path = _load_base_vae(config["base_vae"])
            config["base_vae"] = str(path)
            config["vae_config"] = _vae_config(vae)
        else:  # a saved model: architecture from the config, weights from the state dict
            if not isinstance(config["vae_config"], dict):
                raise ConfigError("generator family plugin: vae_config must be a JSON object")
            try:
                vae = AutoencoderKL.from_config(config["vae_config"])
            except (TypeError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"generator family plugin: vae_config does not build an AutoencoderKL ({exc})"
                ) from None
        self.config = config
        self.vae = vae.float().eval().requires_grad_(False)
        vc = vae.config
        self.vae_resolution = _side(vc.sample_size)
        factor = 2 ** (len(vc.block_out_channels) - 1)
        if self.vae_resolution % factor:
            raise ConfigError(
                f"generator family plugin: base VAE sample_size {self.vae_resolution} is not a multiple of its "
                f"downsampling factor {factor}"
            )
        self.latent_shape = (
            int(vc.latent_channels),
            self.vae_resolution // factor,
            self.vae_resolution // factor,
        )
        self.plugin = PluginNet(self.config["cond_dim"], hidden, depth, self.latent_shape)

    # ------------------------------------------------------------------ interface
    def train(self, mode: bool = True) -> PluginFamily:
        """Train mode for the plugin; the frozen VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    def noise_shape(self) -> tuple[int, ...]:
        return self.latent_shape

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"plugin": torch.optim.AdamW(self.plugin.parameters(), lr=lr, weight_decay=0.0)}

    def train_step(
        self, images: Tensor, cond: Tensor, optimizers: dict, generator: torch.Generator
    ) -> dict[str, float]:
        from phenogen.diffusion.vae import scale_latents

        opt = optimizers["plugin"]
        device = next(self.plugin.parameters()).device
        x = self._resize(images.to(device).float(), self.vae_resolution)  # (B, 3, Rv, Rv)
        with torch.no_grad():  # 1. the frozen encoder's posterior, in the scaled latent space
            post = self.vae.encode(x).latent_dist
            m = scale_latents(self.vae, post.mean)  # (B, C, h, w)
            s = post.std * self._latent_gain()  # (B, C, h, w)
        mu, log_sigma = self.plugin(cond.to(device).float())  # 2. the plugin's Gaussian
        inv_var = torch.exp(-2 * log_sigma)
        nll = (0.5 * ((m - mu) ** 2 + s**2) * inv_var + log_sigma).mean() + _HALF_LOG_2PI  # 3. E_z[-log p]
        loss, parts = nll, {"nll": nll.item()}
        weight = float(self.config["pixel_weight"])
        if weight > 0:  # 4. optional: the photo through the frozen decoder, gradients into the plugin only
            eps = torch.randn(mu.shape, generator=generator).to(device)
            recon = self._decode(mu + log_sigma.exp() * eps)
            pixel = (recon - x).abs().mean() + ((recon - x) ** 2).mean()
            loss = loss + weight * pixel
            parts["pixel"] = pixel.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.plugin.parameters(), 1.0)
        opt.step()
        parts["loss"] = loss.item()
        return parts

    @torch.no_grad()
    def sample(self, cond: Tensor, noise: Tensor) -> Tensor:
        device = next(self.plugin.parameters()).device
        mu, log_sigma = self.plugin(cond.to(device).float())  # (B, C, h, w) each
        z = mu + float(self.config["latent_noise"]) * log_sigma.exp() * noise.to(device).float()
        x = self._resize(self._decode(z), int(self.config["resolution"]))
        return x.clamp(-1, 1)

    # ------------------------------------------------------------------ helpers
    def _latent_gain(self) -> Tensor | float:
        """The factor :func:`~phenogen.diffusion.vae.scale_latents` multiplies a raw latent by (the
        scaling factor over the per-channel ``latents_std`` when the VAE has one, as ``scale_latents``)."""
        vc = self.vae.config
        mean, std = getattr(vc, "latents_mean", None), getattr(vc, "latents_std", None)
        if mean is None or std is None:
            return float(vc.scaling_factor)
        device = next(self.plugin.parameters()).device
        return vc.scaling_factor / torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def _decode(self, z: Tensor) -> Tensor:
        """Scaled latents (B, C, h, w) → the frozen decoder's images (B, 3, Rv, Rv), unclamped."""
        from phenogen.diffusion.vae import unscale_latents

        return self.vae.decode(unscale_latents(self.vae, z)).sample

    @staticmethod
    def _resize(x: Tensor, side: int) -> Tensor:
        if x.shape[-1] == side and x.shape[-2] == side:
            return x
        return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)

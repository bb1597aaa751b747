"""The conditional GAN family (``gan``): a DCGAN-style generator, a spectrally normalised projection critic.

Generator ``G(z, c)``
    The DNA condition ``c`` (standardised features, ``cond_dim``) goes through a linear embedding
    ``e = W c`` (``cond_embed`` wide), which is concatenated with the noise ``z`` (``z_dim``, N(0, 1)) and
    mapped by a linear layer to a 4x4 feature map. Each block doubles the side (nearest-neighbour
    upsampling + a 3x3 convolution, or a 4x4 stride-2 transposed convolution with ``upsample =
    "transposed"``) until ``resolution``, then a 3x3 convolution to RGB and ``tanh``. After every layer
    the features are normalised and modulated by the condition (FiLM / conditional normalisation):
    ``norm(h) * (1 + gamma(e)) + beta(e)``, with ``gamma`` and ``beta`` linear in ``e`` and starting at
    zero. ``norm = "group"`` (default) is a GroupNorm without affine parameters: an image then depends
    only on its own condition and noise, never on the batch it is painted in, and training and sampling
    see the same network; ``norm = "batch"`` is DCGAN's BatchNorm (conditional batch norm, running
    statistics at sampling time).
Discriminator ``D(x, c)``
    SN-GAN's "standard CNN": per level a 3x3 and a 4x4 stride-2 convolution with LeakyReLU(0.2), from
    ``resolution`` down to 4x4, then global sum pooling to ``phi(x)`` (B, C). Every weight is spectrally
    normalised (``torch.nn.utils.parametrizations.spectral_norm``; the power-iteration vectors are
    buffers, so they are saved and resumed). The head is Miyato & Koyama's (2018) projection for a
    continuous condition: ``D(x, c) = psi(phi(x)) + <V c, phi(x)>``, ``V`` a (spectrally normalised)
    linear embedding of ``c``.
Loss and optimisation
    ``loss = "hinge"`` (default; ``relu(1 - D(x)) + relu(1 + D(G(z)))`` for D, ``-D(G(z))`` for G) or
    ``"non_saturating"`` (the original GAN's ``softplus`` form). One :meth:`~GanFamily.train_step` does
    ``n_critic`` D steps (each on the same real batch with fresh noise) and one G step; fake images are
    conditioned on the batch's real conditions. Optional R1 penalty on real images (``r1`` = gamma, 0 =
    off). Two Adam optimizers ``{"g", "d"}`` with ``betas = (0.5, 0.999)`` by default: DCGAN's setting,
    one of those under which Miyato et al. (2018) found spectrally normalised critics train well with
    one D step per G step (their setting C) — and one D step per G step is the cheapest per image on a
    fixed CPU budget. The projection paper's own ``(0.0, 0.9)`` with five D steps is
    ``betas = [0.0, 0.9], n_critic = 5``.
EMA
    Samples come from an exponential moving average of G's weights (``ema`` = decay, 0 = off; the decay
    is warmed up as ``min(ema, (1 + n) / (10 + n))`` after ``n`` updates), as in BigGAN / StyleGAN: it
    averages out the oscillation of the adversarial game at no training cost.

Mode collapse is watched twice: every step returns ``d_real`` / ``d_fake`` (mean critic logits) and
``fake_std`` / ``real_std`` (per-pixel standard deviation across the batch; a collapsed G has
``fake_std`` far below ``real_std``); :meth:`GanFamily.diversity` measures the spread of the images of
one condition under different noise.

All randomness of a step (the noise ``z``) is drawn from the ``generator`` argument, so a resumed run
equals an uninterrupted one bit for bit.

>>> gan = GanFamily({"resolution": 16, "cond_dim": 3, "g_width": 8, "d_width": 8, "z_dim": 4})
>>> gan.noise_shape(), tuple(gan.sample(torch.zeros(2, 3), torch.zeros(2, 4)).shape)
((4,), (2, 3, 16, 16))
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from phenogen.errors import ConfigError
from phenogen.generators.base import GeneratorFamily, register_family

__all__ = ["GanFamily", "DEFAULTS", "LOSSES"]

DEFAULTS: dict = {
    "z_dim": 64,  # noise dimensions
    "cond_embed": 128,  # width of the linear condition embedding read by G's FiLM layers
    "g_width": 16,  # G channels at full resolution; doubled per level towards 4x4, capped at max_width
    "d_width": 16,  # D channels at full resolution; likewise
    "max_width": 128,
    "norm": "group",  # "group" (FiLM on GroupNorm; batch-independent) or "batch" (conditional BatchNorm)
    "upsample": "nearest",  # "nearest" (+ 3x3 conv) or "transposed" (4x4 stride-2 transposed conv)
    "loss": "hinge",  # or "non_saturating"
    "n_critic": 1,  # D steps per G step
    "betas": [0.5, 0.999],  # Adam betas of both optimizers
    "r1": 0.0,  # R1 penalty weight gamma on real images (gamma / 2 * |grad_x D|^2); 0 = off
    "ema": 0.999,  # decay of the EMA copy of G used for sampling; 0 = sample from G itself
}
"""Hyper-parameters of the family and their defaults (``config`` keys beside ``resolution``, ``cond_dim``)."""

LOSSES = ("hinge", "non_saturating")
_NORMS = ("group", "batch")
_UPSAMPLES = ("nearest", "transposed")


# ------------------------------------------------------------------------------------ config
def _fail(key: str, value: object, what: str) -> ConfigError:
    return ConfigError(f"generator family gan: {key} = {value!r}: {what}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def complete_config(config: dict) -> dict:
    """``config`` with the defaults filled in, validated; :class:`ConfigError` names the bad key."""
    unknown = sorted(set(config) - set(DEFAULTS) - {"resolution", "cond_dim"})
    if unknown:
        raise ConfigError(
            f"generator family gan: unknown config key(s) {', '.join(unknown)}; "
            f"known: resolution, cond_dim, {', '.join(DEFAULTS)}"
        )
    cfg = {**copy.deepcopy(DEFAULTS), **config}
    res = cfg["resolution"]
    if not (_is_int(res) and res >= 8 and res % 4 == 0 and (res // 4) & (res // 4 - 1) == 0):
        raise _fail("resolution", res, "must be 4 * 2**k with k >= 1 (8, 16, 32, 64, 128 ...)")
    for key in ("z_dim", "cond_embed", "g_width", "d_width", "max_width", "n_critic"):
        if not (_is_int(cfg[key]) and cfg[key] >= 1):
            raise _fail(key, cfg[key], "must be an integer >= 1")
    for key, allowed in (("loss", LOSSES), ("norm", _NORMS), ("upsample", _UPSAMPLES)):
        if cfg[key] not in allowed:
            raise _fail(key, cfg[key], f"unknown; use {' or '.join(map(repr, allowed))}")
    betas = cfg["betas"]
    if not (
        isinstance(betas, (list, tuple))
        and len(betas) == 2
        and all(_is_number(b) and 0 <= b < 1 for b in betas)
    ):
        raise _fail("betas", betas, "must be two numbers in [0, 1), e.g. [0.5, 0.999]")
    cfg["betas"] = [float(b) for b in betas]
    if not (_is_number(cfg["r1"]) and cfg["r1"] >= 0):
        raise _fail("r1", cfg["r1"], "must be a number >= 0 (0 = no R1 penalty)")
    if not (_is_number(cfg["ema"]) and 0 <= cfg["ema"] < 1):
        raise _fail("ema", cfg["ema"], "must be a number in [0, 1) (0 = no EMA)")
    cfg["r1"], cfg["ema"] = float(cfg["r1"]), float(cfg["ema"])
    return cfg


def _widths(cfg: dict, key: str) -> list[int]:
    """Channels at each level, 4x4 first: ``width * 2**(levels - k)`` capped at ``max_width``."""
    n = int(math.log2(cfg["resolution"] // 4))
    return [min(cfg["max_width"], cfg[key] * 2 ** (n - k)) for k in range(n + 1)]


# ------------------------------------------------------------------------------------ networks
class _FiLMNorm(nn.Module):
    """``norm(h) * (1 + gamma(e)) + beta(e)``: conditional normalisation, starting as plain normalisation."""

    def __init__(self, channels: int, embed_dim: int, kind: str):
        super().__init__()
        if kind == "batch":
            self.norm: nn.Module = nn.BatchNorm2d(channels, affine=False)
        else:
            self.norm = nn.GroupNorm(math.gcd(channels, 8), channels, affine=False)
        self.film = nn.Linear(embed_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.film(e)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return self.norm(h) * (1 + gamma) + beta


class _Generator(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        widths = _widths(cfg, "g_width")
        self.embed = nn.Linear(cfg["cond_dim"], cfg["cond_embed"])
        self.fc = nn.Linear(cfg["z_dim"] + cfg["cond_embed"], widths[0] * 16)
        self.norm0 = _FiLMNorm(widths[0], cfg["cond_embed"], cfg["norm"])
        self.ups = nn.ModuleList()
        self.norms = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            if cfg["upsample"] == "nearest":
                up: nn.Module = nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)
                )
            else:
                up = nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)
            self.ups.append(up)
            self.norms.append(_FiLMNorm(c_out, cfg["cond_embed"], cfg["norm"]))
        self.to_rgb = nn.Conv2d(widths[-1], 3, 3, padding=1)

    def forward(self, z: Tensor, cond: Tensor) -> Tensor:
        e = self.embed(cond)  # (B, E)
        h = self.fc(torch.cat([z, e], dim=1)).view(len(z), -1, 4, 4)  # (B, C0, 4, 4)
        h = F.relu(self.norm0(h, e))
        for up, norm in zip(self.ups, self.norms, strict=True):
            h = F.relu(norm(up(h), e))  # (B, Ck, 4*2^k, 4*2^k)
        return torch.tanh(self.to_rgb(h))  # (B, 3, R, R)


class _Discriminator(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        widths = _widths(cfg, "d_width")[::-1]  # full resolution first
        self.from_rgb = spectral_norm(nn.Conv2d(3, widths[0], 3, padding=1))
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            self.blocks.append(
                nn.ModuleList(
                    [
                        spectral_norm(nn.Conv2d(c_in, c_in, 3, padding=1)),
                        spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)),
                    ]
                )
            )
        self.psi = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Linear(cfg["cond_dim"], widths[-1], bias=False))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = F.leaky_relu(self.from_rgb(x), 0.2)  # (B, C, R, R)
        for conv, down in self.blocks:
            h = F.leaky_relu(down(F.leaky_relu(conv(h), 0.2)), 0.2)  # side halves
        phi = h.sum(dim=(2, 3))  # (B, C0) global sum pooling
        return self.psi(phi).squeeze(1) + (self.embed(cond) * phi).sum(dim=1)  # (B,) logits


# ------------------------------------------------------------------------------------ the family
@register_family("gan")
class GanFamily(GeneratorFamily):
    """Conditional GAN: FiLM-conditioned DCGAN generator, spectrally normalised projection critic.

    Parameters
    ----------
    config : dict
        ``resolution`` (4 * 2**k px, k >= 1), ``cond_dim`` and any of :data:`DEFAULTS`.

    Examples
    --------
    >>> gan = GanFamily({"resolution": 16, "cond_dim": 2, "g_width": 4, "d_width": 4, "z_dim": 2})
    >>> opts = gan.make_optimizers(2e-4)
    >>> losses = gan.train_step(torch.zeros(2, 3, 16, 16), torch.zeros(2, 2), opts, torch.Generator())
    >>> sorted(losses)
    ['d_fake', 'd_real', 'fake_std', 'loss_d', 'loss_g', 'real_std']
    """

    def __init__(self, config: dict):
        super().__init__(config)
        self.config = cfg = complete_config(self.config)
        self.G = _Generator(cfg)
        self.D = _Discriminator(cfg)
        self.G_ema: _Generator | None = None
        if cfg["ema"] > 0:
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.int64))

    # -- interface
    def noise_shape(self) -> tuple[int, ...]:
        return (self.config["z_dim"],)

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        betas = tuple(self.config["betas"])
        return {
            "g": torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas),
            "d": torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas),
        }

    def _noise(self, n: int, generator: torch.Generator, like: Tensor) -> Tensor:
        z = torch.randn(n, self.config["z_dim"], generator=generator)  # drawn on the CPU generator
        return z.to(device=like.device, dtype=like.dtype)

    def _d_losses(self, real: Tensor, fake: Tensor) -> Tensor:
        if self.config["loss"] == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def _g_loss(self, fake: Tensor) -> Tensor:
        if self.config["loss"] == "hinge":
            return -fake.mean()
        return F.softplus(-fake).mean()

    def train_step(
        self, images: Tensor, cond: Tensor, optimizers: dict, generator: torch.Generator
    ) -> dict[str, float]:
        cfg = self.config
        opt_g, opt_d = optimizers["g"], optimizers["d"]
        self.train()
        b = len(images)
        r1 = None
        # 1. critic steps: the same real batch, fresh noise each time
        self.D.requires_grad_(True)
        for _ in range(cfg["n_critic"]):
            opt_d.zero_grad(set_to_none=True)
            with torch.no_grad():
                fake = self.G(self._noise(b, generator, images), cond)  # (B, 3, R, R)
            real_in = images.detach().requires_grad_(cfg["r1"] > 0)
            d_real = self.D(real_in, cond)  # (B,)
            d_fake = self.D(fake, cond)
            loss_d = self._d_losses(d_real, d_fake)
            if cfg["r1"] > 0:
                (grad,) = torch.autograd.grad(d_real.sum(), real_in, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                loss_d = loss_d + cfg["r1"] / 2 * r1
            loss_d.backward()
            opt_d.step()
        # 2. generator step (D frozen: no gradients into its weights)
        self.D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        fake = self.G(self._noise(b, generator, images), cond)
        loss_g = self._g_loss(self.D(fake, cond))
        loss_g.backward()
        opt_g.step()
        self.D.requires_grad_(True)
        self._update_ema()
        out = {
            "loss_d": float(loss_d.detach()),  # of the last critic step
            "loss_g": float(loss_g.detach()),
            "d_real": float(d_real.detach().mean()),  # mean critic logits of the last critic step
            "d_fake": float(d_fake.detach().mean()),
            "fake_std": float(fake.detach().std(dim=0).mean()) if b > 1 else 0.0,  # collapse watch
            "real_std": float(images.std(dim=0).mean()) if b > 1 else 0.0,
        }
        if r1 is not None:
            out["r1"] = float(r1.detach())
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.G_ema is None:
            return
        n = int(self.ema_updates)
        decay = min(self.config["ema"], (1 + n) / (10 + n))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            p_ema.lerp_(p, 1 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            b_ema.copy_(b)  # BatchNorm running statistics (norm = "batch")
        self.ema_updates += 1

    @torch.no_grad()
    def sample(self, cond: Tensor, noise: Tensor) -> Tensor:
        net = self.G_ema if self.G_ema is not None else self.G
        was_training = net.training
        net.eval()  # BatchNorm: running statistics, so an image never depends on its batch
        try:
            z = noise.to(device=cond.device, dtype=cond.dtype).reshape(len(noise), -1)
            return net(z, cond)
        finally:
            net.train(was_training)

    # -- mode collapse
    @torch.no_grad()
    def diversity(self, cond: Tensor, noise: Tensor) -> Tensor:
        """Spread of the images of each condition under different noise (0 = collapsed to one image).

        Parameters
        ----------
        cond : Tensor
            (N, cond_dim) conditions.
        noise : Tensor
            (N, K, z_dim) noise, K >= 2 draws per condition.

        Returns
        -------
        Tensor
            (N,) mean pairwise RMS distance between the K images of each condition, in [-1, 1] pixel units
            (two independent uniform-noise images are ~0.82 apart; identical images 0).
        """
        n, k = noise.shape[:2]
        if k < 2:
            raise ValueError("diversity needs K >= 2 noise draws per condition")
        images = self.sample(cond.repeat_interleave(k, dim=0), noise.reshape(n * k, -1))
        flat = images.reshape(n, k, -1)  # (N, K, 3*R*R)
        d = torch.cdist(flat, flat) / math.sqrt(flat.shape[-1])  # (N, K, K) RMS distances
        return d.sum(dim=(1, 2)) / (k * (k - 1))

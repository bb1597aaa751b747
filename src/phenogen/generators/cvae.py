"""The conditional VAE family (``cvae``): a conv encoder ``q(z | x, c)``, a conv decoder ``p(x | z, c)``,
and *concept vectors* — the latent direction of each trait, to move a portrait along one trait.

Condition
    The standardised DNA features ``c`` (``cond_dim``) are embedded linearly, ``e = W c`` (``cond_embed``
    wide). The encoder reads ``e`` beside the image's features, the decoder reads it twice: concatenated
    with ``z`` at its input and as FiLM modulation (``norm(h) · (1 + γ(e)) + β(e)``, starting at zero) after
    every block, so the barcode steers every scale of the picture.
Encoder
    Per level a 3x3 convolution and a 4x4 stride-2 convolution (GroupNorm, SiLU), from ``resolution`` down
    to a side of at most 4 (``width`` channels at full resolution, doubled per level, capped at
    ``max_width``), flattened, concatenated with ``e``, and mapped to the posterior's mean and log-variance.
Decoder
    ``[z, e]`` → a linear map to the smallest feature map, then per level nearest-neighbour upsampling and
    two 3x3 convolutions (GroupNorm + FiLM, SiLU), and a 3x3 convolution to RGB with ``tanh``. GroupNorm
    makes an image depend only on its own condition and noise, never on its batch.
Loss
    The negative ELBO per pixel: ``Σ (x - x̂)² / (2 σ²) + β · KL(q(z|x,c) || N(0, I))``, divided by the
    number of values of an image; ``sigma`` (the decoder's pixel noise on [-1, 1]) and ``beta`` trade
    sharpness against a latent the prior covers. One AdamW optimizer (``{"model"}``). The reparameterised
    noise is drawn from the step's generator, so resume is exact.
Sampling
    ``z`` is the framework's noise (``N(0, I)``, ``z_dim``): image = decoder(z, e(c)).
Concept vectors
    After training (:meth:`CvaeFamily.after_training`), for every trait of the dataset the decoder's latent
    ``l = [μ(x, c), e(c)]`` of every training photo is regressed by least squares on the standardised trait
    values of its record (all traits jointly, with an intercept): the coefficient row of trait ``t`` is the
    change of the latent per standard deviation of ``t``, the others held fixed. :meth:`CvaeFamily.move`
    adds ``amount ·`` that vector to a portrait's latent and decodes — a portrait moved along one trait at
    equal noise. The vectors live in ``model.safetensors`` (``extra.concepts``, (K, z_dim + cond_embed),
    with the traits' means and standard deviations) and their names in ``config.json``
    (``concept_names``). A dataset without traits gives no concepts (``train_metrics.json`` says so).

>>> vae = CvaeFamily({"resolution": 16, "cond_dim": 3, "width": 8, "z_dim": 4})
>>> vae.noise_shape(), tuple(vae.sample(torch.zeros(2, 3), torch.zeros(2, 4)).shape)
((4,), (2, 3, 16, 16))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phenogen.errors import ConfigError, InputError
from phenogen.generators.base import GeneratorFamily, family_params, register_family

__all__ = ["CvaeFamily", "DEFAULTS"]

DEFAULTS: dict = {
    "z_dim": 32,  # latent dimensions
    "cond_embed": 64,  # width of the linear condition embedding
    "width": 16,  # channels at full resolution, doubled per level towards the smallest map (32: 3x slower)
    "max_width": 256,
    "beta": 1.0,  # weight of the KL term
    "sigma": 0.1,  # decoder pixel noise (on [-1, 1]): the reconstruction weight is 1 / (2 sigma^2)
    "weight_decay": 0.0,
    "concept_names": [],  # filled after training: the traits with a concept vector
}
"""Hyper-parameters of the family and their defaults (``config`` keys beside ``resolution``, ``cond_dim``)."""


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, affine=False)


def _levels(resolution: int) -> int:
    """Halvings from ``resolution`` to a side of at most 4 (stopping at an odd side)."""
    n, side = 0, resolution
    while side > 4 and side % 2 == 0:
        side //= 2
        n += 1
    return n


class _Film(nn.Module):
    """``norm(h) · (1 + γ(e)) + β(e)``, γ and β linear in ``e`` and zero at initialisation."""

    def __init__(self, channels: int, embed: int):
        super().__init__()
        self.norm = _norm(channels)
        self.to_gb = nn.Linear(embed, 2 * channels)
        nn.init.zeros_(self.to_gb.weight)
        nn.init.zeros_(self.to_gb.bias)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        gamma, beta = self.to_gb(e)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        return self.norm(h) * (1 + gamma) + beta


class _UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, embed: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film1 = _Film(c_out, embed)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film2 = _Film(c_out, embed)

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = F.silu(self.film1(self.conv1(h), e))
        return F.silu(self.film2(self.conv2(h), e))


@register_family("cvae")
class CvaeFamily(GeneratorFamily):
    """The conditional VAE (see the module docstring); ``config`` keys: :data:`DEFAULTS`."""

    def __init__(self, config: dict):
        super().__init__(config)
        cfg = family_params("cvae", self.config, DEFAULTS)
        for key in ("z_dim", "cond_embed", "width", "max_width"):
            if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
                raise ConfigError(f"cvae: params.{key} must be a positive integer, got {cfg[key]!r}")
        for key in ("beta", "sigma", "weight_decay"):
            if isinstance(cfg[key], bool) or not isinstance(cfg[key], int | float) or cfg[key] < 0:
                raise ConfigError(f"cvae: params.{key} must be a number >= 0, got {cfg[key]!r}")
        if cfg["sigma"] <= 0:
            raise ConfigError(f"cvae: params.sigma must be > 0, got {cfg['sigma']!r}")
        if not isinstance(cfg["concept_names"], list):
            raise ConfigError("cvae: concept_names must be a list of trait names")
        res = cfg["resolution"]
        n = _levels(res)
        if n < 2:
            raise ConfigError(f"cvae: resolution {res} needs at least two halvings (use a multiple of 16)")
        self.config = cfg
        w, cap, E, Z = cfg["width"], cfg["max_width"], cfg["cond_embed"], cfg["z_dim"]
        chans = [min(cap, w * 2**i) for i in range(n + 1)]  # full resolution … smallest map
        self.side = res // 2**n
        self.embed = nn.Linear(cfg["cond_dim"], E)
        # encoder q(z | x, c)
        enc: list[nn.Module] = [nn.Conv2d(3, chans[0], 3, padding=1), nn.SiLU()]
        for i in range(n):
            enc += [nn.Conv2d(chans[i], chans[i], 3, padding=1), _norm(chans[i]), nn.SiLU(),
                    nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1), _norm(chans[i + 1]), nn.SiLU()]  # fmt: skip
        self.encoder = nn.Sequential(*enc)
        flat = chans[-1] * self.side**2
        self.enc_head = nn.Sequential(nn.Linear(flat + E, 256), nn.SiLU(), nn.Linear(256, 2 * Z))
        # decoder p(x | z, c)
        self.dec_in = nn.Linear(Z + E, flat)
        self.up = nn.ModuleList(_UpBlock(chans[i + 1], chans[i], E) for i in reversed(range(n)))
        self.to_rgb = nn.Conv2d(chans[0], 3, 3, padding=1)
        self.concepts: Tensor | None = None  # (K, Z + E) once fitted
        self.concept_mean: Tensor | None = None
        self.concept_std: Tensor | None = None

    # ------------------------------------------------------------------ interface
    def noise_shape(self) -> tuple[int, ...]:
        return (self.config["z_dim"],)

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {
            "model": torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=self.config["weight_decay"])
        }

    def posterior(self, images: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)`` (B, z_dim) of ``q(z | x, c)`` for images (B, 3, R, R) and embeddings ``e``."""
        h = self.encoder(images).flatten(1)  # (B, C·s·s)
        mu, logvar = self.enc_head(torch.cat([h, e], dim=1)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor, e: Tensor) -> Tensor:
        """Images (B, 3, R, R) in [-1, 1] from latents ``z`` (B, z_dim) and embeddings ``e`` (B, cond_embed)."""
        h = self.dec_in(torch.cat([z, e], dim=1)).view(len(z), -1, self.side, self.side)
        for block in self.up:
            h = block(h, e)
        return torch.tanh(self.to_rgb(h))

    def train_step(
        self, images: Tensor, cond: Tensor, optimizers: dict, generator: torch.Generator
    ) -> dict[str, float]:
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        e = self.embed(cond)  # (B, E)
        mu, logvar = self.posterior(images, e)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        recon = self.decode(z, e)
        values = images[0].numel()
        sq = (recon - images).pow(2).flatten(1).sum(1)  # (B,)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)  # (B,)
        loss = (sq / (2 * self.config["sigma"] ** 2) + self.config["beta"] * kl).mean() / values
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "mse": (sq.mean() / values).item(), "kl": kl.mean().item()}

    @torch.no_grad()
    def sample(self, cond: Tensor, noise: Tensor) -> Tensor:
        return self.decode(noise.to(cond.device), self.embed(cond))

    def extra_state(self) -> dict[str, Tensor]:
        if self.concepts is None:
            return {}
        return {"concepts": self.concepts, "concept_mean": self.concept_mean, "concept_std": self.concept_std}

    def load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        names = self.config["concept_names"]
        if not names:
            self.concepts = self.concept_mean = self.concept_std = None
            return
        concepts = tensors.get("concepts")
        width = self.config["z_dim"] + self.config["cond_embed"]
        if concepts is None or tuple(concepts.shape) != (len(names), width):
            raise ConfigError(f"cvae: concept vectors missing or not ({len(names)}, {width}) for {names}")
        self.concepts = concepts.float()
        self.concept_mean = tensors["concept_mean"].double()
        self.concept_std = tensors["concept_std"].double()

    # ------------------------------------------------------------------ concept vectors
    @torch.no_grad()
    def after_training(self, images: Tensor, cond: Tensor, traits: dict[str, Tensor]) -> dict:
        """Fit the concept vectors (least squares of ``[μ, e]`` on the standardised traits)."""
        from phenogen.diffusion.vae import to_model_range

        self.config["concept_names"] = []
        self.concepts = self.concept_mean = self.concept_std = None
        if not traits:
            return {"concepts": [], "note": "the dataset declares no trait values: no concept vectors"}
        device = next(self.parameters()).device
        latents = []
        for a in range(0, len(images), 64):
            x = to_model_range(images[a : a + 64]).to(device)
            e = self.embed(cond[a : a + 64].to(device))
            mu, _ = self.posterior(x, e)
            latents.append(torch.cat([mu, e], dim=1).double().cpu())
        lat = torch.cat(latents)  # (N, Z + E)
        names = [t for t, v in traits.items() if torch.isfinite(v).sum() > 2]
        t = torch.stack([traits[n] for n in names], dim=1) if names else torch.zeros(len(lat), 0)  # (N, K)
        rows = torch.isfinite(t).all(1)
        t, lat = t[rows], lat[rows]
        mean, std = t.mean(0), t.std(0, correction=0)
        keep = std > 1e-9
        dropped = [n for n, k in zip(names, keep.tolist(), strict=True) if not k]
        names = [n for n, k in zip(names, keep.tolist(), strict=True) if k]
        if not names or len(t) < len(names) + 2:
            return {
                "concepts": [],
                "dropped": dropped,
                "note": "too few photos with trait values: no concept vectors",
            }
        t, mean, std = t[:, keep], mean[keep], std[keep]
        design = torch.cat([(t - mean) / std, torch.ones(len(t), 1, dtype=t.dtype)], dim=1)  # (N, K + 1)
        coef = torch.linalg.lstsq(design, lat).solution  # (K + 1, Z + E)
        fitted = design @ coef
        r2 = 1 - (lat - fitted).pow(2).sum() / (lat - lat.mean(0)).pow(2).sum().clamp_min(1e-12)
        self.concepts = coef[:-1].float()
        self.concept_mean, self.concept_std = mean, std
        self.config["concept_names"] = names
        return {
            "concepts": names,
            "dropped": dropped,
            "n_photos": int(len(t)),
            "latent_r2": float(r2),
            "vector_norms": {n: float(v.norm()) for n, v in zip(names, self.concepts, strict=True)},
        }

    @torch.no_grad()
    def move(self, cond: Tensor, noise: Tensor, trait: str, amounts) -> Tensor:
        """One portrait (``cond`` (1, cond_dim), ``noise`` (1, z_dim)) moved along ``trait`` by each of
        ``amounts`` (standard deviations of the trait among the training photos) → (A, 3, R, R)."""
        names = self.config["concept_names"]
        if self.concepts is None or not names:
            raise InputError("this cvae has no concept vectors (it was trained on a dataset without traits)")
        if trait not in names:
            raise InputError(f"no concept vector for trait {trait!r}; known: {', '.join(names)}")
        v = self.concepts[names.index(trait)].to(cond.device)  # (Z + E,)
        Z = self.config["z_dim"]
        e = self.embed(cond[:1])  # (1, E)
        lat = torch.cat([noise[:1].to(cond.device), e], dim=1)  # (1, Z + E)
        a = torch.as_tensor(list(amounts), dtype=lat.dtype, device=lat.device)[:, None]  # (A, 1)
        moved = lat + a * v  # (A, Z + E)
        return self.decode(moved[:, :Z], moved[:, Z:])

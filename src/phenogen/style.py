"""Neural style transfer of portraits ("paleoart" renders) on the project's own CNN features.

Gatys, Ecker & Bethge (2016), *Image style transfer using convolutional neural networks*: an image is
optimised so that its deep features match a content image (one stage's activations) while the Gram
matrices of several stages' activations match a style image. No pretrained VGG exists offline, so the
features are those of the trait probe phenogen trains for every evaluation
(:class:`phenogen.evaluate.probe.SmallCNN`: four stride-2 conv stages) — a network that has learned
exactly what distinguishes these birds, which is what a content loss should keep.

Choices, each a knob of :class:`StyleConfig`:

* the image is parameterised as ``sigmoid(θ)`` (always a valid picture) and ``θ`` starts at the content
  image's logits, optimised with Adam — a few hundred steps converge on a CPU for 64–128 px portraits;
* each loss is normalised by its target's energy (``‖G − G_s‖² / ‖G_s‖²``, ``‖F − F_c‖² / ‖F_c‖²``), so the
  weights are scale-free and comparable across stages and style images;
* the features are computed at the portrait's own resolution (the stages are fully convolutional), not
  resized to the probe's 64 px, so strokes keep their size on larger images;
* the style loss sees the image shifted by a few pixels, a new shift each step (``jitter``), and a small
  total-variation term smooths it: the stride-2 stages alias, so without them the optimum is checkerboard
  noise that only one pixel grid reads as texture; with them the background turns into brush strokes
  (looked at on the seed-0 demo's held-out portraits: BENCHMARKS.md);
* ``keep_colours`` (default) transfers luminance only (Gatys et al. 2016, *Preserving color in neural
  artistic style transfer*): the result keeps the portrait's chroma, i.e. the hues that the DNA wrote.

:func:`builtin_style` draws two painting-like style images procedurally (no files needed): ``strokes``
(oil-like brush strokes in an earth palette along a smooth flow field) and ``hatching`` (sepia ink
cross-hatching on paper).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from phenogen.errors import ConfigError

__all__ = [
    "BUILTIN_STYLES",
    "StyleConfig",
    "builtin_style",
    "gram",
    "stage_features",
    "stylize",
    "to_image",
    "to_tensor",
]

BUILTIN_STYLES = ("strokes", "hatching")
N_STAGES = 4  # SmallCNN: four (conv, GroupNorm, SiLU) stages


@dataclass
class StyleConfig:
    """Settings of :func:`stylize` (the ``[style]`` section of ``phenogen stylize``)."""

    steps: int = 300  # Adam steps on the image
    lr: float = 0.05  # on the logits θ of the image
    style_weight: float = 5.0  # of the normalised Gram loss (summed over style_layers)
    content_weight: float = 1.0  # of the normalised content loss
    tv_weight: float = 1.0  # total variation of the image (smoothness); 0 = off
    content_layer: int = 3  # 1-based stage whose activations are the content
    style_layers: list[int] = field(default_factory=lambda: [1, 2, 3, 4])  # 1-based stages for the Gram loss
    keep_colours: bool = True  # luminance-only transfer: keep the portrait's hues
    size: int = 0  # work at this side in pixels (0 = the portrait's own size)
    jitter: int = 4  # the style loss sees the image shifted by up to this many pixels (a new shift each step)
    seed: int = 0  # of the builtin style image and of the jitter

    def check(self) -> StyleConfig:
        if self.steps < 1:
            raise ConfigError(f"style.steps = {self.steps}: give at least 1")
        if not self.lr > 0:
            raise ConfigError(f"style.lr = {self.lr}: give a positive learning rate")
        for name in ("style_weight", "content_weight", "tv_weight"):
            if getattr(self, name) < 0 or not math.isfinite(getattr(self, name)):
                raise ConfigError(f"style.{name} = {getattr(self, name)}: give a finite number >= 0")
        if self.style_weight == 0 and self.content_weight == 0:
            raise ConfigError("style.style_weight and style.content_weight are both 0: nothing to optimise")
        if not 1 <= self.content_layer <= N_STAGES:
            raise ConfigError(f"style.content_layer = {self.content_layer}: the CNN has stages 1-{N_STAGES}")
        bad = [s for s in self.style_layers if not 1 <= int(s) <= N_STAGES]
        if not self.style_layers or bad:
            raise ConfigError(f"style.style_layers = {self.style_layers}: give stages among 1-{N_STAGES}")
        if not 0 <= self.jitter <= 16:
            raise ConfigError(f"style.jitter = {self.jitter}: give 0-16 pixels")
        if self.size != 0 and not 16 <= self.size <= 1024:
            raise ConfigError(f"style.size = {self.size}: give 0 (the portrait's size) or 16-1024 pixels")
        return self


# ------------------------------------------------------------------------------------------ images
def to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """PIL image → (1, 3, H, W) float in [0, 1] (square-resized to ``size`` when given)."""
    image = image.convert("RGB")
    if size:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def to_image(x: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) float in [0, 1] → PIL RGB image."""
    x = x.detach().reshape(-1, *x.shape[-3:])[0].clamp(0, 1)
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))


def _palette_jitter(rng: np.random.Generator, rgb: Sequence[int], amount: int) -> tuple[int, int, int]:
    """``rgb`` lighter or darker by up to ``amount`` (the hue kept)."""
    d = int(rng.integers(-amount, amount + 1))
    r, g, b = (int(np.clip(c + d, 0, 255)) for c in rgb)
    return r, g, b


def builtin_style(name: str, size: int = 256, seed: int = 0) -> Image.Image:
    """A procedurally drawn style image: ``strokes`` (oil-like) or ``hatching`` (ink). Deterministic in ``seed``."""
    from PIL import ImageDraw, ImageFilter

    if name not in BUILTIN_STYLES:
        raise ConfigError(
            f"builtin:{name}: unknown style; the builtin styles are {', '.join(BUILTIN_STYLES)}"
        )
    rng = np.random.default_rng(seed)
    s = int(size)
    if name == "strokes":
        palette = [(176, 122, 56), (124, 70, 38), (84, 60, 40), (214, 186, 130), (96, 110, 70), (58, 74, 96),
                   (190, 90, 50)]  # fmt: skip  # ochre, sienna, umber, cream, olive, slate, vermilion
        img = Image.new("RGB", (s, s), (150, 120, 84))
        draw = ImageDraw.Draw(img)
        # a smooth flow field: the strokes follow sin/cos waves of random phase, as a painter's hand does
        kx, ky, ph = rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(0, 2 * math.pi)
        for _ in range(int(1.6 * s)):
            x, y = rng.uniform(0, s), rng.uniform(0, s)
            colour = _palette_jitter(rng, palette[rng.integers(len(palette))], 18)
            width = int(rng.integers(max(2, s // 64), max(3, s // 20)))
            pts = [(x, y)]
            for _ in range(int(rng.integers(3, 7))):
                a = math.sin(kx * x / s * 2 * math.pi + ph) + math.cos(ky * y / s * 2 * math.pi - ph)
                x, y = x + math.cos(a) * s / 28, y + math.sin(a) * s / 28
                pts.append((x, y))
            draw.line(pts, fill=colour, width=width, joint="curve")
        return img.filter(ImageFilter.GaussianBlur(radius=max(0.5, s / 256)))
    img = Image.new("RGB", (s, s), (236, 224, 198))  # hatching: sepia ink on paper
    draw = ImageDraw.Draw(img)
    ink = (70, 48, 30)
    for angle in (math.pi / 4, -math.pi / 4):
        spacing = max(3, s // 48)
        for off in range(-s, 2 * s, spacing):
            if rng.random() < 0.35:
                continue  # gaps, as a hand leaves them
            dx, dy = math.cos(angle) * 2 * s, math.sin(angle) * 2 * s
            x0, y0 = off + rng.uniform(-1, 1) * spacing / 3, 0.0
            draw.line([(x0 - dx, y0 - dy), (x0 + dx, y0 + dy)], fill=_palette_jitter(rng, ink, 20),
                      width=int(rng.integers(1, 3)))  # fmt: skip
    return img.filter(ImageFilter.GaussianBlur(radius=0.4))


# ---------------------------------------------------------------------------------------- features
def stage_features(
    backbone: torch.nn.Module, x: torch.Tensor, stages: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Activations of the 1-based ``stages`` of a :class:`~phenogen.evaluate.probe.SmallCNN` for (B, 3, H, W) in
    [0, 1], at the input's own resolution (no resize to the probe's size)."""
    body = backbone.body
    if len(body) != 3 * N_STAGES:
        raise ConfigError(f"the feature network has {len(body)} body layers; a SmallCNN has {3 * N_STAGES}")
    h = (x - 0.5) / 0.25  # SmallCNN.prepare's centring
    out: dict[int, torch.Tensor] = {}
    last = max(stages)
    for i in range(last):
        h = body[3 * i : 3 * i + 3](h)
        if i + 1 in stages:
            out[i + 1] = h
    return out


def gram(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C) Gram matrix of the channels, averaged over positions."""
    b, c, h, w = f.shape
    flat = f.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def _luma_chroma(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB in [0, 1] → (Y, CbCr) of ITU-R BT.601."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return y, torch.cat([(b - y) * 0.564, (r - y) * 0.713], dim=1)


def _from_luma_chroma(y: torch.Tensor, cbcr: torch.Tensor) -> torch.Tensor:
    cb, cr = cbcr[:, 0:1] / 0.564, cbcr[:, 1:2] / 0.713
    r, b = y + cr, y + cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.cat([r, g, b], dim=1).clamp(0, 1)


def stylize(
    backbone: torch.nn.Module,
    content: torch.Tensor,
    style: torch.Tensor,
    cfg: StyleConfig | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Paint ``content`` (B, 3, H, W) in [0, 1] in the style of ``style`` (1, 3, h, w) in [0, 1].

    Every content image is optimised at once (one batch; each against the same style Grams). ``callback(step,
    loss)`` is called after each step (progress bars). Returns the (B, 3, H, W) result in [0, 1] and the final
    losses (``content``, ``style``, ``total``: normalised, summed over the batch's mean). Deterministic: no
    randomness beyond the inputs.
    """
    cfg = (cfg or StyleConfig()).check()
    backbone = backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    style_layers = sorted({int(s) for s in cfg.style_layers})
    with torch.no_grad():
        grams_s = {k: gram(v) for k, v in stage_features(backbone, style, style_layers).items()}
        feat_c = stage_features(backbone, content, [cfg.content_layer])[cfg.content_layer]
    theta = torch.logit(content.clamp(0.02, 0.98)).clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)

    gen = torch.Generator().manual_seed(cfg.seed)

    def losses(
        x: torch.Tensor, shift: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fc = stage_features(backbone, x, [cfg.content_layer])[cfg.content_layer]
        # the style loss on a shifted copy: the stride-2 stages alias, and a pattern that exploits one pixel grid
        # (checkerboard noise) stops paying once the grid moves every step (transformation robustness)
        feats = stage_features(backbone, torch.roll(x, shifts=shift, dims=(-2, -1)), style_layers)
        lc = ((fc - feat_c) ** 2).flatten(1).sum(1) / (feat_c**2).flatten(1).sum(1).clamp_min(1e-8)
        ls = torch.zeros(x.shape[0])
        for k in style_layers:
            g, gs = gram(feats[k]), grams_s[k]
            ls = ls + ((g - gs) ** 2).flatten(1).sum(1) / (gs**2).flatten(1).sum(1).clamp_min(1e-8)
        tv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1) + (
            x[..., 1:] - x[..., :-1]
        ).abs().flatten(1).mean(1)
        return lc.mean(), ls.mean(), tv.mean()

    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        shift = tuple(int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen))
        lc, ls, tv = losses(torch.sigmoid(theta), shift)
        loss = cfg.content_weight * lc + cfg.style_weight * ls + cfg.tv_weight * tv
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step + 1, float(loss.detach()))
    with torch.no_grad():
        x = torch.sigmoid(theta)
        lc, ls, tv = losses(x)
        if cfg.keep_colours:
            y, _ = _luma_chroma(x)
            _, cbcr = _luma_chroma(content)
            x = _from_luma_chroma(y, cbcr)
    total = cfg.content_weight * float(lc) + cfg.style_weight * float(ls) + cfg.tv_weight * float(tv)
    return x, {"content": float(lc), "style": float(ls), "tv": float(tv), "total": total}

"""The bird renderer: latent traits → a side-view songbird picture (RGB, anti-aliased).

Every continuous trait of :mod:`phenogen.sim.traitspec` is squashed to one visual parameter,

    visual = lo + (hi - lo) * sigmoid(gain * latent)

with the ranges of :data:`VISUAL_MAP` (one table: read it to see what each trait does). Latents
-2…+2 span clearly different birds, and since the sigmoid never leaves ``[lo, hi]`` every latent
gives a valid-looking one. The binary traits (eye stripe, wing bars, breast spots) are drawn when
their value is >= 0.5.

Geometry lives in a resolution-independent "bird frame" (unit = one body length, x towards the
head, y down). One affine map (size, pose rotation, flip, position) takes it to the picture, which
is drawn with PIL at :data:`SUPERSAMPLE` × the output size and box-averaged down (supersampling
anti-aliasing: ~15× faster than a LANCZOS resize at 64 px, and free of ringing). A "photo"
(:class:`PhotoStyle`) adds pose, scale and position jitter, a soft gradient background, a perch
and lighting; the bird always stays fully inside the frame (see :func:`render_bird`).

>>> from phenogen.sim.traitspec import TRAIT_NAMES
>>> img = render_bird({name: 0.0 for name in TRAIT_NAMES})
>>> img.size, img.mode
((64, 64), 'RGB')
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from phenogen.errors import InputError
from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES

__all__ = [
    "VISUAL_MAP",
    "VisualRange",
    "PhotoStyle",
    "random_style",
    "visual_params",
    "render_bird",
    "render_background",
    "render_photos",
]

SUPERSAMPLE = 4  # drawing resolution / output resolution
MARGIN = 0.06  # free border (fraction of the frame side) that the bird never enters


class VisualRange(NamedTuple):
    """How one continuous trait is drawn: ``param = lo + (hi - lo) * sigmoid(gain * latent)``."""

    param: str
    lo: float
    hi: float
    gain: float
    meaning: str


#: The latent → visual table. Lengths are in body lengths; colours are positions 0…1 on the plumage
#: ramp ``_HUE_RAMP`` (crimson, rufous, buff, ochre, olive, green, slate blue); lightness is HLS.
VISUAL_MAP: dict[str, VisualRange] = {
    "body_size": VisualRange("scale", 0.22, 0.34, 1.0, "body length as a fraction of the frame side"),
    "body_hue": VisualRange("body_hue", 0.0, 1.0, 1.0, "body and belly colour (position on the ramp)"),
    "body_lightness": VisualRange("body_lightness", 0.2, 0.8, 1.0, "body lightness; belly and head follow"),
    "wing_hue": VisualRange("wing_hue", 0.0, 1.0, 1.0, "wing and tail colour (position on the ramp)"),
    "wing_lightness": VisualRange("wing_lightness", 0.14, 0.74, 1.0, "wing and tail lightness"),
    "head_hue": VisualRange("head_hue", 0.0, 1.0, 1.0, "head and crest colour (position on the ramp)"),
    "beak_length": VisualRange("beak_length", 0.12, 0.58, 1.0, "beak length along its curve"),
    "beak_curvature": VisualRange("beak_curvature", -0.1, 1.5, 1.0, "downward bend of the beak, radians"),
    "beak_depth": VisualRange("beak_depth", 0.03, 0.12, 1.0, "half-depth of the beak at its base"),
    "tail_length": VisualRange("tail_length", 0.2, 0.85, 1.0, "tail length"),
    "leg_length": VisualRange("leg_length", 0.06, 0.4, 1.0, "visible leg length below the belly"),
    "crest_size": VisualRange("crest_size", -0.06, 0.36, 1.0, "crest height above the crown (<= 0.01: none)"),
}
assert set(VISUAL_MAP) == set(CONTINUOUS), "VISUAL_MAP must cover every continuous trait"

# (position, HLS hue in turns, saturation): natural colours in a natural order, so that common
# latents (near 0) give buff/ochre/olive birds and the tails give crimson or slate-blue ones.
_HUE_RAMP = np.array(
    [[0.0, -0.02, 0.58], [0.17, 0.04, 0.55], [0.33, 0.085, 0.42], [0.5, 0.13, 0.55],
     [0.67, 0.23, 0.42], [0.83, 0.4, 0.4], [1.0, 0.6, 0.48]]
)  # fmt: skip
_TILT = math.radians(24.0)  # the body axis rises towards the head
_BODY_A, _BODY_B, _HEAD_R = 0.5, 0.29, 0.2  # body ellipse semi-axes, head radius
_LEG, _PERCH, _SPOT, _BEAK, _STRIPE = (0.36, 0.3, 0.26), (0.42, 0.31, 0.21), (0.2, 0.14, 0.1), (0.27, 0.25, 0.24), (0.1, 0.09, 0.09)  # fmt: skip
_SPOTS = np.array([[0.33, 0.0], [0.3, 0.1], [0.22, 0.03], [0.2, 0.18], [0.1, 0.12], [0.12, 0.24],
                   [0.05, 0.2], [-0.04, 0.14], [-0.06, 0.24]])  # fmt: skip  # body-axis coordinates
_BACKGROUNDS = (  # (top, bottom) in 0-1 RGB: sky, haze, foliage, dusk, forest shade
    ((0.72, 0.82, 0.93), (0.9, 0.92, 0.9)),
    ((0.86, 0.88, 0.9), (0.76, 0.8, 0.76)),
    ((0.7, 0.79, 0.62), (0.52, 0.62, 0.46)),
    ((0.93, 0.86, 0.76), (0.8, 0.76, 0.7)),
    ((0.58, 0.68, 0.56), (0.76, 0.8, 0.68)),
)
_CANONICAL_BACKGROUND = ((200, 214, 228), (232, 234, 228))


@dataclass(frozen=True)
class PhotoStyle:
    """How one "photo" of a bird is taken; the defaults are the canonical render.

    ``rotation`` pose tilt in degrees; ``scale`` size multiplier; ``dx``, ``dy`` shift of the bird
    as a fraction of the frame (clamped so the bird stays in frame); ``flip`` mirror left/right;
    ``background`` (top, bottom) RGB 0-255 of the vertical gradient, None = canonical;
    ``brightness``, ``contrast`` lighting multipliers; ``perch`` draw the branch under the feet.
    """

    rotation: float = 0.0
    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    flip: bool = False
    background: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
    brightness: float = 1.0
    contrast: float = 1.0
    perch: bool = True

    def __post_init__(self) -> None:
        if not -45 <= self.rotation <= 45:
            raise ValueError(f"rotation must be in [-45, 45] degrees, got {self.rotation}")
        if not 0.5 <= self.scale <= 1.1:
            raise ValueError(
                f"scale must be in [0.5, 1.1] (larger birds could leave the frame), got {self.scale}"
            )
        if abs(self.dx) > 0.5 or abs(self.dy) > 0.5:
            raise ValueError(f"dx, dy must be in [-0.5, 0.5] (frame fractions), got {self.dx}, {self.dy}")
        if not (0.2 <= self.brightness <= 3 and 0.2 <= self.contrast <= 3):
            raise ValueError(
                f"brightness and contrast must be in [0.2, 3], got {self.brightness}, {self.contrast}"
            )
        bg = self.background
        if bg is not None and (
            len(bg) != 2 or any(len(c) != 3 or not all(0 <= x <= 255 for x in c) for c in bg)
        ):
            raise ValueError(f"background must be two RGB triples in 0-255, got {bg}")


def random_style(rng: np.random.Generator) -> PhotoStyle:
    """A random photo: rotation ±10°, scale ±10 %, shift ±0.08, flip 50 %, background, lighting ±15 %.

    >>> random_style(np.random.default_rng(0)).scale != 1.0
    True
    """
    top, bottom = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    jitter = rng.uniform(-0.06, 0.06, size=(2, 1)) + rng.uniform(-0.02, 0.02, size=(2, 3))  # tone + tint
    (t, b) = np.clip(np.round(255 * (np.array([top, bottom]) + jitter)), 0, 255).astype(int).tolist()
    return PhotoStyle(
        rotation=float(rng.uniform(-10, 10)),
        scale=float(rng.uniform(0.9, 1.1)),
        dx=float(rng.uniform(-0.08, 0.08)),
        dy=float(rng.uniform(-0.08, 0.08)),
        flip=bool(rng.random() < 0.5),
        background=(tuple(t), tuple(b)),  # type: ignore[arg-type]
        brightness=float(rng.uniform(0.85, 1.15)),
        contrast=float(rng.uniform(0.85, 1.15)),
        perch=bool(rng.random() < 0.8),
    )


def visual_params(traits: Mapping[str, float]) -> dict[str, float]:
    """Map latent traits to visual parameters through :data:`VISUAL_MAP` (binary traits → 0.0/1.0).

    Raises :class:`InputError` naming missing, non-numeric or non-finite traits; extra keys are ignored.

    >>> from phenogen.sim.traitspec import TRAIT_NAMES
    >>> round(visual_params({n: 0.0 for n in TRAIT_NAMES})["tail_length"], 3)
    0.525
    """
    missing = [n for n in TRAIT_NAMES if n not in traits]
    if missing:
        raise InputError(
            f"bird traits are missing {', '.join(missing)}; the renderer needs all of: {', '.join(TRAIT_NAMES)}"
        )
    out: dict[str, float] = {}
    for name in TRAIT_NAMES:
        try:
            value = float(traits[name])
        except (TypeError, ValueError):
            raise InputError(f"bird trait {name} = {traits[name]!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"bird trait {name} = {value} is not finite")
        if name in DISCRETE:
            out[name] = 1.0 if value >= 0.5 else 0.0
        else:
            r = VISUAL_MAP[name]
            out[r.param] = r.lo + (r.hi - r.lo) / (1.0 + math.exp(-r.gain * value))
    return out


# --- colours (0-1 RGB) -------------------------------------------------------------------------------
def _ramp(pos: float, light: float, sat_scale: float = 1.0) -> tuple[float, float, float]:
    hue = float(np.interp(pos, _HUE_RAMP[:, 0], _HUE_RAMP[:, 1]))
    sat = float(np.interp(pos, _HUE_RAMP[:, 0], _HUE_RAMP[:, 2])) * sat_scale
    return colorsys.hls_to_rgb(hue % 1.0, min(max(light, 0.0), 1.0), min(max(sat, 0.0), 1.0))


def _rgb255(c: tuple[float, float, float]) -> tuple[int, int, int]:
    return tuple(int(round(255 * min(max(x, 0.0), 1.0))) for x in c)  # type: ignore[return-value]


def _shade(c: tuple[float, float, float], f: float) -> tuple[float, float, float]:
    return (c[0] * f, c[1] * f, c[2] * f)


def _palette(v: dict[str, float]) -> dict[str, tuple[float, float, float]]:
    light = v["body_lightness"]
    return {
        "body": _ramp(v["body_hue"], light, 1.0 - 0.25 * abs(light - 0.5)),
        "belly": _ramp(v["body_hue"], 0.55 + 0.5 * light, 0.75),
        "wing": _ramp(v["wing_hue"], v["wing_lightness"]),
        "bar": _ramp(v["wing_hue"], 0.95, 0.3),
        "head": _ramp(v["head_hue"], 0.3 + 0.4 * light, 1.1),
    }


# --- geometry in the bird frame (unit = body length, x towards the head, y down) ----------------------
class _Shape(NamedTuple):
    kind: str  # "rim": outlined in the silhouette pass; "edge": outlined just before its fill; "poly"; "line"
    points: np.ndarray  # (K, 2) bird frame
    colour: tuple[float, float, float]
    width: float  # outline (rim/edge) or line width, body lengths


@functools.cache
def _unit_circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.cos(t), np.sin(t)


def _ellipse(cx: float, cy: float, a: float, b: float, angle: float = 0.0, n: int = 48) -> np.ndarray:
    cos_t, sin_t = _unit_circle(n)
    x, y = a * cos_t, b * sin_t
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)  # (n, 2)


def _body_frame(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """Points along the (tilted) body axis ``x`` and towards the belly ``y`` → bird frame, (..., 2)."""
    u = np.array([math.cos(_TILT), -math.sin(_TILT)])
    w = np.array([math.sin(_TILT), math.cos(_TILT)])
    return np.asarray(x)[..., None] * u + np.asarray(y)[..., None] * w


def _band(x: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """The polygon between two edges sampled at the same body-axis positions ``x``."""
    return _body_frame(np.concatenate([x, x[::-1]]), np.concatenate([top, bottom[::-1]]))


def _bird_shapes(v: dict[str, float], pal: dict) -> tuple[list[_Shape], np.ndarray]:
    """The bird as shapes in paint order, and its foot points (2, 2)."""
    shapes: list[_Shape] = []
    # 1. tail: a narrow fan dipping below the body axis, with a shallow notch
    tl, dip = v["tail_length"], 0.28
    d, n, b = (
        np.array([-math.cos(dip), math.sin(dip)]),
        np.array([math.sin(dip), math.cos(dip)]),
        np.array([-0.36, 0.03]),
    )
    tail = np.stack(
        [b - 0.07 * n, b + tl * d - 0.1 * n, b + 0.94 * tl * d, b + tl * d + 0.1 * n, b + 0.07 * n]
    )
    shapes.append(_Shape("rim", _body_frame(tail[:, 0], tail[:, 1]), _shade(pal["wing"], 0.82), 0.02))
    # 2. legs and feet: vertical (gravity) from the belly down to the perch
    belly = _body_frame(0.02, _BODY_B * 0.9)
    foot_y = belly[1] + v["leg_length"]
    feet = np.array([[belly[0] - 0.05, foot_y], [belly[0] + 0.05, foot_y]])
    for x, y in feet:
        shapes.append(_Shape("line", np.array([[x, belly[1] - 0.05], [x, y]]), _LEG, 0.028))
        shapes.append(_Shape("line", np.array([[x - 0.06, y], [x + 0.1, y]]), _LEG, 0.026))
    # 3. body, pale belly (the ellipse below a line rising to the throat), breast spots
    body = _ellipse(0, 0, _BODY_A, _BODY_B, n=64)
    shapes.append(_Shape("rim", _body_frame(body[:, 0], body[:, 1]), pal["body"], 0.022))
    half = _BODY_B * np.sqrt(np.clip(1 - (body[:, 0] / _BODY_A) ** 2, 0, 1))
    pale_y = np.minimum(np.maximum(body[:, 1], 0.06 - 0.16 * body[:, 0]), half)
    shapes.append(_Shape("poly", _body_frame(body[:, 0], pale_y), pal["belly"], 0.0))
    if v["breast_spots"]:
        for p in _body_frame(_SPOTS[:, 0], _SPOTS[:, 1]):
            shapes.append(_Shape("poly", _ellipse(p[0], p[1], 0.04, 0.03, -_TILT, n=12), _SPOT, 0.0))
    # 4. wing: an almond from the shoulder to a pointed tip over the tail base; darker flight
    #    feathers; two pale bars
    t = np.linspace(0, 1, 24)
    wx, upper = 0.3 - 0.92 * t, -0.14 + 0.1 * t
    lower = upper + 0.23 * (1 - t) ** 0.85 * np.sqrt(np.clip(t / 0.16, 0, 1))
    shapes.append(_Shape("edge", _band(wx, upper, lower), pal["wing"], 0.018))
    k = t >= 0.55
    shapes.append(_Shape("poly", _band(wx[k], upper[k], lower[k]), _shade(pal["wing"], 0.72), 0.0))
    if v["wing_bars"]:
        for t0 in (0.15, 0.37):
            k = (t >= t0) & (t <= t0 + 0.11)
            shapes.append(_Shape("poly", _band(wx[k], upper[k], lower[k]), pal["bar"], 0.0))
    # 5. head with crest, eye stripe, eye and beak
    hc = _body_frame(0.47, -0.1) + np.array([0.02, -0.05])
    if v["crest_size"] > 0.01:
        shapes.append(_Shape("rim", _crest(hc, v["crest_size"]), _shade(pal["head"], 0.9), 0.018))
    shapes.append(_Shape("rim", _ellipse(hc[0], hc[1], _HEAD_R, _HEAD_R * 0.96, n=40), pal["head"], 0.022))
    eye = hc + np.array([0.075, -0.025])
    if v["eye_stripe"]:  # the band of the head disc between two horizontal lines through the eye
        lo, hi = (math.asin((eye[1] + off - hc[1]) / _HEAD_R) for off in (-0.05, 0.045))
        a = np.linspace(lo, hi, 10)
        xs = np.concatenate([hc[0] + _HEAD_R * np.cos(a), hc[0] - _HEAD_R * np.cos(a[::-1])])
        ys = np.concatenate([hc[1] + _HEAD_R * np.sin(a), hc[1] + _HEAD_R * np.sin(a[::-1])])
        shapes.append(_Shape("poly", np.stack([xs, ys], 1), _STRIPE, 0.0))
    shapes.append(_Shape("poly", _ellipse(eye[0], eye[1], 0.052, 0.052, n=16), (0.96, 0.95, 0.9), 0.0))
    shapes.append(_Shape("poly", _ellipse(eye[0], eye[1], 0.036, 0.036, n=16), (0.05, 0.05, 0.06), 0.0))
    shapes.append(_Shape("poly", _beak(hc, v), _BEAK, 0.0))
    return shapes, feet


def _crest(hc: np.ndarray, size: float) -> np.ndarray:
    """A swept-back tuft: two quadratic Bézier edges to a pointed tip, its base hidden in the head."""

    def at(deg: float, r: float) -> np.ndarray:
        return hc + r * np.array([math.cos(math.radians(deg)), math.sin(math.radians(deg))])

    def bezier(p0: np.ndarray, c: np.ndarray, p1: np.ndarray) -> np.ndarray:
        s = np.linspace(0, 1, 8)[:, None]
        return (1 - s) ** 2 * p0 + 2 * s * (1 - s) * c + s**2 * p1

    tip = at(-138, _HEAD_R + 1.3 * size)
    front = bezier(at(-75, 0.9 * _HEAD_R), at(-108, _HEAD_R + 0.8 * size), tip)
    back = bezier(tip, at(-155, _HEAD_R + 0.25 * size), at(-170, 0.9 * _HEAD_R))
    inner = np.array([at(deg, 0.8 * _HEAD_R) for deg in np.linspace(-170, -75, 6)])
    return np.concatenate([front, back[1:], inner])


def _beak(hc: np.ndarray, v: dict[str, float]) -> np.ndarray:
    """A tapered polygon bent along a curve that turns down by ``beak_curvature`` radians."""
    length, bend, depth = v["beak_length"], v["beak_curvature"], v["beak_depth"]
    s = np.linspace(0, 1, 18)
    ang = 0.12 + bend * s**1.3  # heading below the horizontal along the beak
    step = length / (len(s) - 1)
    base = hc + np.array([_HEAD_R * 0.8 - depth * 0.6, 0.02])
    cx = base[0] + np.concatenate([[0], np.cumsum(step * np.cos(ang[:-1]))])
    cy = base[1] + np.concatenate([[0], np.cumsum(step * np.sin(ang[:-1]))])
    half = depth * (1 - s) ** 0.9 + 0.006
    nx, ny = -np.sin(ang) * half, np.cos(ang) * half  # normals, scaled
    return np.concatenate([np.stack([cx - nx, cy - ny], 1), np.stack([cx + nx, cy + ny], 1)[::-1]])


# --- drawing -------------------------------------------------------------------------------------------
def _gradient(size: int, background: tuple | None) -> Image.Image:
    """A ``size``×``size`` vertical gradient from the top to the bottom colour."""
    top, bottom = background if background is not None else _CANONICAL_BACKGROUND
    f = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    col = (1 - f) * np.asarray(top, np.float32) + f * np.asarray(bottom, np.float32)  # (H, 1, 3)
    return Image.fromarray(np.round(col).astype(np.uint8), "RGB").resize(
        (size, size), Image.Resampling.NEAREST
    )


def _light(img: Image.Image, style: PhotoStyle) -> Image.Image:
    """Contrast around mid-grey, then brightness, as one per-channel lookup table."""
    if style.brightness == 1.0 and style.contrast == 1.0:
        return img
    x = np.arange(256, dtype=np.float64)
    lut = np.clip(np.round(((x - 128.0) * style.contrast + 128.0) * style.brightness), 0, 255).astype(int)
    return img.point(lut.tolist() * 3)


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 16 <= size <= 1024:
        raise InputError(f"image size must be an integer in [16, 1024] pixels, got {size!r}")


def render_background(size: int = 64, style: PhotoStyle | None = None) -> Image.Image:
    """The photo of ``style`` without bird and perch (gradient and lighting), e.g. for masks and tests."""
    _check_size(size)
    style = style or PhotoStyle()
    return _light(_gradient(size * SUPERSAMPLE, style.background).reduce(SUPERSAMPLE), style)


def render_bird(traits: Mapping[str, float], size: int = 64, style: PhotoStyle | None = None) -> Image.Image:
    """Render one bird as an RGB ``size``×``size`` image; ``style=None`` gives the canonical render.

    The bird's bounding box is centred in the frame, shifted by ``(style.dx, style.dy)`` and
    clamped to stay :data:`MARGIN` from every edge; at the largest body size, tail and beak, scale
    1.1 and 10° rotation it still fits without shrinking (a bird too big for the frame, possible
    only with larger rotations, is shrunk to fit). Same traits and style → byte-identical image.

    >>> from phenogen.sim.traitspec import TRAIT_NAMES
    >>> render_bird({n: 1.0 for n in TRAIT_NAMES}, size=128, style=PhotoStyle(flip=True)).size
    (128, 128)
    """
    # 1. check inputs, build the bird in its own frame
    _check_size(size)
    style = style or PhotoStyle()
    v = visual_params(traits)
    shapes, feet = _bird_shapes(v, _palette(v))
    # 2. the affine map bird frame -> frame fractions: scale, flip, rotate; then centre and shift
    scale = v["scale"] * style.scale
    rot = math.radians(style.rotation)
    m = scale * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    if style.flip:
        m = m @ np.diag([-1.0, 1.0])
    pts = np.concatenate([s.points for s in shapes]) @ m.T
    pad = 0.03 * scale  # outlines and line widths reach beyond the points
    lo, hi = pts.min(0) - pad, pts.max(0) + pad
    if (hi - lo).max() > 1 - 2 * MARGIN:
        shrink = float((1 - 2 * MARGIN) / (hi - lo).max())
        m, scale, lo, hi = m * shrink, scale * shrink, lo * shrink, hi * shrink
    offset = np.clip(0.5 - (lo + hi) / 2 + [style.dx, style.dy], MARGIN - lo, 1 - MARGIN - hi)
    px = size * SUPERSAMPLE

    def to_px(p: np.ndarray) -> list[float]:  # flat [x0, y0, x1, y1, ...] in canvas pixels
        return ((p @ m.T + offset) * px).ravel().tolist()

    def width(w: float) -> int:
        return max(1, round(w * scale * px))

    # 3. background and perch (a long branch under the feet, running out of the frame)
    canvas = _gradient(px, style.background)
    draw = ImageDraw.Draw(canvas)
    if style.perch:
        x0, y0 = feet[:, 0].mean(), feet[:, 1].max() + 0.035
        top = np.array([[x0 - 4.0, y0 + 0.16], [x0 + 4.0, y0 - 0.16]])  # a slight upward slope
        bottom = top + [0.0, 0.09]
        draw.polygon(to_px(np.concatenate([top, bottom[::-1]])), fill=_rgb255(_PERCH))
        draw.line(to_px(bottom), fill=_rgb255(_shade(_PERCH, 0.7)), width=width(0.012))

    # 4. the bird: silhouette rims first (joints between parts stay clean), then fills in paint
    #    order; an "edge" shape (the wing) gets its rim just before its fill, over the body
    def rim(s: _Shape) -> None:
        q = to_px(s.points)
        draw.line(
            [*q, q[0], q[1]], fill=_rgb255(_shade(s.colour, 0.5)), width=width(2 * s.width), joint="curve"
        )

    for s in shapes:
        if s.kind == "rim":
            rim(s)
    for s in shapes:
        if s.kind == "line":
            draw.line(to_px(s.points), fill=_rgb255(s.colour), width=width(s.width))
            continue
        if s.kind == "edge":
            rim(s)
        draw.polygon(to_px(s.points), fill=_rgb255(s.colour))
    # 5. downsample (each pixel averages its SUPERSAMPLE² subpixels) and lighting
    return _light(canvas.reduce(SUPERSAMPLE), style)


def render_photos(
    traits: Mapping[str, float], n: int, size: int, rng: np.random.Generator
) -> list[Image.Image]:
    """``n`` photos of one bird, each with its own :func:`random_style` drawn from ``rng``.

    >>> from phenogen.sim.traitspec import TRAIT_NAMES
    >>> len(render_photos({t: 0.0 for t in TRAIT_NAMES}, 3, 64, np.random.default_rng(0)))
    3
    """
    if n < 0:
        raise InputError(f"number of photos must be >= 0, got {n}")
    visual_params(traits)  # fail early on bad traits, even when n == 0
    return [render_bird(traits, size, random_style(rng)) for _ in range(n)]

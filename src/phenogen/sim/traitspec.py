"""The bird traits of the synthetic clade: names, kinds and what each one means on the picture.

Continuous traits live on a *latent* scale: they evolve along the tree by Brownian motion /
Ornstein–Uhlenbeck around 0, with a clade-wide standard deviation of about 1, so "z-scored trait
error" is simply an RMSE on this scale. The renderer maps each latent value to a visual parameter
through a smooth, monotone squashing (``visual = lo + (hi - lo) * sigmoid(latent)``), so every value
is drawable and differences stay visible. Discrete traits are 0/1 (Mk model on the tree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TraitSpec", "TRAITS", "CONTINUOUS", "DISCRETE", "TRAIT_NAMES"]


@dataclass(frozen=True)
class TraitSpec:
    name: str
    kind: Literal["continuous", "discrete"]
    description: str


TRAITS: tuple[TraitSpec, ...] = (
    TraitSpec("body_size", "continuous", "overall body size (scale of the whole bird in the frame)"),
    TraitSpec("body_hue", "continuous", "hue of the body plumage (around the colour wheel)"),
    TraitSpec("body_lightness", "continuous", "lightness of the body plumage (dark to pale)"),
    TraitSpec("wing_hue", "continuous", "hue of the wing"),
    TraitSpec("wing_lightness", "continuous", "lightness of the wing"),
    TraitSpec("head_hue", "continuous", "hue of the head / cap"),
    TraitSpec("beak_length", "continuous", "beak length relative to the head"),
    TraitSpec("beak_curvature", "continuous", "downward curvature of the beak (straight to decurved)"),
    TraitSpec("beak_depth", "continuous", "beak depth at the base (slender insect-eater to finch-like)"),
    TraitSpec("tail_length", "continuous", "tail length relative to the body"),
    TraitSpec("leg_length", "continuous", "leg length"),
    TraitSpec("crest_size", "continuous", "size of the head crest (none to prominent)"),
    TraitSpec("eye_stripe", "discrete", "dark stripe through the eye (0 absent, 1 present)"),
    TraitSpec("wing_bars", "discrete", "pale bars across the wing (0 absent, 1 present)"),
    TraitSpec("breast_spots", "discrete", "dark spots on the breast (0 absent, 1 present)"),
)
CONTINUOUS: tuple[str, ...] = tuple(t.name for t in TRAITS if t.kind == "continuous")
DISCRETE: tuple[str, ...] = tuple(t.name for t in TRAITS if t.kind == "discrete")
TRAIT_NAMES: tuple[str, ...] = tuple(t.name for t in TRAITS)

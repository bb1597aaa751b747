"""Bird traits evolved along the species tree: Brownian motion or OU for continuous, Mk for 0/1 traits.

Every node of the tree (root, internal, extinct and living tips) gets true values, so ancestors
and extinct species have ground-truth pictures. Time is measured in units of the tree height, so
``sigma``, ``alpha`` and ``mk_rate`` keep their meaning whatever ``tree_height`` is.

* **Continuous** (:data:`~phenogen.sim.traitspec.CONTINUOUS`): multivariate Brownian motion
  (``x_child = x_parent + sqrt(t) sigma L z``) or Ornstein–Uhlenbeck around 0 (exact transition:
  ``x_parent e^{-alpha t}`` plus noise of variance ``sigma^2 (1 - e^{-2 alpha t}) / (2 alpha)``;
  the root is drawn from the stationary distribution). ``L`` is the Cholesky factor of a correlation
  matrix in which traits of the same group (:data:`TRAIT_GROUPS`: the hues, the lightnesses, beak
  length and curvature) correlate by ``correlation``. The root of a Brownian model sits at 0.
  With ``standardize`` the values are shifted and scaled, one affine map per trait applied to every
  node, so that living+extinct species have mean 0 and sd 1 (the latent scale of ``traitspec``).
* **Discrete** (:data:`~phenogen.sim.traitspec.DISCRETE`): symmetric two-state Mk; over a branch of
  length ``t`` the state flips with probability ``(1 - e^{-2 q t}) / 2``; the root state is a fair coin.
* **Individuals** get the species values plus independent ``N(0, noise^2)`` on continuous traits;
  discrete traits are fixed within a species.

>>> import numpy as np
>>> values = evolve_traits([-1, 0, 0], [0.0, 1.0, 1.0], np.random.default_rng(0))
>>> values.shape, sorted(values.names)[:2]
((3, 15), ['beak_curvature', 'beak_depth'])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phenogen.sim.traitspec import CONTINUOUS, DISCRETE, TRAIT_NAMES

__all__ = ["TRAIT_GROUPS", "TraitValues", "trait_correlation_matrix", "evolve_traits", "individual_traits"]

TRAIT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("body_hue", "wing_hue", "head_hue"),
    ("body_lightness", "wing_lightness"),
    ("beak_length", "beak_curvature"),
)


@dataclass(frozen=True)
class TraitValues:
    """True trait values of every node: ``values[node, trait]`` with columns in ``names`` order."""

    names: tuple[str, ...]
    values: np.ndarray  # (n_nodes, n_traits); discrete traits hold 0.0 / 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    def of(self, node: int) -> dict[str, float]:
        """The traits of one node as a ``{name: value}`` dict (plain floats)."""
        return {name: float(v) for name, v in zip(self.names, self.values[node], strict=True)}

    def continuous(self) -> np.ndarray:
        """(n_nodes, n_continuous) view of the continuous traits."""
        return self.values[:, [self.names.index(n) for n in CONTINUOUS]]


def trait_correlation_matrix(correlation: float) -> np.ndarray:
    """(C, C) correlation matrix of the continuous traits: ``correlation`` within each trait group."""
    corr = np.eye(len(CONTINUOUS))
    for group in TRAIT_GROUPS:
        idx = [CONTINUOUS.index(name) for name in group]
        for a in idx:
            for b in idx:
                if a != b:
                    corr[a, b] = correlation
    return corr


def evolve_traits(
    parents: Sequence[int],
    lengths: Sequence[float],
    rng: np.random.Generator,
    *,
    model: str = "brownian",
    sigma: float = 1.0,
    alpha: float = 1.0,
    correlation: float = 0.3,
    mk_rate: float = 0.6,
    standardize_over: Sequence[int] | None = None,
) -> TraitValues:
    """Evolve all traits down a tree given in preorder (parents before children).

    Parameters
    ----------
    parents : sequence of int
        Parent of each node; ``-1`` for the root (node 0).
    lengths : sequence of float
        Branch lengths in units of the tree height.
    rng : numpy.random.Generator
    model : {"brownian", "ou"}
    sigma, alpha : float
        Diffusion rate and (OU only) pull towards 0.
    correlation : float
        Within-group correlation of the continuous traits.
    mk_rate : float
        Flip rate of the 0/1 traits.
    standardize_over : sequence of int, optional
        Nodes (the living and extinct tips) whose mean/sd define the standardisation of the
        continuous traits; ``None`` leaves the raw values.

    Returns
    -------
    TraitValues
        Columns in :data:`~phenogen.sim.traitspec.TRAIT_NAMES` order.
    """
    n = len(parents)
    chol = np.linalg.cholesky(trait_correlation_matrix(correlation))  # (C, C)
    z = rng.standard_normal((n, len(CONTINUOUS))) @ chol.T  # (N, C) correlated unit noise
    flips = rng.random((n, len(DISCRETE)))  # (N, D)
    cont = np.zeros((n, len(CONTINUOUS)))
    disc = np.zeros((n, len(DISCRETE)))
    for i, (parent, t) in enumerate(zip(parents, lengths, strict=True)):
        if parent < 0:
            if model == "ou":
                cont[i] = z[i] * sigma / np.sqrt(2.0 * alpha)
            disc[i] = flips[i] < 0.5
            continue
        if model == "ou":
            decay = np.exp(-alpha * t)
            cont[i] = cont[parent] * decay + z[i] * sigma * np.sqrt((1.0 - decay**2) / (2.0 * alpha))
        else:
            cont[i] = cont[parent] + z[i] * sigma * np.sqrt(t)
        p_flip = 0.5 * (1.0 - np.exp(-2.0 * mk_rate * t))
        disc[i] = np.where(flips[i] < p_flip, 1.0 - disc[parent], disc[parent])
    if standardize_over is not None:
        ref = cont[list(standardize_over)]
        sd = ref.std(axis=0)
        cont = (cont - ref.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    values = np.zeros((n, len(TRAIT_NAMES)))
    values[:, [TRAIT_NAMES.index(c) for c in CONTINUOUS]] = cont
    values[:, [TRAIT_NAMES.index(d) for d in DISCRETE]] = disc
    return TraitValues(names=TRAIT_NAMES, values=values)


def individual_traits(species: dict[str, float], noise: float, rng: np.random.Generator) -> dict[str, float]:
    """One individual's traits: the species' continuous values plus ``N(0, noise^2)``; 0/1 traits kept."""
    eps = rng.standard_normal(len(CONTINUOUS)) * noise
    out = dict(species)
    for name, e in zip(CONTINUOUS, eps, strict=True):
        out[name] = float(species[name] + e)
    return out

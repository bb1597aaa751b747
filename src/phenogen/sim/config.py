"""``SimConfig``: every knob of the synthetic clade (config section ``[sim]``).

Units. Time on the species tree is measured so that the root is ``tree_height`` before the present;
trait rates (``trait_sigma``, ``ou_alpha``, ``mk_rate``) are per *unit tree height*, so they do not
change meaning when ``tree_height`` does. Sequence branch lengths are expected substitutions per
nucleotide site: the root-to-present path carries ``root_to_tip`` of them.

The defaults give a clade that looks like one bird order in real COI barcodes: 48 living species,
about 10–25 extinct ones, 80–97 % identity between species and 98–99.9 % within species.

>>> SimConfig(n_living=12).n_codons
219
>>> SimConfig(seq_length=658)
Traceback (most recent call last):
...
ValueError: seq_length must be a multiple of 3 (a whole reading frame), got 658; the default 657 is the 658-bp Folmer barcode trimmed to 219 codons
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite

__all__ = ["SimConfig"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class SimConfig:
    """Configuration of ``phenogen simulate`` (section ``[sim]``)."""

    seed: int = field(default=0, metadata=_help("random seed; the same seed gives byte-identical outputs"))
    # --- tree -------------------------------------------------------------------------------------
    n_living: int = field(default=48, metadata=_help("number of living (extant) species"))
    birth_rate: float = field(default=1.0, metadata=_help("speciation rate of the birth-death process"))
    death_rate: float = field(
        default=0.3,
        metadata=_help("extinction rate; extinct lineages are kept as dated tips (~10-25 at the defaults)"),
    )
    tree_height: float = field(default=1.0, metadata=_help("age of the root (time units of the tree)"))
    min_species_age: float = field(
        default=0.08,
        metadata=_help(
            "youngest speciation as a fraction of the root age (keeps sister species' barcodes apart)"
        ),
    )
    n_clades: int = field(default=6, metadata=_help("taxonomy: living species fall into this many clades"))
    n_genera: int = field(default=16, metadata=_help("taxonomy: living species fall into this many genera"))
    heldout_fraction: float = field(
        default=0.2, metadata=_help("fraction of living species held out of training (the test species)")
    )
    heldout_unit: str = field(
        default="species",
        metadata=_help(
            "what is held out: 'species' (single species at random across the tree; their relatives "
            "stay in training, like unseen species of known genera) or 'clades' (whole clades, like "
            "holding out bird orders: a harder test where even the closest relative is distant)"
        ),
    )
    # --- barcodes ---------------------------------------------------------------------------------
    seq_length: int = field(
        default=657,
        metadata=_help("barcode length in bp; a multiple of 3 (657 = the 658-bp Folmer region in frame)"),
    )
    root_to_tip: float = field(
        default=0.25,
        metadata=_help("expected substitutions per nucleotide site from the root to the present"),
    )
    kappa: float = field(default=12.0, metadata=_help("HKY transition/transversion rate ratio"))
    omega: float = field(
        default=0.01,
        metadata=_help("dN/dS: relative rate (acceptance probability) of amino-acid changing substitutions"),
    )
    gamma_shape: float = field(default=0.5, metadata=_help("shape of the gamma rate variation across codons"))
    gamma_categories: int = field(default=4, metadata=_help("number of discrete gamma rate categories"))
    codon_position_rates: tuple[float, float, float] = field(
        default=(1.0, 1.0, 1.0),
        metadata=_help(
            "mutation rate multipliers of codon positions 1, 2, 3 (selection already slows 1 and 2)"
        ),
    )
    individuals_per_species: int = field(
        default=3, metadata=_help("sampled individuals per living/extinct species")
    )
    within_species_divergence: float = field(
        default=0.0015,
        metadata=_help(
            "mean substitutions per site from a species to each of its individuals (gamma, shape 2); "
            "0.0015 gives ~0.3 % mean pairwise difference, as in birds"
        ),
    )
    # --- traits -----------------------------------------------------------------------------------
    trait_model: Literal["brownian", "ou"] = field(
        default="brownian", metadata=_help("continuous trait model: Brownian motion or Ornstein-Uhlenbeck")
    )
    trait_sigma: float = field(
        default=1.0, metadata=_help("Brownian/OU rate per unit tree height (before standardising)")
    )
    ou_alpha: float = field(
        default=1.0, metadata=_help("OU pull towards 0 per unit tree height (trait_model='ou')")
    )
    trait_correlation: float = field(
        default=0.3,
        metadata=_help("correlation of the rates within trait groups (hues, lightnesses, beak shape)"),
    )
    standardize_traits: bool = field(
        default=True, metadata=_help("rescale continuous traits to mean 0, sd 1 over living+extinct species")
    )
    mk_rate: float = field(
        default=0.6, metadata=_help("switching rate of the 0/1 traits per unit tree height (Mk)")
    )
    individual_trait_noise: float = field(
        default=0.12, metadata=_help("sd of per-individual variation of continuous traits (latent scale)")
    )
    # --- images -----------------------------------------------------------------------------------
    image_size: int = field(default=64, metadata=_help("image side in pixels (64; 128 and 256 for GPU runs)"))
    photos_per_individual: int = field(default=4, metadata=_help("photos rendered per individual"))
    ancestor_photos: int = field(
        default=3, metadata=_help("photos per internal node, besides its one canonical render")
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if self.n_living < 4:
            raise ValueError(f"n_living must be at least 4, got {self.n_living}")
        if self.birth_rate <= 0:
            raise ValueError(f"birth_rate must be > 0, got {self.birth_rate}")
        if not 0 <= self.death_rate < self.birth_rate:
            raise ValueError(
                f"death_rate must be in [0, birth_rate={self.birth_rate}), got {self.death_rate}"
            )
        if self.tree_height <= 0:
            raise ValueError(f"tree_height must be > 0, got {self.tree_height}")
        if not 0 <= self.min_species_age < 0.5:
            raise ValueError(f"min_species_age must be in [0, 0.5), got {self.min_species_age}")
        if not 1 <= self.n_clades <= self.n_genera:
            raise ValueError(
                f"need 1 <= n_clades <= n_genera, got n_clades={self.n_clades}, n_genera={self.n_genera}"
            )
        if not 0 <= self.heldout_fraction <= 0.5:
            raise ValueError(f"heldout_fraction must be in [0, 0.5], got {self.heldout_fraction}")
        if self.heldout_unit not in ("species", "clades"):
            raise ValueError(f"heldout_unit must be 'species' or 'clades', got {self.heldout_unit!r}")
        if self.seq_length < 30 or self.seq_length % 3:
            raise ValueError(
                f"seq_length must be a multiple of 3 (a whole reading frame), got {self.seq_length}; "
                "the default 657 is the 658-bp Folmer barcode trimmed to 219 codons"
            )
        if not 0 < self.root_to_tip <= 5:
            raise ValueError(f"root_to_tip must be in (0, 5] substitutions per site, got {self.root_to_tip}")
        if self.kappa <= 0:
            raise ValueError(f"kappa must be > 0, got {self.kappa}")
        if not 0 < self.omega <= 1:
            raise ValueError(f"omega must be in (0, 1], got {self.omega}")
        if self.gamma_shape <= 0:
            raise ValueError(f"gamma_shape must be > 0, got {self.gamma_shape}")
        if not 1 <= self.gamma_categories <= 16:
            raise ValueError(f"gamma_categories must be in [1, 16], got {self.gamma_categories}")
        if len(self.codon_position_rates) != 3 or any(r <= 0 for r in self.codon_position_rates):
            raise ValueError(
                f"codon_position_rates must be three numbers > 0, got {self.codon_position_rates}"
            )
        self.codon_position_rates = tuple(float(r) for r in self.codon_position_rates)  # type: ignore[assignment]
        if self.individuals_per_species < 1:
            raise ValueError(f"individuals_per_species must be >= 1, got {self.individuals_per_species}")
        if not 0 <= self.within_species_divergence <= 0.05:
            raise ValueError(
                f"within_species_divergence must be in [0, 0.05], got {self.within_species_divergence}"
            )
        if self.trait_model not in ("brownian", "ou"):
            raise ValueError(f"trait_model must be 'brownian' or 'ou', got {self.trait_model!r}")
        if self.trait_sigma <= 0 or self.ou_alpha <= 0:
            raise ValueError(f"trait_sigma and ou_alpha must be > 0, got {self.trait_sigma}, {self.ou_alpha}")
        if not 0 <= self.trait_correlation < 0.95:
            raise ValueError(f"trait_correlation must be in [0, 0.95), got {self.trait_correlation}")
        if self.mk_rate < 0:
            raise ValueError(f"mk_rate must be >= 0, got {self.mk_rate}")
        if not 0 <= self.individual_trait_noise <= 1:
            raise ValueError(f"individual_trait_noise must be in [0, 1], got {self.individual_trait_noise}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [16, 1024] pixels, got {self.image_size}")
        if self.photos_per_individual < 1 or self.ancestor_photos < 0:
            raise ValueError(
                f"photos_per_individual must be >= 1 and ancestor_photos >= 0, "
                f"got {self.photos_per_individual}, {self.ancestor_photos}"
            )

    @property
    def n_codons(self) -> int:
        """Number of codons of the barcode."""
        return self.seq_length // 3

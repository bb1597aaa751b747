"""The ``[evaluate]`` configuration section: trait probe, baselines, retrieval model, FID/KID, photo scores.

Every knob of ``phenogen evaluate`` lives here, with its help text; the resolved section is written
as ``config.json`` next to ``metrics.json``. Defaults are sized for the demo (about 48 species ×
3 individuals × 4 photos of 64 px): probe and retrieval model train in well under a minute each on
2 CPU cores.

>>> EvaluateConfig(probe_epochs=5).probe_epochs
5
>>> EvaluateConfig(splits=("nowhere",))
Traceback (most recent call last):
...
ValueError: splits: 'nowhere' is not one of train, heldout, extinct, ancestor
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite

__all__ = ["EvaluateConfig", "METHODS"]

#: The rows of every split's table in ``metrics.json``, in this order. ``mean`` and ``oracle`` are trait
#: vectors scored directly (no picture, so no probe error); ``mean_render`` and ``oracle_render`` are the
#: same vectors rendered by the synthetic clade's own renderer and read by the probe like every image row.
METHODS: tuple[str, ...] = (
    "generated", "nearest", "random", "mean", "oracle", "truth", "mean_render", "oracle_render",
)  # fmt: skip
_SPLITS = ("train", "heldout", "extinct", "ancestor")


@dataclass
class EvaluateConfig:
    """Section ``[evaluate]``."""

    seed: int = field(
        default=0, metadata={"help": "seed of every random choice (probe init, baselines, KID)"}
    )
    splits: tuple[str, ...] = field(
        default=("heldout", "extinct", "ancestor"),
        metadata={"help": "splits scored (generated images of records of other splits are ignored)"},
    )
    threads: int = field(default=2, metadata={"help": "torch CPU threads (the machine is shared)"})
    device: str = field(default="cpu", metadata={"help": "torch device for the probe and retrieval model"})

    # trait probe
    probe_image_size: int = field(
        default=32,
        metadata={"help": "images are resized to this before the probe reads them (32 px keeps every trait)"},
    )
    probe_width: int = field(default=32, metadata={"help": "channels of the probe's first conv layer"})
    probe_features: int = field(default=64, metadata={"help": "feature width (what FID/KID compare)"})
    probe_epochs: int = field(
        default=20, metadata={"help": "probe training epochs (over training renders + prior renders)"}
    )
    probe_batch_size: int = field(default=32, metadata={"help": "probe minibatch size"})
    probe_lr: float = field(default=3e-3, metadata={"help": "probe AdamW learning rate (one-cycle schedule)"})
    probe_prior_renders: int = field(
        default=2500,
        metadata={
            "help": "synthetic clades: also train the probe on this many renders of random birds drawn from "
            "the trait prior (no held-out information; teaches the renderer's inverse); 0 = training species only"
        },
    )
    probe_prior_sd: float = field(
        default=1.2, metadata={"help": "sd of the continuous traits of prior renders"}
    )
    probe_dir: str | None = field(
        default=None, metadata={"help": "load a trained probe from this directory instead of training one"}
    )

    # baselines
    random_repeats: int = field(
        default=5, metadata={"help": "draws of the `random` baseline (mean is reported)"}
    )
    nearest_mode: Literal["auto", "hamming", "align"] = field(
        default="auto",
        metadata={"help": "barcode identity: hamming (equal lengths), align (PairwiseAligner) or auto"},
    )
    nearest_max_align: int = field(
        default=5,
        metadata={"help": "unaligned barcodes: align the target with this many k-mer-closest candidates"},
    )

    # retrieval model
    retrieval: bool = field(
        default=True, metadata={"help": "train the DNA–image model and report top-1/top-5"}
    )
    retrieval_k: int = field(default=5, metadata={"help": "k of the DNA k-mer profile"})
    retrieval_dim: int = field(default=64, metadata={"help": "joint embedding width"})
    retrieval_epochs: int = field(
        default=300, metadata={"help": "full-batch training steps of the two heads"}
    )
    retrieval_lr: float = field(default=3e-3, metadata={"help": "retrieval AdamW learning rate"})
    retrieval_weight_decay: float = field(default=0.1, metadata={"help": "retrieval AdamW weight decay"})
    retrieval_dropout: float = field(default=0.3, metadata={"help": "dropout in the DNA tower"})
    retrieval_temperature: float = field(default=0.1, metadata={"help": "InfoNCE softmax temperature"})

    # distribution quality
    fid: bool = field(default=True, metadata={"help": "compute FID and KID on probe features"})
    kid_subsets: int = field(default=50, metadata={"help": "KID: number of random subsets"})
    kid_subset_size: int = field(
        default=50, metadata={"help": "KID: subset size (lowered to the smaller sample size when needed)"}
    )

    # photo scores (photo_scores.py): need no traits
    photo: bool = field(
        default=True,
        metadata={"help": "train the photo model on training photos and report the photo scores (retrieval, "
                  "similarity, FID/KID, taxonomic agreement); a dataset without traits gets only these"},
    )  # fmt: skip
    photo_ranks: tuple[str, ...] = field(
        default=("genus", "family", "order"),
        metadata={"help": "names of the taxonomy levels above the species, nearest first (level j = the "
                  "j-th last entry of the manifest's lineage once a trailing species name is dropped)"},
    )  # fmt: skip
    photo_image_size: int = field(
        default=32,
        metadata={"help": "photos are resized to this for the photo model (= probe size: read once)"},
    )
    photo_width: int = field(default=32, metadata={"help": "channels of the photo model's first conv layer"})
    photo_features: int = field(
        default=64, metadata={"help": "photo feature width (retrieval image tower input, FID/KID space)"}
    )
    photo_epochs: int = field(
        default=30, metadata={"help": "photo model training epochs over training photos"}
    )
    photo_batch_size: int = field(default=32, metadata={"help": "photo model minibatch size"})
    photo_lr: float = field(default=3e-3, metadata={"help": "photo model AdamW learning rate (one-cycle)"})

    plots: bool = field(default=True, metadata={"help": "write the trait-RMSE and probe-R² bar charts"})

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        for s in self.splits:
            if s not in _SPLITS:
                raise ValueError(f"splits: {s!r} is not one of {', '.join(_SPLITS)}")
        if not self.splits:
            raise ValueError("splits: name at least one split to score")
        positive = {
            "threads": self.threads,
            "probe_image_size": self.probe_image_size,
            "probe_width": self.probe_width,
            "probe_features": self.probe_features,
            "probe_epochs": self.probe_epochs,
            "probe_batch_size": self.probe_batch_size,
            "random_repeats": self.random_repeats,
            "nearest_max_align": self.nearest_max_align,
            "retrieval_k": self.retrieval_k,
            "retrieval_dim": self.retrieval_dim,
            "retrieval_epochs": self.retrieval_epochs,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "photo_image_size": self.photo_image_size,
            "photo_width": self.photo_width,
            "photo_features": self.photo_features,
            "photo_epochs": self.photo_epochs,
            "photo_batch_size": self.photo_batch_size,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.probe_image_size < 16:
            raise ValueError(
                f"probe_image_size must be >= 16 (the probe downsamples 4×), got {self.probe_image_size}"
            )
        if self.retrieval_k > 8:
            raise ValueError(f"retrieval_k must be <= 8 (4^k profile entries), got {self.retrieval_k}")
        if not 0.0 <= self.retrieval_dropout < 1.0:
            raise ValueError(f"retrieval_dropout must be in [0, 1), got {self.retrieval_dropout}")
        if self.probe_prior_renders < 0:
            raise ValueError(f"probe_prior_renders must be >= 0, got {self.probe_prior_renders}")
        if self.photo_image_size < 16:
            raise ValueError(
                f"photo_image_size must be >= 16 (the model downsamples 16×), got {self.photo_image_size}"
            )
        if len(set(self.photo_ranks)) != len(self.photo_ranks) or "species" in self.photo_ranks:
            raise ValueError(
                f"photo_ranks must be distinct names other than 'species', got {self.photo_ranks}"
            )
        for name in ("probe_lr", "probe_prior_sd", "retrieval_lr", "retrieval_temperature", "photo_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

"""Configuration sections of the real-data commands: ``[fetch]``, ``[import]`` and ``[build]``.

The real service endpoints are the defaults; every base URL is a setting, so tests (and mirrors)
point the clients elsewhere — the test suite serves synthetic answers in each service's format
from ``127.0.0.1``.

>>> FetchConfig(max_per_taxon=5).max_per_taxon
5
>>> BuildConfig(strategy="taxon", train_taxa=["Passeriformes"]).strategy
'taxon'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite
from phenogen.data.dataset import PARQUET_ABOVE, ROW_GROUP_SIZE

__all__ = ["FetchConfig", "ImportConfig", "BuildConfig", "FREE_LICENSES", "ALL_LICENSES"]

FREE_LICENSES: tuple[str, ...] = ("cc0", "pd", "cc-by", "cc-by-sa")
ALL_LICENSES: tuple[str, ...] = (
    *FREE_LICENSES,
    "cc-by-nc",
    "cc-by-nc-sa",
    "cc-by-nd",
    "cc-by-nc-nd",
    "unknown",
)


@dataclass
class FetchConfig:
    """How ``phenogen fetch barcodes|images`` talks to NCBI, BOLD, iNaturalist and GBIF."""

    sources: list[str] = field(
        default_factory=lambda: ["ncbi"], metadata={"help": "barcode sources, in order: ncbi and/or bold"}
    )
    image_sources: list[str] = field(
        default_factory=lambda: ["inaturalist"],
        metadata={"help": "image sources, in order: inaturalist and/or gbif"},
    )
    ncbi_base: str = field(
        default="https://eutils.ncbi.nlm.nih.gov/entrez/eutils/",
        metadata={"help": "NCBI E-utilities base URL"},
    )
    bold_api: Literal["v5", "v4"] = field(
        default="v5",
        metadata={
            "help": "BOLD API: v5 = the BOLD portal API (query -> query id -> TSV download, BCDM columns); "
            "v4 = the legacy API_Public/combined TSV"
        },
    )
    bold_base: str = field(
        default="https://portal.boldsystems.org/api/",
        metadata={"help": "BOLD v5 portal API base URL (bold_api = v5)"},
    )
    bold_v4_base: str = field(
        default="https://v4.boldsystems.org/index.php/API_Public/",
        metadata={"help": "BOLD v4 public API base URL (bold_api = v4)"},
    )
    inat_base: str = field(
        default="https://api.inaturalist.org/v1/", metadata={"help": "iNaturalist API base URL"}
    )
    gbif_base: str = field(default="https://api.gbif.org/v1/", metadata={"help": "GBIF API base URL"})
    email: str = field(
        default="",
        metadata={"help": "your e-mail, sent to NCBI as 'email' (NCBI asks for it); env NCBI_EMAIL"},
    )
    tool: str = field(default="phenogen", metadata={"help": "the 'tool' parameter sent to NCBI"})
    api_key: str = field(
        default="",
        metadata={"help": "NCBI API key ('' = env NCBI_API_KEY); raises the rate limit 3 -> 10 req/s"},
    )
    ncbi_term: str = field(
        default='"{taxon}"[Organism] AND (COI[Gene] OR COX1[Gene] OR CO1[Gene] OR "cytochrome oxidase subunit 1"[All Fields] OR "cytochrome c oxidase subunit I"[All Fields])',
        metadata={"help": "esearch term; {taxon} is replaced by the taxon name"},
    )
    max_per_taxon: int = field(default=20, metadata={"help": "most barcodes (or images) kept per taxon"})
    batch_size: int = field(default=50, metadata={"help": "ids per NCBI efetch request"})
    min_length: int = field(
        default=400, metadata={"help": "barcodes shorter than this (bp) are filtered out"}
    )
    max_length: int = field(
        default=1600, metadata={"help": "COI sequences longer than this (bp) are filtered out"}
    )
    policy: Literal["reject", "mask", "drop"] = field(
        default="mask",
        metadata={"help": "IUPAC ambiguity codes in fetched sequences: reject, mask (to N) or drop"},
    )
    max_n_fraction: float = field(
        default=0.05, metadata={"help": "barcodes with a larger share of N are filtered"}
    )
    licenses: list[str] = field(
        default_factory=lambda: list(FREE_LICENSES),
        metadata={"help": f"image licences accepted ({', '.join(ALL_LICENSES)}); default the free ones"},
    )
    image_size: int = field(
        default=512, metadata={"help": "images are centre-cropped to a square and resized to this"}
    )
    photo_size: Literal["small", "medium", "large", "original"] = field(
        default="medium", metadata={"help": "which iNaturalist photo size to download"}
    )
    timeout_s: float = field(
        default=30.0,
        metadata={"help": "wall-clock seconds per attempt: connect + headers + the whole body"},
    )
    max_body_mb: float = field(
        default=64.0, metadata={"help": "largest JSON/XML/TSV answer accepted, in MiB (photos: 128 MiB)"}
    )
    retries: int = field(default=5, metadata={"help": "retries after a timeout, 429, 5xx or truncated body"})
    backoff_s: float = field(
        default=1.0, metadata={"help": "first retry wait; doubles each retry (Retry-After wins)"}
    )
    backoff_max_s: float = field(default=60.0, metadata={"help": "longest single wait between retries"})
    rate_per_s: float = field(
        default=0.0,
        metadata={"help": "requests per second per host; 0 = the service's rule (NCBI 3, or 10 with a key)"},
    )
    user_agent: str = field(
        default="phenogen/0.1 (python urllib)", metadata={"help": "User-Agent header (add your contact)"}
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        bad = sorted(set(self.sources) - {"ncbi", "bold"})
        if bad or not self.sources:
            raise ValueError(f"sources must be a non-empty subset of ncbi, bold; got {self.sources}")
        if self.bold_api not in ("v5", "v4"):
            raise ValueError(f"bold_api must be v5 or v4, got {self.bold_api!r}")
        bad = sorted(set(self.image_sources) - {"inaturalist", "gbif"})
        if bad or not self.image_sources:
            raise ValueError(
                f"image_sources must be a non-empty subset of inaturalist, gbif; got {self.image_sources}"
            )
        unknown = sorted(set(self.licenses) - set(ALL_LICENSES))
        if unknown:
            raise ValueError(f"licenses {unknown} unknown; choose from {', '.join(ALL_LICENSES)}")
        for name in ("max_per_taxon", "batch_size", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size > 200:
            raise ValueError(
                f"batch_size must be <= 200 (NCBI recommends small efetch batches), got {self.batch_size}"
            )
        if not 0 <= self.min_length <= self.max_length:
            raise ValueError(f"need 0 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if not 0.0 <= self.max_n_fraction <= 1.0:
            raise ValueError(f"max_n_fraction must be in [0, 1], got {self.max_n_fraction}")
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("timeout_s must be > 0; retries, backoff_s and backoff_max_s must be >= 0")
        if self.rate_per_s < 0:
            raise ValueError(f"rate_per_s must be >= 0, got {self.rate_per_s}")
        if self.max_body_mb <= 0:
            raise ValueError(f"max_body_mb must be > 0, got {self.max_body_mb}")

    def ncbi_key(self) -> str:
        """The NCBI API key in use: this config's, else ``$NCBI_API_KEY``, else ''."""
        return self.api_key or os.environ.get("NCBI_API_KEY", "")

    def ncbi_email(self) -> str:
        return self.email or os.environ.get("NCBI_EMAIL", "")

    def ncbi_rate(self) -> float:
        """Requests per second allowed by NCBI: 3 without a key, 10 with one (or ``rate_per_s`` if lower)."""
        limit = 10.0 if self.ncbi_key() else 3.0
        return min(limit, self.rate_per_s) if self.rate_per_s > 0 else limit


@dataclass
class ImportConfig:
    """How ``phenogen import folder|bioscan5m|bold`` turns files on disk into a dataset."""

    policy: Literal["reject", "mask", "drop"] = field(
        default="mask",
        metadata={"help": "IUPAC ambiguity codes: reject (error), mask (to N) or drop the record"},
    )
    image_mode: Literal["auto", "copy", "symlink", "hardlink", "archive"] = field(
        default="auto",
        metadata={
            "help": "how images enter the dataset: copy, symlink or hardlink files; archive = read them in "
            "place from the zip packages (BIOSCAN-5M); auto = archive when only the zips are there, else copy"
        },
    )
    image_archive: str | list[str] = field(
        default="",
        metadata={
            "help": "BIOSCAN-5M: the image zip(s) to read ('' = the official BIOSCAN_5M_<package>*.zip "
            "files found in --root or --root/bioscan5m)"
        },
    )
    max_nucleotides: int = field(
        default=660,
        metadata={"help": "BIOSCAN-5M: keep the first N bases (the official loader's default); 0 = all"},
    )
    image_package: str = field(
        default="cropped_256",
        metadata={"help": "BIOSCAN-5M image package: cropped_256, original_256, cropped, original_full"},
    )
    bioscan_splits: list[str] = field(
        default_factory=lambda: ["train", "val", "test"],
        metadata={"help": "BIOSCAN-5M partitions read (train -> train, all others -> heldout)"},
    )
    require_species: bool = field(default=True, metadata={"help": "skip rows without a species label"})
    require_image: bool = field(default=True, metadata={"help": "skip rows whose image file is missing"})
    max_records: int = field(
        default=0,
        metadata={"help": "keep at most this many records (the rest are read and counted); 0 = no limit"},
    )
    max_per_species: int = field(default=0, metadata={"help": "most records kept per species; 0 = no limit"})
    min_length: int = field(
        default=100, metadata={"help": "sequences shorter than this (after trimming) are skipped"}
    )
    format: Literal["tsv", "parquet", "auto"] = field(
        default="auto",
        metadata={
            "help": "manifest written: tsv (one text file, read whole), parquet (row groups, read lazily), "
            "auto = parquet above parquet_above records"
        },
    )
    parquet_above: int = field(
        default=PARQUET_ABOVE,
        metadata={"help": "format auto: more records than this are written as manifest.parquet"},
    )
    row_group_size: int = field(
        default=ROW_GROUP_SIZE,
        metadata={"help": "records per Parquet row group: what the importer holds in memory at once"},
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        for name in ("max_nucleotides", "max_records", "max_per_species", "min_length", "parquet_above"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.format not in ("tsv", "parquet", "auto"):
            raise ValueError(f"format must be tsv, parquet or auto, got {self.format!r}")
        if self.row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {self.row_group_size}")
        if self.image_mode not in ("auto", "copy", "symlink", "hardlink", "archive"):
            raise ValueError(
                f"image_mode must be auto, copy, symlink, hardlink or archive, got {self.image_mode!r}"
            )
        if not isinstance(self.image_archive, str) and not all(a.strip() for a in self.image_archive):
            raise ValueError(f"image_archive lists an empty path: {self.image_archive}")
        valid = {
            "pretrain",
            "train",
            "val",
            "test",
            "key_unseen",
            "val_unseen",
            "test_unseen",
            "other_heldout",
        }
        bad = sorted(set(self.bioscan_splits) - valid)
        if bad or not self.bioscan_splits:
            raise ValueError(f"bioscan_splits {bad} unknown; choose from {', '.join(sorted(valid))}")

    def archives(self) -> list[str]:
        """``image_archive`` as a list (empty: look for the official zips)."""
        if isinstance(self.image_archive, str):
            return [self.image_archive] if self.image_archive.strip() else []
        return list(self.image_archive)


@dataclass
class BuildConfig:
    """How ``phenogen dataset build`` (and the importers) split records into train and heldout."""

    strategy: Literal["species", "taxon"] = field(
        default="species",
        metadata={
            "help": "species: seeded species-disjoint split; taxon: species under train_taxa train, others held out"
        },
    )
    heldout_fraction: float = field(
        default=0.2, metadata={"help": "share of species held out (strategy species)"}
    )
    train_taxa: list[str] = field(
        default_factory=list,
        metadata={
            "help": 'strategy taxon: lineage names (any rank) whose species train, e.g. ["Passeriformes"]'
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the species split"})
    require_images: bool = field(
        default=True, metadata={"help": "drop barcodes of species that have no image"}
    )
    max_images_per_record: int = field(
        default=3, metadata={"help": "images attached to each record (per species)"}
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.strategy == "taxon" and not self.train_taxa:
            raise ValueError("strategy 'taxon' needs train_taxa (lineage names whose species go to train)")
        if self.max_images_per_record < 0:
            raise ValueError(f"max_images_per_record must be >= 0, got {self.max_images_per_record}")

"""The one dataset format every source lands in (synthetic clade, a user's folder, NCBI/BOLD, BIOSCAN-5M).

A dataset is a directory::

    DIR/
      dataset.json      format name + version, provenance (source, seed, command), trait names, splits
      manifest.tsv      one row per record (an individual, or an internal node of the true tree)
      sequences.fasta   the barcodes of the records a model may see (splits train + heldout)
      tree.nwk          the tree, when known (for the synthetic clade: the full true tree)
      images/...        image files, referenced from the manifest by relative path
      truth/...         ground truth a model must never train on (extinct tips, ancestors)

``manifest.tsv`` columns: ``record_id species individual split node_kind sequence images taxonomy``
followed by one ``trait:NAME`` column per trait. ``images`` and ``taxonomy`` hold ``;``-separated lists.
``split`` is one of :data:`SPLITS`; only ``train`` may be fitted on (``heldout`` for held-out losses).

Reading validates everything (columns, unique ids, splits, node kinds, sequences, trait values, that
image files exist) and raises :class:`~phenogen.errors.DataError` naming the file, row and field.

>>> import tempfile
>>> rec = Record("r1", "sp_a", "sp_a_1", "train", "living", "ACGTAC", (), ("Aves",), {})
>>> ds = write_dataset(tempfile.mkdtemp(), [rec], {"source": "doctest"})
>>> [r.record_id for r in load_dataset(ds.root).records("train")]
['r1']
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phenogen.errors import DataError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPLITS",
    "NODE_KINDS",
    "MODEL_SPLITS",
    "Record",
    "Dataset",
    "load_dataset",
    "write_dataset",
]

FORMAT = "phenogen-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "heldout", "extinct", "ancestor")
MODEL_SPLITS: tuple[str, ...] = ("train", "heldout")  # what sequences.fasta holds
NODE_KINDS: tuple[str, ...] = ("living", "extinct", "internal")
BASE_COLUMNS: tuple[str, ...] = (
    "record_id",
    "species",
    "individual",
    "split",
    "node_kind",
    "sequence",
    "images",
    "taxonomy",
)
TRAIT_PREFIX = "trait:"
_DNA = frozenset("ACGTN-")


@dataclass(frozen=True)
class Record:
    """One individual (or internal node) with its barcode, images, taxonomy and traits."""

    record_id: str
    species: str
    individual: str
    split: str
    node_kind: str
    sequence: str
    images: tuple[str, ...] = ()
    taxonomy: tuple[str, ...] = ()
    traits: dict[str, float] = field(default_factory=dict)


@dataclass
class Dataset:
    """A loaded, validated dataset directory."""

    root: Path
    info: dict[str, Any]
    all_records: list[Record]

    @property
    def trait_names(self) -> list[str]:
        return list(self.info.get("trait_names", []))

    @property
    def tree_path(self) -> Path | None:
        path = self.root / "tree.nwk"
        return path if path.is_file() else None

    def records(self, split: str | Sequence[str] | None = None) -> list[Record]:
        """Records of one split, several splits, or all (``None``)."""
        if split is None:
            return list(self.all_records)
        wanted = (split,) if isinstance(split, str) else tuple(split)
        for s in wanted:
            if s not in SPLITS:
                raise DataError(f"unknown split {s!r}; splits are {', '.join(SPLITS)}")
        return [r for r in self.all_records if r.split in wanted]

    def species(self, split: str | Sequence[str] | None = None) -> list[str]:
        """Species names in first-seen order."""
        return list(dict.fromkeys(r.species for r in self.records(split)))

    def image_path(self, rel: str) -> Path:
        return self.root / rel

    def __len__(self) -> int:
        return len(self.all_records)

    def __repr__(self) -> str:
        counts = {s: sum(r.split == s for r in self.all_records) for s in SPLITS}
        return f"Dataset({str(self.root)!r}, {counts})"


def _fail(path: Path, row: int | None, message: str) -> DataError:
    where = f"{path}" + (f", row {row}" if row is not None else "")
    return DataError(f"{where}: {message}")


def _check_record(rec: Record, path: Path, row: int | None, trait_names: Sequence[str]) -> None:
    if not rec.record_id or any(c in rec.record_id for c in "\t\n;| "):
        raise _fail(
            path, row, f"record_id {rec.record_id!r} must be non-empty without spaces, tabs, ';' or '|'"
        )
    if not rec.species:
        raise _fail(path, row, f"record {rec.record_id}: empty species")
    if rec.split not in SPLITS:
        raise _fail(
            path, row, f"record {rec.record_id}: split {rec.split!r} is not one of {', '.join(SPLITS)}"
        )
    if rec.node_kind not in NODE_KINDS:
        raise _fail(
            path,
            row,
            f"record {rec.record_id}: node_kind {rec.node_kind!r} is not one of {', '.join(NODE_KINDS)}",
        )
    if not rec.sequence:
        raise _fail(path, row, f"record {rec.record_id}: empty sequence")
    bad = (
        None
        if _DNA.issuperset(rec.sequence)
        else next(i for i, c in enumerate(rec.sequence) if c not in _DNA)
    )
    if bad is not None:
        raise _fail(
            path,
            row,
            f"record {rec.record_id}: sequence has {rec.sequence[bad]!r} at position {bad + 1}; "
            "datasets hold uppercase A/C/G/T/N/- only (clean input with phenogen.dna.seqio first)",
        )
    for name, value in rec.traits.items():
        if name not in trait_names:
            raise _fail(path, row, f"record {rec.record_id}: trait {name!r} is not declared in dataset.json")
        if not isinstance(value, float | int) or math.isnan(value) or math.isinf(value):
            raise _fail(path, row, f"record {rec.record_id}: trait {name} = {value!r} is not a finite number")


def write_dataset(
    root: str | Path,
    records: Iterable[Record],
    info: dict[str, Any],
    tree_newick: str | None = None,
) -> Dataset:
    """Write ``records`` (and ``info``, the tree) as a dataset directory and return it loaded.

    Image files must already exist under ``root`` at the paths the records name.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    records = list(records)
    trait_names = list(info.get("trait_names") or dict.fromkeys(k for r in records for k in r.traits))
    manifest = root / "manifest.tsv"
    seen: dict[str, int] = {}
    for i, rec in enumerate(records, start=2):
        _check_record(rec, manifest, i, trait_names)
        if rec.record_id in seen:
            raise _fail(
                manifest, i, f"duplicate record_id {rec.record_id!r} (first at row {seen[rec.record_id]})"
            )
        seen[rec.record_id] = i
    full_info = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        **info,
        "trait_names": trait_names,
        "counts": {s: sum(r.split == s for r in records) for s in SPLITS},
    }
    (root / "dataset.json").write_text(json.dumps(full_info, indent=2) + "\n", encoding="utf-8")
    with open(manifest, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow([*BASE_COLUMNS, *(TRAIT_PREFIX + t for t in trait_names)])
        for rec in records:
            traits = [repr(float(rec.traits[t])) if t in rec.traits else "" for t in trait_names]
            writer.writerow(
                [
                    rec.record_id,
                    rec.species,
                    rec.individual,
                    rec.split,
                    rec.node_kind,
                    rec.sequence,
                    ";".join(rec.images),
                    ";".join(rec.taxonomy),
                    *traits,
                ]
            )
    with open(root / "sequences.fasta", "w", encoding="utf-8") as fh:
        for rec in records:
            if rec.split in MODEL_SPLITS:
                fh.write(f">{rec.record_id} species={rec.species.replace(' ', '_')} split={rec.split}\n")
                for i in range(0, len(rec.sequence), 80):
                    fh.write(rec.sequence[i : i + 80] + "\n")
    if tree_newick is not None:
        (root / "tree.nwk").write_text(tree_newick.strip() + "\n", encoding="utf-8")
    return load_dataset(root)


def load_dataset(root: str | Path, check_images: bool = True) -> Dataset:
    """Read and validate a dataset directory."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a dataset directory (it does not exist or is a file)")
    info_path = root / "dataset.json"
    manifest = root / "manifest.tsv"
    for path in (info_path, manifest):
        if not path.is_file():
            raise DataError(f"{root}: missing {path.name}; is this a phenogen dataset directory?")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(info_path, None, f"not valid JSON ({exc})") from exc
    if info.get("format") != FORMAT:
        raise _fail(info_path, None, f"format is {info.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(info.get("version"), int) or info["version"] > FORMAT_VERSION:
        raise _fail(
            info_path, None, f"format version {info.get('version')!r} is newer than this phenogen reads"
        )
    trait_names = list(info.get("trait_names", []))
    records: list[Record] = []
    seen: dict[str, int] = {}
    try:
        with open(manifest, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None)
            if header is None:
                raise _fail(manifest, None, "empty file")
            missing = [c for c in BASE_COLUMNS if c not in header]
            if missing:
                raise _fail(manifest, 1, f"missing column(s) {', '.join(missing)}")
            col = {name: i for i, name in enumerate(header)}
            trait_cols = {t: col.get(TRAIT_PREFIX + t) for t in trait_names}
            absent = [t for t, c in trait_cols.items() if c is None]
            if absent:
                raise _fail(
                    manifest, 1, f"trait column(s) {', '.join(absent)} declared in dataset.json are missing"
                )
            for row_no, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise _fail(manifest, row_no, f"{len(row)} fields, expected {len(header)}")
                traits = {}
                for t, c in trait_cols.items():
                    if row[c] != "":
                        try:
                            traits[t] = float(row[c])
                        except ValueError:
                            raise _fail(manifest, row_no, f"trait {t} = {row[c]!r} is not a number") from None
                rec = Record(
                    record_id=row[col["record_id"]],
                    species=row[col["species"]],
                    individual=row[col["individual"]],
                    split=row[col["split"]],
                    node_kind=row[col["node_kind"]],
                    sequence=row[col["sequence"]],
                    images=tuple(p for p in row[col["images"]].split(";") if p),
                    taxonomy=tuple(p for p in row[col["taxonomy"]].split(";") if p),
                    traits=traits,
                )
                _check_record(rec, manifest, row_no, trait_names)
                if rec.record_id in seen:
                    raise _fail(
                        manifest,
                        row_no,
                        f"duplicate record_id {rec.record_id!r} (first at row {seen[rec.record_id]})",
                    )
                seen[rec.record_id] = row_no
                if check_images:
                    for rel in rec.images:
                        if not (root / rel).is_file():
                            raise _fail(
                                manifest, row_no, f"record {rec.record_id}: image {rel} does not exist"
                            )
                records.append(rec)
    except UnicodeDecodeError as exc:
        raise _fail(manifest, None, f"not UTF-8 text ({exc})") from exc
    if not records:
        raise _fail(manifest, None, "no records")
    return Dataset(root=root, info=info, all_records=records)

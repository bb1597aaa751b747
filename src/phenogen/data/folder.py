"""A user's own data in: a FASTA of barcodes plus a CSV mapping each record to its species and photos.

``phenogen import folder --fasta seqs.fasta --csv samples.csv --out DIR``. The CSV (comma or tab
separated) needs the columns ``record_id`` (the FASTA id), ``species`` and ``images`` (paths relative
to the CSV's folder, ``;``-separated — or one row per image, repeating the record id); ``taxonomy``
(``;``-separated lineage) and ``split`` (``train``/``heldout``) are optional. Without a ``split``
column the split is species-disjoint (:func:`phenogen.data.build.assign_splits`).

Nothing is silently fixed: a missing image, an unknown split or a CSV record without a sequence
raises :class:`~phenogen.errors.InputError` naming the file and row; FASTA records absent from the
CSV are counted in the returned summary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from phenogen.data.barcodes import safe_id
from phenogen.data.build import assign_splits, place_image
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import MODEL_SPLITS, Dataset, Record, write_dataset
from phenogen.errors import InputError

__all__ = ["FolderRow", "read_sample_csv", "import_folder", "ImportSummary"]

REQUIRED = ("record_id", "species", "images")


@dataclass
class FolderRow:
    """One record of the sample CSV, its images merged over repeated rows."""

    record_id: str
    species: str
    images: list[Path] = field(default_factory=list)
    taxonomy: tuple[str, ...] = ()
    split: str = ""


@dataclass
class ImportSummary:
    """What an importer did: rows read, records written, and counts of what it skipped and why."""

    rows: int = 0
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_sample_csv(path: str | Path) -> dict[str, FolderRow]:
    """Rows of the sample CSV keyed by record id; image paths resolved against the CSV's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample CSV not found")
    text = path.read_text(encoding="utf-8-sig")
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; the header was {header}")
    rows: dict[str, FolderRow] = {}
    for line, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        rid, species = row["record_id"], row["species"]
        if not rid or not species:
            raise InputError(f"{path}, row {line}: empty record_id or species")
        split = row.get("split", "")
        if split and split not in MODEL_SPLITS:
            raise InputError(f"{path}, row {line}: split {split!r} must be one of {', '.join(MODEL_SPLITS)}")
        entry = rows.setdefault(rid, FolderRow(rid, species))
        if entry.species != species:
            raise InputError(
                f"{path}, row {line}: record {rid} has species {species!r} here, {entry.species!r} before"
            )
        for rel in (p.strip() for p in row["images"].split(";")):
            if not rel:
                continue
            image = (path.parent / rel).resolve()
            if not image.is_file():
                raise InputError(f"{path}, row {line}: image {rel} of record {rid} does not exist ({image})")
            entry.images.append(image)
        if row.get("taxonomy"):
            entry.taxonomy = tuple(t.strip() for t in row["taxonomy"].split(";") if t.strip())
        entry.split = split or entry.split
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def import_folder(
    fasta: str | Path,
    sample_csv: str | Path,
    out: str | Path,
    icfg: ImportConfig,
    bcfg: BuildConfig,
) -> tuple[Dataset, ImportSummary]:
    """Write a dataset at ``out`` from a user's FASTA + sample CSV (images copied under ``images/``)."""
    from phenogen.dna.seqio import read_fasta

    out = Path(out)
    samples = read_sample_csv(sample_csv)
    result = read_fasta(fasta, policy=icfg.policy)
    summary = ImportSummary(rows=len(samples))
    for rid, why in result.dropped.items():
        summary.skip(f"sequence dropped ({why})" if rid in samples else "not in CSV")
    sequences = {r.id: r.sequence for r in result.records}
    missing = [rid for rid in samples if rid not in sequences and rid not in result.dropped]
    if missing:
        raise InputError(
            f"{sample_csv}: {len(missing)} record(s) have no sequence in {fasta}, e.g. {', '.join(missing[:5])}"
        )
    for rid in sequences:
        if rid not in samples:
            summary.skip("not in CSV")
    kept = [s for rid, s in samples.items() if rid in sequences]
    if icfg.require_image:
        for s in kept:
            if not s.images:
                summary.skip("no image")
        kept = [s for s in kept if s.images]
    auto = assign_splits({s.species: s.taxonomy for s in kept}, bcfg)
    records = []
    per_species: dict[str, int] = {}
    for s in kept:
        rid = safe_id(s.record_id)
        per_species[s.species] = per_species.get(s.species, 0) + 1
        images = tuple(
            place_image(src, out, f"images/{rid}/{i:02d}_{src.name}", icfg.image_mode)
            for i, src in enumerate(s.images)
        )
        records.append(
            Record(
                record_id=rid,
                species=s.species,
                individual=f"{s.species.replace(' ', '_')}_{per_species[s.species]}",
                split=s.split or auto[s.species],
                node_kind="living",
                sequence=sequences[s.record_id],
                images=images,
                taxonomy=s.taxonomy,
            )
        )
    if not records:
        raise InputError(f"{sample_csv}: no record has both a sequence and an image")
    summary.records = len(records)
    info = {"source": "folder", "fasta": str(fasta), "csv": str(sample_csv), "masked": len(result.masked)}
    return write_dataset(out, records, info), summary

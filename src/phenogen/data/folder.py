"""A user's own data in: a FASTA of barcodes plus a CSV mapping each record to its species and photos.

``phenogen import folder --fasta seqs.fasta --csv samples.csv --out DIR``. The CSV (comma or tab
separated, UTF-8) needs the columns ``record_id`` (the FASTA id), ``species`` and ``images`` (paths
relative to the CSV's folder, ``;``-separated — or one row per image, repeating the record id);
``taxonomy`` (``;``-separated lineage) and ``split`` (``train``/``heldout``) are optional. Without a
``split`` column the split is species-disjoint (:func:`phenogen.data.build.assign_splits`).

Only files inside the CSV's folder are read: an absolute path, a ``..`` path or a symlink leading out
of the folder is refused unless ``allow_outside`` (``--allow-outside``) says otherwise. Every photo
must be an image file (by suffix, see :data:`IMAGE_SUFFIXES`) that decodes completely
(:func:`phenogen.data.dataset.check_image`, decompression bombs refused).

Nothing is silently fixed: a missing, outside or undecodable image, an unknown split or a CSV record
without a sequence raises :class:`~phenogen.errors.InputError` naming the file, row and field; FASTA
records absent from the CSV are counted in the returned summary.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from phenogen.data.barcodes import safe_id
from phenogen.data.build import assign_splits, place_image, short_name, staged_output
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import MODEL_SPLITS, Dataset, Record, check_image, load_dataset, write_dataset
from phenogen.errors import InputError
from phenogen.fsio import check_output_dir, read_text

__all__ = ["FolderRow", "read_sample_csv", "import_folder", "ImportSummary", "IMAGE_SUFFIXES"]

REQUIRED = ("record_id", "species", "images")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
MAX_CSV_BYTES = 1024 * 1024 * 1024


@dataclass
class FolderRow:
    """One record of the sample CSV, its images merged over repeated rows."""

    record_id: str
    species: str
    images: list[Path] = field(default_factory=list)
    taxonomy: tuple[str, ...] = ()
    split: str = ""
    row: int = 0  # first CSV row of the record (for messages)


@dataclass
class ImportSummary:
    """What an importer did: rows read, records written, and counts of what it skipped and why."""

    rows: int = 0
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    peak_held: int = 0  # most records held in memory at once (a streaming import: one row group)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _show(text: str, limit: int = 80) -> str:
    return (
        text
        if text.isprintable() and len(text) <= limit
        else repr(text[:limit]) + ("…" if len(text) > limit else "")
    )


def _image(folder: Path, rel: str, allow_outside: bool, where: str, checked: dict[Path, None]) -> Path:
    """The resolved, decoded image file ``rel`` of the CSV in ``folder``; else an InputError at ``where``."""
    if "\x00" in rel:
        raise InputError(f"{where}: image path {_show(rel)} contains a NUL byte")
    pure = PurePath(rel)
    if not allow_outside:
        if pure.is_absolute() or rel.startswith(("/", "\\")):
            raise InputError(
                f"{where}: image {_show(rel)} is an absolute path; give paths relative to the CSV's folder "
                "(or pass --allow-outside)"
            )
        if ".." in pure.parts:
            raise InputError(
                f"{where}: image {_show(rel)} climbs out of the CSV's folder (pass --allow-outside)"
            )
    if pure.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(
            f"{where}: {_show(rel)} is not an image file (suffix must be one of {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    try:
        image = (folder / rel).resolve()
        exists = image.is_file()
    except (OSError, RuntimeError, ValueError) as exc:  # too long, a symlink loop, permissions
        raise InputError(
            f"{where}: image {_show(rel)} cannot be opened ({' '.join(str(exc).split())})"
        ) from None
    if not allow_outside and not image.is_relative_to(folder.resolve()):
        raise InputError(
            f"{where}: image {_show(rel)} leads outside the CSV's folder (to {image}; pass --allow-outside)"
        )
    if not exists:
        raise InputError(f"{where}: image {_show(rel)} does not exist ({image})")
    if image not in checked:
        try:
            check_image(image, "image", error=InputError)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        checked[image] = None
    return image


def read_sample_csv(path: str | Path, *, allow_outside: bool = False) -> dict[str, FolderRow]:
    """Rows of the sample CSV keyed by record id; image paths resolved against the CSV's folder and decoded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: sample CSV not found")
    text = read_text(path, "sample CSV", max_bytes=MAX_CSV_BYTES)
    dialect = "excel-tab" if "\t" in text.split("\n", 1)[0] else "excel"
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    try:
        header = [h.strip() for h in reader.fieldnames or []]
    except csv.Error as exc:
        raise InputError(f"{path}, row 1: not a valid CSV header ({exc})") from None
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)}; the header was {_show(str(header), 200)}"
        )
    dups = sorted({h for h in header if header.count(h) > 1 and h})
    if dups:
        raise InputError(f"{path}, row 1: column(s) {', '.join(dups)} appear more than once")
    rows: dict[str, FolderRow] = {}
    checked: dict[Path, None] = {}
    line = 1
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(f"{path}, row {reader.line_num}: not a valid CSV row ({exc})") from None
        line = reader.line_num
        row = {k.strip(): (v if isinstance(v, str) else "").strip() for k, v in raw.items() if k}
        rid, species = row["record_id"], row["species"]
        if not rid or not species:
            raise InputError(f"{path}, row {line}: empty record_id or species")
        for name, value in (("record_id", rid), ("species", species)):
            if any(c in value for c in "\x00\t\n\r") or len(value) > 1000:
                raise InputError(
                    f"{path}, row {line}: field {name} is over 1,000 characters or has a tab, newline or NUL"
                )
        split = row.get("split", "")
        if split and split not in MODEL_SPLITS:
            raise InputError(
                f"{path}, row {line}: field split {_show(split)} must be one of {', '.join(MODEL_SPLITS)}"
            )
        entry = rows.setdefault(rid, FolderRow(rid, species, row=line))
        if entry.species != species:
            raise InputError(
                f"{path}, row {line}: record {_show(rid)} has species {_show(species)} here, "
                f"{_show(entry.species)} before"
            )
        for rel in (p.strip() for p in row["images"].split(";")):
            if rel:
                where = f"{path}, row {line}, record {_show(rid)}, field images"
                entry.images.append(_image(path.parent, rel, allow_outside, where, checked))
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
    *,
    force: bool = False,
    allow_outside: bool = False,
) -> tuple[Dataset, ImportSummary]:
    """Write a dataset at ``out`` from a user's FASTA + sample CSV (images copied under ``images/``).

    ``out`` is checked before any input is read, and written (aside, then moved in place) only once
    every input checked out; ``force`` replaces an earlier phenogen output, never other files.
    """
    from phenogen.dna.seqio import read_fasta

    out = Path(out)
    check_output_dir(out, force=force)
    samples = read_sample_csv(sample_csv, allow_outside=allow_outside)
    result = read_fasta(fasta, policy=icfg.policy)
    summary = ImportSummary(rows=len(samples))
    for rid, why in result.dropped.items():
        summary.skip(f"sequence dropped ({why})" if rid in samples else "not in CSV")
    sequences = {r.id: r.sequence for r in result.records}
    missing = [rid for rid in samples if rid not in sequences and rid not in result.dropped]
    if missing:
        raise InputError(
            f"{sample_csv}: {len(missing)} record(s) have no sequence in {fasta}, e.g. "
            + ", ".join(_show(m) for m in missing[:5])
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
    records, placements = [], []
    per_species: dict[str, int] = {}
    ids: dict[str, FolderRow] = {}
    for s in kept:
        rid = safe_id(s.record_id)
        if rid in ids:
            raise InputError(
                f"{sample_csv}, row {s.row}: record_id {_show(s.record_id)} becomes {rid!r} in the dataset, "
                f"like {_show(ids[rid].record_id)} (row {ids[rid].row}); make the ids differ in more than "
                "spaces, tabs, ';' or '|'"
            )
        ids[rid] = s
        per_species[s.species] = per_species.get(s.species, 0) + 1
        images = []
        for i, src in enumerate(s.images):
            rel = f"images/{short_name(rid, 200)}/{i:02d}_{short_name(src.name)}"
            placements.append((src, rel))
            images.append(rel)
        records.append(
            Record(
                record_id=rid,
                species=s.species,
                individual=f"{s.species.replace(' ', '_')}_{per_species[s.species]}",
                split=s.split or auto[s.species],
                node_kind="living",
                sequence=sequences[s.record_id],
                images=tuple(images),
                taxonomy=s.taxonomy,
            )
        )
    if not records:
        raise InputError(f"{sample_csv}: no record has both a sequence and an image")
    summary.records = len(records)
    info = {"source": "folder", "fasta": str(fasta), "csv": str(sample_csv), "masked": len(result.masked)}
    if icfg.image_mode == "symlink":
        info["image_links"] = str(Path(sample_csv).parent.resolve()) if not allow_outside else "/"
    with staged_output(out, "import", force=force) as tmp:
        for src, rel in placements:
            place_image(src, tmp, rel, icfg.image_mode)
        write_dataset(
            tmp,
            records,
            info,
            format=icfg.format,
            parquet_above=icfg.parquet_above,
            row_group_size=icfg.row_group_size,
        )
    return load_dataset(out), summary

"""BIOSCAN-5M in: its metadata CSV and image packages, read as a stream with bounded memory.

The layout is the one the official loader (the ``bioscan-dataset`` package, which needs torchvision
and so is not used here) expects under ``--root``::

    ROOT/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv
    ROOT/bioscan5m/images/<image_package>/<split>/<chunk>/<processid>.jpg   (chunk may be empty)

Columns used: ``processid phylum class order family subfamily genus species dna_bin dna_barcode
split chunk``. As in ``load_bioscan5m_metadata`` barcodes are cut to their first
``max_nucleotides`` (660) bases. Every row is read once, in order, and each kept record goes to a
:class:`~phenogen.data.dataset.DatasetWriter` at once, its image placed as it is read: with
``import.format = "auto"`` (the default) a set of more than ``import.parquet_above`` (50,000)
records is written as ``manifest.parquet`` in row groups of ``import.row_group_size`` records, so
memory is bounded by one row group (and the per-species counts), not by the 5 million rows.
``import.max_records`` and ``import.max_per_species`` are optional caps (0 = none, the default).
BIOSCAN's ``train`` partition becomes our ``train``, every other partition read ``heldout``
(``split_from = "species"`` instead draws a species-disjoint split). Images are read from the
extracted packages; rows without their image are skipped (``require_image = false``: kept imageless).
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from phenogen.data.barcodes import check_barcode, safe_id
from phenogen.data.build import assign_splits, place_image, staged_output
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import Dataset, DatasetWriter, Record, image_problem, load_dataset
from phenogen.data.folder import ImportSummary
from phenogen.errors import InputError
from phenogen.fsio import check_output_dir

__all__ = ["METADATA_FILE", "RANKS", "metadata_path", "image_path", "iter_metadata", "import_bioscan5m"]

METADATA_FILE = Path("bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv")
RANKS: tuple[str, ...] = ("phylum", "class", "order", "family", "subfamily", "genus")
NEEDED: tuple[str, ...] = ("processid", "species", "dna_barcode", "split", "chunk")
_EMPTY = frozenset({"", "na", "nan", "none", "not_classified"})
_EMPTY_LEN = max(map(len, _EMPTY))


def metadata_path(root: str | Path) -> Path:
    """The metadata CSV under ``root`` (``root`` may also be the CSV itself or its ``bioscan5m`` folder)."""
    root = Path(root)
    for candidate in (root, root / METADATA_FILE, root / METADATA_FILE.relative_to("bioscan5m")):
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{root}: no BIOSCAN-5M metadata; expected {root / METADATA_FILE} "
        "(unzip BIOSCAN_5M_Insect_Dataset_metadata_MultiTypes.zip there)"
    )


def image_path(root: str | Path, package: str, row: dict[str, str]) -> str:
    """``ROOT/bioscan5m/images/PACKAGE/SPLIT[/CHUNK]/PROCESSID.jpg`` as laid out by the official loader.

    Plain string joins: this runs once per row, and ``pathlib`` would cost more than reading the row.
    """
    parts = [str(root), "bioscan5m", "images", package, row["split"]]
    if row.get("chunk"):
        parts.append(row["chunk"])
    return os.path.join(*parts, f"{row['processid']}.jpg")


def iter_metadata(path: str | Path, splits: set[str] | None = None) -> Iterator[dict[str, str]]:
    """Stream the metadata rows (``splits`` filters BIOSCAN partitions); values stripped, NA-ish -> ''."""
    path = Path(path)
    try:
        yield from _rows(path, splits)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a block)") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a valid CSV ({' '.join(str(exc).split())})") from None


def _rows(path: Path, splits: set[str] | None) -> Iterator[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        index = {name.strip(): i for i, name in enumerate(header)}
        missing = [c for c in NEEDED if c not in index]
        if missing:
            raise InputError(f"{path}: not a BIOSCAN-5M metadata CSV; missing column(s) {', '.join(missing)}")
        wanted = [c for c in (*NEEDED, *RANKS, "dna_bin") if c in index]
        cols = [(c, index[c]) for c in wanted]
        i_split, width = index["split"], max(i for _, i in cols) + 1
        for row in reader:
            if splits is not None and (len(row) <= i_split or row[i_split] not in splits):
                continue
            if len(row) < width:
                row += [""] * (width - len(row))
            # NA-ish words are short: a 660-bp barcode is not lower-cased to find out (5 million rows)
            yield {
                c: ("" if len(v := row[i].strip()) <= _EMPTY_LEN and v.lower() in _EMPTY else v)
                for c, i in cols
            }


def import_bioscan5m(
    root: str | Path,
    out: str | Path,
    icfg: ImportConfig,
    bcfg: BuildConfig,
    split_from: str = "bioscan",
    *,
    force: bool = False,
) -> tuple[Dataset, ImportSummary]:
    """Stream BIOSCAN-5M metadata under ``root`` into a dataset at ``out`` (images placed by ``image_mode``).

    Every row is read once and each kept record goes straight to a :class:`DatasetWriter` (its
    image placed as it is read), so memory is bounded by one Parquet row group (``import.format``,
    ``import.row_group_size``), not by the rows. ``out`` is checked before the stream starts and
    written aside, then moved in place once complete (:func:`~phenogen.data.build.staged_output`).
    With ``split_from = "species"`` the species-disjoint split needs every species first: the
    records are streamed to a staging manifest, then rewritten with their splits (two passes over
    the records, none over the CSV). Image paths come from the official layout
    (``processid``/``split``/``chunk`` must not hold ``/`` or ``..``).
    """
    root, out = Path(root), Path(out)
    check_output_dir(out, force=force)
    meta = metadata_path(root)
    data_root = meta.parents[3] if meta.name == METADATA_FILE.name and len(meta.parents) > 3 else root
    images_dir = data_root / "bioscan5m" / "images"
    summary = ImportSummary()
    info = {
        "source": "bioscan5m",
        "metadata": str(meta),
        "image_package": icfg.image_package,
        "bioscan_splits": list(icfg.bioscan_splits),
        "split_from": split_from,
    }
    if icfg.image_mode == "symlink":
        info["image_links"] = str(images_dir.resolve())
    fmt = {"format": icfg.format, "parquet_above": icfg.parquet_above, "row_group_size": icfg.row_group_size}
    with staged_output(out, "import", force=force) as tmp:
        stage = tmp / ".stage" if split_from == "species" else tmp
        lineages: dict[str, tuple[str, ...]] = {}
        with DatasetWriter(stage, info, **fmt) as writer:
            for rec, src in _kept(meta, data_root, icfg, summary):
                if src is not None:
                    place_image(Path(src), tmp, rec.images[0], icfg.image_mode)
                writer.add(rec)
                if split_from == "species":
                    lineages[rec.species] = rec.taxonomy
            if not writer.n:
                raise InputError(f"{meta}: no usable rows ({summary.rows:,} read; skipped {summary.skipped})")
            writer.close(check_images=split_from != "species")  # staged records name images in tmp
        summary.records, summary.peak_held = writer.n, writer.peak_held
        if split_from == "species":
            splits = assign_splits(lineages, bcfg)
            with DatasetWriter(tmp, info, **fmt) as final:
                for rec in load_dataset(stage, check_images=False).iter_records():
                    final.add(Record(**{**rec.__dict__, "split": splits[rec.species]}))
                final.close()
            summary.peak_held = max(summary.peak_held, final.peak_held)
            shutil.rmtree(stage)
    return load_dataset(out), summary


def _kept(
    meta: Path, data_root: Path, icfg: ImportConfig, summary: ImportSummary
) -> Iterator[tuple[Record, str | None]]:
    """The records the ``[import]`` rules keep, with the image file to place (or None), in CSV order."""
    per_species: dict[str, int] = {}
    for row in iter_metadata(meta, set(icfg.bioscan_splits)):
        summary.rows += 1
        if icfg.max_records and summary.records >= icfg.max_records:
            summary.skip("over max_records")
            continue
        species = row["species"]
        if not species:
            if icfg.require_species:
                summary.skip("no species label")
                continue
            species = row.get("dna_bin") or row.get("genus") or "unidentified"
        if icfg.max_per_species and per_species.get(species, 0) >= icfg.max_per_species:
            summary.skip("over max_per_species")
            continue
        barcode = row["dna_barcode"][: icfg.max_nucleotides] if icfg.max_nucleotides else row["dna_barcode"]
        seq, why = check_barcode(
            barcode,
            policy=icfg.policy,
            min_length=icfg.min_length,
            max_length=10**6,
            max_n_fraction=1.0,
            record_id=row["processid"],
            source=str(meta),
        )
        if seq is None:
            summary.skip(why.split(" (")[0])
            continue
        parts = (row["processid"], row["split"], row.get("chunk", ""))
        if any("/" in p or "\\" in p or p in (".", "..") or "\x00" in p for p in parts):
            summary.skip("unsafe processid/split/chunk")
            continue
        src_name = image_path(data_root, icfg.image_package, row)
        images: tuple[str, ...] = ()
        chunk = f"{parts[2]}/" if parts[2] else ""
        rel = f"images/{icfg.image_package}/{parts[1]}/{chunk}{parts[0]}.jpg"
        src: str | None = None
        if os.path.isfile(src_name) and image_problem(rel) is None:
            images, src = (rel,), src_name
        elif icfg.require_image:
            summary.skip("image missing")
            continue
        per_species[species] = per_species.get(species, 0) + 1
        summary.records += 1
        yield (
            Record(
                record_id=safe_id(row["processid"]),
                species=species,
                individual=row["processid"],
                split="train" if row["split"] == "train" else "heldout",
                node_kind="living",
                sequence=seq,
                images=images,
                taxonomy=tuple(row[r] for r in RANKS if row.get(r)),
            ),
            src,
        )

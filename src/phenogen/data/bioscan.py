"""BIOSCAN-5M in: its metadata CSV and image packages, read as a stream with bounded memory.

The layout is the one the official loader (the ``bioscan-dataset`` package, which needs torchvision
and so is not used here) expects under ``--root``::

    ROOT/bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv
    ROOT/bioscan5m/images/<image_package>/<split>/<chunk>/<processid>.jpg   (chunk may be empty)

or, not extracted, the image package zips as distributed (``BIOSCAN_5M_cropped_256.zip``, or the
loader's ``BIOSCAN_5M_cropped_256_train.zip`` / ``_eval.zip`` / ``_pretrain.01.zip`` …, for any
package) in ``ROOT`` or ``ROOT/bioscan5m``, their members laid out as above from ``bioscan5m/`` on
(``import.image_archive`` names other zips).

Columns used: ``processid phylum class order family subfamily genus species dna_bin dna_barcode
split chunk``. As in ``load_bioscan5m_metadata`` barcodes are cut to their first
``max_nucleotides`` (660) bases. Every row is read once, in order, and each kept record goes to a
:class:`~phenogen.data.dataset.DatasetWriter` at once, its image placed as it is read: with
``import.format = "auto"`` (the default) a set of more than ``import.parquet_above`` (50,000)
records is written as ``manifest.parquet`` in row groups of ``import.row_group_size`` records, so
memory is bounded by one row group (and the per-species counts), not by the 5 million rows.
``import.max_records`` and ``import.max_per_species`` are optional caps (0 = none, the default).
BIOSCAN's ``train`` partition becomes our ``train``, every other partition read ``heldout``
(``split_from = "species"`` instead draws a species-disjoint split). Rows without their image are
skipped (``require_image = false``: kept imageless).

Images (``import.image_mode``): from the extracted folder they are copied, linked or hard-linked
into the dataset. From the zips they are read in place (``archive``; ``auto``, the default, picks it
when the zips are there and the extracted folder is not): nothing is extracted, the manifest keeps
the relative names ``images/<package>/<split>/[<chunk>/]<processid>.jpg`` and dataset.json's
``image_archives`` names the zips that hold them and the prefix of their members, so
:meth:`~phenogen.data.dataset.Dataset.image_path` gives ``ARCHIVE.zip!/MEMBER`` and every image
reader opens it lazily (:mod:`phenogen.data.archive`: one handle per zip and process). Which rows
have their image is a set lookup in each zip's member names, read once (about 0.75 KB of memory a
member: the official train zip's ~290,000 members about 0.2 GB, each pretrain zip's ~2.3 million
1.7 GB). ``copy`` with only the zips extracts the kept images alone. A zip that is not one is a
:class:`~phenogen.errors.DataError` naming it.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phenogen.data.archive import MemberPath, image_bytes, member_path, open_archive
from phenogen.data.barcodes import check_barcode, safe_id
from phenogen.data.build import assign_splits, place_image, staged_output
from phenogen.data.config import BuildConfig, ImportConfig
from phenogen.data.dataset import Dataset, DatasetWriter, Record, image_problem, load_dataset
from phenogen.data.folder import ImportSummary
from phenogen.errors import InputError
from phenogen.fsio import check_output_dir

__all__ = [
    "METADATA_FILE",
    "RANKS",
    "metadata_path",
    "image_path",
    "archive_name",
    "find_archives",
    "iter_metadata",
    "import_bioscan5m",
]

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


def archive_name(package: str) -> re.Pattern[str]:
    """File names of ``package``'s official zips: whole, per partition set (the loader's) or numbered parts.

    >>> [bool(archive_name("cropped_256").fullmatch(n)) for n in
    ...  ("BIOSCAN_5M_cropped_256.zip", "BIOSCAN_5M_cropped_256_pretrain.01.zip", "BIOSCAN_5M_cropped.zip")]
    [True, True, False]
    """
    return re.compile(rf"BIOSCAN_5M_{re.escape(package)}(?:_(?:train|eval|pretrain)(?:\.\d+)?|\.\d+)?\.zip")


def _official(package: str) -> str:
    return f"BIOSCAN_5M_{package}[_train|_eval|_pretrain.NN|.NN].zip"


def find_archives(
    root: str | Path, package: str, given: Sequence[str | Path] = (), data_root: str | Path | None = None
) -> list[Path]:
    """The image zips to read: ``given`` (``import.image_archive``), else the official ones of ``package``.

    Official names (:func:`archive_name`) are looked for in ``root`` and ``root/bioscan5m`` (and in
    ``data_root``, the folder above ``bioscan5m/metadata``, when ``root`` named the CSV), sorted by
    name: the whole package's zip comes before its partition zips.
    """
    if given:
        out = []
        for p in given:
            path = Path(p).expanduser()
            if not path.is_file():
                raise InputError(f"{path}: import.image_archive does not exist (or is not a file)")
            if path.suffix.lower() != ".zip" or "!/" in str(path):
                raise InputError(f"{path}: import.image_archive must name a .zip file")
            out.append(path.resolve())
        return out
    pattern, found = archive_name(package), []
    folders = [Path(root), Path(root) / "bioscan5m"]
    if data_root is not None:
        folders += [Path(data_root), Path(data_root) / "bioscan5m"]
    for folder in dict.fromkeys(folders):
        if folder.is_dir():
            found += [
                p.resolve() for p in sorted(folder.iterdir()) if pattern.fullmatch(p.name) and p.is_file()
            ]
    return list(dict.fromkeys(found))


@dataclass
class _Images:
    """Where a BIOSCAN import finds each row's image and how it enters the dataset."""

    mode: str  # copy | symlink | hardlink | archive
    folder: Path  # the extracted package, when read from files
    archives: list[tuple[Path, str, frozenset[str]]] = field(default_factory=list)  # (zip, prefix, names)
    used: set[Path] = field(default_factory=set)

    def find(self, rel: str, file: str) -> str | MemberPath | None:
        """The image of the row whose dataset path is ``rel`` (``file`` when extracted), or None."""
        if not self.archives:
            return file if os.path.isfile(file) else None
        for archive, prefix, names in self.archives:
            if prefix + rel in names:
                self.used.add(archive)
                return member_path(archive, prefix + rel)
        return None

    def place(self, src: str | MemberPath, out: Path, rel: str) -> None:
        if self.mode == "archive":
            return  # read in place
        if isinstance(src, MemberPath):  # copy: extract this one member
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            part.write_bytes(image_bytes(src))
            os.replace(part, target)
        else:
            place_image(Path(src), out, rel, self.mode)

    def info(self) -> list[dict[str, str]]:
        """dataset.json's ``image_archives``: the zips that gave an image, in the order they are searched."""
        if self.mode != "archive":
            return []
        return [{"path": str(a), "prefix": p} for a, p, _ in self.archives if a in self.used]

    def where(self) -> str:
        if self.archives:
            return ", ".join(str(a) for a, _, _ in self.archives)
        return f"{self.folder}, and no {_official(self.folder.name)} zip was found"


def _image_source(root: Path, data_root: Path, icfg: ImportConfig) -> _Images:
    """Resolve ``image_mode`` (``auto``: the extracted folder if there, else the zips) and open the zips."""
    package, given, mode = icfg.image_package, icfg.archives(), icfg.image_mode
    folder = data_root / "bioscan5m" / "images" / package
    if not given and mode != "archive" and folder.is_dir():
        return _Images("copy" if mode == "auto" else mode, folder)
    archives = find_archives(root, package, given, data_root)
    if not archives:
        if mode == "archive":
            raise InputError(
                f"{root}: image_mode archive, but no {_official(package)} zip in {root} or "
                f"{root / 'bioscan5m'}; set import.image_archive to the zip"
            )
        return _Images("copy" if mode == "auto" else mode, folder)  # rows are skipped: image missing
    if mode in ("symlink", "hardlink"):
        raise InputError(
            f"{archives[0]}: the images are in a zip, which image_mode {mode} cannot link to; use "
            'image_mode "archive" (read in place) or "copy" (extract the kept images)'
        )
    marker = f"images/{package}/"
    opened = []
    for archive in archives:
        names = open_archive(archive).namelist()  # a DataError names a zip that is not one
        prefix = next((n[: n.index(marker)] for n in names if marker in n), None)
        if prefix is None:
            raise InputError(
                f"{archive}: holds no {marker} members; is it another image package than "
                f"import.image_package = {package!r}?"
            )
        opened.append((archive, prefix, frozenset(names)))
    return _Images("archive" if mode == "auto" else mode, folder, opened)


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

    Images come from the extracted package folder or, read in place, from the package zips
    (module docstring); an archive-backed dataset's dataset.json names them in ``image_archives``.

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
    source = _image_source(root, data_root, icfg)
    summary = ImportSummary()
    info = {
        "source": "bioscan5m",
        "metadata": str(meta),
        "image_package": icfg.image_package,
        "bioscan_splits": list(icfg.bioscan_splits),
        "split_from": split_from,
    }
    if source.mode == "symlink":
        info["image_links"] = str(images_dir.resolve())
    fmt = {"format": icfg.format, "parquet_above": icfg.parquet_above, "row_group_size": icfg.row_group_size}
    with staged_output(out, "import", force=force) as tmp:
        stage = tmp / ".stage" if split_from == "species" else tmp
        lineages: dict[str, tuple[str, ...]] = {}
        with DatasetWriter(stage, info, **fmt) as writer:
            for rec, src in _kept(meta, data_root, icfg, summary, source):
                if src is not None:
                    source.place(src, tmp, rec.images[0])
                writer.add(rec)
                if split_from == "species":
                    lineages[rec.species] = rec.taxonomy
            if not writer.n:
                hint = (
                    f"; no row's image is in {source.where()}" if summary.skipped.get("image missing") else ""
                )
                raise InputError(
                    f"{meta}: no usable rows ({summary.rows:,} read; skipped {summary.skipped}){hint}"
                )
            if source.info():
                info["image_archives"] = writer.info["image_archives"] = source.info()
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
    meta: Path, data_root: Path, icfg: ImportConfig, summary: ImportSummary, source: _Images
) -> Iterator[tuple[Record, str | MemberPath | None]]:
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
        src = source.find(rel, src_name) if image_problem(rel) is None else None
        if src is not None:
            images = (rel,)
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

"""The one dataset format every source lands in (synthetic clade, a user's folder, NCBI/BOLD, BIOSCAN-5M).

A dataset is a directory::

    DIR/
      dataset.json      format name + version, provenance (source, seed, command), trait names, counts
      manifest.tsv      one row per record (an individual, or an internal node of the true tree) — or
      manifest.parquet  the same columns in Parquet row groups, for sets too large to hold in memory
      sequences.fasta   the barcodes of the records a model may see (splits train + heldout)
      tree.nwk          the tree, when known (for the synthetic clade: the full true tree)
      images/...        image files, referenced from the manifest by relative path
      truth/...         ground truth a model must never train on (extinct tips, ancestors)

Manifest columns: ``record_id species individual split node_kind sequence images taxonomy``
followed by one ``trait:NAME`` column per trait. In ``manifest.tsv`` ``images`` and ``taxonomy``
hold ``;``-separated lists; in ``manifest.parquet`` they are ``list<string>`` columns and traits
``float64`` (:mod:`phenogen.data.columnar`). ``split`` is one of :data:`SPLITS`; only ``train`` may be
fitted on (``heldout`` for held-out losses).

Which manifest: dataset.json's ``manifest`` names it (absent = ``manifest.tsv``, format version 1;
``manifest.parquet`` is written with version 2). :class:`DatasetWriter` (and :func:`write_dataset`)
write ``format = "tsv"``, ``"parquet"`` or ``"auto"`` (the default: Parquet above
:data:`PARQUET_ABOVE` records); :func:`convert_dataset` switches a dataset in place and
:func:`export_tsv` writes any dataset's manifest as TSV.

Reading validates everything (the types of dataset.json's fields, columns, unique ids, splits, node
kinds, sequences, finite trait values, that image paths are relative, stay inside the dataset — ``..``
and symlinks leading out are refused — and name existing files, or members of the zip archives
dataset.json's ``image_archives`` names) and raises
:class:`~phenogen.errors.DataError` naming the file, row and field; never another exception, whatever
the bytes. A TSV manifest is checked whole when loaded; a Parquet one row group by row group as it is
read, and whole by :meth:`Dataset.validate`. :meth:`Dataset.verify_images` also decodes every image
(``phenogen validate`` does).

Images read in place from zips (a BIOSCAN-5M import with ``image_mode = "archive"``): dataset.json's
``image_archives`` lists ``{"path": ABSOLUTE.zip, "prefix": P}``; an image ``rel`` of the manifest
(still ``images/...``, so manifests keep one format) is the member ``P + rel`` of the first archive
holding it, and :meth:`Dataset.image_path` returns it as a
:class:`~phenogen.data.archive.MemberPath` (``ARCHIVE.zip!/MEMBER``). Open dataset images with
:func:`~phenogen.data.archive.open_image` (:func:`check_image`, :func:`read_image` and
:func:`phenogen.diffusion.vae.load_images` do), never ``PIL.Image.open`` of ``root / rel``.

>>> import tempfile
>>> rec = Record("r1", "sp_a", "sp_a_1", "train", "living", "ACGTAC", (), ("Aves",), {})
>>> ds = write_dataset(tempfile.mkdtemp(), [rec], {"source": "doctest"})
>>> [r.record_id for r in load_dataset(ds.root).records("train")]
['r1']
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from phenogen.data.archive import has_member, member_path, open_image
from phenogen.errors import DataError, PhenogenError, one_line
from phenogen.fsio import atomic_write_json, atomic_write_text, fsync_dir, read_json

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SPLITS",
    "NODE_KINDS",
    "MODEL_SPLITS",
    "MANIFESTS",
    "MANIFEST_FORMATS",
    "PARQUET_ABOVE",
    "ROW_GROUP_SIZE",
    "Record",
    "Dataset",
    "DatasetWriter",
    "load_dataset",
    "write_dataset",
    "export_tsv",
    "convert_dataset",
    "image_problem",
    "contained_file",
    "check_image",
    "read_image",
]

FORMAT = "phenogen-dataset"
FORMAT_VERSION = 2  # 2: dataset.json may name a Parquet manifest; TSV datasets are still written as 1
MANIFESTS: dict[str, str] = {"tsv": "manifest.tsv", "parquet": "manifest.parquet"}
MANIFEST_FORMATS: tuple[str, ...] = ("tsv", "parquet", "auto")
PARQUET_ABOVE = 50_000  # format "auto": a manifest of more records is written as Parquet
ROW_GROUP_SIZE = 32_768  # records per Parquet row group: what a writer or reader holds at once
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
MAX_NAME_BYTES = 255  # one path component (NAME_MAX on Linux/macOS)
MAX_PATH_BYTES = 4096  # a whole relative path (PATH_MAX)
MAX_INFO_BYTES = 16 * 1024 * 1024  # dataset.json is provenance + trait names: kilobytes


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


class Dataset:
    """A validated dataset directory: its records held in memory (TSV) or read on demand (Parquet).

    Both manifest formats answer the same calls, each filtered by ``split`` (one name or several)
    and ``taxon`` (names of any rank, or species: a record matches when its species or one of its
    taxonomy names is among them): :meth:`records` (a list), :meth:`iter_records` (a stream, optionally
    one shard of several), :meth:`count`, :meth:`species`. A Parquet dataset reads only the columns
    and row groups a call needs and validates each row group as it reads it; :meth:`validate`
    checks all of it with bounded memory.

    >>> import tempfile
    >>> recs = [Record(f"r{i}", f"sp_{i % 2}", f"i{i}", "train", "living", "ACGT", (), ("Aves",)) for i in range(4)]
    >>> ds = write_dataset(tempfile.mkdtemp(), recs, {}, format="parquet", row_group_size=2)
    >>> [r.record_id for r in ds.iter_records("train", taxon="sp_1")], ds.count(), ds.format
    (['r1', 'r3'], 4, 'parquet')
    """

    def __init__(
        self,
        root: str | Path,
        info: dict[str, Any],
        all_records: list[Record] | None = None,
        rows: dict[str, int] | None = None,
        *,
        table: Any = None,
        check_images: bool = True,
    ) -> None:
        self.root = Path(root)
        self.info = info
        self._records = all_records  # TSV: every record, validated when loaded
        self._rows = rows or {}  # TSV: record_id -> manifest row (for messages)
        self._table = table  # Parquet: a phenogen.data.columnar.ParquetManifest
        self.check_images = check_images
        self._roots: list[Path] | None = None
        self._archives: list[tuple[str, str]] | None = None
        self._locate: Callable[[str], tuple[Path | None, str | None]] | None = None

    @property
    def format(self) -> str:
        """``"tsv"`` or ``"parquet"``: the manifest this dataset is read from."""
        return "tsv" if self._table is None else "parquet"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFESTS[self.format]

    @property
    def trait_names(self) -> list[str]:
        return list(self.info.get("trait_names", []))

    @property
    def tree_path(self) -> Path | None:
        path = self.root / "tree.nwk"
        return path if path.is_file() else None

    @property
    def all_records(self) -> list[Record]:
        """Every record (for a Parquet manifest: all of it read into memory)."""
        return self.records()

    @property
    def rows(self) -> dict[str, int]:
        """record_id -> manifest row (for a Parquet manifest: built by reading the ids)."""
        if self._table is None:
            return self._rows
        return {rec.record_id: row for row, rec in self._iter(None, None)}

    def _iter(
        self,
        split: str | Sequence[str] | None,
        taxon: str | Sequence[str] | None,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[tuple[int | None, Record]]:
        splits, taxa = _splits(split), _taxa(taxon)
        if self._table is None:
            assert self._records is not None
            rows: Iterator[tuple[int | None, Record]] = (
                (self._rows.get(r.record_id), r)
                for r in self._records
                if (splits is None or r.split in splits) and (taxa is None or _in_taxa(r, taxa))
            )
        else:
            check = self._check_images_of if self.check_images else None
            rows = self._table.iter_records(splits, taxa, check)
        if shard is None:
            return rows
        rank, world = shard
        if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
            raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
        return itertools.islice(rows, rank, None, world)

    def records(
        self, split: str | Sequence[str] | None = None, taxon: str | Sequence[str] | None = None
    ) -> list[Record]:
        """Records of one split, several splits, or all (``None``); of ``taxon`` only, when given."""
        if self._table is None:
            return [r for _, r in self._iter(split, taxon)]
        out, seen = [], {}
        for row, rec in self._iter(split, taxon):
            if rec.record_id in seen:  # memory for ids is spent anyway on the list returned
                raise _fail(
                    self.manifest,
                    row,
                    f"duplicate record_id {_show(rec.record_id)} (first at row {seen[rec.record_id]})",
                )
            seen[rec.record_id] = row
            out.append(rec)
        return out

    def iter_records(
        self,
        split: str | Sequence[str] | None = None,
        taxon: str | Sequence[str] | None = None,
        *,
        shard: tuple[int, int] | None = None,
    ) -> Iterator[Record]:
        """Stream the records :meth:`records` would list (a Parquet manifest: one row group in memory).

        ``shard=(rank, world)`` keeps every ``world``-th matching record from the ``rank``-th on: the
        shards of ``world`` processes are disjoint, cover every record and differ by at most one.
        """
        return (rec for _, rec in self._iter(split, taxon, shard))

    def count(
        self, split: str | Sequence[str] | None = None, taxon: str | Sequence[str] | None = None
    ) -> int:
        """How many records :meth:`records` would list (a Parquet manifest: only the filter columns are read)."""
        if self._table is None:
            return sum(1 for _ in self._iter(split, taxon))
        splits, taxa = _splits(split), _taxa(taxon)
        if splits is None and taxa is None:
            return self._table.num_rows
        return sum(len(rows) for rows, _ in self._table.select(splits, taxa, columns=[]))

    def species(
        self, split: str | Sequence[str] | None = None, taxon: str | Sequence[str] | None = None
    ) -> list[str]:
        """Species names in first-seen order (a Parquet manifest: only the species column is read)."""
        if self._table is None:
            return list(dict.fromkeys(r.species for _, r in self._iter(split, taxon)))
        names: dict[str, None] = {}
        for _, cols in self._table.select(_splits(split), _taxa(taxon), columns=["species"]):
            names.update(dict.fromkeys(cols["species"].to_pylist()))
        return list(names)

    def counts(self) -> dict[str, int]:
        """Records per split (every split of :data:`SPLITS`)."""
        if self._table is None:
            assert self._records is not None
            return {s: sum(r.split == s for r in self._records) for s in SPLITS}
        return self._table.split_counts()

    def validate(self) -> int:
        """Check every row, unique ids and dataset.json's counts; returns the number of records.

        A TSV manifest was checked whole when loaded. A Parquet one is read a row group at a time
        (ids checked unique with a fixed-size filter, :class:`~phenogen.data.columnar.DuplicateFinder`),
        so memory stays bounded for millions of records; any defect is one DataError naming the row.
        """
        if self._table is None:
            return len(self)
        from phenogen.data.columnar import check_unique_ids

        counts = dict.fromkeys(SPLITS, 0)
        for _, rec in self._iter(None, None):
            counts[rec.split] += 1
        check_unique_ids(self._table)
        declared = self.info.get("counts")
        if declared is not None and {s: declared.get(s, 0) for s in SPLITS} != counts:
            raise _fail(
                self.root / "dataset.json", None, f"field 'counts' is {declared}, the manifest holds {counts}"
            )
        return sum(counts.values())

    def image_path(self, rel: str) -> Path:
        """Where the image ``rel`` (a manifest path) is read from: ``root/rel``, or a zip member.

        For a dataset with ``image_archives`` it is a :class:`~phenogen.data.archive.MemberPath`
        whose ``str()`` is ``ARCHIVE.zip!/MEMBER``; either kind opens with
        :func:`~phenogen.data.archive.open_image` and answers ``is_file()``.
        """
        archives = self.image_archives
        return _member_of(archives, rel) if archives else self.root / rel

    @property
    def image_archives(self) -> list[tuple[str, str]]:
        """``(zip path, member prefix)`` of each archive the images are read from (empty: files)."""
        if self._archives is None:
            self._archives = _archives(self.info)
        return self._archives

    @property
    def image_roots(self) -> list[Path]:
        """Resolved directories images may live in: the dataset, and ``image_links`` when an import linked them."""
        if self._roots is None:
            self._roots = [self.root.resolve()]
            if isinstance(self.info.get("image_links"), str):
                self._roots.append(Path(self.info["image_links"]).resolve())
        return self._roots

    def locate_image(self, rel: str) -> tuple[Path | None, str | None]:
        """``(path, None)`` of an existing image ``rel`` (file inside the roots, or archive member), else ``(None, why)``."""
        if self._locate is None:
            self._locate = _image_locator(self.root, self.info)
        return self._locate(rel)

    def _check_images_of(self, rec: Record, row: int) -> None:
        for rel in rec.images:
            _, why = self.locate_image(rel)
            if why:
                raise _fail(self.manifest, row, f"record {_show(rec.record_id)}: field images: {why}")

    def verify_images(self, split: str | Sequence[str] | None = None) -> int:
        """Decode every image of ``split`` (all by default); returns the count, else one DataError.

        The error names the manifest row, the record and the image (a corrupt PNG, a truncated JPEG,
        a decompression bomb, a link out of the dataset, a member missing from its zip archive).
        """
        manifest, n = self.manifest, 0
        for row, rec in self._iter(split, None):
            for rel in rec.images:
                where = f"record {_show(rec.record_id)}: field images"
                path, why = self.locate_image(rel)
                if why:
                    raise _fail(manifest, row, f"{where}: {why}")
                try:
                    check_image(path, f"image {_name(rel)}")
                except DataError as exc:
                    raise _fail(manifest, row, f"{where}: {exc}") from None
                n += 1
        return n

    def __len__(self) -> int:
        if self._table is None:
            assert self._records is not None
            return len(self._records)
        return self._table.num_rows

    def __repr__(self) -> str:
        kind = "" if self._table is None else ", parquet"
        return f"Dataset({str(self.root)!r}, {self.counts()}{kind})"


def _splits(split: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if split is None:
        return None
    wanted = (split,) if isinstance(split, str) else tuple(split)
    for s in wanted:
        if s not in SPLITS:
            raise DataError(f"unknown split {s!r}; splits are {', '.join(SPLITS)}")
    return wanted


def _taxa(taxon: str | Sequence[str] | None) -> frozenset[str] | None:
    if taxon is None:
        return None
    return frozenset((taxon,) if isinstance(taxon, str) else taxon)


def _in_taxa(rec: Record, taxa: frozenset[str]) -> bool:
    return rec.species in taxa or not taxa.isdisjoint(rec.taxonomy)


def _fail(path: Path, row: int | None, message: str) -> DataError:
    where = f"{path}" + (f", row {row}" if row is not None else "")
    return DataError(f"{where}: {message}")


def _show(value: object, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters: error messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "…" + text[-4:]


def _name(rel: str) -> str:
    """An image path as shown in messages: as is when short and printable, else its cut ``repr``."""
    return rel if rel.isprintable() and len(rel) <= 120 else _show(rel)


def image_problem(rel: str) -> str | None:
    """What is wrong with the image path ``rel`` on its face (no file-system access), or None.

    Image paths are relative, ``/``-separated, stay below the dataset directory (no ``..``), and
    have no component the file system refuses (NUL bytes, names over 255 bytes).
    """
    if not rel or rel != rel.strip():
        return f"image path {_name(rel)} is empty or has leading/trailing spaces"
    if "\x00" in rel or any(c in rel for c in "\t\n\r"):
        return f"image path {_name(rel)} contains a NUL, tab or newline"
    if "\\" in rel:
        return f"image path {_name(rel)} contains '\\'; use '/' between folders"
    if rel.startswith("/") or PureWindowsPath(rel).drive:
        return f"image path {_name(rel)} is absolute; image paths must be relative to the dataset directory"
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        return f"image path {_name(rel)} climbs out of the dataset directory with '..'"
    if len(rel.encode("utf-8", "replace")) > MAX_PATH_BYTES or any(
        len(p.encode("utf-8", "replace")) > MAX_NAME_BYTES for p in parts
    ):
        return (
            f"image path {_name(rel)} is too long (at most {MAX_NAME_BYTES} bytes a name, "
            f"{MAX_PATH_BYTES} in all)"
        )
    return None


def _archives(info: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["path"], a.get("prefix", "")) for a in info.get("image_archives") or ()]


def _member_of(archives: Sequence[tuple[str, str]], rel: str) -> Path:
    """The member for image ``rel``: in the first archive that holds it (the first archive if none does)."""
    if len(archives) > 1:
        for archive, prefix in archives:
            if has_member(archive, prefix + rel):
                return member_path(archive, prefix + rel)
    archive, prefix = archives[0]
    return member_path(archive, prefix + rel)


def _image_locator(root: Path, info: dict[str, Any]) -> Callable[[str], tuple[Path | None, str | None]]:
    """``rel -> (path, None) | (None, why)`` for a dataset: :func:`contained_file`, or a member lookup."""
    archives = _archives(info)
    if not archives:
        roots = [root.resolve()]
        if isinstance(info.get("image_links"), str):
            roots.append(Path(info["image_links"]).resolve())
        return lambda rel: contained_file(root, rel, roots)
    names = ", ".join(a for a, _ in archives)

    def locate(rel: str) -> tuple[Path | None, str | None]:
        why = image_problem(rel)
        if why:
            return None, why
        path = _member_of(archives, rel)  # a broken archive raises a DataError naming it
        if not path.is_file():
            return None, f"image {_name(rel)} is not a member of the image archive(s) {names}"
        return path, None

    return locate


def contained_file(base: Path, rel: str, roots: Sequence[Path]) -> tuple[Path | None, str | None]:
    """``base/rel`` resolved, if it is an existing file inside one of ``roots`` (resolved directories).

    Returns ``(path, None)`` or ``(None, why)``; symlinks are followed, so a link that leads out of
    every root is refused like a ``..`` path.
    """
    why = image_problem(rel)
    if why:
        return None, why
    try:
        path = (base / rel).resolve()
        inside = any(path.is_relative_to(r) for r in roots)
        exists = path.is_file()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, permissions
        return None, f"image {_name(rel)} cannot be resolved ({one_line(exc, limit=None)})"
    if not inside:
        return None, f"image {_name(rel)} points outside the dataset directory (to {path})"
    if not exists:
        return None, f"image {_name(rel)} does not exist (or is not a file)"
    return path, None


def check_image(
    path: str | Path, what: str = "image", error: type[PhenogenError] = DataError
) -> tuple[int, int]:
    """Decode the image file ``path`` completely and return its size; any failure is one ``error``.

    ``path`` may be a zip member (``ARCHIVE.zip!/MEMBER``, :func:`~phenogen.data.archive.open_image`).
    ``verify()`` checks the container (chunk CRCs), a second open and ``load()`` decodes the pixels
    (truncated data fails here). Images over ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before
    decoding (decompression bombs). PIL's plugins raise many exception types on hostile bytes
    (``SyntaxError``, ``struct.error``, ``ValueError``, ``EOFError`` …), hence the broad ``except``.
    """
    from PIL import Image

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open_image(path) as im:
                im.verify()
            with open_image(path) as im:
                im.load()
                return im.size
    except PhenogenError as exc:  # the archive or member is missing or unreadable: says which
        raise error(f"{path}: {what}: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise error(
            f"{path}: {what} has more than PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS:,}) pixels; "
            "refused as a possible decompression bomb"
        ) from None
    except FileNotFoundError:
        raise error(f"{path}: {what} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        raise error(
            f"{path}: {what} cannot be decoded ({type(exc).__name__}: {one_line(exc, limit=None)[:200]})"
        ) from None


def read_image(path: str | Path, what: str = "image", error: type[PhenogenError] = DataError) -> Any:
    """The image at ``path`` as a decoded RGB PIL image (checked by :func:`check_image` first)."""
    check_image(path, what, error)
    try:
        with open_image(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - the file changed since check_image
        raise error(
            f"{path}: {what} cannot be decoded ({type(exc).__name__}: {one_line(exc, limit=None)[:200]})"
        ) from None


def _check_info(info: Any, path: Path) -> None:
    """The fields of ``dataset.json`` phenogen reads must have their types; one DataError naming the field."""
    if not isinstance(info, dict):
        raise _fail(path, None, f"must hold a JSON object, not {type(info).__name__}")
    if info.get("format") != FORMAT:
        raise _fail(path, None, f"field 'format' is {_show(info.get('format'))}, expected {FORMAT!r}")
    version = info.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _fail(path, None, f"field 'version' is {_show(version)}, expected a positive integer")
    if version > FORMAT_VERSION:
        raise _fail(
            path, None, f"format version {version} is newer than this phenogen reads ({FORMAT_VERSION})"
        )
    names = info.get("trait_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(path, None, f"field 'trait_names' must be a list of strings, not {_show(names)}")
    for i, name in enumerate(names):
        if not name or any(c in name for c in "\t\n\r\x00") or len(name) > 200:
            raise _fail(path, None, f"trait_names[{i}] = {_show(name)}: empty, too long or has a tab/newline")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _fail(path, None, f"trait_names lists {_show(dup)} twice")
    if info.get("manifest", MANIFESTS["tsv"]) not in MANIFESTS.values():
        raise _fail(
            path,
            None,
            f"field 'manifest' is {_show(info['manifest'])}, expected one of {', '.join(MANIFESTS.values())}",
        )
    for key in ("source", "image_links"):
        if key in info and not isinstance(info[key], str):
            raise _fail(path, None, f"field {key!r} must be a string, not {_show(info[key])}")
    if "image_links" in info and not Path(info["image_links"]).is_absolute():
        raise _fail(
            path, None, f"field 'image_links' must be an absolute path, not {_show(info['image_links'])}"
        )
    if "image_archives" in info:
        _check_archives(info["image_archives"], path)
    counts = info.get("counts", {})
    if not isinstance(counts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in counts.values()
    ):
        raise _fail(path, None, f"field 'counts' must map splits to integers, not {_show(counts)}")


def _check_archives(archives: Any, path: Path) -> None:
    """dataset.json's ``image_archives``: a non-empty list of ``{"path": ABSOLUTE.zip, "prefix": STR}``."""
    shape = 'a non-empty list of {"path": "/absolute/archive.zip", "prefix": "member/prefix/"}'
    if not isinstance(archives, list) or not archives:
        raise _fail(path, None, f"field 'image_archives' must be {shape}, not {_show(archives)}")
    for i, entry in enumerate(archives):
        where = f"image_archives[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise _fail(
                path,
                None,
                f'{where} must be {{"path": "/absolute/archive.zip", "prefix": ...}}, not {_show(entry)}',
            )
        zip_path, prefix = entry["path"], entry.get("prefix", "")
        if not Path(zip_path).is_absolute() or not zip_path.lower().endswith(".zip") or "!/" in zip_path:
            raise _fail(
                path, None, f"{where}.path must be an absolute path of a .zip file, not {_show(zip_path)}"
            )
        if (
            not isinstance(prefix, str)
            or prefix.startswith("/")
            or "\x00" in prefix
            or len(prefix) > MAX_PATH_BYTES
        ):
            raise _fail(path, None, f"{where}.prefix must be a relative member prefix, not {_show(prefix)}")


_BAD_ID = re.compile("[\t\n\r\x00;| ]")
_BAD_NAME = re.compile("[\t\n\r\x00]")


def _check_record(rec: Record, path: Path, row: int | None, trait_names: Sequence[str]) -> None:
    # one regex search per field, not a scan per character: this runs for each of millions of rows
    if not rec.record_id or len(rec.record_id) > 200 or _BAD_ID.search(rec.record_id):
        raise _fail(
            path,
            row,
            f"record_id {_show(rec.record_id)} must be non-empty, at most 200 characters, "
            "without spaces, tabs, ';' or '|'",
        )
    rid = _show(rec.record_id)
    for name in ("species", "individual"):
        value = getattr(rec, name)
        if _BAD_NAME.search(value):
            raise _fail(path, row, f"record {rid}: {name} {_show(value)} contains a tab, newline or NUL")
    if not rec.species:
        raise _fail(path, row, f"record {rid}: empty species")
    if rec.split not in SPLITS:
        raise _fail(path, row, f"record {rid}: split {_show(rec.split)} is not one of {', '.join(SPLITS)}")
    if rec.node_kind not in NODE_KINDS:
        raise _fail(
            path, row, f"record {rid}: node_kind {_show(rec.node_kind)} is not one of {', '.join(NODE_KINDS)}"
        )
    if not rec.sequence:
        raise _fail(path, row, f"record {rid}: empty sequence")
    if not _DNA.issuperset(rec.sequence):
        bad = next(i for i, c in enumerate(rec.sequence) if c not in _DNA)
        raise _fail(
            path,
            row,
            f"record {rid}: sequence has {rec.sequence[bad]!r} at position {bad + 1}; "
            "datasets hold uppercase A/C/G/T/N/- only (clean input with phenogen.dna.seqio first)",
        )
    for rel in rec.images:
        why = image_problem(rel)
        if why:
            raise _fail(path, row, f"record {rid}: field images: {why}")
    for name, value in rec.traits.items():
        if name not in trait_names:
            raise _fail(path, row, f"record {rid}: trait {_show(name)} is not declared in dataset.json")
        finite = isinstance(value, float | int) and not isinstance(value, bool) and abs(value) < 1e308
        if not finite or not math.isfinite(value):
            raise _fail(path, row, f"record {rid}: trait {name} = {_show(value)} is not a finite number")


def _json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as None: dataset.json stays strict JSON (NaN is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _tsv_header(trait_names: Sequence[str]) -> list[str]:
    return [*BASE_COLUMNS, *(TRAIT_PREFIX + t for t in trait_names)]


def _tsv_row(rec: Record, trait_names: Sequence[str]) -> list[str]:
    traits = [repr(float(rec.traits[t])) if t in rec.traits else "" for t in trait_names]
    return [
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


def _fasta_entry(rec: Record) -> str:
    seq = rec.sequence
    head = f">{rec.record_id} species={rec.species.replace(' ', '_')} split={rec.split}\n"
    return head + "".join(seq[i : i + 80] + "\n" for i in range(0, len(seq), 80))


def _commit(tmp: Path, final: Path) -> None:
    """fsync ``tmp`` and rename it over ``final``."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


class DatasetWriter:
    """Write a dataset directory a record at a time; :meth:`close` completes it, ``dataset.json`` last.

    ``format``: ``"tsv"`` holds the records and writes ``manifest.tsv`` when closed; ``"parquet"``
    streams them into ``manifest.parquet``, one row group of ``row_group_size`` records at a time
    (memory: one row group); ``"auto"`` holds up to ``parquet_above`` records and turns to Parquet
    past that. ``sequences.fasta`` is streamed as records arrive. Nothing of an earlier dataset in
    ``root`` is replaced before :meth:`close` has validated everything; the trait names must be in
    ``info`` (a Parquet schema is fixed before the first row). ``peak_held`` counts the most records
    held in memory at once. Use it as a context manager: an exception removes what it wrote.

    >>> import tempfile
    >>> with DatasetWriter(tempfile.mkdtemp(), {"source": "doctest"}, format="parquet", row_group_size=2) as w:
    ...     for i in range(5):
    ...         w.add(Record(f"r{i}", "sp", f"i{i}", "train", "living", "ACGT"))
    ...     ds = w.close()
    >>> len(ds), w.peak_held
    (5, 2)
    """

    def __init__(
        self,
        root: str | Path,
        info: dict[str, Any],
        *,
        format: str = "auto",
        parquet_above: int = PARQUET_ABOVE,
        row_group_size: int = ROW_GROUP_SIZE,
        tree_newick: str | None = None,
    ) -> None:
        if format not in MANIFEST_FORMATS:
            raise ValueError(f"format must be one of {', '.join(MANIFEST_FORMATS)}, got {format!r}")
        if parquet_above < 0 or row_group_size < 1:
            raise ValueError(
                f"need parquet_above >= 0 and row_group_size >= 1, got {parquet_above}, {row_group_size}"
            )
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        reserved = ("format", "version", "manifest", "counts")
        self.info = {k: v for k, v in info.items() if k not in reserved}
        self.info["trait_names"] = list(info.get("trait_names") or [])
        _check_info({"format": FORMAT, "version": FORMAT_VERSION, **self.info}, self.root / "dataset.json")
        self.trait_names: list[str] = self.info["trait_names"]
        self.format, self.parquet_above, self.row_group_size = format, parquet_above, row_group_size
        self.tree_newick = tree_newick
        self.n = 0
        self.peak_held = 0
        self._held: list[Record] = []
        self._parquet: Any = None
        self._fasta_tmp = self.root / ".sequences.fasta.tmp"
        self._fasta = open(self._fasta_tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 - closed in close/abort
        if format == "parquet":
            self._to_parquet()

    def _to_parquet(self) -> None:
        from phenogen.data.columnar import ParquetManifestWriter

        self._parquet = ParquetManifestWriter(
            self.root / MANIFESTS["parquet"], self.trait_names, self.row_group_size
        )
        held, self._held = self._held, []
        for rec in held:
            self._parquet.add(rec)

    def add(self, rec: Record) -> None:
        """Add one record (validated now for Parquet, when closed for TSV)."""
        if self._parquet is not None:
            self._parquet.add(rec)
            self.peak_held = max(self.peak_held, self._parquet.peak_buffered)
        else:
            self._held.append(rec)
            self.peak_held = max(self.peak_held, len(self._held))
            if self.format == "auto" and len(self._held) > self.parquet_above:
                self._to_parquet()
        if rec.split in MODEL_SPLITS:
            self._fasta.write(_fasta_entry(rec))
        self.n += 1

    def _write_tsv(self) -> tuple[Path, dict[str, int]]:
        manifest, records = self.root / MANIFESTS["tsv"], self._held
        seen: dict[str, int] = {}
        for i, rec in enumerate(records, start=2):
            _check_record(rec, manifest, i, self.trait_names)
            if rec.record_id in seen:
                raise _fail(
                    manifest,
                    i,
                    f"duplicate record_id {_show(rec.record_id)} (first at row {seen[rec.record_id]})",
                )
            seen[rec.record_id] = i
        buf = io.StringIO()
        writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
        writer.writerow(_tsv_header(self.trait_names))
        writer.writerows(_tsv_row(rec, self.trait_names) for rec in records)
        counts = {s: sum(r.split == s for r in records) for s in SPLITS}
        (self.root / "dataset.json").unlink(missing_ok=True)  # a rewrite in place is incomplete until the end
        atomic_write_text(manifest, buf.getvalue())
        return manifest, counts

    def close(self, *, check_images: bool = True) -> Dataset:
        """Validate what is held, move the manifest and FASTA in place, write dataset.json; returns it loaded."""
        try:
            self._fasta.close()
            if self._parquet is None:
                manifest, counts = self._write_tsv()
                head: dict[str, Any] = {"format": FORMAT, "version": 1}
            else:
                self._parquet.close()  # ids checked unique; still beside the final name
                counts = dict(self._parquet.counts)
                (self.root / "dataset.json").unlink(missing_ok=True)
                manifest = self._parquet.commit()
                head = {"format": FORMAT, "version": FORMAT_VERSION, "manifest": MANIFESTS["parquet"]}
            _commit(self._fasta_tmp, self.root / "sequences.fasta")
            if self.tree_newick is not None:
                atomic_write_text(self.root / "tree.nwk", self.tree_newick.strip() + "\n")
            full_info = _json_safe({**head, **self.info, "counts": counts})
            _check_info(full_info, self.root / "dataset.json")
            atomic_write_json(self.root / "dataset.json", full_info)
            for name in MANIFESTS.values():  # an earlier dataset's manifest of the other format
                if name != manifest.name:
                    (self.root / name).unlink(missing_ok=True)
        except BaseException:
            self.abort()
            raise
        return load_dataset(self.root, check_images=check_images)

    def abort(self) -> None:
        """Remove the temporary files (an earlier dataset in ``root`` keeps its manifest)."""
        self._fasta.close()
        self._fasta_tmp.unlink(missing_ok=True)
        if self._parquet is not None:
            self._parquet.abort()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abort()


def write_dataset(
    root: str | Path,
    records: Iterable[Record],
    info: dict[str, Any],
    tree_newick: str | None = None,
    *,
    format: str = "auto",
    parquet_above: int = PARQUET_ABOVE,
    row_group_size: int = ROW_GROUP_SIZE,
) -> Dataset:
    """Write ``records`` (and ``info``, the tree) as a dataset directory and return it loaded.

    Image files must already exist under ``root`` at the paths the records name. Every file is
    saved atomically and ``dataset.json`` last, so a kill leaves no directory that reads as a
    complete dataset with a half-written manifest. ``format`` as in :class:`DatasetWriter` (trait
    names, when ``info`` has none, are those of the records, in first-seen order).
    """
    records = list(records)
    trait_names = list(info.get("trait_names") or dict.fromkeys(k for r in records for k in r.traits))
    with DatasetWriter(
        root,
        {**info, "trait_names": trait_names},
        format=format,
        parquet_above=parquet_above,
        row_group_size=row_group_size,
        tree_newick=tree_newick,
    ) as writer:
        for rec in records:
            writer.add(rec)
        return writer.close()


def export_tsv(ds: Dataset, path: str | Path) -> int:
    """Write the records of ``ds`` (any format) as a ``manifest.tsv`` at ``path``, streamed; returns the rows.

    >>> import tempfile
    >>> ds = write_dataset(tempfile.mkdtemp(), [Record("r1", "sp", "i", "train", "living", "ACGT")], {},
    ...                    format="parquet")
    >>> export_tsv(ds, ds.root / "export.tsv"), (ds.root / "export.tsv").read_text().split()[8:11]
    (1, ['r1', 'sp', 'i'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
            writer.writerow(_tsv_header(ds.trait_names))
            for rec in ds.iter_records():
                writer.writerow(_tsv_row(rec, ds.trait_names))
                n += 1
        _commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def convert_dataset(root: str | Path, format: str, *, row_group_size: int = ROW_GROUP_SIZE) -> Dataset:
    """Rewrite the manifest of the dataset at ``root`` as ``format`` (``tsv`` or ``parquet``) in place.

    The dataset is validated whole first (:meth:`Dataset.validate`); images, FASTA and tree are left
    as they are. The new manifest is written beside the old one, then dataset.json is switched to it,
    then the old one is removed: a kill at any point leaves a complete dataset.
    """
    if format not in MANIFESTS:
        raise ValueError(f"format must be tsv or parquet, got {format!r}")
    ds = load_dataset(root, check_images=False)
    if ds.format == format:
        return load_dataset(root)
    ds.validate()
    target = ds.root / MANIFESTS[format]
    if format == "tsv":
        export_tsv(ds, target)
    else:
        from phenogen.data.columnar import ParquetManifestWriter

        writer = ParquetManifestWriter(target, ds.trait_names, row_group_size)
        try:
            for rec in ds.iter_records():
                writer.add(rec)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        writer.commit()
    info = {k: v for k, v in ds.info.items() if k not in ("format", "version", "manifest")}
    head = (
        {"format": FORMAT, "version": 1}
        if format == "tsv"
        else {"format": FORMAT, "version": FORMAT_VERSION, "manifest": target.name}
    )
    atomic_write_json(ds.root / "dataset.json", {**head, **info})
    ds.manifest.unlink(missing_ok=True)
    return load_dataset(root)


def _manifest_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(row number, cells)`` of a TSV; non-UTF-8 bytes and csv errors are DataErrors naming the row."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the generator is done
    except OSError as exc:
        raise _fail(path, None, f"cannot be read ({exc.strerror or exc})") from None
    with fh:
        line_no = 0

        def lines() -> Iterator[str]:
            nonlocal line_no
            for raw in fh:
                line_no += 1
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _fail(
                        path,
                        line_no,
                        f"not UTF-8 text (byte {exc.start + 1} of the line: {raw[exc.start : exc.start + 1]!r})",
                    ) from None
                yield text.lstrip("\ufeff") if line_no == 1 else text

        reader = csv.reader(lines(), delimiter="\t")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _fail(path, line_no, f"not a valid TSV row ({one_line(exc, limit=None)})") from None
            yield line_no, row


def load_dataset(root: str | Path, check_images: bool = True) -> Dataset:
    """Open and validate a dataset directory; every defect is one DataError naming file, row and field.

    A ``manifest.tsv`` is read and validated whole. A ``manifest.parquet`` (named by dataset.json's
    ``manifest``) is opened lazily: its schema and row count are checked now, each row group when a
    call reads it (:mod:`phenogen.data.columnar`). With ``check_images`` every image must exist and
    resolve (symlinks followed) inside the dataset directory — or inside ``image_links`` of
    dataset.json, the folder an import linked its images from (``image_mode = "symlink"``), or be a
    member of a zip of ``image_archives`` (``image_mode = "archive"``) — checked at load (TSV) or as
    each record is read (Parquet). :meth:`Dataset.verify_images` also decodes them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a dataset directory (it does not exist or is a file)")
    info_path = root / "dataset.json"
    if not info_path.is_file():
        raise DataError(f"{root}: missing {info_path.name}; is this a phenogen dataset directory?")
    info = read_json(info_path, "dataset.json", expect=dict, error=DataError, max_bytes=MAX_INFO_BYTES)
    _check_info(info, info_path)
    manifest = root / info.get("manifest", MANIFESTS["tsv"])
    if not manifest.is_file():
        raise DataError(f"{root}: missing {manifest.name}; is this a phenogen dataset directory?")
    trait_names = list(info.get("trait_names", []))
    if manifest.name == MANIFESTS["parquet"]:
        return _open_parquet(root, info, manifest, check_images)
    locate = _image_locator(root, info)
    records: list[Record] = []
    seen: dict[str, int] = {}
    rows = _manifest_rows(manifest)
    first = next(rows, None)
    if first is None:
        raise _fail(manifest, None, "empty file")
    header = first[1]
    missing = [c for c in BASE_COLUMNS if c not in header]
    if missing:
        raise _fail(manifest, 1, f"missing column(s) {', '.join(missing)}")
    dups = sorted({c for c in header if header.count(c) > 1})
    if dups:
        raise _fail(manifest, 1, f"column(s) {', '.join(_show(c) for c in dups)} appear more than once")
    col = {name: i for i, name in enumerate(header)}
    trait_cols = {t: col.get(TRAIT_PREFIX + t) for t in trait_names}
    absent = [t for t, c in trait_cols.items() if c is None]
    if absent:
        raise _fail(manifest, 1, f"trait column(s) {', '.join(absent)} declared in dataset.json are missing")
    for row_no, row in rows:
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
                    raise _fail(manifest, row_no, f"trait {t} = {_show(row[c])} is not a number") from None
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
                f"duplicate record_id {_show(rec.record_id)} (first at row {seen[rec.record_id]})",
            )
        seen[rec.record_id] = row_no
        if check_images:
            for rel in rec.images:
                _, why = locate(rel)
                if why:
                    raise _fail(manifest, row_no, f"record {_show(rec.record_id)}: field images: {why}")
        records.append(rec)
    if not records:
        raise _fail(manifest, None, "no records")
    ds = Dataset(root, info, records, seen, check_images=check_images)
    ds._locate = locate
    return ds


def _open_parquet(root: Path, info: dict[str, Any], manifest: Path, check_images: bool) -> Dataset:
    from phenogen.data.columnar import ParquetManifest

    table = ParquetManifest(manifest, list(info.get("trait_names", [])))
    if not table.num_rows:
        raise _fail(manifest, None, "no records")
    counts = info.get("counts")
    if counts is not None and sum(counts.values()) != table.num_rows:
        raise _fail(
            root / "dataset.json",
            None,
            f"field 'counts' adds up to {sum(counts.values()):,} records, {manifest.name} holds {table.num_rows:,}",
        )
    return Dataset(root, info, table=table, check_images=check_images)

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

Reading validates everything (the types of dataset.json's fields, columns, unique ids, splits, node
kinds, sequences, finite trait values, that image paths are relative, stay inside the dataset — ``..``
and symlinks leading out are refused — and name existing files) and raises
:class:`~phenogen.errors.DataError` naming the file, row and field; never another exception, whatever
the bytes. :meth:`Dataset.verify_images` also decodes every image (``phenogen validate`` does).

>>> import tempfile
>>> rec = Record("r1", "sp_a", "sp_a_1", "train", "living", "ACGTAC", (), ("Aves",), {})
>>> ds = write_dataset(tempfile.mkdtemp(), [rec], {"source": "doctest"})
>>> [r.record_id for r in load_dataset(ds.root).records("train")]
['r1']
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from phenogen.errors import DataError, PhenogenError, one_line
from phenogen.fsio import atomic_write_json, atomic_write_text, read_json

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
    "image_problem",
    "contained_file",
    "check_image",
    "read_image",
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


@dataclass
class Dataset:
    """A loaded, validated dataset directory."""

    root: Path
    info: dict[str, Any]
    all_records: list[Record]
    rows: dict[str, int] = field(default_factory=dict)  # record_id -> manifest row (for messages)

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

    @property
    def image_roots(self) -> list[Path]:
        """Resolved directories images may live in: the dataset, and ``image_links`` when an import linked them."""
        roots = [self.root.resolve()]
        if isinstance(self.info.get("image_links"), str):
            roots.append(Path(self.info["image_links"]).resolve())
        return roots

    def verify_images(self, split: str | Sequence[str] | None = None) -> int:
        """Decode every image of ``split`` (all by default); returns the count, else one DataError.

        The error names the manifest row, the record and the image (a corrupt PNG, a truncated JPEG,
        a decompression bomb, a link out of the dataset).
        """
        manifest, roots, n = self.root / "manifest.tsv", self.image_roots, 0
        for rec in self.records(split):
            for rel in rec.images:
                where = f"record {_show(rec.record_id)}: field images"
                path, why = contained_file(self.root, rel, roots)
                if why:
                    raise _fail(manifest, self.rows.get(rec.record_id), f"{where}: {why}")
                try:
                    check_image(path, f"image {_name(rel)}")
                except DataError as exc:
                    raise _fail(manifest, self.rows.get(rec.record_id), f"{where}: {exc}") from None
                n += 1
        return n

    def __len__(self) -> int:
        return len(self.all_records)

    def __repr__(self) -> str:
        counts = {s: sum(r.split == s for r in self.all_records) for s in SPLITS}
        return f"Dataset({str(self.root)!r}, {counts})"


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
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                return im.size
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
    from PIL import Image

    check_image(path, what, error)
    try:
        with Image.open(path) as im:
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
    for key in ("source", "image_links"):
        if key in info and not isinstance(info[key], str):
            raise _fail(path, None, f"field {key!r} must be a string, not {_show(info[key])}")
    if "image_links" in info and not Path(info["image_links"]).is_absolute():
        raise _fail(
            path, None, f"field 'image_links' must be an absolute path, not {_show(info['image_links'])}"
        )
    counts = info.get("counts", {})
    if not isinstance(counts, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in counts.values()
    ):
        raise _fail(path, None, f"field 'counts' must map splits to integers, not {_show(counts)}")


def _check_record(rec: Record, path: Path, row: int | None, trait_names: Sequence[str]) -> None:
    rid = _show(rec.record_id)
    if not rec.record_id or any(c in rec.record_id for c in "\t\n\r\x00;| ") or len(rec.record_id) > 200:
        raise _fail(
            path,
            row,
            f"record_id {rid} must be non-empty, at most 200 characters, without spaces, tabs, ';' or '|'",
        )
    for name in ("species", "individual"):
        value = getattr(rec, name)
        if any(c in value for c in "\t\n\r\x00"):
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


def write_dataset(
    root: str | Path,
    records: Iterable[Record],
    info: dict[str, Any],
    tree_newick: str | None = None,
) -> Dataset:
    """Write ``records`` (and ``info``, the tree) as a dataset directory and return it loaded.

    Image files must already exist under ``root`` at the paths the records name. Every file is
    saved atomically and ``dataset.json`` last, so a kill leaves no directory that reads as a
    complete dataset with a half-written manifest.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    records = list(records)
    trait_names = list(info.get("trait_names") or dict.fromkeys(k for r in records for k in r.traits))
    manifest = root / "manifest.tsv"
    full_info = _json_safe(
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **info,
            "trait_names": trait_names,
            "counts": {s: sum(r.split == s for r in records) for s in SPLITS},
        }
    )
    _check_info(full_info, root / "dataset.json")
    seen: dict[str, int] = {}
    for i, rec in enumerate(records, start=2):
        _check_record(rec, manifest, i, trait_names)
        if rec.record_id in seen:
            raise _fail(
                manifest,
                i,
                f"duplicate record_id {_show(rec.record_id)} (first at row {seen[rec.record_id]})",
            )
        seen[rec.record_id] = i
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
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
    fasta = []
    for rec in records:
        if rec.split in MODEL_SPLITS:
            fasta.append(f">{rec.record_id} species={rec.species.replace(' ', '_')} split={rec.split}\n")
            fasta.extend(rec.sequence[i : i + 80] + "\n" for i in range(0, len(rec.sequence), 80))
    (root / "dataset.json").unlink(missing_ok=True)  # a rewrite in place is incomplete until the end
    atomic_write_text(root / "sequences.fasta", "".join(fasta))
    if tree_newick is not None:
        atomic_write_text(root / "tree.nwk", tree_newick.strip() + "\n")
    atomic_write_text(manifest, buf.getvalue())
    atomic_write_json(root / "dataset.json", full_info)
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
    """Read and validate a dataset directory; every defect is one DataError naming file, row and field.

    With ``check_images`` every image must exist and resolve (symlinks followed) inside the dataset
    directory — or inside ``image_links`` of dataset.json, the folder an import linked its images
    from (``image_mode = "symlink"``). :meth:`Dataset.verify_images` also decodes them.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a dataset directory (it does not exist or is a file)")
    info_path = root / "dataset.json"
    manifest = root / "manifest.tsv"
    for path in (info_path, manifest):
        if not path.is_file():
            raise DataError(f"{root}: missing {path.name}; is this a phenogen dataset directory?")
    info = read_json(info_path, "dataset.json", expect=dict, error=DataError, max_bytes=MAX_INFO_BYTES)
    _check_info(info, info_path)
    trait_names = list(info.get("trait_names", []))
    roots = [root.resolve()]
    if "image_links" in info:
        roots.append(Path(info["image_links"]).resolve())
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
                _, why = contained_file(root, rel, roots)
                if why:
                    raise _fail(manifest, row_no, f"record {_show(rec.record_id)}: field images: {why}")
        records.append(rec)
    if not records:
        raise _fail(manifest, None, "no records")
    return Dataset(root=root, info=info, all_records=records, rows=seen)

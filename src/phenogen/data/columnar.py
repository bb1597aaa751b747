"""The Parquet manifest: a dataset's records in row groups, read by column and row group, never whole.

``manifest.parquet`` holds the columns of ``manifest.tsv`` with their natural types::

    record_id species individual split node_kind sequence   string (not null)
    images taxonomy                                          list<string> (not null, no null items)
    trait:NAME ...                                           float64 (null = no value)

It is written by :class:`ParquetManifestWriter` one row group (``row_group_size`` records, by default
:data:`~phenogen.data.dataset.ROW_GROUP_SIZE`) at a time, so a writer holds at most one row group,
and read by :class:`ParquetManifest` through a memory map: a filter by split or taxon reads the
``split`` / ``taxonomy`` + ``species`` columns of a row group first (dictionary-encoded: a few bytes a
row) and the other columns only of the row groups with a match. Row groups are not chosen by their
column statistics: pyarrow 26 aborts the whole process (an uncaught C++ exception) on some damaged
column-chunk metadata when Python reads it, while its readers turn the same damage into exceptions. Rows are numbered 1, 2, … in file order; every error names ``manifest.parquet``, that
row and the field, like the TSV reader's.

What is checked when:

- **opening** (:func:`~phenogen.data.dataset.load_dataset`): the file is Parquet, the columns exist
  once each with the types above, and the row count matches ``counts`` in dataset.json;
- **each row group as it is read**: nulls, then every field of every row (the checks of the TSV
  reader: ids, splits, node kinds, sequences, finite traits, image paths, and with ``check_images``
  that each image exists inside the dataset);
- **across rows**: unique record ids, when the file is written (:class:`DuplicateFinder`, memory
  fixed in advance), when all of it is read into memory, and by
  :meth:`~phenogen.data.dataset.Dataset.validate`.

>>> import tempfile
>>> from phenogen.data.dataset import Record, load_dataset, write_dataset
>>> rec = Record("r1", "sp_a", "sp_a_1", "train", "living", "ACGTAC", (), ("Aves",), {})
>>> ds = write_dataset(tempfile.mkdtemp(), [rec], {"source": "doctest"}, format="parquet")
>>> ds.format, [r.record_id for r in ds.iter_records("train", taxon="Aves")]
('parquet', ['r1'])
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from phenogen.data.dataset import (
    BASE_COLUMNS,
    ROW_GROUP_SIZE,
    SPLITS,
    TRAIT_PREFIX,
    Record,
    _check_record,
    _fail,
    _show,
)
from phenogen.errors import one_line

__all__ = [
    "manifest_schema",
    "records_to_table",
    "ParquetManifest",
    "ParquetManifestWriter",
    "DuplicateFinder",
    "check_unique_ids",
]

TEXT_COLUMNS: tuple[str, ...] = BASE_COLUMNS[:6]
LIST_COLUMNS: tuple[str, ...] = ("images", "taxonomy")


def manifest_schema(trait_names: Sequence[str]) -> pa.Schema:
    """The Arrow schema phenogen writes for a manifest with ``trait_names``."""
    return pa.schema(
        [pa.field(c, pa.string(), nullable=False) for c in TEXT_COLUMNS]
        + [pa.field(c, pa.list_(pa.string()), nullable=False) for c in LIST_COLUMNS]
        + [pa.field(TRAIT_PREFIX + t, pa.float64()) for t in trait_names]
    )


def records_to_table(records: Sequence[Record], trait_names: Sequence[str]) -> pa.Table:
    """``records`` as one Arrow table of :func:`manifest_schema` (column by column: no per-row dicts)."""
    cols: dict[str, list[Any]] = {c: [getattr(r, c) for r in records] for c in TEXT_COLUMNS}
    cols.update({c: [getattr(r, c) for r in records] for c in LIST_COLUMNS})
    for t in trait_names:
        cols[TRAIT_PREFIX + t] = [float(r.traits[t]) if t in r.traits else None for r in records]
    return pa.Table.from_pydict(cols, schema=manifest_schema(trait_names))


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_text_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_text(t.value_type)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {one_line(exc, limit=None)[:200]}"


class DuplicateFinder:
    """Repeated record ids in a stream, with memory fixed in advance (a two-hash filter of ``2**log2_bits``
    bits: 16 MiB by default).

    :meth:`add` marks two bits per id; an id whose bits were both set already (or that repeats inside
    its batch) becomes a *candidate*: a repeat, or a false positive of the filter (about 0.5% of ids
    at 5 million). :meth:`first_duplicate` reads the ids again and confirms candidates exactly, so the
    memory used is the filter plus the candidates, not a set of every id.
    """

    def __init__(self, log2_bits: int = 27) -> None:
        if not 3 <= log2_bits <= 32:
            raise ValueError(f"log2_bits must be in [3, 32], got {log2_bits}")
        self._mask, self._shift = np.uint64((1 << log2_bits) - 1), np.uint64(log2_bits)
        self._bits = np.zeros((1 << log2_bits) // 8, dtype=np.uint8)
        self.candidates: set[str] = set()

    def _slots(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids)).view(np.uint64)
        return h, h & self._mask, (h >> self._shift) & self._mask

    def _get(self, idx: np.ndarray) -> np.ndarray:
        return (self._bits[idx >> np.uint64(3)] >> (idx & np.uint64(7)).astype(np.uint8)) & 1

    def add(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        h, a, b = self._slots(ids)
        hit = (self._get(a) & self._get(b)).astype(bool)
        _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
        hit |= counts[inverse] > 1
        self.candidates.update(ids[i] for i in np.flatnonzero(hit))
        for idx in (a, b):
            np.bitwise_or.at(
                self._bits, idx >> np.uint64(3), np.left_shift(1, idx & np.uint64(7)).astype(np.uint8)
            )

    def first_duplicate(self, batches: Iterable[tuple[int, pa.ChunkedArray]]) -> tuple[str, int, int] | None:
        """``(id, first row, repeat row)`` of the first repeated id in ``batches`` (first row, ids), or None."""
        if not self.candidates:
            return None
        wanted = pa.array(sorted(self.candidates), type=pa.string())
        first: dict[str, int] = {}
        for start, ids in batches:
            for j in np.flatnonzero(pc.is_in(ids, value_set=wanted).to_numpy(zero_copy_only=False)):
                rid = ids[int(j)].as_py()
                if rid in first:
                    return rid, first[rid], start + int(j)
                first[rid] = start + int(j)
        return None


class ParquetManifest:
    """A ``manifest.parquet`` opened through a memory map; rows are read a row group at a time.

    ``groups_read`` counts the row groups whose record columns were read (filters that exclude a
    group read at most its ``split``/``taxonomy``/``species`` columns).
    """

    def __init__(self, path: str | Path, trait_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.trait_names = list(trait_names)
        try:
            self._file = pq.ParquetFile(self.path, memory_map=True, page_checksum_verification=True)
            meta = self._file.metadata
            schema = self._file.schema_arrow
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types on damaged bytes
            raise _fail(self.path, None, f"not a readable Parquet file ({_why(exc)})") from None
        self._check_schema(schema)
        self.num_rows = int(sum(sizes))
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.groups_read = 0

    @property
    def num_row_groups(self) -> int:
        return len(self._starts) - 1

    def _check_schema(self, schema: pa.Schema) -> None:
        names = schema.names
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise _fail(
                self.path, None, f"column(s) {', '.join(_show(c) for c in dups)} appear more than once"
            )
        missing = [c for c in BASE_COLUMNS if c not in names]
        if missing:
            raise _fail(self.path, None, f"missing column(s) {', '.join(missing)}")
        absent = [t for t in self.trait_names if TRAIT_PREFIX + t not in names]
        if absent:
            raise _fail(
                self.path, None, f"trait column(s) {', '.join(absent)} declared in dataset.json are missing"
            )
        expect = [(c, _is_text, "string") for c in TEXT_COLUMNS]
        expect += [(c, _is_text_list, "list<string>") for c in LIST_COLUMNS]
        expect += [(TRAIT_PREFIX + t, _is_number, "float64") for t in self.trait_names]
        for name, ok, wanted in expect:
            kind = schema.field(name).type
            if not ok(kind):
                raise _fail(self.path, None, f"column {name} has type {kind}, expected {wanted}")

    @property
    def columns(self) -> list[str]:
        return [*BASE_COLUMNS, *(TRAIT_PREFIX + t for t in self.trait_names)]

    def _read(self, group: int, columns: Sequence[str]) -> pa.Table:
        lo, hi = int(self._starts[group]), int(self._starts[group + 1])
        try:
            table = self._file.read_row_group(group, columns=list(columns))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types on damaged bytes
            raise _fail(
                self.path, None, f"row group {group} (rows {lo + 1}-{hi}) cannot be read ({_why(exc)})"
            ) from None
        if table.num_rows != hi - lo:
            raise _fail(
                self.path, None, f"row group {group} holds {table.num_rows} rows, its metadata says {hi - lo}"
            )
        for name in table.column_names:  # UTF-8 and offsets: a damaged page can decode to anything
            try:
                table[name].validate(full=True)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises many types on damaged bytes
                raise _fail(
                    self.path,
                    None,
                    f"row group {group} (rows {lo + 1}-{hi}): column {name} is damaged ({_why(exc)})",
                ) from None
        return table

    def _mask(
        self, group: int, splits: Sequence[str] | None, taxa: frozenset[str] | None
    ) -> tuple[np.ndarray | None, dict[str, pa.ChunkedArray]]:
        """Rows of ``group`` (indices, or None for all) that pass the filters, and the columns read for it."""
        n = int(self._starts[group + 1] - self._starts[group])
        read: dict[str, pa.ChunkedArray] = {}
        keep = np.ones(n, dtype=bool)
        if splits is not None:
            read["split"] = self._read(group, ["split"])["split"]
            keep &= pc.is_in(read["split"], value_set=pa.array(list(splits))).to_numpy(zero_copy_only=False)
        if taxa is not None and keep.any():
            table = self._read(group, ["species", "taxonomy"])
            read.update(species=table["species"], taxonomy=table["taxonomy"])
            wanted = pa.array(sorted(taxa), type=pa.string())
            hit = pc.is_in(read["species"], value_set=wanted).to_numpy(zero_copy_only=False)
            tax = read["taxonomy"].combine_chunks()
            flat = pc.is_in(pc.list_flatten(tax), value_set=wanted).to_numpy(zero_copy_only=False)
            parents = pc.list_parent_indices(tax).to_numpy(zero_copy_only=False)
            hit[parents[flat]] = True
            keep &= hit
        return (None if keep.all() else np.flatnonzero(keep)), read

    def select(
        self,
        splits: Sequence[str] | None = None,
        taxa: frozenset[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[tuple[np.ndarray, dict[str, pa.ChunkedArray]]]:
        """Per row group with a match: (row numbers, 1-based) and the ``columns`` of those rows."""
        columns = self.columns if columns is None else list(columns)
        for group in range(self.num_row_groups):
            idx, read = self._mask(group, splits, taxa)
            if idx is not None and not len(idx):
                continue
            rest = [c for c in columns if c not in read]
            if rest:
                self.groups_read += 1
                table = self._read(group, rest)
                read.update({c: table[c] for c in rest})
            start = int(self._starts[group])
            cols = {c: read[c] for c in columns}
            if idx is None:
                rows = np.arange(start + 1, int(self._starts[group + 1]) + 1)
            else:
                take = pa.array(idx)
                cols = {c: v.take(take) for c, v in cols.items()}
                rows = idx + start + 1
            self._check_nulls(rows, cols)
            yield rows, cols

    def _check_nulls(self, rows: np.ndarray, cols: dict[str, pa.ChunkedArray]) -> None:
        for name, col in cols.items():
            if name.startswith(TRAIT_PREFIX):
                continue
            bad = None
            if col.null_count:
                bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            elif name in LIST_COLUMNS:
                flat = col.combine_chunks()
                items = pc.list_flatten(flat)
                if items.null_count:
                    parents = pc.list_parent_indices(flat).to_numpy(zero_copy_only=False)
                    bad = int(parents[np.flatnonzero(items.is_null().to_numpy(zero_copy_only=False))[0]])
            if bad is not None:
                rid = cols["record_id"][bad].as_py() if "record_id" in cols else None
                who = f"record {_show(rid)}: " if isinstance(rid, str) else ""
                raise _fail(self.path, int(rows[bad]), f"{who}field {name} is null")

    def iter_records(
        self,
        splits: Sequence[str] | None = None,
        taxa: frozenset[str] | None = None,
        check: Callable[[Record, int], None] | None = None,
    ) -> Iterator[tuple[int, Record]]:
        """``(row, record)`` of the rows passing the filters, each validated (and ``check``-ed) as read."""
        names = self.trait_names
        for rows, cols in self.select(splits, taxa):
            values = {c: v.to_pylist() for c, v in cols.items()}
            traits = [(t, values[TRAIT_PREFIX + t]) for t in names]
            fields = zip(*(values[c] for c in BASE_COLUMNS), strict=True)
            for j, (rid, sp, ind, split, kind, seq, images, taxonomy) in enumerate(fields):
                rec = Record(
                    rid,
                    sp,
                    ind,
                    split,
                    kind,
                    seq,
                    tuple(images),
                    tuple(taxonomy),
                    {t: float(v[j]) for t, v in traits if v[j] is not None},
                )
                row = int(rows[j])
                _check_record(rec, self.path, row, names)
                if check is not None:
                    check(rec, row)
                yield row, rec

    def ids(self) -> Iterator[tuple[int, pa.ChunkedArray]]:
        """``(first row, record ids)`` per row group: the input of :meth:`DuplicateFinder.first_duplicate`."""
        for rows, cols in self.select(columns=["record_id"]):
            yield int(rows[0]), cols["record_id"]

    def split_counts(self) -> dict[str, int]:
        """Rows per split (every split of :data:`SPLITS`, 0 when absent; other values under their name)."""
        counts = dict.fromkeys(SPLITS, 0)
        for _, cols in self.select(columns=["split"]):
            for item in pc.value_counts(cols["split"]).to_pylist():
                counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
        return counts


class ParquetManifestWriter:
    """Write ``manifest.parquet`` record by record, one row group per ``row_group_size`` records.

    Each record is validated when added (the error names the row it would have); record ids are
    checked unique with a :class:`DuplicateFinder` by :meth:`close`. The file is written as
    ``.manifest.parquet.tmp`` and renamed into place by :meth:`commit`; :meth:`abort` removes it.
    ``peak_buffered`` is the most records held at once (at most ``row_group_size``).
    """

    def __init__(
        self, path: str | Path, trait_names: Sequence[str], row_group_size: int = ROW_GROUP_SIZE
    ) -> None:
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        self.path = Path(path)
        self.trait_names = list(trait_names)
        self.row_group_size = row_group_size
        self.rows = 0
        self.peak_buffered = 0
        self.counts = dict.fromkeys(SPLITS, 0)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._buffer: list[Record] = []
        self._dups = DuplicateFinder()
        self._writer: pq.ParquetWriter | None = None
        self._schema = manifest_schema(self.trait_names)

    def add(self, rec: Record) -> None:
        _check_record(rec, self.path, self.rows + 1, self.trait_names)
        self._buffer.append(rec)
        self.rows += 1
        self.counts[rec.split] += 1
        self.peak_buffered = max(self.peak_buffered, len(self._buffer))
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer and self._writer is not None:
            return
        table = records_to_table(self._buffer, self.trait_names)
        self._dups.add([r.record_id for r in self._buffer])
        if self._writer is None:
            self._writer = pq.ParquetWriter(
                self._tmp, self._schema, compression="zstd", write_page_checksum=True
            )
        self._writer.write_table(table, row_group_size=max(1, len(self._buffer)))
        self._buffer.clear()

    def close(self) -> None:
        """Flush the last row group and check the ids unique; the file waits beside its name for :meth:`commit`."""
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        found = self._dups.first_duplicate(ParquetManifest(self._tmp, self.trait_names).ids())
        if found:
            self.abort()
            rid, first, row = found
            raise _fail(self.path, row, f"duplicate record_id {_show(rid)} (first at row {first})")

    def commit(self) -> Path:
        """fsync the closed file and rename it to its name; returns the path."""
        with open(self._tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def check_unique_ids(manifest: ParquetManifest) -> None:
    """One DataError naming the first repeated record id (and both rows) of ``manifest``, else None."""
    finder = DuplicateFinder()
    for _, ids in manifest.ids():
        finder.add(ids.to_pylist())
    found = finder.first_duplicate(manifest.ids())
    if found:
        rid, first, row = found
        raise _fail(manifest.path, row, f"duplicate record_id {_show(rid)} (first at row {first})")

"""A split's (image, barcode) pairs as Arrow columns: in memory for small sets, memory-mapped from disk for large.

``train-image`` needs, for every training photo, its file and the row of its barcode; for every barcode,
its record id and sequence. As Python lists of ``Record`` objects that costs ~2.5 KB a record (12 GB for
BIOSCAN-5M); as Arrow columns it is the bytes of the strings plus 4-8 bytes of offsets a row, and for a
Parquet dataset (the format of large sets) even that is not held: :func:`read_pairs` streams the manifest a
row group at a time into two Arrow IPC files and memory-maps them, so what a process keeps resident is
the pages it touched (file-backed, given back to the page cache under pressure), not the dataset::

    SPILL/<split>-images.arrow     path (string), seq (int32): one row a photo
    SPILL/<split>-barcodes.arrow   record_id, sequence (string): one row a record with photos

:class:`Pairs` reads them through :class:`Strings` / :class:`Ints`, which index, slice, ``take`` and
iterate a chunk at a time like the lists they replace.

>>> import pyarrow as pa
>>> s = Strings(pa.chunked_array([["a", "bb"], ["ccc"]]))
>>> len(s), s[2], s[0:2], s.take([2, 0]), list(s), s.max_length()
(3, 'ccc', ['a', 'bb'], ['ccc', 'a'], ['a', 'bb', 'ccc'], 3)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

__all__ = ["Ints", "Pairs", "Strings", "read_pairs"]

BATCH_RECORDS = 8192
"""Records gathered before a record batch is written (and the size of the columns' chunks)."""

_IMAGES = pa.schema([("path", pa.string()), ("seq", pa.int32())])
_BARCODES = pa.schema([("record_id", pa.string()), ("sequence", pa.string())])


class Strings(Sequence[str]):
    """A read-only string column (``pyarrow.ChunkedArray``) with the list operations ``train-image`` uses."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return self._column[i].to_pylist()
        return self._column[int(i)].as_py()

    def take(self, idx) -> list[str]:
        """The strings at ``idx`` (ints, a numpy array or a tensor), in that order."""
        return self._column.take(pa.array(np.asarray(idx, dtype=np.int64))).to_pylist()

    def __iter__(self) -> Iterator[str]:  # one chunk (<= BATCH_RECORDS rows) of Python strings at a time
        for chunk in self._column.chunks:
            yield from chunk.to_pylist()

    def max_length(self) -> int:
        """The longest string's length (0 for an empty column)."""
        if not len(self._column):
            return 0
        return int(pc.max(pc.utf8_length(self._column)).as_py())


class Ints:
    """A read-only int column indexed by a tensor of rows, giving a ``torch.long`` tensor."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._column = column

    def __len__(self) -> int:
        return len(self._column)

    def __getitem__(self, idx) -> torch.Tensor:
        rows = np.asarray(torch.as_tensor(idx, dtype=torch.long).reshape(-1).numpy(), dtype=np.int64)
        return torch.from_numpy(self._column.take(pa.array(rows)).to_numpy().astype(np.int64))


@dataclass
class Pairs:
    """A split's photos (``paths``, ``seq_index`` into the barcodes) and barcodes (``sequences``, ``record_ids``)."""

    images_table: pa.Table  # path, seq
    barcodes_table: pa.Table  # record_id, sequence
    resolution: int
    images: torch.Tensor | None = None  # (N, 3, R, R) uint8 once loaded (the memory layout); else read lazily
    spill: Path | None = None  # where the memory-mapped files live (None: in memory)

    @property
    def paths(self) -> Strings:
        return Strings(self.images_table["path"])

    @property
    def seq_index(self) -> Ints:
        return Ints(self.images_table["seq"])

    @property
    def sequences(self) -> Strings:
        return Strings(self.barcodes_table["sequence"])

    @property
    def record_ids(self) -> Strings:
        return Strings(self.barcodes_table["record_id"])

    def __len__(self) -> int:
        return self.images_table.num_rows

    def load(self, idx: torch.Tensor | range | None = None) -> torch.Tensor:
        """The images ``idx`` (default all) as ``(len(idx), 3, R, R)`` uint8: from memory when loaded."""
        from phenogen.diffusion.vae import load_images

        if self.images is not None:
            return self.images if idx is None else self.images[torch.as_tensor(idx, dtype=torch.long)]
        paths = list(self.paths) if idx is None else self.paths.take(list(idx))
        if not paths:
            return torch.zeros(0, 3, self.resolution, self.resolution, dtype=torch.uint8)
        return load_images(paths, self.resolution)


def _memory_map(path: Path) -> pa.Table:
    """An Arrow IPC file read without copying: the columns are views of the mapped file."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def read_pairs(ds, split: str, resolution: int, spill: str | Path | None = None) -> Pairs:
    """The (image, barcode) pairs of ``split`` of dataset ``ds``, streamed record by record.

    Records without photos are left out. ``spill``: a directory for the memory-mapped columns (replaced
    if it exists); ``None`` builds them in memory (a TSV dataset is in memory already).
    """
    out: dict[str, list[pa.RecordBatch] | pa.ipc.RecordBatchFileWriter] = {}
    where = Path(spill) if spill is not None else None
    if where is not None:
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        out = {
            "images": pa.ipc.new_file(str(where / f"{split}-images.arrow"), _IMAGES),
            "barcodes": pa.ipc.new_file(str(where / f"{split}-barcodes.arrow"), _BARCODES),
        }
    else:
        out = {"images": [], "barcodes": []}
    paths: list[str] = []
    seq: list[int] = []
    ids: list[str] = []
    sequences: list[str] = []
    n_seq = 0

    def flush() -> None:
        batches = {
            "images": pa.record_batch([pa.array(paths, pa.string()), pa.array(seq, pa.int32())], schema=_IMAGES),
            "barcodes": pa.record_batch([pa.array(ids, pa.string()), pa.array(sequences, pa.string())],
                                        schema=_BARCODES),
        }  # fmt: skip
        for key, batch in batches.items():
            sink = out[key]
            if isinstance(sink, list):
                sink.append(batch)
            else:
                sink.write_batch(batch)
        for buf in (paths, seq, ids, sequences):
            buf.clear()

    for rec in ds.iter_records(split):
        if not rec.images:
            continue
        ids.append(rec.record_id)
        sequences.append(rec.sequence)
        for rel in rec.images:
            paths.append(str(ds.image_path(rel)))
            seq.append(n_seq)
        n_seq += 1
        if len(ids) >= BATCH_RECORDS:
            flush()
    if ids or not n_seq:
        flush()
    if where is None:
        tables = {key: pa.Table.from_batches(sink) for key, sink in out.items()}  # type: ignore[arg-type]
    else:
        for sink in out.values():
            sink.close()  # type: ignore[union-attr]
        tables = {key: _memory_map(where / f"{split}-{key}.arrow") for key in out}
    return Pairs(tables["images"], tables["barcodes"], resolution, spill=where)

"""Sharded, on-disk caches of VAE posteriors and condition features, and the order that streams them.

``train-image``'s ``[image] cache_layout = "sharded"`` (``auto``: above ``cache_sharded_above`` training
images) keeps what the memory layout holds in one tensor — every image's posterior ``(mean, std)`` (and
its mirror image's with ``hflip``), every barcode's frozen condition features — in files of
``cache_shard_size`` rows on disk, and reads back only the rows a training step uses::

    cache/latents.json                      the index, written last: rows, shard size, tensors (shape,
                                            dtype), the fingerprint of what the cache was built from
    cache/latents-00000.safetensors ...     rows [0, K), [K, 2K), ...; each carries the fingerprint,
                                            its number and first row in its safetensors metadata
    cache/features.json, features-*.safetensors   the same for the condition features (one row a barcode)

**Building** (:func:`build_sharded_cache`) encodes one shard at a time (the caller loads only that
shard's images), writes it beside its final name, fsyncs and renames it (:func:`phenogen.fsio.atomic_write_bytes`):
a kill leaves complete shards and at most a temporary file. The next build removes temporary files,
keeps every shard whose metadata carries the current fingerprint, encodes the others and writes the
index last. The fingerprint is a SHA-256 of what the rows are a function of (for latents: the VAE's
weights, the resolution, hflip and the image paths in order; for features: the conditioner's config and
frozen tensors and the barcodes in order), so a cache built for another VAE, resolution or dataset is
rebuilt, never read.

**Reading** (:class:`ShardedCache`): :meth:`ShardedCache.rows` memory-maps the shards its rows lie in
(``numpy.memmap`` over each tensor's bytes in the safetensors file) and gathers just those rows; at most
``max_open`` shards stay mapped (least recently used unmapped first), so the pages a long epoch touched
do not pile up in the process's resident memory. ``rows_read`` counts what was copied. (Measured on
this machine, batches of 256 rows in streaming order: safetensors' own ``safe_open`` + ``get_slice`` per
contiguous run reads ~25,000 rows/s, this gather ~380,000, ``torch.load(mmap=True)`` of the same
shards as ``.pt`` files ~960,000 — ``bench/latent_cache.py``; a UNet step is far slower than either.
Uniformly random rows over the whole cache re-map a shard per row group: ~6,000 rows/s.)

**Streaming** (:class:`StreamOrder`): an epoch's order is a pure function of ``(seed, epoch)``: the
shards in a random order, each shard's rows permuted, cut into one contiguous segment per process,
sized so that every process gets its share of every global batch (:func:`share`); each segment is then
shuffled within windows of ``window_shards`` shards. So with ``N`` processes each reads a disjoint set
of rows (whole shards, but for at most one boundary shard between neighbours), every image once per
epoch, from a few shards at a time; and the step count alone fixes every process's position.

Trade-off against the memory layout: there every process draws the *whole* global batch (and its
noise) and keeps its rows, so ``N`` processes train exactly what one process trains. Streaming
processes draw only their own rows and noise — the global batch is a mix of ``N`` windows of a few
shards rather than a uniform sample of the dataset, and the noise differs — so one process and ``N``
processes are equivalent in distribution, not bit for bit. Resume stays exact for a given number of
processes: the order is a function of ``(seed, epoch)`` and the per-step noise is reseeded from
``(seed, step, rank)`` (see ``train.py``).

>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> encode = lambda a, b: {"x": torch.arange(a, b, dtype=torch.float32)[:, None].repeat(1, 2)}
>>> cache = build_sharded_cache(root, "demo", 10, encode, shard_size=4, meta={"what": "doctest"})
>>> cache.rows(torch.tensor([9, 0, 5]))["x"][:, 0].tolist(), cache.rows_read
([9.0, 0.0, 5.0], 3)
>>> order = StreamOrder(n_rows=10, shard_size=4, batch_size=4, world=2, rank=0, seed=0)
>>> [len(order.batch(m)[0]) for m in range(3)], order.batch(0)[1]
([2, 2, 1], 4)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from phenogen.diffusion.checkpoints import kill_point
from phenogen.errors import DataError
from phenogen.fsio import atomic_write_bytes, atomic_write_json

__all__ = [
    "INDEX_VERSION",
    "ROWS_LOG_ENV",
    "ShardedCache",
    "StreamOrder",
    "build_sharded_cache",
    "digest",
    "digest_strings",
    "share",
    "tensor_digest",
]

log = logging.getLogger(__name__)
INDEX_VERSION = 1
ROWS_LOG_ENV = "PHENOGEN_TEST_ROWS_LOG"
"""Test hook: a directory where every process of a sharded ``train-image`` run appends, per micro-step,
the latent rows it read and their shards (``rows-RANK.jsonl``). Unset in normal use."""


# ---------------------------------------------------------------------------------- fingerprints
def digest(*parts) -> str:
    """SHA-256 of JSON-able ``parts`` (sorted keys): the identity of what a cache was built from."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def digest_strings(strings: Iterable[str]) -> str:
    """SHA-256 of strings in order (image paths, barcodes), hashed one by one (no joined copy)."""
    h = hashlib.sha256()
    for text in strings:
        h.update(text.encode())
        h.update(b"\n")
    return h.hexdigest()


def tensor_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes, in name order): a model's weights."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda kv: kv[0]):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        t = t.detach().cpu().contiguous().reshape(-1)
        if t.numel():
            h.update(t.view(torch.uint8).numpy())  # the buffer itself, no copy
    return h.hexdigest()


# ---------------------------------------------------------------------------------- build
def _shard_name(name: str, k: int) -> str:
    return f"{name}-{k:05d}.safetensors"


def _shard_ok(path: Path, fingerprint: str, k: int, rows: int) -> bool:
    """Whether ``path`` is shard ``k`` (``rows`` rows) of the cache with ``fingerprint`` (reads its header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    except Exception:  # noqa: BLE001 - a damaged or foreign file is rebuilt, whatever the parser raises
        return False
    return (meta.get("fingerprint") == fingerprint and meta.get("shard") == str(k)
            and all(s and s[0] == rows for s in shapes.values()) and bool(shapes))  # fmt: skip


def build_sharded_cache(
    root: str | Path,
    name: str,
    n_rows: int,
    encode: Callable[[int, int], dict[str, torch.Tensor]],
    shard_size: int,
    meta: dict,
    progress: bool = False,
) -> ShardedCache:
    """Build (or finish, or just open) the sharded cache ``root/name``: rows ``[0, n_rows)``.

    ``encode(start, stop)`` returns the rows ``[start, stop)`` of every tensor (first dimension
    ``stop - start``); it is called once per shard that is missing, unfinished or stale. ``meta`` (JSON)
    names what the rows are a function of; its digest is the fingerprint a reusable shard must carry.
    Returns the reader.
    """
    from safetensors.torch import save
    from tqdm.auto import tqdm

    if n_rows < 1 or shard_size < 1:
        raise ValueError(f"a sharded cache needs n_rows >= 1 and shard_size >= 1, got {n_rows}, {shard_size}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fingerprint = digest(INDEX_VERSION, meta, n_rows, shard_size)
    try:
        return ShardedCache(root, name, fingerprint=fingerprint)
    except DataError:
        pass  # missing, stale or incomplete: (re)build below
    index_path = root / f"{name}.json"
    index_path.unlink(missing_ok=True)  # the index marks a complete cache: never one that is being rebuilt
    for tmp in root.glob(f".{name}-*.tmp"):  # unfinished shards of a killed build (atomic_write_bytes names)
        tmp.unlink(missing_ok=True)
    n_shards = math.ceil(n_rows / shard_size)
    for extra in root.glob(f"{name}-*.safetensors"):  # shards beyond this cache's count
        digits = extra.name.removeprefix(f"{name}-").removesuffix(".safetensors")
        if not digits.isdigit() or int(digits) >= n_shards:
            extra.unlink(missing_ok=True)
    shards, tensors_info, kept = [], None, 0
    for k in tqdm(range(n_shards), desc=f"cache {name}", disable=not progress, dynamic_ncols=True):
        start, stop = k * shard_size, min(n_rows, (k + 1) * shard_size)
        path = root / _shard_name(name, k)
        if _shard_ok(path, fingerprint, k, stop - start):
            kept += 1
        else:
            tensors = encode(start, stop)
            bad = [key for key, t in tensors.items() if t.shape[0] != stop - start]
            if bad or not tensors:
                raise ValueError(
                    f"encode({start}, {stop}) must return {stop - start} rows of each tensor ({bad})"
                )
            metadata = {"fingerprint": fingerprint, "shard": str(k), "start": str(start)}
            atomic_write_bytes(
                path, save({key: t.contiguous() for key, t in tensors.items()}, metadata=metadata)
            )
            kill_point(f"cache:{name}", k)  # crash tests: as if killed once shard k is complete
        if tensors_info is None:
            tensors_info = _tensor_info(path)
        shards.append({"file": path.name, "start": start, "rows": stop - start, "bytes": path.stat().st_size})
    if kept:
        log.info("cache %s: kept %d of %d complete shard(s) of an earlier build", name, kept, n_shards)
    index = {"version": INDEX_VERSION, "name": name, "fingerprint": fingerprint, "meta": meta,
             "rows": n_rows, "shard_size": shard_size, "tensors": tensors_info, "shards": shards}  # fmt: skip
    atomic_write_json(index_path, index, indent=1)
    return ShardedCache(root, name, fingerprint=fingerprint)


def _tensor_info(path: Path) -> dict[str, dict]:
    """``{key: {"shape": per-row shape, "dtype": safetensors dtype}}`` of a shard (its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {key: {"shape": f.get_slice(key).get_shape()[1:], "dtype": f.get_slice(key).get_dtype()}
                for key in f.keys()}  # fmt: skip


# ---------------------------------------------------------------------------------- read
# safetensors dtype -> (torch dtype, numpy dtype of the same bytes; bfloat16 read as uint16, then viewed)
_DTYPES = {"F32": (torch.float32, "<f4"), "F16": (torch.float16, "<f2"), "BF16": (torch.bfloat16, "<u2"),
           "BOOL": (torch.bool, "?"), "I64": (torch.int64, "<i8"), "I32": (torch.int32, "<i4"),
           "U8": (torch.uint8, "u1"), "I8": (torch.int8, "i1")}  # fmt: skip


class ShardedCache:
    """Lazy reader of a complete sharded cache ``root/name`` (see the module docstring).

    Raises :class:`~phenogen.errors.DataError` when the index is missing, unreadable, of another
    ``fingerprint`` (when given) or names a shard that is missing or has another size.
    """

    def __init__(self, root: str | Path, name: str, fingerprint: str | None = None, max_open: int = 8):
        self.root, self.name, self.max_open = Path(root), name, max(1, max_open)
        path = self.root / f"{name}.json"
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            ok = index["version"] == INDEX_VERSION and (
                fingerprint is None or index["fingerprint"] == fingerprint
            )
            ok = ok and all((self.root / s["file"]).stat().st_size == s["bytes"] for s in index["shards"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: no complete cache here ({type(exc).__name__}: {exc})") from None
        if not ok:
            raise DataError(f"{path}: the cache was built from other inputs or is incomplete; it is rebuilt")
        self.index = index
        self.n_rows, self.shard_size = int(index["rows"]), int(index["shard_size"])
        self.keys = tuple(index["tensors"])
        self.rows_read = 0  # rows copied out (per key asked), since opening
        self.shards_opened: set[int] = set()  # every shard mapped, since opening
        self._open: OrderedDict[int, object] = OrderedDict()

    def __len__(self) -> int:
        return self.n_rows

    @property
    def n_shards(self) -> int:
        return len(self.index["shards"])

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the shards."""
        return sum(s["bytes"] for s in self.index["shards"])

    def _handle(self, k: int) -> _MappedShard:
        if k in self._open:
            self._open.move_to_end(k)
            return self._open[k]
        while len(self._open) >= self.max_open:
            self._open.popitem(last=False)  # unmapped once nothing refers to it
        handle = _MappedShard(self.root / self.index["shards"][k]["file"])
        self._open[k] = handle
        self.shards_opened.add(k)
        return handle

    def close(self) -> None:
        self._open.clear()

    def rows(
        self, idx: torch.Tensor | Sequence[int], keys: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The rows ``idx`` (in that order) of ``keys`` (default all): ``{key: (len(idx), *shape)}``.

        Only those rows are read (one gather from the mapped shard per shard and key). Rows of a key whose
        second dimension differs between shards (token features) are zero-padded to the widest.
        """
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        keys = tuple(keys or self.keys)
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.n_rows):
            raise IndexError(f"{self.name}: rows must be in [0, {self.n_rows}), got {idx.min()}..{idx.max()}")
        order = torch.argsort(idx, stable=True)
        sorted_idx = idx[order]
        pieces: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
        shard_of = sorted_idx // self.shard_size
        for k in torch.unique_consecutive(shard_of).tolist():
            local = (sorted_idx[shard_of == k] - k * self.shard_size).numpy()
            shard = self._handle(k)
            for key in keys:
                pieces[key].append(shard.take(key, local))
        self.rows_read += len(idx) * len(keys)
        out = {}
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        for key in keys:
            parts = pieces[key]
            if not parts:
                info = self.index["tensors"][key]
                out[key] = torch.zeros(0, *info["shape"], dtype=_DTYPES[info["dtype"]][0])
                continue
            if parts[0].ndim >= 2 and len({p.shape[1] for p in parts}) > 1:  # pad token widths
                width = max(p.shape[1] for p in parts)
                parts = [
                    torch.nn.functional.pad(p, (0, 0) * (p.ndim - 2) + (0, width - p.shape[1])) for p in parts
                ]
            out[key] = torch.cat(parts)[inverse]
        return out


class _MappedShard:
    """One shard file, memory-mapped: its safetensors header parsed once, each tensor mapped on first use
    as a read-only ``numpy.memmap`` over its bytes (the format is an 8-byte header length, a JSON header
    of dtype, shape and byte offsets per tensor, then the raw little-endian data), so a gather copies
    only its rows."""

    def __init__(self, path: Path):
        with open(path, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        header.pop("__metadata__", None)
        self.path, self.data_start, self.header = path, 8 + size, header
        self.maps: dict[str, object] = {}

    def take(self, key: str, rows) -> torch.Tensor:
        """Rows ``rows`` (a sorted int array) of tensor ``key``, copied out of the mapping."""
        import numpy as np

        info = self.header[key]
        dtype, np_dtype = _DTYPES[info["dtype"]]
        if key not in self.maps:
            begin, end = info["data_offsets"]
            shape = tuple(info["shape"])
            self.maps[key] = (np.memmap(self.path, dtype=np_dtype, mode="r", offset=self.data_start + begin,
                                        shape=shape) if end > begin else np.zeros(shape, dtype=np_dtype))  # fmt: skip
        got = torch.from_numpy(np.ascontiguousarray(self.maps[key][rows]))
        return got.view(dtype) if got.dtype != dtype else got


# ---------------------------------------------------------------------------------- stream
def share(n: int, world: int, rank: int) -> slice:
    """Process ``rank``'s contiguous share of ``n`` rows among ``world`` (sizes differ by at most one)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def _size(s: slice) -> int:
    return s.stop - s.start


@dataclass
class StreamOrder:
    """Which cached rows process ``rank`` of ``world`` trains on at each micro-step (module docstring).

    ``batch(micro)`` gives ``(rows, global_batch)``: this process's rows of micro-step ``micro`` and the
    size of the global batch they belong to (``batch_size``, or the rest in an epoch's last step).
    Every process's rows at a step are its :func:`share` of that global batch.
    """

    n_rows: int
    shard_size: int
    batch_size: int
    world: int = 1
    rank: int = 0
    seed: int = 0
    window_shards: int = 4
    _epoch: tuple[int, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_rows / self.batch_size)

    def global_batch(self, pos: int) -> int:
        last = self.steps_per_epoch - 1
        return self.batch_size if pos < last else self.n_rows - last * self.batch_size

    def segment_sizes(self) -> list[int]:
        """Rows per process and epoch: its share of every full batch plus its share of the last."""
        last = self.steps_per_epoch - 1
        tail = self.global_batch(last)
        return [last * _size(share(self.batch_size, self.world, r)) + _size(share(tail, self.world, r))
                for r in range(self.world)]  # fmt: skip

    def epoch_rows(self, epoch: int) -> torch.Tensor:
        """This process's rows of ``epoch`` in training order (a pure function of seed, epoch, world, rank)."""
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        n_shards = math.ceil(self.n_rows / self.shard_size)
        pieces = []
        for k in torch.randperm(n_shards, generator=g).tolist():
            start = k * self.shard_size
            count = min(self.n_rows, start + self.shard_size) - start
            pieces.append(start + torch.randperm(count, generator=g))
        rows = torch.cat(pieces)
        sizes = self.segment_sizes()
        a = sum(sizes[: self.rank])
        seg = rows[a : a + sizes[self.rank]].clone()
        gw = torch.Generator().manual_seed(((self.seed * 100_003 + epoch) * 7919 + self.rank + 1) % 2**63)
        w = max(1, self.window_shards) * self.shard_size
        for b in range(0, len(seg), w):
            block = seg[b : b + w]
            seg[b : b + w] = block[torch.randperm(len(block), generator=gw)]
        self._epoch = (epoch, seg)
        return seg

    def batch(self, micro: int) -> tuple[torch.Tensor, int]:
        epoch, pos = divmod(micro, self.steps_per_epoch)
        rows = self.epoch_rows(epoch)
        full = _size(share(self.batch_size, self.world, self.rank))
        gb = self.global_batch(pos)
        n = full if gb == self.batch_size else _size(share(gb, self.world, self.rank))
        return rows[pos * full : pos * full + n], gb


def log_rows(directory: str, rank: int, micro: int, rows: torch.Tensor, shard_size: int) -> None:
    """The :data:`ROWS_LOG_ENV` test hook: append this step's rows and shards to ``rows-RANK.jsonl``."""
    path = Path(directory) / f"rows-{rank}.jsonl"
    line = {"rank": rank, "micro": micro, "rows": rows.tolist(),
            "shards": sorted({r // shard_size for r in rows.tolist()})}  # fmt: skip
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line) + "\n")
        fh.flush()
        os.fsync(fh.fileno())

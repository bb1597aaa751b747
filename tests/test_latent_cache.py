"""The sharded on-disk cache and its streaming order (:mod:`phenogen.diffusion.latent_cache`), alone and
inside ``train-image`` (``image.cache_layout = "sharded"``): shards equal the in-memory cache, a killed
build continues from its last complete shard, a stale cache is rebuilt, a batch reads only its rows,
two processes stream disjoint shards, and a sharded run resumes bit for bit.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from test_distributed_image import torchrun
from test_image_crash import _dataset, train, weights

from phenogen.diffusion.latent_cache import (
    ROWS_LOG_ENV,
    ShardedCache,
    StreamOrder,
    build_sharded_cache,
    share,
)
from phenogen.diffusion.train import train_image_model
from phenogen.errors import CheckpointError, DataError

SHARDED = ["--set", 'image.cache_layout="sharded"', "--set", "image.cache_shard_size=4"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """16 training images of 8 barcodes (4 species), 4 held out (test_image_crash's coloured discs)."""
    return _dataset(tmp_path_factory.mktemp("clade")).root


def _cfg(**kw):
    from test_diffusion import _tiny_cfg

    return _tiny_cfg(**({"hflip": True, "cache_layout": "sharded", "cache_shard_size": 4} | kw))


class Encoder:
    """Rows ``[a, b)`` of a fixed tensor, with a log of the calls (which shards were encoded)."""

    def __init__(self, n: int = 10, fail_at: int | None = None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, 3, generator=g)
        self.calls: list[tuple[int, int]] = []
        self.fail_at = fail_at

    def __call__(self, a: int, b: int) -> dict[str, torch.Tensor]:
        if self.fail_at is not None and a >= self.fail_at:
            raise KeyboardInterrupt  # a build interrupted before this shard
        self.calls.append((a, b))
        return {"x": self.x[a:b], "m": self.x[a:b, :, 0] > 0}


# ------------------------------------------------------------------------------------- the cache alone
def test_shards_written_by_train_image_equal_the_in_memory_cache(data, tmp_path):
    """The same run with either layout: latents (both flips) and features are the same numbers."""
    for layout in ("memory", "sharded"):
        train_image_model(data, tmp_path / layout, _cfg(max_steps=1, cache_layout=layout), progress=False)
    latents = load_file(tmp_path / "memory" / "cache" / "train_latents.safetensors")
    features = load_file(tmp_path / "memory" / "cache" / "train_features.safetensors")
    lat, feat = (ShardedCache(tmp_path / "sharded" / "cache", name) for name in ("latents", "features"))
    assert (len(lat), lat.n_shards, len(feat), feat.n_shards) == (16, 4, 8, 2)
    assert set(lat.keys) == {"mean", "std", "mean_flip", "std_flip"}
    got = lat.rows(torch.arange(16))
    for key, value in latents.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)
    got = feat.rows(torch.arange(8))
    assert torch.equal(got["features"], features["features"]) and torch.equal(got["mask"], features["mask"])
    index = json.loads((tmp_path / "sharded" / "cache" / "latents.json").read_text())
    assert index["meta"]["hflip"] is True and index["meta"]["resolution"] == 16
    assert index["tensors"]["mean"] == {"shape": list(latents["mean"].shape[1:]), "dtype": "F32"}


def test_a_killed_build_continues_from_its_last_complete_shard(tmp_path):
    """Interrupted before shard 2: shards 0-1 stay, no index; the next build encodes only shards 2-3.
    A leftover temporary file and a deleted last shard are likewise repaired, nothing else re-encoded."""
    enc = Encoder(n=14, fail_at=8)
    with pytest.raises(KeyboardInterrupt):
        build_sharded_cache(tmp_path, "lat", 14, enc, 4, {"v": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat-00000.safetensors", "lat-00001.safetensors"]
    enc.fail_at, enc.calls = None, []
    cache = build_sharded_cache(tmp_path, "lat", 14, enc, 4, {"v": 1})
    assert enc.calls == [(8, 12), (12, 14)]
    assert torch.equal(cache.rows(torch.arange(14))["x"], enc.x)

    (tmp_path / "lat-00003.safetensors").unlink()  # as if killed while writing it: only its .tmp is left
    (tmp_path / ".lat-00003.safetensors.x1y2.tmp").write_bytes(b"half a shard")
    (tmp_path / "lat.json").unlink()
    enc.calls = []
    cache = build_sharded_cache(tmp_path, "lat", 14, enc, 4, {"v": 1})
    assert enc.calls == [(12, 14)] and not list(tmp_path.glob("*.tmp"))
    assert torch.equal(cache.rows(torch.arange(14))["x"], enc.x)
    enc.calls = []
    build_sharded_cache(tmp_path, "lat", 14, enc, 4, {"v": 1})  # complete: opened, nothing encoded
    assert enc.calls == []


def test_a_stale_or_damaged_cache_is_rebuilt(tmp_path):
    enc = Encoder()
    build_sharded_cache(tmp_path, "lat", 10, enc, 4, {"vae": "a"})
    enc.calls = []
    build_sharded_cache(tmp_path, "lat", 10, enc, 4, {"vae": "b"})  # another VAE: every shard
    assert enc.calls == [(0, 4), (4, 8), (8, 10)]
    enc.calls = []
    build_sharded_cache(tmp_path, "lat", 10, enc, 5, {"vae": "b"})  # another shard size: every shard
    assert enc.calls == [(0, 5), (5, 10)] and not (tmp_path / "lat-00002.safetensors").exists()
    enc.calls = []
    (tmp_path / "lat.json").write_text("{not json")  # a broken index: the shards still carry the fingerprint
    build_sharded_cache(tmp_path, "lat", 10, enc, 5, {"vae": "b"})
    assert enc.calls == []
    shard = tmp_path / "lat-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:40])  # a damaged shard: the index no longer matches; that one again
    enc.calls = []
    cache = build_sharded_cache(tmp_path, "lat", 10, enc, 5, {"vae": "b"})
    assert enc.calls == [(5, 10)] and torch.equal(cache.rows(torch.arange(10))["x"], enc.x)
    with pytest.raises(DataError, match="other inputs or is incomplete"):
        ShardedCache(tmp_path, "lat", fingerprint="0" * 64)


def test_reading_a_batch_materialises_only_its_rows(tmp_path):
    enc = Encoder(n=20)
    cache = build_sharded_cache(tmp_path, "lat", 20, enc, 4, {"v": 1})
    cache = ShardedCache(tmp_path, "lat", max_open=2)  # a fresh reader: nothing read yet
    got = cache.rows(torch.tensor([13, 1, 2, 1]), keys=("x",))
    assert torch.equal(got["x"], enc.x[[13, 1, 2, 1]]) and set(got) == {"x"}
    assert cache.rows_read == 4 and cache.shards_opened == {0, 3}
    got = cache.rows(torch.tensor([19, 8, 5]))
    assert torch.equal(got["m"], enc.x[[19, 8, 5], :, 0] > 0)
    assert cache.rows_read == 4 + 3 * 2 and cache.shards_opened == {0, 1, 2, 3, 4}
    assert len(cache._open) == 2  # at most max_open shards stay mapped
    assert cache.rows(torch.tensor([], dtype=torch.long))["x"].shape == (0, 2, 3)
    with pytest.raises(IndexError):
        cache.rows(torch.tensor([20]))


# ------------------------------------------------------------------------------------- the order
@pytest.mark.parametrize(
    ("n", "batch", "shard", "world"),
    [(16, 4, 4, 2), (10, 4, 4, 2), (23, 6, 5, 3), (9, 4, 3, 1), (40, 8, 4, 4), (7, 8, 2, 2)],
)
def test_each_epoch_splits_into_disjoint_covering_shares_of_every_batch(n, batch, shard, world):
    """Every image once per epoch across the processes; each step's rows are the processes' shares of
    one global batch; the order is a pure function of (seed, epoch), and epochs differ."""
    orders = [StreamOrder(n, shard, batch, world, r, seed=3) for r in range(world)]
    steps = orders[0].steps_per_epoch
    for epoch in (0, 1):
        seen = []
        for pos in range(steps):
            parts = [o.batch(epoch * steps + pos) for o in orders]
            sizes = [len(rows) for rows, _ in parts]
            global_n = parts[0][1]
            assert all(gb == global_n for _, gb in parts) and sum(sizes) == global_n
            assert sizes == [
                share(global_n, world, r).stop - share(global_n, world, r).start for r in range(world)
            ]
            seen += [r for rows, _ in parts for r in rows.tolist()]
        assert sorted(seen) == list(range(n))
    again = [StreamOrder(n, shard, batch, world, r, seed=3) for r in range(world)]
    epochs = [torch.cat([o.epoch_rows(e) for o in again]) for e in (0, 1)]
    assert torch.equal(epochs[1], torch.cat([o.epoch_rows(1) for o in orders]))
    assert not torch.equal(epochs[0], epochs[1])


def test_aligned_segments_read_disjoint_shards():
    """16 images, shards of 4, 2 processes: each reads two whole shards per epoch, never the other's."""
    for epoch in range(3):
        shards = [set((StreamOrder(16, 4, 4, 2, r, seed=0).epoch_rows(epoch) // 4).tolist()) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == 2 and not shards[0] & shards[1]


# ------------------------------------------------------------------------------------- train-image
def test_sharded_training_resumes_exactly(data, tmp_path):
    """Stopped after step 3 (checkpoint at 2), resumed: the same losses and weights, bit for bit; a
    resume that asks for the memory layout is refused."""
    cfg = _cfg(max_steps=6, checkpoint_every=2)
    full = train_image_model(data, tmp_path / "full", cfg, progress=False)
    train_image_model(data, tmp_path / "cut", cfg, stop_after_steps=3, progress=False)
    resumed = train_image_model(data, tmp_path / "cut", cfg, resume=True, progress=False)
    assert resumed.global_step == full.global_step == 6 and resumed.losses == full.losses
    a, b = weights(tmp_path / "full"), weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="cache_layout"):
        train_image_model(data, tmp_path / "cut", _cfg(max_steps=6, cache_layout="memory"), resume=True,
                          progress=False)  # fmt: skip


def test_a_cache_outside_out_survives_a_killed_build_and_force(data, tmp_path):
    """Killed once latent shard 1 was complete; ``--force`` starts the run again and keeps shards 0-1
    (the same files: not rewritten), encodes the rest, and trains."""
    cache = tmp_path / "shared-cache"
    extra = [*SHARDED, "--set", f'image.cache_dir="{cache}"', "--set", "image.max_steps=2"]
    r = train(data, tmp_path / "run", *extra, kill="cache:latents@1")
    assert r.returncode == 137, r.stderr
    kept = {p.name: p.stat().st_ino for p in cache.glob("latents-*.safetensors")}
    assert sorted(kept) == ["latents-00000.safetensors", "latents-00001.safetensors"]
    assert not (cache / "latents.json").exists()
    r = train(data, tmp_path / "run", *extra, "--force")
    assert r.returncode == 0, r.stderr
    assert {p: (cache / p).stat().st_ino for p in kept} == kept
    assert len(ShardedCache(cache, "latents")) == 16 and (tmp_path / "run" / "pipeline").is_dir()


def test_two_processes_stream_disjoint_shards(data, tmp_path, monkeypatch):
    """torchrun, 2 CPU processes (gloo), 8 steps of 4 = 2 epochs: per epoch the two read disjoint rows of
    disjoint shards that together cover every image once; only the main process writes --out."""
    log_dir = tmp_path / "rows"
    log_dir.mkdir()
    monkeypatch.setenv(ROWS_LOG_ENV, str(log_dir))
    out = tmp_path / "run"
    r = torchrun(data, out, *SHARDED)
    assert r.returncode == 0, r.stderr
    lines = [
        json.loads(x) for rank in (0, 1) for x in (log_dir / f"rows-{rank}.jsonl").read_text().splitlines()
    ]
    assert len(lines) == 16  # 8 steps x 2 processes
    for epoch in (0, 1):
        rows = {rank: [] for rank in (0, 1)}
        shards = {rank: set() for rank in (0, 1)}
        for line in lines:
            if line["micro"] // 4 == epoch:
                rows[line["rank"]] += line["rows"]
                shards[line["rank"]] |= set(line["shards"])
        assert not set(rows[0]) & set(rows[1]) and sorted(rows[0] + rows[1]) == list(range(16))
        assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 2
    losses = json.loads((out / "losses.json").read_text())["train"]
    assert len(losses) == 8 and all(0 < x < 10 for x in losses)
    assert sorted(p.name for p in (out / "cache").glob("*.json")) == ["features.json", "latents.json"]


# ------------------------------------------------------------------------------------- a Parquet dataset
@pytest.fixture(scope="module")
def parquet_data(data, tmp_path_factory):
    """The same dataset as a Parquet manifest in row groups of 3 records (images hard-linked)."""
    import shutil

    from phenogen.data.dataset import convert_dataset

    root = tmp_path_factory.mktemp("parquet") / "clade"
    shutil.copytree(data, root, copy_function=os.link)
    convert_dataset(root, "parquet", row_group_size=3)
    return root


def test_a_parquet_dataset_s_pairs_are_memory_mapped_and_equal_the_tsv_s(
    data, parquet_data, tmp_path, monkeypatch
):
    """``read_pairs`` streams a Parquet manifest into Arrow files it maps (their bytes are not allocated by
    Arrow's pool), with the same photos, barcode rows, barcodes and ids as the TSV dataset's in-memory pairs."""
    import pyarrow as pa

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.pairs import read_pairs

    monkeypatch.setattr("phenogen.diffusion.pairs.BATCH_RECORDS", 3)  # record batches of 3 records
    mem = read_pairs(load_dataset(data), "train", 32)
    before = pa.total_allocated_bytes()
    mapped = read_pairs(load_dataset(parquet_data), "train", 32, tmp_path / "spill")
    assert pa.total_allocated_bytes() - before < 4096  # the columns are views of the files
    assert sorted(p.name for p in (tmp_path / "spill").iterdir()) == [
        "train-barcodes.arrow",
        "train-images.arrow",
    ]
    assert mapped.images_table.column("path").num_chunks > 1  # written 3 records at a time
    rel = lambda pairs, root: [os.path.relpath(p, root) for p in pairs.paths]  # noqa: E731
    assert rel(mem, data) == rel(mapped, parquet_data) and len(mem) == 16
    assert list(mem.sequences) == list(mapped.sequences) and list(mem.record_ids) == list(mapped.record_ids)
    rows = torch.tensor([15, 0, 7])
    assert torch.equal(mem.seq_index[rows], mapped.seq_index[rows])
    assert torch.equal(mem.load(rows), mapped.load(rows))
    assert mapped.sequences.max_length() == max(len(s) for s in mem.sequences)


def test_sharded_training_on_a_parquet_dataset_equals_the_tsv_run(data, parquet_data, tmp_path):
    """The same losses and weights from the Parquet manifest as from the TSV one; the mapped pairs are gone."""
    cfg = _cfg(max_steps=3)
    a = train_image_model(data, tmp_path / "tsv", cfg, progress=False)
    b = train_image_model(parquet_data, tmp_path / "parquet", cfg, progress=False)
    assert a.losses == b.losses
    wa, wb = weights(tmp_path / "tsv"), weights(tmp_path / "parquet")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list((tmp_path / "parquet").glob(".pairs-*"))

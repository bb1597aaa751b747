"""Benchmark the sharded latent cache: build it for 100,000 synthetic images on disk, then train one epoch
streaming from it, with peak resident memory at 10,000 and at 100,000 images (flat = it does not grow).

Data: ``--images`` synthetic 64 px PNG photos (a coloured disc and bar per species on a pale ground,
jittered per specimen; 1,000 species; one photo and one 658 bp barcode per specimen), written as a
phenogen dataset; the ``--small`` set is the first records of the same files (hard links).

VAE and UNet: encoding 100,000 photos (and their mirror images) with the ``cpu`` preset's VAE (16 x 16 x 4
latents) takes 15-30 minutes of this 2-core machine, and one epoch of even the ``tiny`` UNet over 16 x 16
latents as long, so the cache is built with a *tiny 16x VAE* (``AutoencoderKL``, channels 8/16/32/32/32,
one layer per block, 64 px → 4 x 4 x 4 latents, random weights: speed does not depend on them), passed
as ``image.vae``, and the epoch trains the ``tiny`` preset's UNet on those 4 x 4 latents. The ``cpu``
VAE's encoding speed and bytes per image on a sample are reported beside it (disk grows linearly in the
bytes per image). Both flips are cached (``image.hflip``).

Each measurement runs in a fresh child process (so its peak RSS is its own):

* ``build``: the latent cache alone, as ``train-image`` builds it (``train._latent_shards``: images read
  from disk 64 at a time, encoded, written shard by shard) → images/s, disk, peak RSS;
* ``epoch``: ``train_image_model`` for one epoch, ``cache_layout = "sharded"``, ``cache_dir`` = the cache
  just built (found complete: not rebuilt; the condition features are built here), batch 256 → the
  training loop's seconds and images/s, peak RSS over the loop (sampled every 50 ms from
  ``/proc/self/status``: anonymous and file-backed pages apart) and the RSS once the dataset is loaded
  (its pairs memory-mapped from a Parquet manifest, ``--format``; a TSV manifest is read whole);
* ``read`` (100k cache): rows/s of batches of 256, in streaming and in uniformly random order, read by
  phenogen's reader (a gather from the memory-mapped shard), by safetensors' ``safe_open`` + ``get_slice``
  per contiguous run, and by ``torch.load(mmap=True)`` of the same shards saved as ``.pt``.

    .venv/bin/python bench/latent_cache.py                    # 100k + 10k, ~15 min on 2 idle cores
    .venv/bin/python bench/latent_cache.py --images 2000 --small 500   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

RES = 64
SPECIES = 1000
BARCODE_BP = 658
SHARD = 1024
BATCH = 256
FORMAT = "parquet"  # the datasets' manifest (--format): what sets of this size are imported as


# ---------------------------------------------------------------------------------- memory
class RssSampler(threading.Thread):
    """Samples ``VmRSS`` / ``RssAnon`` / ``RssFile`` of this process every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop_flag = interval, [], threading.Event()

    @staticmethod
    def now() -> dict[str, float]:
        fields = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    fields[key] = int(value.split()[0]) / 1024  # MiB
        return fields

    def run(self) -> None:
        while not self._stop_flag.is_set():
            self.samples.append((time.perf_counter(), self.now()))
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop_flag.set()
        self.join()

    def peak(self, key: str, start: float = 0.0, end: float = float("inf")) -> float:
        return max((s[key] for t, s in self.samples if start <= t <= end), default=0.0)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------- data
def make_dataset(root: Path, n: int) -> float:
    """``n`` synthetic specimens (photo + barcode) under ``root``; returns seconds."""
    import numpy as np
    from PIL import Image, ImageDraw

    from phenogen.data.dataset import Record, write_dataset

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    base = rng.choice(list("ACGT"), BARCODE_BP)
    species = []
    for _ in range(SPECIES):
        seq = base.copy()
        sites = rng.choice(BARCODE_BP, 60, replace=False)
        seq[sites] = rng.choice(list("ACGT"), 60)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        species.append((seq, colour, int(rng.integers(6, 20))))
    records = []
    for i in range(n):
        s = i % SPECIES
        seq, colour, size = species[s]
        seq = seq.copy()
        seq[rng.integers(BARCODE_BP)] = rng.choice(list("ACGT"))
        dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
        im = Image.new("RGB", (RES, RES), (200 + int(rng.integers(0, 40)), 215, 235))
        draw = ImageDraw.Draw(im)
        draw.ellipse([32 - size + dx, 32 - size + dy, 32 + size + dx, 32 + size + dy], fill=colour)
        draw.rectangle([10 + dx, 50, 54 + dx, 54], fill=colour[::-1])
        rel = f"images/{i // 1000:03d}/{i:06d}.png"
        (root / rel).parent.mkdir(exist_ok=True)
        im.save(root / rel, compress_level=1)
        records.append(Record(f"r{i}", f"sp{s}", f"sp{s}_{i}", "train", "living", "".join(seq), (rel,)))
    write_dataset(root, records, {"source": "bench/latent_cache.py"}, format=FORMAT)
    return time.perf_counter() - t0


def subset(big: Path, root: Path, n: int) -> None:
    """The first ``n`` records of ``big`` as a dataset at ``root`` (its images hard links to ``big``'s)."""
    from phenogen.data.dataset import load_dataset, write_dataset

    records = [r for _, r in zip(range(n), load_dataset(big).iter_records("train"), strict=False)]
    for rec in records:
        for rel in rec.images:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(big / rel, root / rel)
    write_dataset(root, records, {"source": "bench/latent_cache.py (subset)"}, format=FORMAT)


def tiny_vae(path: Path) -> None:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 5,
                        up_block_types=("UpDecoderBlock2D",) * 5, block_out_channels=(8, 16, 32, 32, 32),
                        layers_per_block=1, latent_channels=4, norm_num_groups=8, mid_block_add_attention=False,
                        sample_size=RES)  # fmt: skip
    vae.save_pretrained(path, safe_serialization=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def image_config(vae: Path, cache: Path, **kw):
    from phenogen.diffusion.config import ImageConfig

    return ImageConfig(**({
        "preset": "tiny", "resolution": RES, "vae": str(vae), "encoder": "kmer", "kmer_k": 3, "kmer_segments": 4,
        "cache_layout": "sharded", "cache_shard_size": SHARD, "cache_dir": str(cache), "hflip": True,
        "epochs": 1, "batch_size": BATCH, "lr_warmup_steps": 10, "sample_steps": 1, "mixed_precision": "no",
        "max_minutes": 0,
    } | kw))  # fmt: skip


# ---------------------------------------------------------------------------------- children
def child_build(data: Path, vae_dir: Path, cache: Path) -> dict:
    import torch

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion import components
    from phenogen.diffusion.train import _latent_shards, _pairs

    rss = RssSampler()
    rss.start()
    cfg = image_config(vae_dir, cache)
    ds = load_dataset(data)
    train = _pairs(ds, "train", RES, cache.parent / f"{cache.name}-pairs")  # memory-mapped, as train-image's
    rss_loaded = RssSampler.now()["VmRSS"]
    vae = components.load_vae(vae_dir).eval().requires_grad_(False)
    t0 = time.perf_counter()
    lat = _latent_shards(cache, vae, train, cfg, torch.device("cpu"), main=True, progress=False)
    seconds = time.perf_counter() - t0
    rss.stop()
    return {"images": len(train), "seconds": seconds, "images_per_second": len(train) / seconds,
            "shards": lat.n_shards, "disk_bytes": lat.nbytes, "bytes_per_image": lat.nbytes / len(train),
            "latent_shape": lat.index["tensors"]["mean"]["shape"], "tensors": list(lat.keys),
            "rss_after_load_mib": rss_loaded, "peak_rss_mib": peak_rss_mib(),
            "peak_rss_anon_mib": rss.peak("RssAnon"), "peak_rss_file_mib": rss.peak("RssFile")}  # fmt: skip


def child_epoch(data: Path, vae_dir: Path, cache: Path, out: Path) -> dict:
    from phenogen.diffusion.train import train_image_model

    rss = RssSampler()
    rss.start()
    t0 = time.perf_counter()
    result = train_image_model(data, out, image_config(vae_dir, cache), progress=False)
    t_end = time.perf_counter()
    rss.stop()
    s = result.seconds
    loop_end = t_end - s.get("export", 0.0)
    loop_start = loop_end - s["train"]
    at_loop = [v["VmRSS"] for t, v in rss.samples if t >= loop_start][:1]
    images = result.global_step * BATCH
    return {"steps": result.global_step, "seconds": s, "train_images_per_second": result.images_per_second,
            "epoch_seconds": s["train"], "images": images, "losses_first_last": [result.losses[0], result.losses[-1]],
            "rss_at_loop_start_mib": at_loop[0] if at_loop else None,
            "peak_rss_loop_mib": rss.peak("VmRSS", loop_start, loop_end),
            "peak_rss_anon_loop_mib": rss.peak("RssAnon", loop_start, loop_end),
            "peak_rss_file_loop_mib": rss.peak("RssFile", loop_start, loop_end),
            "peak_rss_process_mib": peak_rss_mib(), "wall_seconds": t_end - t0}  # fmt: skip


def child_read(cache: Path, batches: int = 100) -> dict:
    """Rows/s of batches of 256 rows (mean + std), in streaming and in uniformly random order: phenogen's
    reader (a gather from the memory-mapped shard), safetensors' ``safe_open`` + ``get_slice`` per
    contiguous run of rows, and ``torch.load(mmap=True)`` of the same shards saved as ``.pt`` files."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from phenogen.diffusion.latent_cache import ShardedCache, StreamOrder

    reader = ShardedCache(cache, "latents")
    n, k_rows = len(reader), reader.shard_size
    stream = StreamOrder(n, k_rows, BATCH, seed=0)
    g = torch.Generator().manual_seed(0)
    orders = {"stream": [stream.batch(i)[0] for i in range(min(batches, stream.steps_per_epoch))],
              "random": [torch.randint(0, n, (BATCH,), generator=g) for _ in range(batches)]}  # fmt: skip
    files = [cache / s["file"] for s in reader.index["shards"]]

    def get_slice(handles, idx):
        idx = torch.sort(idx).values
        for k in torch.unique(idx // k_rows).tolist():
            local = (idx[idx // k_rows == k] - k * k_rows).tolist()
            f = handles.setdefault(k, safe_open(str(files[k]), framework="pt"))
            for key in ("mean", "std"):
                sl = f.get_slice(key)
                a = 0
                while a < len(local):  # one slice per contiguous run
                    b = a + 1
                    while b < len(local) and local[b] == local[b - 1] + 1:
                        b += 1
                    sl[local[a] : local[b - 1] + 1]
                    a = b

    pt = cache / "pt"
    pt.mkdir()
    for f in files:
        torch.save({k: v for k, v in load_file(f).items() if k in ("mean", "std")}, pt / (f.name + ".pt"))
    maps = [torch.load(pt / (f.name + ".pt"), mmap=True, weights_only=True) for f in files]

    def torch_mmap(idx):
        for k in torch.unique(idx // k_rows).tolist():
            local = idx[idx // k_rows == k] - k * k_rows
            maps[k]["mean"][local], maps[k]["std"][local]

    found = {}
    ways = {"phenogen_reader": lambda idx: reader.rows(idx, ("mean", "std")),
            "safetensors_get_slice": lambda idx, h={}: get_slice(h, idx), "torch_load_mmap": torch_mmap}  # fmt: skip
    for way, read in ways.items():
        for name, idxs in orders.items():
            t0 = time.perf_counter()
            for idx in idxs:
                read(idx)
            found[f"{way}_{name}_rows_per_s"] = len(idxs) * BATCH / (time.perf_counter() - t0)
    shutil.rmtree(pt)
    return found


def cpu_vae_speed(data: Path, n: int) -> dict:
    """images/s of the ``cpu`` preset's VAE encoding ``n`` photos (both flips), as the cache build does."""
    import torch

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.components import build_vae
    from phenogen.diffusion.train import _pairs, _posterior_encoder

    train = _pairs(load_dataset(data), "train", RES)
    vae = build_vae("cpu", RES).eval().requires_grad_(False)
    encode = _posterior_encoder(vae, train, True, torch.device("cpu"))
    t0 = time.perf_counter()
    got = encode(0, n)
    seconds = time.perf_counter() - t0
    per_image = sum(t[0].numel() * t.element_size() for t in got.values())
    return {"images": n, "images_per_second": n / seconds, "latent_shape": list(got["mean"].shape[1:]),
            "bytes_per_image": per_image}  # fmt: skip


def run_child(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--cpu-vae-sample", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/phenogen-bench-latent-cache"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latent_cache.json")
    ap.add_argument(
        "--format",
        choices=("parquet", "tsv"),
        default="parquet",
        help="the datasets' manifest (a TSV manifest is read whole into memory)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (images, caches, runs)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    global FORMAT
    FORMAT = args.format  # (the children only read the datasets)
    if args.child:
        kind, *paths = args.child
        if kind == "build":
            found = child_build(*map(Path, paths))
        elif kind == "epoch":
            found = child_epoch(*map(Path, paths))
        elif kind == "read":
            found = child_read(Path(paths[0]))
        else:
            found = cpu_vae_speed(Path(paths[0]), int(paths[1]))
        print(json.dumps(found))
        return

    import torch

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    report = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "setup": {"resolution": RES, "vae": "tiny 16x AutoencoderKL (8/16/32/32/32), random weights",
                        "unet": "tiny preset at 4 x 4 x 4", "hflip": True, "shard_size": SHARD,
                        "batch_size": BATCH, "encoder": "kmer k=3, 4 segments", "manifest": FORMAT}}  # fmt: skip
    big = work / f"data-{args.images}"
    print(f"writing {args.images} images ...", flush=True)
    report["dataset_seconds"] = make_dataset(big, args.images)
    report["dataset_disk_bytes"] = du(big)
    small = work / f"data-{args.small}"
    subset(big, small, args.small)
    vae_dir = work / "vae"
    tiny_vae(vae_dir)
    report["cpu_preset_vae"] = run_child("speed", str(big), str(args.cpu_vae_sample))
    print("cpu preset VAE:", report["cpu_preset_vae"], flush=True)
    for n, data in ((args.small, small), (args.images, big)):
        cache = work / f"cache-{n}"
        build = run_child("build", str(data), str(vae_dir), str(cache))
        print(f"build {n}:", build, flush=True)
        epoch = run_child("epoch", str(data), str(vae_dir), str(cache), str(work / f"run-{n}"))
        print(f"epoch {n}:", epoch, flush=True)
        report[str(n)] = {"build": build, "epoch": epoch}
        if n == args.images:
            report["read"] = run_child("read", str(cache))
            print("read:", report["read"], flush=True)
        shutil.rmtree(cache)
        shutil.rmtree(work / f"run-{n}")
    report["total_seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()

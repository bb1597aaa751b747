"""Benchmark: import a 5,000,000-row BIOSCAN-5M-format metadata CSV with memory flat in the rows.

For each ``--rows`` size (default 50,000, 500,000 and 5,000,000) it writes a synthetic metadata CSV in
the official column order (``bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv``: 658-bp barcodes that differ row to row, 5% rows without a species label, the official partitions), imports it with
``import_bioscan5m`` in a child process and reports wall time, rows/s, the child's peak RSS
(``ru_maxrss``) and its RSS sampled from ``/proc`` every 0.25 s. Every row is kept as a record
(``bioscan_splits`` = every partition written, ``require_species = false``), so the importer really
streams all of them; ``require_image = false`` since the rows have no photos (each row's image path
is still looked up). ``import.format`` is the default ``auto``: TSV up to 50,000 records, Parquet in
row groups above that. Files are deleted after each size.

    .venv/bin/python bench/import_bioscan_5m.py                       # 50k, 500k, 5M
    .venv/bin/python bench/import_bioscan_5m.py --rows 200000 --out /tmp/r.json

Results go to ``bench/results/import_bioscan_5m.json`` (and a Markdown table on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = (
    "processid,sampleid,taxon,phylum,class,order,family,subfamily,genus,species,dna_bin,dna_barcode,"
    "country,province_state,coord-lat,coord-lon,image_measurement_value,area_fraction,scale_factor,"
    "inferred_ranks,split,index_bioscan_1M_insect,chunk"
)
PARTITIONS = ["pretrain"] * 2 + ["train"] * 12 + ["val", "test", "key_unseen", "val_unseen"] + ["test"] * 2
READ = sorted(set(PARTITIONS))
META = Path("bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv")

CHILD = """
import json, resource, sys, time
from phenogen.data.bioscan import import_bioscan5m
from phenogen.data.config import BuildConfig, ImportConfig
root, out, splits = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
icfg = ImportConfig(require_image=False, require_species=False, bioscan_splits=splits)
t0 = time.perf_counter()
ds, s = import_bioscan5m(root, out, icfg, BuildConfig())
dt = time.perf_counter() - t0
print(json.dumps({"rows": s.rows, "records": s.records, "format": ds.format, "seconds": dt,
                  "peak_held": s.peak_held, "skipped": s.skipped,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """``rows`` synthetic rows: 2,000 genera in 60 families, 8 species a genus, barcodes differing by row."""
    rng = random.Random(seed)
    pool = ["".join(rng.choice("ACGT") for _ in range(658)) for _ in range(2000)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1 << 20) as fh:
        fh.write(COLUMNS + "\n")
        for i in range(rows):
            g = rng.randrange(2000)
            species = "" if rng.random() < 0.05 else f"Genus{g} sp{rng.randrange(8)}"
            split = rng.choice(PARTITIONS)
            k = rng.randrange(640)
            barcode = f"{pool[g][:k]}{i:018d}".translate(_DIGITS) + pool[g][k + 18 :]  # 18 bases from i
            fh.write(
                f"BIOUG{i:08d}-22,CCDB-{i},{species or f'Genus{g}'},Arthropoda,Insecta,Diptera,Fam{g % 60},,"
                f"Genus{g},{species},BOLD:A{g:05d},{barcode},Canada,Ontario,43.5,-80.2,1234.0,0.05,1.0,0,"
                f"{split},,{format(i % 256, 'x') if split in ('pretrain', 'train') else ''}\n"
            )


_DIGITS = str.maketrans("0123456789", "ACGTACGTAC")


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def run_one(work: Path, rows: int) -> dict:
    root = work / f"r{rows}"
    meta = root / META
    t0 = time.perf_counter()
    make_csv(meta, rows)
    generated = time.perf_counter() - t0
    out = work / f"ds{rows}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(out), ",".join(READ)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    samples: list[tuple[float, float]] = []
    while child.poll() is None:
        rss = _rss_mb(child.pid)
        if rss is not None:
            samples.append((time.perf_counter() - t0, rss))
        time.sleep(0.25)
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - t0
    if child.returncode:
        raise SystemExit(f"import of {rows:,} rows failed:\n{stderr[-3000:]}")
    r = json.loads(stdout.strip().splitlines()[-1])
    step = max(1, len(samples) // 20)
    r.update(
        csv_mb=round(meta.stat().st_size / 2**20, 1),
        dataset_mb=round(_du_mb(out), 1),
        manifest_mb=round(sum(p.stat().st_size for p in out.glob("manifest.*")) / 2**20, 1),
        csv_seconds=round(generated, 1),
        child_wall_seconds=round(wall, 1),
        rows_per_s=round(r["rows"] / r["seconds"]),
        sampled_peak_rss_mb=round(max((s for _, s in samples), default=0.0), 1),
        rss_samples_mb=[[round(t, 1), round(s, 1)] for t, s in samples[::step]],
    )
    r["seconds"] = round(r["seconds"], 1)
    r["peak_rss_mb"] = round(r["peak_rss_mb"], 1)
    shutil.rmtree(root)
    shutil.rmtree(out)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows of a synthetic CSV (repeatable)")
    parser.add_argument("--workdir", default=None, help="where the CSVs and datasets go (deleted after)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "import_bioscan_5m.json"))
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bioscan5m-bench-"))
    results = []
    print("| rows | records | manifest | import s | rows/s | peak RSS (ru_maxrss) | CSV | dataset on disk |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for rows in args.rows or [50_000, 500_000, 5_000_000]:
        r = run_one(work, rows)
        results.append(r)
        print(
            f"| {r['rows']:,} | {r['records']:,} | {r['format']} | {r['seconds']:.1f} | {r['rows_per_s']:,} "
            f"| {r['peak_rss_mb']:,.0f} MB | {r['csv_mb']:,.0f} MB | {r['dataset_mb']:,.0f} MB |",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "benchmark": "bench/import_bioscan_5m.py",
                "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                "config": "ImportConfig(require_image=False, require_species=False, bioscan_splits=every partition); "
                "format auto (parquet above 50,000 records), row_group_size 32,768",
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()

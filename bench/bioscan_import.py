"""Benchmark: stream a synthetic BIOSCAN-5M-format metadata CSV through ``import_bioscan5m``.

Writes a CSV of ``--rows`` rows (official column order, 658-bp barcodes, ~5% without a species
label, the official partitions), then imports it in a child process and reports rows/s and the
child's peak RSS. Run it at two sizes to see that memory does not grow with the number of rows:

    .venv/bin/python bench/bioscan_import.py --rows 100000 --rows 1000000

Memory is bounded by ``import.max_records`` (records kept), not by the rows read.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
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
SPLITS = ["pretrain"] * 2 + ["train"] * 6 + ["val", "test"]

CHILD = """
import json, sys, time, resource
from phenogen.data.bioscan import import_bioscan5m
from phenogen.data.config import BuildConfig, ImportConfig
root, out, max_records = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
ds, s = import_bioscan5m(root, out, ImportConfig(require_image=False, max_records=max_records), BuildConfig())
dt = time.perf_counter() - t0
print(json.dumps({"rows": s.rows, "records": s.records, "seconds": dt,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    pool = ["".join(rng.choice("ACGT") for _ in range(658)) for _ in range(500)]
    genera = [f"Genus{g}" for g in range(800)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fh.write(COLUMNS + "\n")
        for i in range(rows):
            g = rng.randrange(len(genera))
            species = "" if rng.random() < 0.05 else f"{genera[g]} sp{rng.randrange(8)}"
            split = rng.choice(SPLITS)
            fh.write(
                f"BIOUG{i:08d}-22,CCDB-{i},{species or genera[g]},Arthropoda,Insecta,Diptera,Fam{g % 60},,"
                f"{genera[g]},{species},BOLD:A{g:05d},{pool[i % 500]},Canada,Ontario,43.5,-80.2,1234.0,0.05,1.0,0,"
                f"{split},,{format(i % 16, 'x') if split == 'train' else ''}\n"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows of the synthetic CSV (repeatable)")
    parser.add_argument("--max-records", type=int, default=50_000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bioscan-bench-"))
    for rows in args.rows or [1_000_000]:
        root = work / f"r{rows}"
        meta = root / "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv"
        t0 = time.perf_counter()
        make_csv(meta, rows)
        gen = time.perf_counter() - t0
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(root), str(work / f"ds{rows}"), str(args.max_records)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        size_mb = meta.stat().st_size / 2**20
        print(
            f"| {rows:,} | {size_mb:,.0f} MB | {r['records']:,} | {r['seconds']:.1f} s | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['peak_rss_mb']:,.0f} MB |  (CSV written in {gen:.0f} s)"
        )
        meta.unlink()
    _ = resource  # the child measures its own peak RSS


if __name__ == "__main__":
    main()

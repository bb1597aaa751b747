"""Painting cost of best-of-K, side by side in one run: images/s and seconds per kept portrait for best_of 1 and 3,
and best_of 3 with the candidates of 16 records in one call (the layout before calls were split by best_of).

    .venv/bin/python bench/bench_best_of.py --model runs/demo/image/pipeline --fasta runs/demo/targets.fasta
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--fasta", type=Path, required=True)
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--n", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from phenogen.diffusion.generate import paint
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.dna.seqio import read_fasta

    torch.set_num_threads(2)
    pipe = load_pipeline(args.model)
    records = [(r.id, r.sequence) for r in read_fasta(args.fasta, policy="mask").records][: args.records]
    paint(pipe, records[:1], images_per_sequence=1, best_of=1)  # warm-up: first-call allocations not timed
    rows = []
    for label, best, batch in (
        ("best_of 1", 1, 16),
        ("best_of 3", 3, 16),
        ("best_of 3, 16 records per call", 3, 48),
    ):
        t0 = time.perf_counter()
        paint(pipe, records, images_per_sequence=args.n, best_of=best, batch_size=batch)
        s = time.perf_counter() - t0
        rows.append((label, s, len(records) * args.n * best / s))
    base = rows[0][1]
    print(
        f"{len(records)} records x {args.n} portraits, {pipe.generation_settings.scheduler} {pipe.generation_settings.steps} steps"
    )
    for label, s, ips in rows:
        print(f"| {label} | {s:.1f} s | {ips:.1f} img/s denoised | {s / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Can a portrait be named as its species at all? Re-score finished demo runs with identification by traits.

For each run: ``phenogen evaluate`` with the run's own probe (so the trait RMSE rows are the run's), then, per
split, the retrieval model's top-1 (``top1``: DNA → image, a CLIP-style model trained on the training species
only) beside identification from the true trait table (``top1_traits``: is the probe's reading of the picture
nearer its own species' true traits than any other candidate's?) for the generated portraits, the closest
relative's photos (``nearest``), the oracle vector (the Brownian-motion expectation from the true tree and the
training species' true traits: the best a reading of the DNA through its relatives can do), that vector
rendered, and the species' own photos (``truth``).

    .venv/bin/python bench/identification_check.py --run runs/e0 runs/s1 --out bench/results/identification_check.json

Measured on seeds 0-4 (BENCHMARKS.md, "Can a held-out portrait be named?"): held-out species' own photos are
named 17-68 % of the time from the trait table, the oracle vector 0-10 % — so a held-out top-1 of 25 % is out
of reach for any reading of the barcode through its relatives.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _run_eval import score_with_run_probe  # noqa: E402

ROWS = ("generated", "nearest", "oracle", "oracle_render", "truth")
SPLITS = ("train", "heldout", "extinct", "ancestor")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run",
        required=True,
        nargs="+",
        type=Path,
        help="demo runs (RUN/data, RUN/generated, RUN/eval/probe)",
    )
    ap.add_argument("--out", type=Path, help="write the table here (JSON)")
    args = ap.parse_args(argv)
    for run in args.run:
        missing = [p for p in ("data", "generated", "eval/probe") if not (run / p).exists()]
        if missing:
            print(f"{run}: not a finished demo run (no {', '.join(missing)})", file=sys.stderr)
            return 2
    result = {}
    for run in args.run:
        splits = [s for s in SPLITS if s in json.loads((run / "eval" / "metrics.json").read_text())["splits"]]
        m = score_with_run_probe(run, run / "generated", run / "eval_identification", splits)
        block = {"n_candidates": m["identification"]["n_candidates"], "note": m["identification"]["note"]}
        print(
            f"{run}: {block['n_candidates']} candidate species (chance top-1 {1 / block['n_candidates']:.1%})"
        )
        print(f"  {'split':<9} {'row':<14} {'trait RMSE':>10} {'top-1':>6} {'named':>6} {'named top-5':>11}")
        for split in splits:
            rows = m["splits"][split]["methods"]
            block[split] = {
                r: {k: rows[r][k] for k in ("trait_rmse", "top1", "top1_traits", "top5_traits")} for r in ROWS
            }
            for r in ROWS:
                v = block[split][r]
                top1 = "—" if v["top1"] is None else f"{v['top1']:.0%}"
                named = "—" if v["top1_traits"] is None else f"{v['top1_traits']:.0%}"
                named5 = "—" if v["top5_traits"] is None else f"{v['top5_traits']:.0%}"
                print(f"  {split:<9} {r:<14} {v['trait_rmse']:>10.3f} {top1:>6} {named:>6} {named5:>11}")
        result[str(run)] = block
    if args.out:
        from phenogen.fsio import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

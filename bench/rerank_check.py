"""Best-of-K portraits: paint K × n candidates per target, keep the n a clade-free reader finds closest to the caption.

The reader is a trait probe trained only on renders of random birds (the image prior's own data: no clade, no
tree, no barcode), so choosing among candidates with it uses nothing the demo's yardstick knows. The kept
portraits are scored with the run's own probe beside the first n candidates (the demo's portraits, same noise);
``--render-probe`` also with probe B (random renders only, other seed, width and renders than the reader's), and
``--photo-probe`` with a probe of the clade's training photos only (shares nothing with the reader).

    .venv/bin/python bench/rerank_check.py --run runs/s1 --k 1 2 4 --photo-probe --render-probe --out runs/s1/rerank

Writes ``OUT/k{K}/generated`` and ``OUT/k{K}/eval{,_B,_photos}/metrics.json`` and ``OUT/rerank.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _run_eval import score_with_run_probe

SPLITS = ["train", "heldout", "extinct", "ancestor"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--n", type=int, default=8, help="portraits kept per target")
    ap.add_argument("--reader-renders", type=int, default=6000)
    ap.add_argument("--reader-epochs", type=int, default=20)
    ap.add_argument("--reader-seed", type=int, default=11)
    ap.add_argument(
        "--photo-probe", action="store_true", help="also score with a probe of the clade's photos only"
    )
    ap.add_argument("--render-probe", action="store_true",
                    help="also score with a probe of random renders only (probe B: other seed, width and renders)")  # fmt: skip
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from phenogen.diffusion.generate import paint, read_captions, write_generated
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.diffusion.reader import caption_distance, load_reader, save_reader, train_reader
    from phenogen.dna.seqio import read_fasta

    torch.set_num_threads(2)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.run / "image" / "pipeline")
    names = list(pipe.conditioner.caption_names)
    reader_dir = out / "reader"
    if (reader_dir / "probe.json").exists():
        reader = load_reader(reader_dir)
    else:
        t0 = time.perf_counter()
        reader = train_reader(names, n=args.reader_renders, epochs=args.reader_epochs,
                              seed=args.reader_seed, progress=print)  # fmt: skip
        save_reader(reader, reader_dir)
        print(f"reader trained in {time.perf_counter() - t0:.0f} s")
    records = [(r.id, r.sequence) for r in read_fasta(args.run / "targets.fasta", policy="mask").records]
    captions = read_captions(args.run / "ancestors" / "captions.tsv", names)
    kmax = max(args.k) * args.n
    t0 = time.perf_counter()
    painted, values = paint(pipe, records, images_per_sequence=kmax, captions=captions, batch_size=16)
    paint_s = time.perf_counter() - t0
    print(f"painted {len(painted)} candidates in {paint_s:.0f} s")
    by_rec: dict[str, list] = {}
    for rid, k, im in painted:
        by_rec.setdefault(rid, []).append((k, im))
    idx = {rid: i for i, (rid, _) in enumerate(records)}
    result: dict = {"paint_seconds": paint_s, "candidates": kmax, "k": {}}
    for K in args.k:
        kept = []
        for rid, _ in records:
            cands = by_rec[rid][: K * args.n]
            d = caption_distance(reader, [im for _, im in cands], values[idx[rid]])
            order = np.argsort(d, kind="stable")[: args.n]
            kept += [(rid, j, cands[int(i)][1]) for j, i in enumerate(sorted(order))]
        gdir = out / f"k{K}" / "generated"
        write_generated(gdir, records, kept, args.n)
        m = score_with_run_probe(args.run, gdir, out / f"k{K}" / "eval", SPLITS)
        row = {s: m["splits"][s]["methods"]["generated"]["trait_rmse"] for s in SPLITS if s in m["splits"]}
        if args.photo_probe:
            subprocess.run(
                [sys.executable, "-m", "phenogen.cli", "evaluate", "--data", str(args.run / "data"),
                 "--generated", str(gdir), "--out", str(out / f"k{K}" / "eval_photos"), "--set",
                 f"evaluate.splits={json.dumps(SPLITS)}", "--set", "evaluate.probe_prior_renders=0"],
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            mp = json.loads((out / f"k{K}" / "eval_photos" / "metrics.json").read_text())
            row["photo_probe"] = {
                s: mp["splits"][s]["methods"]["generated"]["trait_rmse"] for s in SPLITS if s in mp["splits"]
            }
        if args.render_probe:
            b_dir = out / "probeB"
            if not (b_dir / "probe.json").is_file():
                _render_probe(args.run, b_dir)
            mb = score_with_run_probe(args.run, gdir, out / f"k{K}" / "eval_B", SPLITS, probe=b_dir)
            row["render_probe"] = {
                s: mb["splits"][s]["methods"]["generated"]["trait_rmse"] for s in SPLITS if s in mb["splits"]
            }
        result["k"][K] = row
        print(K, json.dumps(row))
    (out / "rerank.json").write_text(json.dumps(result, indent=1))
    return 0


def _render_probe(run: Path, out: Path) -> None:
    """Probe B: the run's probe's traits and scaling, trained on 8,000 renders of random birds only (seed 99, width
    48): a yardstick that shares no renders, seed or width with the reader."""
    import numpy as np

    from phenogen.evaluate.probe import ProbeSpec, prior_renders, save_probe, train_probe

    spec = json.loads((run / "eval" / "probe" / "probe.json").read_text())["spec"] | {
        "width": 48,
        "features": 96,
    }
    spec = ProbeSpec(**spec)
    rng = np.random.default_rng([99, 3])
    x, t = prior_renders(spec.continuous, spec.discrete, 8000, 64, rng, sd=1.2, out_size=32)
    probe, history = train_probe(x, t, spec, epochs=25, seed=99, progress=print)
    save_probe(probe, out, history)


if __name__ == "__main__":
    sys.exit(main())

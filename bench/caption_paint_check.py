"""Re-paint a demo run's targets at the same noise, changing how the caption is painted: binary traits, guidance.

The tree reading (Brownian motion over the training species' written captions) writes the binary traits
(eye stripe, wing bars, breast spots) as fractions — 0.58 of an eye stripe for an ancestor — while the bird
prior only ever saw 0 or 1. This re-paints a demo run's targets **at the same noise** (noise is keyed by record
id) with the run's own pipeline, its stored settings (best of K included) and its probe, changing only the
binary caption values (``--binary``) and the guidance scale (``--guidance``; default: the stored one):

``written``   the captions as the demo paints them (reproduces the demo's numbers);
``clipped``   binary values clipped to [0, 1];
``committed`` each binary value set to its more probable state (1 where ≥ 0.5, else 0).

    .venv/bin/python bench/caption_paint_check.py --run runs/s1 --out runs/s1/discrete
    .venv/bin/python bench/caption_paint_check.py --run runs/s1 --binary written --guidance 2 3 4 5 --out runs/s1/cfg

Writes ``OUT/{mode}_g{G}/generated``, ``OUT/{mode}_g{G}/eval/metrics.json`` and ``OUT/paint_check.json``
(continuous trait RMSE per split with its standard error, each binary trait's √Brier and the binary calls'
accuracy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _run_eval import score_with_run_probe

SPLITS = ["train", "heldout", "extinct", "ancestor"]
MODES = ("written", "clipped", "committed")


def transform(values: list[float], binary: list[int], mode: str) -> list[float]:
    """One caption with its binary entries (indices ``binary``) changed as ``mode`` says."""
    out = list(values)
    for i in binary:
        if mode == "clipped":
            out[i] = min(1.0, max(0.0, out[i]))
        elif mode == "committed":
            out[i] = 1.0 if out[i] >= 0.5 else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `phenogen demo` output directory")
    ap.add_argument("--binary", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--guidance", type=float, nargs="+", default=[None])
    ap.add_argument("--n", type=int, default=8, help="portraits per target")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    from phenogen.diffusion.generate import paint, read_captions, write_generated
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.dna.seqio import read_fasta
    from phenogen.sim.traitspec import DISCRETE

    torch.set_num_threads(2)
    pipe = load_pipeline(args.run / "image" / "pipeline")
    names = list(pipe.conditioner.caption_names)
    binary = [i for i, n in enumerate(names) if n in DISCRETE]
    records = [(r.id, r.sequence) for r in read_fasta(args.run / "targets.fasta", policy="mask").records]
    written = read_captions(args.run / "ancestors" / "captions.tsv", names)
    stored = pipe.generation_settings
    result: dict = {"run": str(args.run), "settings": stored.to_dict(), "rows": {}}
    captions = {mode: {rid: transform(v, binary, mode) for rid, v in written.items()} for mode in args.binary}
    for mode, guidance in [(b, g) for b in args.binary for g in args.guidance]:
        guidance = stored.guidance_scale if guidance is None else guidance
        tag = f"{mode}_g{guidance:g}"
        t0 = time.perf_counter()
        painted, _ = paint(pipe, records, images_per_sequence=args.n, captions=captions[mode], batch_size=16,
                           guidance_scale=guidance)  # fmt: skip
        gdir = args.out / tag / "generated"
        write_generated(gdir, records, painted, args.n)
        metrics = score_with_run_probe(args.run, gdir, args.out / tag / "eval", SPLITS)
        row = {}
        for s in SPLITS:
            gen = metrics["splits"].get(s, {}).get("methods", {}).get("generated")
            if gen:
                row[s] = {
                    "trait_rmse": gen["trait_rmse"],
                    "se": gen["trait_rmse_se"],
                    "binary_sqrt_brier": {
                        n: gen["per_trait_rmse"][n] for n in DISCRETE if n in gen["per_trait_rmse"]
                    },
                    "binary_accuracy": gen["discrete_accuracy"],
                }
        print(tag, json.dumps({s: round(r["trait_rmse"], 3) for s, r in row.items()}), flush=True)
        print("   binary acc", json.dumps({s: r["binary_accuracy"] for s, r in row.items()}))
        result["rows"][tag] = {**row, "seconds": time.perf_counter() - t0}
    (args.out / "paint_check.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

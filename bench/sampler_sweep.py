"""Sampling cost at equal quality: trait RMSE per split for each (scheduler, steps) against 50-step DDIM.

Paints a demo run's targets again with each sampler and step count — the same model, captions, seeds and
portraits per target as the run's own ``generated/`` — scores each with the run's probe, and times it.
A setting *keeps quality* when every split's trait RMSE is within one standard error (the larger of the
two rows' ``trait_rmse_se``) of the thesis setting, 50-step DDIM. Prints one table and writes
``OUT/sweep.json``; the fastest setting that keeps quality is named at the end.

    .venv/bin/python bench/sampler_sweep.py --run runs/demo --out runs/demo/sampler_sweep \\
        --settings ddim:50 ddim:25 dpm++2m-karras:25 dpm++2m-karras:15 dpm++2m-karras:10 unipc:15 unipc:10
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from _run_eval import score_with_run_probe


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a `phenogen demo` output directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--settings", nargs="+", default=["ddim:50", "dpm++2m-karras:25", "dpm++2m-karras:15",
                                                       "dpm++2m-karras:10", "unipc:15", "unipc:10"])  # fmt: skip
    ap.add_argument("--guidance", type=float, help="guidance scale (default: the run's)")
    args = ap.parse_args(argv)

    import torch

    from phenogen.diffusion.generate import generate_images, read_captions
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.dna.seqio import read_fasta

    pipe = load_pipeline(args.run / "image" / "pipeline")
    records = [(r.id.split()[0], r.sequence) for r in read_fasta(args.run / "targets.fasta").records]
    gen_cfg = json.loads((args.run / "generated" / "config.json").read_text(encoding="utf-8"))
    g = gen_cfg.get("generate", gen_cfg)
    captions_file = args.run / "generated" / "captions.tsv"
    captions = (
        read_captions(captions_file, pipe.conditioner.caption_names) if captions_file.is_file() else None
    )
    eval_cfg = json.loads((args.run / "eval" / "config.json").read_text(encoding="utf-8"))
    splits = eval_cfg.get("evaluate", {}).get("splits", ["heldout", "extinct", "ancestor"])
    guidance = args.guidance if args.guidance is not None else float(g.get("guidance_scale", 3.0))
    n_per = int(g.get("images_per_sequence", 8))
    result: dict = {"run": str(args.run), "guidance": guidance, "images_per_target": n_per,
                    "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "settings": {}}  # fmt: skip
    for setting in args.settings:
        scheduler, steps = setting.rsplit(":", 1)
        out = args.out / setting.replace(":", "_").replace("+", "p")
        t0 = time.perf_counter()
        generate_images(pipe, records, out / "generated", images_per_sequence=n_per, steps=int(steps),
                        guidance_scale=guidance, scheduler=scheduler, seed=int(g.get("seed", 0)),
                        captions=captions)  # fmt: skip
        seconds = time.perf_counter() - t0
        metrics = score_with_run_probe(args.run, out / "generated", out / "eval", splits)
        rows = {s: b["methods"]["generated"] for s, b in metrics["splits"].items()}
        result["settings"][setting] = {
            "seconds": seconds,
            "images": len(records) * n_per,
            "splits": {s: {"trait_rmse": r["trait_rmse"], "trait_rmse_se": r.get("trait_rmse_se")} for s, r in rows.items()},
        }  # fmt: skip
        print(f"{setting:22s} {seconds:7.1f} s  " + "  ".join(
            f"{s}={r['trait_rmse']:.3f}±{r.get('trait_rmse_se') or 0:.3f}" for s, r in rows.items()), flush=True)  # fmt: skip
    ref_key = "ddim:50" if "ddim:50" in result["settings"] else args.settings[0]
    ref = result["settings"][ref_key]
    best = None
    for setting, row in result["settings"].items():
        keeps = all(
            abs(v["trait_rmse"] - ref["splits"][s]["trait_rmse"])
            <= max(v["trait_rmse_se"] or 0, ref["splits"][s]["trait_rmse_se"] or 0)
            for s, v in row["splits"].items()
        )
        row["keeps_quality"] = keeps
        row["speed_vs_reference"] = ref["seconds"] / row["seconds"]
        if keeps and (best is None or row["seconds"] < result["settings"][best]["seconds"]):
            best = setting
    result["reference"], result["fastest_keeping_quality"] = ref_key, best
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for setting, row in result["settings"].items():
        print(
            f"{setting:22s} {row['speed_vs_reference']:5.2f}x {ref_key}  keeps quality: {row['keeps_quality']}"
        )
    print(f"fastest setting within one standard error of {ref_key} on every split: {best}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scan a trained run's written captions for hues stuck in the wrong minimum (what ``image.caption_scan_at`` does
a third of the way through training, here on the finished pipeline).

For every training species with photos: the caption its barcodes write (their mean), scanned value by value
along ``--traits`` through the pipeline's caption decoder on ``--images`` of its photos
(:func:`phenogen.diffusion.invert.scan_captions`, the central 32-px window, ``--margin`` relative). Prints and
writes the moves: which species, which value, from where to where, the decoder's loss before and after, and —
where the dataset has true traits (a simulated clade) — the true value, for evaluation only.

    .venv/bin/python bench/caption_scan_check.py --run runs/e3 --out runs/e3/caption_scan_check.json

Seed 3 before the scan was the default: sp_021's wing hue, written -0.50 (ochre), true 3.38 (slate blue),
moves to 2.48 (decoder loss 0.252 -> 0.213); seeds 0, 1, 2 and 4: no move (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a demo run (RUN/image/pipeline, RUN/data)")
    ap.add_argument("--traits", default="body_hue,wing_hue,head_hue", help="caption values to scan")
    ap.add_argument("--images", type=int, default=4, help="photos of each species decoded")
    ap.add_argument("--margin", type=float, default=0.05, help="relative loss drop a move needs")
    ap.add_argument("--crop", type=int, default=32, help="central window decoded (0 = whole photos)")
    ap.add_argument("--out", type=Path, help="write the moves here (JSON)")
    args = ap.parse_args(argv)

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.components import vae_scale
    from phenogen.diffusion.invert import scan_captions
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.diffusion.train import scan_trait_indices
    from phenogen.diffusion.vae import encode_latent_dist, load_images
    from phenogen.errors import ConfigError
    from phenogen.fsio import atomic_write_text

    torch.set_num_threads(2)
    pipe = load_pipeline(args.run / "image" / "pipeline")
    cond, decoder = pipe.conditioner, pipe.caption_decoder
    if decoder is None or cond.config.head != "caption":
        print(
            f"{args.run}: the pipeline has no caption head or caption decoder; nothing to scan",
            file=sys.stderr,
        )
        return 2
    names = cond.caption_names
    try:
        indices = scan_trait_indices(args.traits, names, setting="--traits")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    ds = load_dataset(args.run / "data")
    records = [r for r in ds.records("train") if r.images]
    species = sorted({r.species for r in records})
    written = cond.caption_matrix([r.sequence for r in records])
    start = np.stack([written[[i for i, r in enumerate(records) if r.species == s]].mean(0) for s in species])
    paths, groups = [], []
    for g, s in enumerate(species):
        own = [p for r in records if r.species == s for p in r.images]
        paths += [own[int(i)] for i in np.linspace(0, len(own) - 1, min(len(own), args.images)).round()]
        groups += [g] * min(len(own), args.images)
    side = int(pipe.unet.config.sample_size) * vae_scale(pipe.vae)
    images = load_images([ds.image_path(p) for p in paths], side)
    with torch.no_grad():
        latents, _ = encode_latent_dist(pipe.vae.float(), images)
    t0 = time.perf_counter()
    _, moves = scan_captions(decoder.float(), latents, images, torch.tensor(groups), start,
                             indices, margin=args.margin, crop=args.crop)  # fmt: skip
    seconds = time.perf_counter() - t0

    def truth(species_name: str, trait: str) -> float | None:
        values = [r.traits.get(trait) for r in records if r.species == species_name and r.traits]
        values = [float(v) for v in values if v is not None]
        return float(np.mean(values)) if values else None

    rows = [{"species": species[m.group], "trait": names[m.trait], "before": round(m.before, 4),
             "after": round(m.after, 4), "loss_before": round(m.loss_before, 5), "loss_after": round(m.loss_after, 5),
             "true": truth(species[m.group], names[m.trait])} for m in moves]  # fmt: skip
    print(f"{args.run}: {len(rows)} value(s) of {len(species)} species moved ({seconds:.0f} s)")
    for row in rows:
        true = f", true {row['true']:.2f}" if row["true"] is not None else ""
        print(f"  {row['species']} {row['trait']}: {row['before']:.2f} -> {row['after']:.2f}{true} "
              f"(decoder loss {row['loss_before']:.3f} -> {row['loss_after']:.3f})")  # fmt: skip
    if args.out:
        atomic_write_text(args.out, json.dumps({"run": str(args.run), "species": len(species), "seconds": round(seconds, 1),
                                        "settings": vars(args) | {"run": str(args.run), "out": str(args.out)},
                                        "moves": rows}, indent=1) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``phenogen generate --model DIR --fasta FILE --out DIR``: portraits for the barcodes of a FASTA file.

Settings come from the ``[generate]`` section; ``--n``, ``--steps``, ``--guidance``, ``--scheduler``,
``--seed`` override it. ``--captions FILE.tsv`` (a ``caption``-head model: ``record_id`` and one
column per caption value) paints those records from the given caption instead of their barcode —
e.g. ancestral captions reconstructed on a tree. Writes ``OUT/images/<record_id>_<k>.png``, ``OUT/generated.tsv``,
``OUT/grid.png`` and the resolved settings in ``OUT/config.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, type=Path, help="pipeline directory (train-image OUT or OUT/pipeline)"
    )
    parser.add_argument(
        "--fasta", required=True, type=Path, help="FASTA file of barcodes (ids name the images)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n", type=int, help="images per sequence (generate.images_per_sequence)")
    parser.add_argument("--steps", type=int, help="denoising steps (generate.steps)")
    parser.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (generate.guidance_scale)"
    )
    parser.add_argument(
        "--scheduler", help="ddim, ddpm, dpm++2m-karras, unipc, euler or euler-a (generate.scheduler)"
    )
    parser.add_argument("--seed", type=int, help="random seed (generate.seed)")
    parser.add_argument("--batch-size", type=int, help="sequences denoised together (generate.batch_size)")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--captions",
        type=Path,
        help="TSV (record_id + one column per caption value): paint these records from the caption "
        "instead of their barcode (caption-head models)",
    )


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from phenogen.config import load_sections, save_resolved
    from phenogen.diffusion.config import GenerateConfig
    from phenogen.diffusion.generate import generate_images, read_captions
    from phenogen.diffusion.pipeline import load_pipeline
    from phenogen.dna.seqio import read_fasta

    flags = {"n": "images_per_sequence", "steps": "steps", "guidance": "guidance_scale",
             "scheduler": "scheduler", "seed": "seed", "batch_size": "batch_size"}  # fmt: skip
    overrides = list(args.set)
    overrides += [f"generate.{key}={json.dumps(getattr(args, flag))}" for flag, key in flags.items()
                  if getattr(args, flag) is not None]  # fmt: skip
    cfg: GenerateConfig = load_sections({"generate": GenerateConfig}, args.config, overrides)["generate"]
    fasta = read_fasta(args.fasta, policy=cfg.policy, allow_gaps=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_pipeline(args.model, device=device)
    save_resolved({"generate": cfg}, args.out, command="generate", model=str(args.model), fasta=str(args.fasta), captions=str(args.captions) if args.captions else None,
                  device=device, n_records=len(fasta.records), dropped=fasta.dropped)  # fmt: skip
    captions = None
    if args.captions is not None:
        if pipe.conditioner.config.head != "caption":
            from phenogen.errors import ConfigError

            raise ConfigError(f"--captions needs a model with the caption head; {args.model} has "
                              f"the '{pipe.conditioner.config.head}' head")  # fmt: skip
        captions = read_captions(args.captions, pipe.conditioner.caption_names)
    rows = generate_images(
        pipe, [(r.id, r.sequence) for r in fasta.records], args.out, images_per_sequence=cfg.images_per_sequence,
        steps=cfg.steps, guidance_scale=cfg.guidance_scale, scheduler=cfg.scheduler, seed=cfg.seed,
        batch_size=cfg.batch_size, progress=True, captions=captions,
    )  # fmt: skip
    print(f"wrote {len(rows)} images for {len(fasta.records)} sequences to {args.out}", file=sys.stderr)
    return 0

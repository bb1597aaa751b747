"""``phenogen generate --model DIR --fasta FILE --out DIR``: portraits for the barcodes of a FASTA file.

Settings come from the ``[generate]`` section; ``--n``, ``--steps``, ``--guidance``, ``--scheduler``,
``--seed`` override it. ``--captions FILE.tsv`` (a ``caption``-head model: ``record_id`` and one
column per caption value) paints those records from the given caption instead of their barcode —
e.g. ancestral captions reconstructed on a tree. Writes ``OUT/images/<record_id>_<k>.png``, ``OUT/generated.tsv``,
``OUT/grid.png`` and the resolved settings in ``OUT/config.json``.

Every input is checked before a model is loaded (seconds, not minutes): the FASTA (no gaps, no all-N
record, no record shorter than the model's encoder needs — see
:func:`~phenogen.diffusion.generate.min_sequence_length`), the model's files, ``--captions``, ``--out``
(a non-empty directory only with ``--force``, and only an earlier phenogen output).
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
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def check_device(device: str | None) -> str:
    """The torch device to run on; a malformed or absent one is an :class:`InputError` up front."""
    import torch

    from phenogen.errors import InputError

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise InputError(f"--device {device!r}: not a torch device; use cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    index = torch.device(device).index
    if kind == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"--device {device}: unsupported device type {kind!r}; use cpu or cuda")
    return device


def run(args: argparse.Namespace) -> int:
    import json

    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.diffusion.config import GenerateConfig
    from phenogen.diffusion.generate import (
        check_lm_positions,
        check_records,
        generate_images,
        min_sequence_length,
        read_captions,
    )
    from phenogen.dna.seqio import read_fasta
    from phenogen.errors import CheckpointError, ConfigError, InputError
    from phenogen.fsio import check_output_dir, prepare_output_dir, read_json

    flags = {"n": "images_per_sequence", "steps": "steps", "guidance": "guidance_scale",
             "scheduler": "scheduler", "seed": "seed", "batch_size": "batch_size"}  # fmt: skip
    overrides = list(args.set)
    overrides += [f"generate.{key}={json.dumps(getattr(args, flag))}" for flag, key in flags.items()
                  if getattr(args, flag) is not None]  # fmt: skip
    cfg: GenerateConfig = load_sections({"generate": GenerateConfig}, args.config, overrides)["generate"]
    # every input checked in seconds, before a model is loaded: the output, the FASTA, the model's files
    check_output_dir(args.out, force=args.force)
    check_inputs_outside(args.out, args.force, model=args.model, fasta=args.fasta, captions=args.captions)
    fasta = read_fasta(args.fasta, policy=cfg.policy, allow_gaps=True)  # gaps: refused below, by record
    records = [(r.id, r.sequence) for r in fasta.records]
    check_records(records, args.fasta)  # before torch is even imported

    from phenogen.diffusion.pipeline import check_pipeline_dir, load_pipeline

    device = check_device(args.device)
    model_dir, _ = check_pipeline_dir(args.model)
    cond = read_json(model_dir / "conditioner" / "config.json", "conditioner config", error=CheckpointError)
    check_records(records, args.fasta, min_sequence_length(cond))
    check_lm_positions(records, args.fasta, cond)
    schedule = read_json(
        model_dir / "scheduler" / "scheduler_config.json", "scheduler config", error=CheckpointError
    )
    trained = schedule.get("num_train_timesteps", 1000)
    if isinstance(trained, int) and cfg.steps > trained:
        raise ConfigError(f"--steps / generate.steps = {cfg.steps}: more than the {trained} noise levels the model "
                          "was trained on; use at most that many (15-50 is usual)")  # fmt: skip
    captions = None
    if args.captions is not None:
        head = cond.get("head", "tokens")
        if head != "caption":
            raise ConfigError(f"--captions needs a model with the caption head; {args.model} has "
                              f"the '{head}' head")  # fmt: skip
        traits, n = cond.get("caption_traits"), cond.get("caption_n")
        names = [str(t) for t in traits] if isinstance(traits, list) and traits else []
        names = names or [f"v{i}" for i in range(n if isinstance(n, int) else 0)]
        captions = read_captions(args.captions, names)
        unknown = sorted(set(captions) - {rid for rid, _ in records})
        if unknown:
            raise InputError(f"--captions {args.captions}: captions for record(s) {', '.join(unknown[:5])} "
                             f"that are not among the records of {args.fasta}")  # fmt: skip

    pipe = load_pipeline(model_dir, device=device)
    prepare_output_dir(args.out, "generate", force=args.force)
    save_resolved({"generate": cfg}, args.out, command="generate", model=str(args.model), fasta=str(args.fasta), captions=str(args.captions) if args.captions else None,
                  device=device, n_records=len(fasta.records), dropped=fasta.dropped)  # fmt: skip
    rows = generate_images(
        pipe, records, args.out, images_per_sequence=cfg.images_per_sequence,
        steps=cfg.steps, guidance_scale=cfg.guidance_scale, scheduler=cfg.scheduler, seed=cfg.seed,
        batch_size=cfg.batch_size, progress=True, captions=captions,
    )  # fmt: skip
    print(f"wrote {len(rows)} images for {len(fasta.records)} sequences to {args.out}", file=sys.stderr)
    return 0

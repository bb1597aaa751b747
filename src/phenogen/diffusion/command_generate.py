"""``phenogen generate --model DIR (--fasta FILE | --sequence ACGT…) --out DIR``: portraits for barcodes.

Settings come from the ``[generate]`` section; ``--n``, ``--steps``, ``--guidance``, ``--scheduler``,
``--seed`` override it. Scheduler, steps and guidance left unset are the ones stored with the pipeline
(``generation_config.json``, the settings it was tuned with; :mod:`phenogen.diffusion.settings`).
``--sequence`` paints one barcode given on the command line (``--id`` names it). The noise of image
``k`` of a record is keyed by the seed, the record id and ``k``; ``--shared-noise`` gives every record
the same noise. ``--captions FILE.tsv`` (a ``caption``-head model: ``record_id`` and one
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
        "--model",
        required=True,
        type=Path,
        help="pipeline directory (train-image OUT or OUT/pipeline) or a train-generator OUT",
    )
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--fasta", type=Path, help="FASTA file of barcodes (ids name the images)")
    given.add_argument("--sequence", metavar="ACGT…", help="one barcode, given on the command line")
    parser.add_argument("--id", default="sequence", help="--sequence: the record id (default: sequence)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n", type=int, help="images per sequence (generate.images_per_sequence)")
    parser.add_argument("--steps", type=int, help="denoising steps (generate.steps)")
    parser.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (generate.guidance_scale)"
    )
    parser.add_argument(
        "--scheduler", help="ddim, ddpm, dpm++2m-karras, unipc, euler or euler-a (generate.scheduler)"
    )
    parser.add_argument(
        "--best-of",
        type=int,
        help="candidates painted per kept portrait, the one the prior's reader finds closest to its caption kept "
        "(generate.best_of; 1 = every draw)",
    )
    parser.add_argument("--seed", type=int, help="random seed (generate.seed)")
    parser.add_argument(
        "--shared-noise",
        action="store_true",
        default=None,
        help="every record gets the same noise (generate.shared_noise): variants compared at equal noise",
    )
    parser.add_argument("--batch-size", type=int, help="sequences denoised together (generate.batch_size)")
    parser.add_argument(
        "--lora-scale",
        type=float,
        help="LoRA models: weight of the LoRA update, 0 = base (generate.lora_scale)",
    )
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

    from phenogen.api import check_barcodes, load_model
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
             "scheduler": "scheduler", "seed": "seed", "batch_size": "batch_size",
             "shared_noise": "shared_noise", "lora_scale": "lora_scale", "best_of": "best_of"}  # fmt: skip
    overrides = list(args.set)
    overrides += [f"generate.{key}={json.dumps(getattr(args, flag))}" for flag, key in flags.items()
                  if getattr(args, flag) is not None]  # fmt: skip
    cfg: GenerateConfig = load_sections({"generate": GenerateConfig}, args.config, overrides)["generate"]
    # every input checked in seconds, before a model is loaded: the output, the FASTA, the model's files
    check_output_dir(args.out, force=args.force)
    check_inputs_outside(args.out, args.force, model=args.model, fasta=args.fasta, captions=args.captions)
    if args.fasta is not None:
        fasta = read_fasta(args.fasta, policy=cfg.policy, allow_gaps=True)  # gaps: refused below, by record
        records, source, dropped = [(r.id, r.sequence) for r in fasta.records], str(args.fasta), fasta.dropped
    else:
        source, dropped = "--sequence", {}
        records = check_barcodes({args.id: args.sequence}, source=source, policy=cfg.policy)
    check_records(records, source)  # before torch is even imported

    from phenogen.generators.base import find_generator_dir

    gen_dir = find_generator_dir(args.model)
    if gen_dir is not None:  # a train-generator run (cvae, gan, plugin), not a diffusion pipeline
        from phenogen.generators.command import run_generate

        return run_generate(args, cfg, records, source, dropped, gen_dir)

    from phenogen.diffusion.pipeline import check_pipeline_dir
    from phenogen.diffusion.settings import resolve_settings

    device = check_device(args.device)
    model_dir, _ = check_pipeline_dir(args.model)
    cond = read_json(model_dir / "conditioner" / "config.json", "conditioner config", error=CheckpointError)
    check_records(records, source, min_sequence_length(cond))
    check_lm_positions(records, source, cond)
    schedule = read_json(
        model_dir / "scheduler" / "scheduler_config.json", "scheduler config", error=CheckpointError
    )
    chosen = resolve_settings(model_dir, cfg.scheduler, cfg.steps, cfg.guidance_scale, cfg.best_of)
    trained = schedule.get("num_train_timesteps", 1000)
    if isinstance(trained, int) and chosen.steps > trained:
        raise ConfigError(f"--steps / generate.steps = {chosen.steps}: more than the {trained} noise levels the "
                          "model was trained on; use at most that many (15-50 is usual)")  # fmt: skip
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
                             f"that are not among the records of {source}")  # fmt: skip

    from phenogen.diffusion.lora import LORA_WEIGHTS

    if cfg.lora_scale != 1.0 and not (model_dir / LORA_WEIGHTS).is_file():
        raise ConfigError(f"--lora-scale / generate.lora_scale = {cfg.lora_scale:g}: {model_dir} has no LoRA "
                          f"({LORA_WEIGHTS}); it was trained without image.lora_rank")  # fmt: skip
    model = load_model(model_dir, device=device)
    prepare_output_dir(args.out, "generate", force=args.force)
    save_resolved({"generate": cfg}, args.out, command="generate", model=str(args.model), fasta=str(args.fasta) if args.fasta else None,
                  sequence=args.sequence, captions=str(args.captions) if args.captions else None, device=device,
                  settings=chosen.to_dict(), settings_from=model.settings_source, n_records=len(records),
                  dropped=dropped)  # fmt: skip
    best = f", best of {chosen.best_of}" if chosen.best_of > 1 else ""
    print(f"painting with {chosen.scheduler}, {chosen.steps} steps, guidance {chosen.guidance_scale:g}{best} "
          f"(defaults: {model.settings_source})", file=sys.stderr)  # fmt: skip
    rows = generate_images(
        model.pipeline, records, args.out, images_per_sequence=cfg.images_per_sequence,
        steps=chosen.steps, guidance_scale=chosen.guidance_scale, scheduler=chosen.scheduler, seed=cfg.seed,
        batch_size=cfg.batch_size, progress=True, captions=captions, shared_noise=cfg.shared_noise,
        lora_scale=cfg.lora_scale, best_of=chosen.best_of,
    )  # fmt: skip
    print(f"wrote {len(rows)} images for {len(records)} sequences to {args.out}", file=sys.stderr)
    return 0

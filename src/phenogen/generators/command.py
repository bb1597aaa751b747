"""``phenogen train-generator --family cvae|gan|plugin --data DIR --out DIR``: a non-diffusion generator.

Reads the ``[generator]`` section (``--config`` / ``--set generator.key=value``; ``--family`` sets
``generator.family``; family hyper-parameters go in ``--set 'generator.params={z_dim = 16}'``), checks the
dataset, the settings (the family is built once, so an unknown family or parameter is refused) and
``--out`` — nothing is written or deleted before they pass — writes the resolved settings to
``OUT/config.json`` and runs :func:`phenogen.generators.train.train_generator`. The model lands in
``OUT/generator`` (paint with ``phenogen generate --model OUT``, score with ``phenogen evaluate --model
OUT``). ``--resume`` continues from the newest checkpoint exactly; ``--force`` replaces an earlier
phenogen output only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="generator family: cvae, gan or plugin (generator.family)")
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset directory (its train split's photos are fitted)"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="run directory (generator/, checkpoints/, samples.png ...)"
    )
    parser.add_argument("--resume", action="store_true", help="continue exactly from the newest checkpoint")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json

    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, to_jsonable
    from phenogen.data.dataset import load_dataset
    from phenogen.errors import DataError
    from phenogen.fsio import atomic_write_json, check_output_dir, prepare_output_dir
    from phenogen.generators.train import GeneratorConfig, check_config, check_resumable, train_generator

    overrides = list(args.set)
    if args.family is not None:
        overrides.append(f"generator.family={json.dumps(args.family)}")
    cfg: GeneratorConfig = load_sections({"generator": GeneratorConfig}, args.config, overrides)["generator"]
    out: Path = args.out
    # 1. every input checked before --out is touched
    check_output_dir(out, force=args.force, resume=args.resume)
    check_inputs_outside(out, args.force, data=args.data, lm_model=cfg.lm_model or None)
    family_cfg = check_config(cfg)
    ds = load_dataset(args.data)
    if not any(r.images for r in ds.iter_records("train")):
        raise DataError(
            f"{args.data}: the train split has no photos; train-generator needs (photo, barcode) pairs"
        )
    if args.resume:
        check_resumable(out, cfg)
    # 2. the output directory and its settings
    prepare_output_dir(out, "train-generator", force=args.force, resume=args.resume)
    settings = {"generator": cfg, "family_config": family_cfg, "command": "train-generator",
                "data": str(args.data), "resume": args.resume}  # fmt: skip
    atomic_write_json(out / "config.json", {k: to_jsonable(v) for k, v in settings.items()})
    result = train_generator(args.data, out, cfg, resume=args.resume, progress=not args.no_progress)
    last = result.losses[-1] if result.losses else {}
    div = (result.metrics.get("diversity") or {}).get("diversity")
    print(
        f"trained {cfg.family} {result.step}/{result.steps} steps ({result.stopped}) in {result.minutes:.1f} min; "
        f"last losses {', '.join(f'{k} {v:.4g}' for k, v in last.items())}; "
        f"diversity {'n/a' if div is None else f'{div:.2f}'}; "
        f"{result.metrics.get('sampling_images_per_second', 0):.1f} images/s",
        file=sys.stderr,
    )
    notes = result.metrics.get("family_notes") or {}
    if "concepts" in notes:
        names = notes["concepts"]
        print(f"concept vectors: {', '.join(names) if names else 'none'}"
              + (f" ({notes['note']})" if notes.get("note") else ""), file=sys.stderr)  # fmt: skip
    print(f"generator: {result.generator_dir}", file=sys.stderr)
    return 0


def run_generate(args: argparse.Namespace, cfg, records, source: str, dropped, gen_dir: Path) -> int:
    """``phenogen generate --model OUT`` where OUT is a ``train-generator`` run (dispatched on
    ``generator.json``): the same files as for a diffusion pipeline, painted by the generator family.

    Diffusion-only settings are refused when given on the command line (``--captions``, ``--lora-scale``)
    or named as not applying (``--steps``, ``--guidance``, ``--scheduler``: a one-step family has none).
    """
    from phenogen.config import save_resolved
    from phenogen.diffusion.generate import check_records, min_sequence_length
    from phenogen.errors import ConfigError
    from phenogen.fsio import prepare_output_dir
    from phenogen.generators.base import generate_to_dir, load_generator

    if args.captions is not None:
        raise ConfigError(
            f"--captions needs a diffusion model with the caption head; {args.model} is a generator"
        )
    if cfg.lora_scale != 1.0:
        raise ConfigError(f"--lora-scale / generate.lora_scale: {args.model} is a generator, it has no LoRA")
    generator = load_generator(gen_dir)
    check_records(records, source, min_sequence_length(generator.featurizer.config))
    unused = [flag for flag, value in (("--steps", args.steps), ("--guidance", args.guidance),
                                       ("--scheduler", args.scheduler)) if value is not None]  # fmt: skip
    if unused:
        print(f"generate: {', '.join(unused)} do not apply to a {generator.name} generator (one pass, no "
              "denoising); ignored", file=sys.stderr)  # fmt: skip
    prepare_output_dir(args.out, "generate", force=args.force)
    save_resolved({"generate": cfg}, args.out, command="generate", model=str(args.model),
                  generator=str(gen_dir), family=generator.name, fasta=str(args.fasta) if args.fasta else None,
                  sequence=args.sequence, n_records=len(records), dropped=dropped)  # fmt: skip
    print(f"painting with the {generator.name} generator in {gen_dir}", file=sys.stderr)
    rows = generate_to_dir(
        generator, records, args.out, images_per_sequence=cfg.images_per_sequence, seed=cfg.seed,
        batch_size=cfg.batch_size, shared_noise=cfg.shared_noise, progress=True,
    )  # fmt: skip
    print(f"wrote {len(rows)} images for {len(records)} sequences to {args.out}", file=sys.stderr)
    return 0

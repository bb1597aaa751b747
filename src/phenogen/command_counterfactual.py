"""``phenogen counterfactual``: what if this DNA were different? Variants of one barcode at equal noise.

::

    phenogen counterfactual --run runs/demo --fasta runs/demo/targets.fasta --record sp_003_i1 \\
        --out cf --mutate 0,1,5,20 --where codon3 --swap body_hue=1.5 --attribution

One row per variant, every row painted from the same noise (``shared_noise``): the original barcode;
``--mutate`` levels (percent of the sites ``--where`` allows, nested: the 5 % sites include the 1 %
ones); ``--interpolate-to ID`` (a record of ``--fasta``) or ``--interpolate-fasta FILE`` (its record
``--interpolate-to``, or its only one) in ``--interpolate-steps`` steps; each ``--swap trait=value[,…]``
(caption-head models: the written caption with those traits set). ``--attribution`` adds in-silico
mutagenesis of the barcode (:func:`phenogen.counterfactual.attribution`).

Writes ``OUT/grid.png``, ``OUT/images/<label>_<k>.png``, ``OUT/variants.fasta``, ``OUT/variants.tsv``
(label, record, kind, sites differing from the original, the caption painted from), ``OUT/config.json``
and with ``--attribution`` ``OUT/attribution.png`` + ``OUT/attribution.tsv``. Generation settings left
unset (flags or ``[generate]``) are the model's stored ones. Every input is checked before the model loads.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", type=Path, help="pipeline directory (train-image OUT or OUT/pipeline)")
    model.add_argument("--run", type=Path, help="run directory (phenogen demo --out RUN): its image/pipeline")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequence", help="the barcode itself (A/C/G/T…)")
    source.add_argument("--fasta", type=Path, help="FASTA file holding the barcode (pick it with --record)")
    parser.add_argument("--record", help="record id in --fasta (needed when it holds more than one)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--mutate",
        help="comma-separated percentages of sites to mutate, nested (default 0,1,5,20 when no "
        "--interpolate-*/--swap is given)",
    )
    parser.add_argument(
        "--where",
        default="random",
        help="where mutations go: random, codon1, codon2, codon3 or START-END (1-based)",
    )
    parser.add_argument(
        "--interpolate-to", help="interpolate towards this record (of --fasta, or of --interpolate-fasta)"
    )
    parser.add_argument(
        "--interpolate-fasta", type=Path, help="FASTA holding the barcode to interpolate towards"
    )
    parser.add_argument(
        "--interpolate-steps", type=int, default=5, help="barcodes on the path, both ends included (5)"
    )
    parser.add_argument(
        "--swap", action="append", default=[], metavar="TRAIT=VALUE[,...]",
        help="a row painted from the written caption with these traits set (repeatable; caption-head models)",
    )  # fmt: skip
    parser.add_argument(
        "--traits", help="comma-separated caption values printed beside the rows (default: hues, lightnesses)"
    )
    parser.add_argument("--n", type=int, default=2, help="images per row (2)")
    parser.add_argument("--steps", type=int, help="denoising steps (unset: the model's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (unset: the model's)")
    parser.add_argument(
        "--scheduler", help="ddim, ddpm, dpm++2m-karras, unipc, euler or euler-a (unset: the model's)"
    )
    parser.add_argument(
        "--seed", type=int, help="seed of the shared noise and of the mutations (generate.seed)"
    )
    parser.add_argument("--attribution", action="store_true", help="also write attribution.png/.tsv (ISM)")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def _levels(text: str | None) -> list[float]:
    from phenogen.errors import InputError

    if text is None:
        return []
    levels = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(
                f"--mutate {text!r}: {part.strip()!r} is not a number; give percentages like 0,1,5,20"
            ) from None
        if not 0 <= value <= 100:
            raise InputError(f"--mutate {text!r}: {value:g} is outside 0-100 (percent of sites)")
        if value not in levels:
            levels.append(value)
    return levels


def _pick(records: list[tuple[str, str]], record: str | None, path: Path, flag: str) -> tuple[str, str]:
    from phenogen.errors import InputError

    if record is None:
        if len(records) == 1:
            return records[0]
        raise InputError(f"{path}: holds {len(records)} records; choose one with {flag} ID "
                         f"(e.g. {', '.join(r for r, _ in records[:3])})")  # fmt: skip
    found = [r for r in records if r[0] == record]
    if not found:
        raise InputError(f"{flag} {record}: no such record in {path} ({len(records)} records, e.g. "
                         f"{', '.join(r for r, _ in records[:3])})")  # fmt: skip
    return found[0]


def _read(path: Path, policy: str) -> list[tuple[str, str]]:
    from phenogen.diffusion.generate import check_records
    from phenogen.dna.seqio import read_fasta

    fasta = read_fasta(path, policy=policy, allow_gaps=True)
    records = [(r.id, r.sequence) for r in fasta.records]
    check_records(records, path)
    return records


def run(args: argparse.Namespace) -> int:
    import json

    from phenogen import counterfactual as cf
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, to_jsonable
    from phenogen.diffusion.config import GenerateConfig
    from phenogen.diffusion.generate import check_lm_positions, check_records, min_sequence_length, safe_name
    from phenogen.errors import CheckpointError, ConfigError, InputError
    from phenogen.fsio import (
        atomic_write_json,
        atomic_write_text,
        check_output_dir,
        prepare_output_dir,
        read_json,
    )

    flags = {"steps": "steps", "guidance": "guidance_scale", "scheduler": "scheduler", "seed": "seed"}
    overrides = list(args.set) + [f"generate.{key}={json.dumps(getattr(args, flag))}"
                                  for flag, key in flags.items() if getattr(args, flag) is not None]  # fmt: skip
    cfg: GenerateConfig = load_sections({"generate": GenerateConfig}, args.config, overrides)["generate"]
    # 1. every input checked in seconds, before a model loads
    if args.n < 1:
        raise InputError(f"--n {args.n}: give at least one image per row")
    if args.record is not None and args.fasta is None:
        raise InputError(
            "--record picks a record of --fasta; give --fasta FILE (or the barcode with --sequence)"
        )
    where = cf.parse_where(args.where)
    levels = _levels(args.mutate)
    swaps = [cf.parse_swap(s) for s in args.swap]
    interpolating = args.interpolate_to is not None or args.interpolate_fasta is not None
    if args.interpolate_steps < 2:
        raise InputError(f"--interpolate-steps {args.interpolate_steps}: give at least 2 (the two ends)")
    if args.interpolate_to is not None and args.fasta is None and args.interpolate_fasta is None:
        raise InputError(
            "--interpolate-to names a record of --fasta or --interpolate-fasta; give one of them"
        )
    if args.mutate is None and not interpolating and not swaps:
        levels = [0.0, 1.0, 5.0, 20.0]
    if args.run is not None:
        from phenogen.api import load_run

        model_path = load_run(args.run).pipeline_dir
    elif (args.model / "image" / "pipeline" / "model_index.json").is_file():  # a run directory
        model_path = args.model / "image" / "pipeline"
    else:
        model_path = args.model
    check_output_dir(args.out, force=args.force)
    check_inputs_outside(args.out, args.force, model=model_path, fasta=args.fasta,
                         interpolate_fasta=args.interpolate_fasta)  # fmt: skip
    if args.sequence is not None:
        from phenogen.api import check_barcodes

        rid, seq = check_barcodes({"sequence": args.sequence}, source="--sequence", policy=cfg.policy)[0]
    else:
        rid, seq = _pick(_read(args.fasta, cfg.policy), args.record, args.fasta, "--record")
    target = None
    if interpolating:
        if args.interpolate_fasta is not None:
            pool, path = _read(args.interpolate_fasta, cfg.policy), args.interpolate_fasta
        else:
            pool, path = _read(args.fasta, cfg.policy), args.fasta
        target = _pick(pool, args.interpolate_to, path, "--interpolate-to")
        if len(target[1]) != len(seq):
            raise InputError(f"--interpolate-to {target[0]}: {len(target[1])} bp, the barcode {rid} has {len(seq)}; "
                             "interpolation swaps bases site by site and needs barcodes of equal length")  # fmt: skip
    from phenogen.diffusion.pipeline import check_pipeline_dir

    model_dir, _ = check_pipeline_dir(model_path)
    cond = read_json(model_dir / "conditioner" / "config.json", "conditioner config", error=CheckpointError)
    check_records([(rid, seq)], args.fasta or "--sequence", min_sequence_length(cond))
    check_lm_positions([(rid, seq)], args.fasta or "--sequence", cond)
    head = cond.get("head", "tokens")
    names = [str(t) for t in cond.get("caption_traits") or []] or [
        f"v{i}" for i in range(int(cond.get("caption_n") or 0))
    ]
    for what, wanted in (("--swap", bool(swaps)), ("--attribution", args.attribution)):
        if wanted and head != "caption":
            raise ConfigError(f"{what} needs a caption-head model (image.cond_head = 'caption'); {model_path} has "
                              f"the '{head}' head")  # fmt: skip
    for s in swaps:
        unknown = sorted(set(s) - set(names))
        if unknown:
            raise InputError(
                f"--swap: unknown trait(s) {', '.join(unknown)}; the model writes {', '.join(names)}"
            )
    traits = None
    if args.traits is not None:
        traits = [t.strip() for t in args.traits.split(",") if t.strip()]
        unknown = [t for t in traits if t not in names]
        if unknown:
            raise InputError(
                f"--traits: unknown trait(s) {', '.join(unknown)}; the model writes {', '.join(names) or 'none'}"
            )
    variants: list[tuple[str, str | dict]] = [("original", seq)]
    kinds = {"original": "original"}
    for p in levels:
        if p == 0:
            continue
        label = f"mutated {p:g}%" + ("" if where == "random" else f" {args.where}")
        variants.append((label, cf.mutate(seq, p / 100, where=where, seed=cfg.seed)))
        kinds[label] = "mutated"
    if target is not None:
        path = cf.interpolate(seq, target[1], args.interpolate_steps, seed=cfg.seed)
        for i, s in enumerate(path[1:], start=1):
            label = f"to {target[0]} {round(100 * i / (len(path) - 1))}%"
            variants.append((label, s))
            kinds[label] = "interpolated"
    for s in swaps:
        label = "swap " + ",".join(f"{k}={v:+g}" for k, v in s.items())
        variants.append((label, s))
        kinds[label] = "swapped"
    if len({v[0] for v in variants}) != len(variants):
        raise InputError("two variants get the same label (a --mutate level or --swap given twice?)")

    # 2. the model, then the output directory
    from tqdm.auto import tqdm

    from phenogen.api import load_model

    model = load_model(model_dir, device=args.device)
    model._settings(cfg.scheduler, cfg.steps, cfg.guidance_scale)  # refused before anything is written
    prepare_output_dir(args.out, "counterfactual", force=args.force)
    swapped = {label: cf.swap_trait(model, seq, v) for label, v in variants if isinstance(v, dict)}
    bar = tqdm(total=1, desc="counterfactual", unit="step", leave=False, file=sys.stderr)

    def tick(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    sheet, rows = cf.counterfactual_grid(
        model, seq, [(label, swapped.get(label, v)) for label, v in variants], images=args.n, seed=cfg.seed,
        traits=traits, steps=cfg.steps, guidance_scale=cfg.guidance_scale, scheduler=cfg.scheduler,
        batch_size=cfg.batch_size, progress=tick,
    )  # fmt: skip
    bar.close()
    out = args.out
    sheet.save(out / "grid.png")
    (out / "images").mkdir(exist_ok=True)
    for row in rows:
        for k, im in enumerate(row.images):
            im.save(out / "images" / f"{safe_name(row.label)}_{k}.png")
    atomic_write_text(out / "variants.fasta", "".join(
        f">{safe_name(r.label)} record={rid} kind={kinds[r.label]} sites={r.n_sites}"
        + (" caption=given" if r.given else "") + f"\n{r.sequence}\n" for r in rows
    ))  # fmt: skip
    header = ["label", "record", "kind", "n_sites", *(names if head == "caption" else [])]
    lines = ["\t".join(header)]
    for r in rows:
        values = [f"{r.caption[n]:.6g}" for n in names] if r.caption else []
        lines.append("\t".join([r.label, rid, kinds[r.label], str(r.n_sites), *values]))
    atomic_write_text(out / "variants.tsv", "\n".join(lines) + "\n")
    if args.attribution:
        attr = cf.attribution(model, seq)
        cf.attribution_figure(attr, names, out / "attribution.png", traits=traits, record_id=rid, barcode=seq)
        table = ["\t".join(["position", "base", "codon_position", *names])]
        table += ["\t".join([str(i + 1), seq[i], str(i % 3 + 1), *(f"{v:.6g}" for v in attr[:, i])])
                  for i in range(len(seq))]  # fmt: skip
        atomic_write_text(out / "attribution.tsv", "\n".join(table) + "\n")
    settings = model._settings(cfg.scheduler, cfg.steps, cfg.guidance_scale)
    given = (cfg.scheduler, cfg.steps, cfg.guidance_scale) != (None, None, None)
    atomic_write_json(out / "config.json", to_jsonable({
        "command": "counterfactual", "model": str(model_dir), "record": rid, "length": len(seq),
        "source": str(args.fasta) if args.fasta else "--sequence", "mutate_percent": levels, "where": args.where,
        "interpolate_to": target[0] if target else None, "interpolate_steps": args.interpolate_steps if target else None,
        "swap": swaps, "images_per_row": args.n, "seed": cfg.seed, "shared_noise": True,
        "settings": {"scheduler": settings.scheduler, "steps": settings.steps, "guidance_scale": settings.guidance_scale,
                     "source": "flags or [generate]" if given else model.settings_source},
        "attribution": "in-silico mutagenesis, mean |Δ caption| over the 3 substitutions" if args.attribution else None,
        "device": str(model.pipeline.device),
    }))  # fmt: skip
    print(f"wrote {len(rows)} variants × {args.n} images of {rid} to {out}", file=sys.stderr)
    return 0

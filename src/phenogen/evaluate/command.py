"""``phenogen evaluate``: score generated images against ground truth, beside baselines.

    phenogen evaluate --data runs/demo/data --generated runs/demo/generated --out runs/demo/eval
    phenogen evaluate --data runs/demo/data --model runs/demo/image --out runs/demo/eval

With ``--model`` and no ``--generated``, images are first generated (into ``OUT/generated``) for
every record of the scored splits with :func:`phenogen.diffusion.generate.generate_images`, using
the ``[generate]`` section of ``--config`` (``--set generate.steps=25`` works too).
Writes ``OUT/metrics.json`` (schema: ``docs/metrics_schema.md``), ``OUT/targets.tsv``, the probe,
the photo model, the plots and the resolved ``OUT/config.json``; prints the trait table (datasets with
traits) and the photo table (retrieval top-1/5/100, similarity, FID/KID, taxonomic agreement).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "format_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        required=True,
        metavar="DIR",
        help="dataset directory (true traits optional: photo scores only)",
    )
    parser.add_argument("--generated", metavar="DIR", help="output directory of `phenogen generate`")
    parser.add_argument(
        "--model", metavar="DIR", help="image model directory: generate first (when --generated is absent)"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where metrics.json and plots go")
    parser.add_argument(
        "--sequence-metrics", metavar="FILE", help="JSON written by `phenogen evaluate-dna`, folded in"
    )
    parser.add_argument(
        "--probe", metavar="DIR", help="reuse a trained probe (shortcut for evaluate.probe_dir)"
    )
    parser.add_argument("--seed", type=int, help="shortcut for --set evaluate.seed=N")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an earlier phenogen output in --out (never a foreign dir)",
    )


def _check_generated_table(table: Path, text: str) -> None:
    """Every row of ``generated.tsv`` has its three fields, and every image it lists opens as an image."""
    import csv
    import io

    from PIL import Image  # a damaged file raises OSError, SyntaxError, ValueError … depending on the plug-in

    from phenogen.errors import InputError

    root = table.parent
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter="\t"))
    except csv.Error as exc:
        raise InputError(f"{table}: not a tab-separated table ({exc})") from None
    for row_no, row in enumerate(rows, start=2):
        empty = [k for k in ("record_id", "k", "image") if k in row and not row[k]]
        if empty:
            raise InputError(
                f"{table}, row {row_no}: no {', '.join(empty)}; rewrite it with `phenogen generate`"
            )
        if "image" in row and (root / row["image"]).is_file():
            try:
                with Image.open(root / row["image"]) as im:
                    im.verify()
            except (OSError, SyntaxError, ValueError, IndexError, Image.DecompressionBombError) as exc:
                raise InputError(
                    f"{root / row['image']}: not a readable image ({exc}); regenerate it"
                ) from None


def check_inputs(args: argparse.Namespace, splits: tuple[str, ...], cfg: Any = None) -> None:
    """Every input of ``evaluate`` checked in seconds, before a model is loaded or an image scored.

    ``cfg`` (the ``[evaluate]`` section, defaults when ``None``) says what the dataset must hold."""
    from phenogen.data.dataset import load_dataset
    from phenogen.errors import DataError, InputError
    from phenogen.evaluate.targets import read_generated
    from phenogen.fsio import read_json, read_text

    data = Path(args.data)
    if (data / "dataset.json").is_file():
        read_json(data / "dataset.json", "dataset description", error=DataError)
    ds = load_dataset(data)
    if cfg is None:
        from phenogen.evaluate.config import EvaluateConfig

        cfg = EvaluateConfig()
    if not ds.trait_names and not cfg.photo:
        raise InputError(
            f"{data}: the dataset declares no traits and evaluate.photo = false: nothing to score; "
            "drop `--set evaluate.photo=false`"
        )
    photographed = {r.species for r in ds.records("train") if r.images}
    if len(photographed) < (2 if cfg.photo or cfg.retrieval else 1):
        raise DataError(
            f"{data}: evaluate needs photos of at least two training species (found {len(photographed)}); "
            "give the records of split train their photos"
        )
    if args.sequence_metrics is not None:
        read_json(args.sequence_metrics, "sequence metrics file (--sequence-metrics)")
    if args.probe is not None and not Path(args.probe).is_dir():
        raise InputError(f"--probe {args.probe}: not a directory; give the probe/ of an earlier evaluate run")
    if args.generated is not None:
        generated = Path(args.generated)
        if not generated.is_dir():
            raise InputError(
                f"--generated {generated}: not a directory; give the --out of `phenogen generate`"
            )
        table = generated / "generated.tsv"
        if table.exists():
            _check_generated_table(table, read_text(table, "table of generated images"))
        read_generated(generated)
    else:  # --model: what generating would refuse, refused now (the [generate] section, model, barcodes)
        from phenogen.config import load_sections
        from phenogen.diffusion.config import GenerateConfig
        from phenogen.diffusion.generate import check_records, min_sequence_length
        from phenogen.diffusion.pipeline import check_pipeline_dir

        load_sections(
            {"generate": GenerateConfig}, args.config, [o for o in args.set if o.startswith("generate.")]
        )
        from phenogen.generators.base import find_generator_dir

        gen_dir = find_generator_dir(args.model)  # a train-generator run: its featurizer's settings
        if gen_dir is not None:
            cond = read_json(gen_dir / "featurizer.json", "generator featurizer config", error=DataError)
        else:
            pipeline_dir, _ = check_pipeline_dir(args.model)
            cond = read_json(
                pipeline_dir / "conditioner" / "config.json", "conditioner config", error=DataError
            )
        records = [(r.record_id, r.sequence) for r in ds.records(splits)]
        check_records(records, f"{data} (splits {', '.join(splits)})", min_sequence_length(cond))


def _fmt(value: Any, pct: bool = False, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.0f}%" if pct else f"{value:.{digits}f}"


def format_photo_table(block: dict[str, Any], heads: list[str]) -> list[str]:
    """One split's photo rows (``splits[split]["photo"]``) as plain-text lines."""
    lines = [
        f"  photo scores (photo model features; {block['n_reference_photos']} real photos of the targets)",
        f"  {'method':<13} {'top-1':>6} {'top-5':>6} {'top-100':>7} {'sim':>6} {'FID':>8} {'KID':>8}  "
        + " ".join(f"{h[:8]:>8}" for h in heads),
    ]
    rows = block["methods"]
    for method, row in rows.items():
        if row["n_images"] is None:  # e.g. the rendered rows off the synthetic clade (metrics.json says why)
            continue
        taxa = row["taxon_agreement"] or {}
        lines.append(
            f"  {method:<13} {_fmt(row['top1'], True):>6} {_fmt(row['top5'], True):>6} "
            f"{_fmt(row['top100'], True):>7} {_fmt(row['similarity']):>6} {_fmt(row['fid']):>8} "
            f"{_fmt(row['kid_mean'], digits=4):>8}  "
            + " ".join(f"{_fmt(taxa.get(h), True):>8}" for h in heads)
        )
    gen = rows["generated"]
    chance = (
        f"chance: top-1 {_fmt(gen['chance_top1'], True)}, top-5 {_fmt(gen['chance_top5'], True)}, "
        f"top-100 {_fmt(gen['chance_top100'], True)}; "
        if gen.get("chance_top1") is not None
        else ""
    )
    targets = ", ".join(f"{h} {n}" for h, n in block["taxon_targets"].items())
    lines.append(f"  {chance}targets with a taxon among the heads' classes: {targets}")
    return lines


def format_table(metrics: dict[str, Any]) -> str:
    """The per-split method tables as plain text (what the command prints): traits, then photos."""
    from phenogen.evaluate.steps import rmse_text

    lines = []
    heads = (metrics.get("photo") or {}).get("heads", [])
    for split, block in metrics["splits"].items():
        lines.append(f"{split}: {block['n_targets']} targets, {block['n_images']} images")
        if block["methods"]:
            lines.append(
                f"  {'method':<13} {'trait RMSE':>15} {'top-1':>7} {'top-5':>7} {'id top-1':>9} {'FID':>8}"
            )
            for method, row in block["methods"].items():
                lines.append(
                    f"  {method:<13} {rmse_text(row):>15} {_fmt(row['top1'], True):>7} "
                    f"{_fmt(row['top5'], True):>7} {_fmt(row.get('top1_traits'), True):>9} {_fmt(row['fid']):>8}"
                )
            chance = next(iter(block["methods"].values()))
            if chance.get("chance_top5") is not None:
                lines.append(
                    f"  chance: top-1 {_fmt(chance['chance_top1'], True)}, "
                    f"top-5 {_fmt(chance['chance_top5'], True)}"
                )
        if block.get("photo"):
            lines.extend(format_photo_table(block["photo"], heads))
    if metrics["probe"] is None:
        lines.append("no trait table: the dataset declares no traits")
        return "\n".join(lines)
    lines.append("± standard error of the trait RMSE from redrawing the images for the same targets")
    lines.append(
        "top-1 / top-5: the retrieval model (DNA → image); id top-1: named from the true trait table "
        "(nearest candidate species' true traits)"
    )
    probe = metrics["probe"]["r2_mean"]
    lines.append(
        "probe R² (mean over continuous traits): " + ", ".join(f"{s} {_fmt(v)}" for s, v in probe.items())
    )
    return "\n".join(lines)


def _generate(
    model_dir: Path, data_dir: Path, out_dir: Path, args: argparse.Namespace, splits: tuple[str, ...]
) -> Path:
    """Generate images for every record of ``splits`` with the image model in ``model_dir``.

    Uses the ``[generate]`` section (steps, guidance, scheduler, images per sequence …) of ``--config``.
    """
    from phenogen.config import load_sections, save_resolved
    from phenogen.data.dataset import load_dataset
    from phenogen.errors import InputError

    try:
        from phenogen.diffusion.config import GenerateConfig
        from phenogen.diffusion.generate import generate_images
        from phenogen.diffusion.pipeline import load_pipeline
    except ImportError as exc:
        raise InputError(
            f"--model needs the image model code (phenogen.diffusion: {exc}); pass --generated DIR instead"
        ) from None
    overrides = [o for o in args.set if o.startswith("generate.")]
    gen = load_sections({"generate": GenerateConfig}, args.config, overrides)["generate"]
    from phenogen.generators.base import find_generator_dir, generate_to_dir, load_generator

    gen_dir = find_generator_dir(model_dir)
    if gen_dir is not None:  # a train-generator run: one pass, no scheduler / steps / guidance
        generator = load_generator(gen_dir)
        records = [(r.record_id, r.sequence) for r in load_dataset(data_dir).records(splits)]
        save_resolved({"generate": gen}, out_dir, command="evaluate --model", model=str(model_dir),
                      generator=str(gen_dir), family=generator.name)  # fmt: skip
        generate_to_dir(generator, records, out_dir, images_per_sequence=gen.images_per_sequence, seed=gen.seed,
                        batch_size=gen.batch_size, shared_noise=gen.shared_noise, progress=True)  # fmt: skip
        return out_dir
    pipe = load_pipeline(model_dir)  # a train-image OUT or its OUT/pipeline
    records = [(r.record_id, r.sequence) for r in load_dataset(data_dir).records(splits)]
    # scheduler, steps and guidance left unset: the settings stored with the pipeline
    chosen = pipe.generation_settings.override(gen.scheduler, gen.steps, gen.guidance_scale, gen.best_of)
    save_resolved({"generate": gen}, out_dir, command="evaluate --model", model=str(model_dir),
                  settings=chosen.to_dict(), settings_from=pipe.generation_settings_source)  # fmt: skip
    generate_images(
        pipe, records, out_dir, images_per_sequence=gen.images_per_sequence, steps=chosen.steps,
        guidance_scale=chosen.guidance_scale, scheduler=chosen.scheduler, seed=gen.seed, batch_size=gen.batch_size,
        progress=True, shared_noise=gen.shared_noise, best_of=chosen.best_of,
    )  # fmt: skip
    return out_dir


def run(args: argparse.Namespace) -> int:
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.errors import ConfigError, InputError
    from phenogen.evaluate.config import EvaluateConfig
    from phenogen.evaluate.metrics import evaluate
    from phenogen.fsio import check_output_dir, prepare_output_dir

    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"evaluate.seed={args.seed}")
    if args.probe is not None:
        overrides.append(f"evaluate.probe_dir={json.dumps(str(args.probe))}")
    evaluate_overrides = [o for o in overrides if not o.startswith("generate.")]
    cfg = load_sections({"evaluate": EvaluateConfig}, args.config, evaluate_overrides)["evaluate"]
    if cfg.seed < 0:  # numpy's generators take non-negative seeds only
        raise ConfigError(f"--seed / evaluate.seed = {cfg.seed}: the seed must be >= 0")
    out = Path(args.out)
    generated = args.generated
    if generated is None and args.model is None:
        raise InputError("pass --generated DIR (images from `phenogen generate`) or --model DIR to generate")
    check_output_dir(out, force=args.force)
    check_inputs_outside(out, args.force, data=args.data, generated=args.generated, model=args.model,
                         probe=cfg.probe_dir, sequence_metrics=args.sequence_metrics)  # fmt: skip
    check_inputs(args, cfg.splits, cfg)
    prepare_output_dir(out, "evaluate", force=args.force)
    if generated is None:
        generated = _generate(Path(args.model), Path(args.data), out / "generated", args, cfg.splits)
    save_resolved(
        {"evaluate": cfg},
        out,
        command=" ".join(["phenogen", "evaluate", *sys.argv[2:]]) if sys.argv[1:2] == ["evaluate"] else None,
        data=str(args.data),
        generated=str(generated),
        sequence_metrics=args.sequence_metrics,
    )
    metrics = evaluate(args.data, generated, out, cfg, sequence_metrics=args.sequence_metrics)
    print(format_table(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return 0

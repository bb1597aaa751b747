"""``phenogen evaluate``: score generated images against ground truth, beside baselines.

    phenogen evaluate --data runs/demo/data --generated runs/demo/generated --out runs/demo/eval
    phenogen evaluate --data runs/demo/data --model runs/demo/image --out runs/demo/eval

With ``--model`` and no ``--generated``, images are first generated (into ``OUT/generated``) for
every record of the scored splits with :func:`phenogen.diffusion.generate.generate_images`, using
the ``[generate]`` section of ``--config`` (``--set generate.steps=25`` works too).
Writes ``OUT/metrics.json`` (schema: ``docs/metrics_schema.md``), ``OUT/targets.tsv``, the probe,
the plots and the resolved ``OUT/config.json``; prints the headline table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "format_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="DIR", help="dataset directory with true traits")
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


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.0f}%" if pct else f"{value:.3f}"


def format_table(metrics: dict[str, Any]) -> str:
    """The per-split method table as plain text (what the command prints)."""
    from phenogen.evaluate.steps import rmse_text

    lines = []
    for split, block in metrics["splits"].items():
        lines.append(f"{split}: {block['n_targets']} targets, {block['n_images']} images")
        lines.append(f"  {'method':<10} {'trait RMSE':>15} {'top-1':>7} {'top-5':>7} {'FID':>8}")
        for method, row in block["methods"].items():
            lines.append(
                f"  {method:<10} {rmse_text(row):>15} {_fmt(row['top1'], True):>7} {_fmt(row['top5'], True):>7} "
                f"{_fmt(row['fid']):>8}"
            )
        chance = next(iter(block["methods"].values()))
        if chance.get("chance_top5") is not None:
            lines.append(
                f"  chance: top-1 {_fmt(chance['chance_top1'], True)}, top-5 {_fmt(chance['chance_top5'], True)}"
            )
    lines.append("± standard error of the trait RMSE from redrawing the images for the same targets")
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
    pipeline_dir = model_dir / "pipeline" if (model_dir / "pipeline").is_dir() else model_dir
    pipe = load_pipeline(pipeline_dir)
    ds = load_dataset(data_dir)
    if not ds.trait_names:  # fail before spending minutes on generation
        raise InputError(f"{data_dir}: the dataset declares no traits; evaluate needs ground-truth traits")
    records = [(r.record_id, r.sequence) for r in ds.records(splits)]
    save_resolved({"generate": gen}, out_dir, command="evaluate --model", model=str(model_dir))
    generate_images(
        pipe, records, out_dir, images_per_sequence=gen.images_per_sequence, steps=gen.steps,
        guidance_scale=gen.guidance_scale, scheduler=gen.scheduler, seed=gen.seed, batch_size=gen.batch_size,
        progress=True,
    )  # fmt: skip
    return out_dir


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved
    from phenogen.errors import InputError
    from phenogen.evaluate.config import EvaluateConfig
    from phenogen.evaluate.metrics import evaluate

    overrides = list(args.set)
    if args.seed is not None:
        overrides.append(f"evaluate.seed={args.seed}")
    if args.probe is not None:
        overrides.append(f'evaluate.probe_dir="{args.probe}"')
    evaluate_overrides = [o for o in overrides if not o.startswith("generate.")]
    cfg = load_sections({"evaluate": EvaluateConfig}, args.config, evaluate_overrides)["evaluate"]
    out = Path(args.out)
    generated = args.generated
    if generated is None:
        if args.model is None:
            raise InputError(
                "pass --generated DIR (images from `phenogen generate`) or --model DIR to generate"
            )
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

"""``phenogen import folder|bioscan5m|bold``: data already on disk into the dataset format.

    phenogen import folder --fasta my.fasta --csv samples.csv --out data/mine
    phenogen import bioscan5m --root ~/datasets/bioscan --out data/bioscan --set import.image_mode=\\"symlink\\"
    phenogen import bold --tsv bold_export.tsv --images photos/ --out data/bold

``folder``: a FASTA + a CSV (``record_id,species,images[,taxonomy,split]``), see
:mod:`phenogen.data.folder`. ``bioscan5m``: the official BIOSCAN-5M layout under ``--root``, streamed
(:mod:`phenogen.data.bioscan`). ``bold``: a BOLD TSV export (v4 or v5 columns); its barcodes are
joined with the photos of a ``phenogen fetch images`` folder given by ``--images`` (or kept without
photos when ``--set build.require_images=false``). Splits follow the ``[build]`` section.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("folder", "bioscan5m", "bold"), help="what to import")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    parser.add_argument("--fasta", metavar="FILE", help="folder: the FASTA of barcodes")
    parser.add_argument("--csv", metavar="FILE", help="folder: record_id,species,images[,taxonomy,split] CSV")
    parser.add_argument("--root", metavar="DIR", help="bioscan5m: the directory holding bioscan5m/")
    parser.add_argument(
        "--split-from",
        choices=("bioscan", "species"),
        default="bioscan",
        help="bioscan5m: keep BIOSCAN's partitions (train -> train, others -> heldout) or draw a species-disjoint split",
    )
    parser.add_argument("--tsv", metavar="FILE", help="bold: a BOLD TSV export")
    parser.add_argument("--images", metavar="DIR", help="bold: a `phenogen fetch images` output folder")


def _need(args: argparse.Namespace, *names: str) -> None:
    from phenogen.errors import InputError

    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise InputError(f"import {args.kind} needs {' and '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved
    from phenogen.data.config import BuildConfig, FetchConfig, ImportConfig

    sections = load_sections(
        {"import": ImportConfig, "build": BuildConfig, "fetch": FetchConfig}, args.config, args.set
    )
    icfg, bcfg = sections["import"], sections["build"]
    out = Path(args.out)
    if args.kind == "folder":
        from phenogen.data.folder import import_folder

        _need(args, "fasta", "csv")
        ds, summary = import_folder(args.fasta, args.csv, out, icfg, bcfg)
    elif args.kind == "bioscan5m":
        from phenogen.data.bioscan import import_bioscan5m

        _need(args, "root")
        ds, summary = import_bioscan5m(args.root, out, icfg, bcfg, split_from=args.split_from)
    else:
        from phenogen.data.bold import read_bold_file
        from phenogen.data.build import build_dataset
        from phenogen.data.folder import ImportSummary
        from phenogen.data.images import read_image_manifest

        _need(args, "tsv")
        fcfg = sections["fetch"]
        fcfg.policy = icfg.policy
        barcodes, log = read_bold_file(args.tsv, fcfg)
        entries, images_root = [], Path(".")
        if args.images:
            entries = read_image_manifest(Path(args.images) / "images.tsv")
            images_root = Path(args.images) / "images"
        ds = build_dataset(
            barcodes, entries, images_root, out, bcfg, {"source": "bold", "tsv": str(args.tsv)}
        )
        summary = ImportSummary(rows=log.found, records=len(ds), skipped=dict(log.filtered))
    if sections["fetch"].api_key:
        sections["fetch"].api_key = "***"  # never write a key to disk
    save_resolved(
        {k: v for k, v in sections.items() if k != "fetch" or args.kind == "bold"},
        out,
        command=f"import {args.kind}",
        rows=summary.rows,
        records=summary.records,
        skipped=summary.skipped,
    )
    print(repr(ds))
    print(f"read {summary.rows:,} rows, wrote {summary.records:,} records to {out}")
    for reason, n in sorted(summary.skipped.items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:>8,}  {reason}")
    return 0

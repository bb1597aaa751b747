"""``phenogen import folder|bioscan5m|bold``: data already on disk into the dataset format.

    phenogen import folder --fasta my.fasta --csv samples.csv --out data/mine
    phenogen import bioscan5m --root ~/datasets/bioscan --out data/bioscan --set import.image_mode=\\"symlink\\"
    phenogen import bold --tsv bold_export.tsv --images photos/ --out data/bold

``folder``: a FASTA + a CSV (``record_id,species,images[,taxonomy,split]``), see
:mod:`phenogen.data.folder`. ``bioscan5m``: the official BIOSCAN-5M layout under ``--root``, streamed
(:mod:`phenogen.data.bioscan`). ``bold``: a BOLD TSV export (v4 or v5 columns); its barcodes are
joined with the photos of a ``phenogen fetch images`` folder given by ``--images`` (or kept without
photos when ``--set build.require_images=false``). Splits follow the ``[build]`` section.

``--out`` is checked before any input is read: it must be new or empty, or an earlier phenogen
output replaced with ``--force`` (never a directory phenogen did not write). The dataset is written
aside and moved in place when complete. ``folder`` reads only files inside the CSV's folder unless
``--allow-outside`` is given.
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
    parser.add_argument(
        "--force", action="store_true", help="replace --out when it holds an earlier phenogen output"
    )
    parser.add_argument(
        "--allow-outside",
        action="store_true",
        help="folder: accept image paths outside the CSV's folder (absolute, '..', symlinks leading out)",
    )


def _need(args: argparse.Namespace, *names: str) -> None:
    from phenogen.errors import InputError

    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise InputError(f"import {args.kind} needs {' and '.join(missing)}")
    for name in names:  # a directory given where a file belongs is named as such, not as "not found"
        path = Path(getattr(args, name))
        if name in _FILE_ARGS and path.is_dir():
            raise InputError(f"--{name} {path}: is a directory; give a file")
        if name in _DIR_ARGS and path.exists() and not path.is_dir():
            raise InputError(f"--{name} {path}: is a file; give a directory")


_FILE_ARGS = ("fasta", "csv", "tsv")
_DIR_ARGS = ("images",)


def read_table(read, path: Path, what: str):
    """``read(path)`` with a non-UTF-8 or malformed table turned into one InputError naming ``path``."""
    import csv

    from phenogen.errors import InputError

    try:
        return read(path)
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: {what} is not UTF-8 text (byte {exc.start} of a block: {exc.reason})"
        ) from None
    except csv.Error as exc:
        raise InputError(f"{path}: {what} is not a valid table ({' '.join(str(exc).split())})") from None
    except (KeyError, TypeError, ValueError) as exc:  # a row the reader could not map to its fields
        raise InputError(f"{path}: {what} has a malformed row ({type(exc).__name__}: {exc})") from None


def run(args: argparse.Namespace) -> int:
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.data.config import BuildConfig, FetchConfig, ImportConfig
    from phenogen.fsio import check_output_dir, check_output_file

    sections = load_sections(
        {"import": ImportConfig, "build": BuildConfig, "fetch": FetchConfig}, args.config, args.set
    )
    icfg, bcfg = sections["import"], sections["build"]
    out = Path(args.out)
    check_output_dir(out, force=args.force)
    check_output_file(out / "config.json")
    check_inputs_outside(out, args.force, fasta=args.fasta, csv=args.csv, root=args.root, tsv=args.tsv,
                         images=args.images)  # fmt: skip
    if args.kind == "folder":
        from phenogen.data.folder import import_folder

        _need(args, "fasta", "csv")
        ds, summary = import_folder(
            args.fasta, args.csv, out, icfg, bcfg, force=args.force, allow_outside=args.allow_outside
        )
    elif args.kind == "bioscan5m":
        from phenogen.data.bioscan import import_bioscan5m

        _need(args, "root")
        ds, summary = import_bioscan5m(
            args.root, out, icfg, bcfg, split_from=args.split_from, force=args.force
        )
    else:
        from phenogen.data.bold import read_bold_file
        from phenogen.data.build import build_dataset
        from phenogen.data.folder import ImportSummary
        from phenogen.data.images import read_image_manifest
        from phenogen.errors import InputError

        _need(args, "tsv", *(["images"] if args.images else []))
        fcfg = sections["fetch"]
        fcfg.policy = icfg.policy
        barcodes, log = read_table(lambda p: read_bold_file(p, fcfg), Path(args.tsv), "BOLD TSV")
        if not barcodes:  # name the export, not the dataset that could not be written
            why = ", ".join(
                f"{reason} {n:,}" for reason, n in sorted(log.filtered.items(), key=lambda kv: -kv[1])
            )
            raise InputError(
                f"{args.tsv}: BOLD TSV has no data rows"
                if not log.found
                else f"{args.tsv}: none of the {log.found:,} BOLD rows gave a usable barcode ({why or 'all filtered'}); "
                "see the [fetch] filters (min_length, max_n_fraction, policy)"
            )
        entries, images_root = [], Path(".")
        if args.images:
            entries = read_table(read_image_manifest, Path(args.images) / "images.tsv", "image manifest")
            images_root = Path(args.images) / "images"
        ds = build_dataset(
            barcodes,
            entries,
            images_root,
            out,
            bcfg,
            {"source": "bold", "tsv": str(args.tsv)},
            force=args.force,
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

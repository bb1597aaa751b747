"""``phenogen dataset build --barcodes DIR --images DIR --out DIR``: join fetched barcodes and photos.

Reads ``barcodes.tsv`` (``phenogen fetch barcodes``) and ``images.tsv`` + ``images/`` (``phenogen
fetch images``), attaches each species' photos to its barcodes, splits by the ``[build]`` section
(species-disjoint, or ``strategy = "taxon"`` with ``train_taxa`` for "train on one order, test on the
others") and writes a dataset that ``phenogen train-lm`` and ``phenogen train-image`` read.

    phenogen dataset build --barcodes data/passerines/barcodes --images data/passerines/photos \\
        --out data/passerines/dataset --set build.heldout_fraction=0.2

``--out`` is checked before the inputs are read (new, empty, or an earlier phenogen output with
``--force``); photos must lie inside the ``--images`` folder and decode; the dataset is written
aside and moved in place when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_arguments", "run", "check_barcodes"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build",), help="build: join barcodes and images into a dataset")
    parser.add_argument(
        "--barcodes",
        required=True,
        metavar="DIR",
        help="`phenogen fetch barcodes` output (or a barcodes.tsv)",
    )
    parser.add_argument("--images", metavar="DIR", default=None, help="`phenogen fetch images` output folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="dataset directory to write")
    parser.add_argument(
        "--force", action="store_true", help="replace --out when it holds an earlier phenogen output"
    )


_DNA = frozenset("ACGTN-")


def check_barcodes(barcodes: list, table: Path) -> None:
    """Refuse a barcode the dataset could not hold, naming ``barcodes.tsv``, its data row and the record
    (else the error would name the half-written dataset's manifest): the rules of
    :func:`phenogen.data.dataset.write_dataset` for ids, species and sequences."""
    from phenogen.errors import InputError

    if not barcodes:
        raise InputError(f"{table}: barcodes table has no rows; run `phenogen fetch barcodes` first")
    for row, b in enumerate(barcodes, start=1):
        where = f"{table}, data row {row}"
        rid = b.record_id
        if not rid or len(rid) > 200 or any(c in rid for c in "\t\n\r\x00;| "):
            raise InputError(
                f"{where}: record_id {rid[:60]!r} must be non-empty, at most 200 characters, "
                "without spaces, tabs, ';' or '|'"
            )
        if not b.species.strip() or any(c in b.species for c in "\t\n\r\x00"):
            raise InputError(
                f"{where}: record {rid!r}: species {b.species[:60]!r} is empty or holds a tab/newline"
            )
        if not b.sequence:
            raise InputError(f"{where}: record {rid!r}: empty sequence")
        if not _DNA.issuperset(b.sequence):
            bad = next(i for i, c in enumerate(b.sequence) if c not in _DNA)
            raise InputError(
                f"{where}: record {rid!r}: sequence has {b.sequence[bad]!r} at position {bad + 1}; "
                "barcodes hold uppercase A/C/G/T/N/- only (as `phenogen fetch barcodes` writes them)"
            )


def run(args: argparse.Namespace) -> int:
    from phenogen.cli import check_inputs_outside
    from phenogen.config import load_sections, save_resolved
    from phenogen.data.barcodes import read_barcodes
    from phenogen.data.build import build_dataset
    from phenogen.data.command_import import read_table
    from phenogen.data.config import BuildConfig
    from phenogen.data.images import read_image_manifest
    from phenogen.errors import InputError
    from phenogen.fsio import check_output_dir, check_output_file

    cfg: BuildConfig = load_sections({"build": BuildConfig}, args.config, args.set)["build"]
    out = Path(args.out)
    check_output_dir(out, force=args.force)
    check_output_file(out / "config.json")
    check_inputs_outside(out, args.force, barcodes=args.barcodes, images=args.images)
    src = Path(args.barcodes)
    table = src / "barcodes.tsv" if src.is_dir() else src
    barcodes = read_table(read_barcodes, table, "barcodes table")
    check_barcodes(barcodes, table)
    entries, images_root = [], Path(".")
    if args.images:
        if Path(args.images).exists() and not Path(args.images).is_dir():
            raise InputError(
                f"--images {args.images}: is a file; give a `phenogen fetch images` output folder"
            )
        entries = read_table(read_image_manifest, Path(args.images) / "images.tsv", "image manifest")
        images_root = Path(args.images) / "images"
    ds = build_dataset(
        barcodes,
        entries,
        images_root,
        out,
        cfg,
        {"barcodes": str(src), "images": str(args.images)},
        force=args.force,
    )
    save_resolved(
        {"build": cfg}, out, command="dataset build", n_barcodes=len(barcodes), n_images=len(entries)
    )
    print(repr(ds))
    print(
        f"{len(ds):,} records of {len(ds.species()):,} species ({len(ds.species('train')):,} in train) -> {out}"
    )
    left_out = sorted({b.species for b in barcodes} - set(ds.species()))
    if left_out:
        print(
            f"{len(left_out)} species left out for want of photos (build.require_images=false keeps them): "
            + ", ".join(left_out[:10])
            + (" ..." if len(left_out) > 10 else "")
        )
    lengths = [len(r.sequence) for r in ds.records()] or [0]
    # the k-mer tokenizer: full 6-mers, one token per leftover base, <bos> and <eos>
    tokens = max(n // 6 + n % 6 + 2 for n in lengths)
    print(
        f"barcodes {min(lengths)}-{max(lengths)} bp: train-lm (k=6) needs lm.n_positions >= {tokens} "
        "(the tiny preset has 256; full-length COX1 genes from mitogenomes are ~1550 bp)"
    )
    return 0

"""``phenogen validate FILE|DIR``: read a FASTA file (or a dataset directory) and say what is in it.

For a FASTA file it prints a one-screen summary — records, length range, GC, headers, and what the
ambiguity policy did (records masked or dropped, with counts) — and exits 0. Invalid input raises a
:class:`~phenogen.errors.PhenogenError`, which the CLI prints as one line with exit code 2.
A directory is validated as a phenogen dataset (:func:`phenogen.data.dataset.load_dataset`, then
every image decoded by :meth:`~phenogen.data.dataset.Dataset.verify_images`: a corrupt PNG is exit 2
naming the row, record and file) and its record counts per split are printed. ``--json OUT`` also
writes the summary and resolved config (``OUT`` is checked to be a writable file name first).

    phenogen validate data/usnm_birds_coi/unaligned_schindel2017.fasta --policy mask
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phenogen.config import require_finite

__all__ = [
    "ValidateConfig",
    "add_arguments",
    "run",
    "validate_fasta",
    "validate_dataset",
    "check_json_spares_input",
]


@dataclass
class ValidateConfig:
    """The ``[validate]`` section; ``--policy`` and ``--allow-gaps`` override it."""

    policy: Literal["reject", "mask", "drop"] = field(
        default="reject",
        metadata={"help": "IUPAC ambiguity codes: reject (error), mask (to N) or drop the record"},
    )
    allow_gaps: bool = field(
        default=False, metadata={"help": "accept aligned input: keep '-' and '.' gaps as '-'"}
    )
    max_listed: int = field(default=8, metadata={"help": "how many masked/dropped record ids to print"})

    def __post_init__(self) -> None:
        require_finite(self)
        if self.max_listed < 0:
            raise ValueError(f"max_listed must be >= 0, got {self.max_listed}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE", help="FASTA file (.gz works) or a phenogen dataset directory")
    parser.add_argument(
        "--policy",
        choices=("reject", "mask", "drop"),
        default=None,
        help="what to do with IUPAC ambiguity codes (default: reject, or [validate] policy)",
    )
    parser.add_argument(
        "--allow-gaps", action="store_true", default=None, help="accept aligned input ('-' and '.' gaps)"
    )
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the summary as JSON to OUT")


def _listing(items: dict[str, Any], limit: int) -> list[str]:
    shown = [f"{key} ({value})" for key, value in list(items.items())[:limit]]
    if len(items) > limit:
        shown.append(f"… and {len(items) - limit:,} more")
    return shown


def validate_fasta(path: Path, cfg: ValidateConfig) -> tuple[list[str], dict[str, Any]]:
    """Read ``path`` under ``cfg``; return the printed lines and the JSON-ready facts."""
    from phenogen.dna.seqio import read_fasta, summarize

    result = read_fasta(path, policy=cfg.policy, allow_gaps=cfg.allow_gaps)
    s = summarize(result)
    markers = ", ".join(f"{m} {n:,}" for m, n in sorted(s["markers"].items(), key=lambda kv: -kv[1]))
    lines = [
        f"FASTA     {path}",
        f"records   {s['n_records']:,} (policy {cfg.policy}, gaps {'kept' if cfg.allow_gaps else 'refused'})",
        f"length    {s['length_min']:,}–{s['length_max']:,} bp, median {s['length_median']:g}",
        f"GC        {100 * s['gc']:.1f}%",
        f"headers   {s['n_with_species']:,} with a species name; markers: {markers}",
    ]
    if cfg.policy == "mask":
        lines.append(
            f"ambiguous {s['n_masked_records']:,} records, {s['n_masked_positions']:,} bases masked to N"
            + (":" if result.masked else "")
        )
        lines += [f"          {item}" for item in _listing(result.masked, cfg.max_listed)]
    elif cfg.policy == "drop":
        lines.append(
            f"dropped   {s['n_dropped']:,} records with ambiguity codes" + (":" if result.dropped else "")
        )
        lines += [f"          {item}" for item in _listing(result.dropped, cfg.max_listed)]
    else:
        lines.append("ambiguous none (policy reject)")
    facts = {"kind": "fasta", "summary": s, "masked": result.masked, "dropped": result.dropped}
    return lines, facts


def validate_dataset(path: Path) -> tuple[list[str], dict[str, Any]]:
    """Load the dataset directory ``path``; return the printed lines and the JSON-ready facts."""
    from phenogen.data.dataset import SPLITS, load_dataset

    ds = load_dataset(path)
    ds.validate()  # a Parquet manifest: every row group, ids unique, counts as declared (bounded memory)
    n_checked = ds.verify_images()
    counts = {split: ds.count(split) for split in SPLITS}
    n_images = sum(len(r.images) for r in ds.iter_records())  # streamed, one row group at a time
    traits = ds.trait_names
    lines = [
        f"dataset   {path} ({ds.info.get('format')} v{ds.info.get('version')}, source {ds.info.get('source', '?')})",
        "records   " + ", ".join(f"{split} {n:,}" for split, n in counts.items()) + f" (total {len(ds):,})",
        f"species   {len(ds.species()):,} ({len(ds.species('train')):,} in train)",
        f"traits    {len(traits)}" + (f": {', '.join(traits)}" if traits else ""),
        f"images    {n_images:,} files ({n_checked:,} decoded)",
        f"tree      {ds.tree_path.name if ds.tree_path else 'none'}",
    ]
    facts = {"kind": "dataset", "counts": counts, "n_species": len(ds.species()), "n_images": n_images}
    return lines, facts


def check_json_spares_input(out: Path, path: Path) -> None:
    """Refuse a ``--json`` that would overwrite what is validated: the FASTA itself, or a file of the dataset
    directory (``dataset.json``, ``manifest.tsv``, an image …)."""
    from phenogen.errors import InputError

    target, given = out.resolve(), path.resolve()
    inside = given in target.parents and target.exists()
    if target == given or inside:
        what = "the input" if target == given else f"a file of the dataset {path}"
        raise InputError(
            f"--json {out}: is {what}; writing the summary there would overwrite it — give another file"
        )


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved

    cfg: ValidateConfig = load_sections({"validate": ValidateConfig}, args.config, args.set)["validate"]
    if args.policy is not None:
        cfg.policy = args.policy
    if args.allow_gaps:
        cfg.allow_gaps = True
    path = Path(args.path)
    if args.json:
        from phenogen.fsio import check_output_file

        check_output_file(args.json, flag="--json")
        check_json_spares_input(Path(args.json), path)
    lines, facts = validate_dataset(path) if path.is_dir() else validate_fasta(path, cfg)
    print("\n".join(lines))
    print("OK")
    if args.json:
        out = Path(args.json)
        save_resolved({"validate": cfg}, out.parent, name=out.name, input=str(path), **facts)
        print(f"wrote {out}")
    return 0

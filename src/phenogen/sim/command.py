"""``phenogen simulate --out DIR``: write the synthetic clade with its ground truth.

The ``[sim]`` section of ``--config`` and ``--set sim.KEY=VALUE`` configure it; ``--seed``,
``--n-living`` and ``--image-size`` are shortcuts for the matching ``--set``. The command refuses to
write into a non-empty directory that is not an earlier ``phenogen simulate`` output, and replaces
an earlier output only with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from phenogen.errors import InputError

__all__ = ["add_arguments", "run", "prepare_out_dir"]

GENERATOR = "phenogen simulate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output dataset directory")
    parser.add_argument("--seed", type=int, help="random seed (shortcut for --set sim.seed=N)")
    parser.add_argument("--n-living", type=int, help="living species (shortcut for --set sim.n_living=N)")
    parser.add_argument(
        "--image-size", type=int, help="image side in px (shortcut for --set sim.image_size=N)"
    )
    parser.add_argument("--force", action="store_true", help="replace an earlier simulate output in DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make sure ``out`` can receive a new clade; with ``force`` remove an earlier simulate output.

    Raises
    ------
    InputError
        ``out`` is a file, a non-empty directory that is not a simulate output, a simulate output
        without ``force``, or a simulate output holding files simulate did not write.
    """
    from phenogen.sim.clade import OUTPUT_ENTRIES

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    info_path = out / "dataset.json"
    generator = None
    if info_path.is_file():
        try:
            generator = json.loads(info_path.read_text(encoding="utf-8")).get("generator")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            generator = None
    if generator != GENERATOR:
        raise InputError(
            f"--out {out}: directory is not empty and is not a 'phenogen simulate' output; "
            "choose a new or empty directory"
        )
    if not force:
        raise InputError(f"--out {out}: holds an earlier simulated clade; pass --force to replace it")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OUTPUT_ENTRIES)
    if foreign:
        raise InputError(
            f"--out {out}: besides the simulated clade it holds {', '.join(foreign)}; "
            "move those away (simulate --force only replaces its own files)"
        )
    for name in OUTPUT_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved
    from phenogen.sim.clade import simulate_clade
    from phenogen.sim.config import SimConfig

    overrides = list(args.set)
    for flag, key in (("seed", "seed"), ("n_living", "n_living"), ("image_size", "image_size")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"sim.{key}={value}")
    cfg = load_sections({"sim": SimConfig}, args.config, overrides)["sim"]
    out = Path(args.out)
    prepare_out_dir(out, args.force)

    start = time.perf_counter()
    ds = simulate_clade(cfg, out, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    save_resolved({"sim": cfg}, out, generator=GENERATOR, config_file=args.config, overrides=overrides)

    summary = ds.info["summary"]
    counts = ds.info["counts"]
    species = summary["species"]
    ident = summary["identity"]
    between, within = ident["between_living_species"], ident.get("within_species", {})
    print(f"simulated clade in {out} ({elapsed:.1f} s, seed {cfg.seed})")
    print(
        f"  species: {species['train']} train, {species['heldout']} held out ({cfg.heldout_unit}), "
        f"{species['extinct']} extinct; {species['internal_nodes']} ancestors"
    )
    print(
        "  records: "
        + ", ".join(f"{counts[s]} {s}" for s in ("train", "heldout", "extinct", "ancestor"))
        + f"; {summary['images']} images of {cfg.image_size}px"
    )
    print(
        f"  barcode identity between living species {100 * between['min']:.1f}-{100 * between['max']:.1f} % "
        f"(median {100 * between['median']:.1f} %)"
        + (f", within species {100 * within['min']:.1f}-{100 * within['max']:.1f} %" if within else "")
    )
    print(f"  ground truth (never train on it): {out / 'truth'}")
    print(f"  contact sheet: {out / 'contact_sheet.png'}")
    return 0

"""``phenogen simulate --out DIR``: write the synthetic clade with its ground truth.

The ``[sim]`` section of ``--config`` and ``--set sim.KEY=VALUE`` configure it; ``--seed``,
``--n-living`` and ``--image-size`` are shortcuts for the matching ``--set``. The command refuses to
write into a non-empty directory that is not an earlier ``phenogen simulate`` output, and replaces
an earlier output only with ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from phenogen.errors import ConfigError, InputError, PhenogenError
from phenogen.fsio import MARKER

__all__ = ["add_arguments", "run", "check_out_dir", "prepare_out_dir"]

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


def _is_simulate_output(out: Path) -> bool:
    """``out`` carries simulate's marker, or (an output of an older phenogen) simulate's dataset.json."""
    from phenogen.fsio import read_json

    for path, key in ((out / MARKER, "written_by"), (out / "dataset.json", "generator")):
        if path.is_file():
            try:
                if read_json(path).get(key) == GENERATOR:
                    return True
            except PhenogenError:
                continue
    return False


def check_out_dir(out: Path, force: bool) -> None:
    """Raise unless ``out`` can receive a new clade (touches nothing; see :func:`prepare_out_dir`)."""
    from phenogen.sim.clade import OUTPUT_ENTRIES

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a directory")
    if not out.is_dir():
        return
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise InputError(f"--out {out}: cannot be read ({exc.strerror or exc})") from None
    if not entries:
        return
    if not _is_simulate_output(out):
        raise InputError(
            f"--out {out}: directory is not empty and is not a 'phenogen simulate' output; "
            "choose a new or empty directory"
        )
    if not force:
        raise InputError(f"--out {out}: holds an earlier simulated clade; pass --force to replace it")
    foreign = [name for name in entries if name not in (*OUTPUT_ENTRIES, MARKER)]
    if foreign:
        raise InputError(
            f"--out {out}: besides the simulated clade it holds {', '.join(foreign)}; "
            "move those away (simulate --force only replaces its own files)"
        )


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make sure ``out`` can receive a new clade; with ``force`` remove an earlier simulate output.

    An earlier output is recognised by phenogen's marker file (:data:`phenogen.fsio.MARKER`) written by
    simulate, or by the ``generator`` of its ``dataset.json`` (outputs written before the marker existed).
    Only simulate's own entries are removed; the marker is (re)written.

    Raises
    ------
    InputError
        ``out`` is a file, a non-empty directory that is not a simulate output, a simulate output
        without ``force``, or a simulate output holding files simulate did not write.
    """
    from phenogen import __version__
    from phenogen.fsio import atomic_write_json, is_phenogen_dir
    from phenogen.sim.clade import OUTPUT_ENTRIES

    check_out_dir(out, force)
    if out.is_dir():
        for name in OUTPUT_ENTRIES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not is_phenogen_dir(out):
        atomic_write_json(out / MARKER, {"written_by": GENERATOR, "version": __version__})


def run(args: argparse.Namespace) -> int:
    from phenogen.config import load_sections, save_resolved
    from phenogen.sim.clade import simulate_clade
    from phenogen.sim.config import SimConfig

    out = Path(args.out)
    check_out_dir(out, args.force)
    overrides = list(args.set)
    for flag, key in (("seed", "seed"), ("n_living", "n_living"), ("image_size", "image_size")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"sim.{key}={value}")
    cfg = load_sections({"sim": SimConfig}, args.config, overrides)["sim"]
    if cfg.seed < 0:  # numpy's generators take non-negative seeds only
        raise ConfigError(f"--seed / sim.seed = {cfg.seed}: the seed must be >= 0")
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

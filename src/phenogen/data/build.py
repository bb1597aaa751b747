"""Join barcodes and images into a dataset, with species-disjoint or taxon-based splits.

``phenogen dataset build --barcodes DIR --images DIR --out DIR`` reads ``barcodes.tsv`` (from
``phenogen fetch barcodes``) and ``images.tsv`` + ``images/`` (from ``phenogen fetch images``),
attaches to every barcode the photos of its taxon, copies those photos into the dataset and assigns
splits with :func:`assign_splits`:

* ``species`` — a seeded, species-disjoint split: ``heldout_fraction`` of the species (never of the
  individuals) go to ``heldout``, so no held-out species is seen in training;
* ``taxon`` — the thesis' "train on one order, test on the others": species whose lineage contains
  one of ``train_taxa`` (any rank, e.g. ``Passeriformes``) are ``train``, all others ``heldout``.

>>> assign_splits({"a": (), "b": (), "c": (), "d": ()}, BuildConfig(heldout_fraction=0.5, seed=1))
{'a': 'heldout', 'b': 'train', 'c': 'train', 'd': 'heldout'}
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from phenogen.data.barcodes import Barcode
from phenogen.data.config import BuildConfig
from phenogen.data.dataset import (
    MAX_NAME_BYTES,
    Dataset,
    Record,
    check_image,
    contained_file,
    load_dataset,
    write_dataset,
)
from phenogen.data.images import ImageEntry
from phenogen.errors import DataError, InputError
from phenogen.fsio import check_output_dir, is_phenogen_dir, prepare_output_dir, replace_dir

__all__ = [
    "assign_splits",
    "place_image",
    "short_name",
    "staged_output",
    "barcodes_to_records",
    "build_dataset",
]


def assign_splits(lineages: Mapping[str, Sequence[str]], cfg: BuildConfig) -> dict[str, str]:
    """Species -> ``"train"`` | ``"heldout"`` (every individual of a species gets its species' split).

    ``lineages`` maps each species to its taxonomy (used by ``strategy="taxon"``).
    """
    species = sorted(lineages)
    if cfg.strategy == "taxon":
        wanted = set(cfg.train_taxa)
        return {s: "train" if wanted & {*lineages[s], s, s.split(" ")[0]} else "heldout" for s in species}
    rng = random.Random(cfg.seed)
    order = species[:]
    rng.shuffle(order)
    n_held = round(cfg.heldout_fraction * len(order))
    if cfg.heldout_fraction > 0 and len(order) >= 2:
        n_held = max(1, min(n_held, len(order) - 1))  # both splits non-empty
    held = set(order[:n_held])
    return {s: "heldout" if s in held else "train" for s in species}


def short_name(name: str, limit: int = MAX_NAME_BYTES - 8) -> str:
    """``name`` cut (keeping its suffix) to at most ``limit`` UTF-8 bytes, so a prefix still fits a file name."""
    if len(name.encode("utf-8", "replace")) <= limit:
        return name
    stem, suffix = os.path.splitext(name)
    suffix = suffix[:16]
    while stem and len((stem + suffix).encode("utf-8", "replace")) > limit:
        stem = stem[:-1]
    return stem + suffix


@contextlib.contextmanager
def staged_output(out: str | Path, command: str, *, force: bool = False) -> Iterator[Path]:
    """Write a dataset aside and move it to ``out`` only when complete; yields the directory to write.

    ``out`` is checked first (:func:`~phenogen.fsio.check_output_dir`: a non-empty directory needs
    ``--force`` and phenogen's marker). Everything is written into a fresh ``OUT.tmp`` (marked); on
    success :func:`~phenogen.fsio.replace_dir` swaps it in, on any failure it is removed and ``out``
    is untouched — a bad input or a kill never costs the previous dataset.
    """
    out = Path(out)
    check_output_dir(out, force=force)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    if (old.exists() or old.is_symlink()) and not (old.is_dir() and is_phenogen_dir(old)):
        raise InputError(
            f"{old}: exists and was not written by phenogen; it would be replaced — move it away first"
        )
    if tmp.exists() or tmp.is_symlink():
        if not (tmp.is_dir() and not tmp.is_symlink() and is_phenogen_dir(tmp)):
            raise InputError(
                f"{tmp}: exists and was not written by phenogen; remove it or choose another --out"
            )
        shutil.rmtree(tmp)  # an interrupted earlier run
    prepare_output_dir(tmp, command)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, out)


def place_image(src: Path, root: Path, rel: str, mode: str = "copy") -> str:
    """Put ``src`` at ``root/rel`` by copy, symlink or hard link (kept if already there); returns ``rel``."""
    target = root / rel
    if target.is_file() or target.is_symlink():
        return rel
    if not src.is_file():
        raise InputError(f"image {src} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(src.resolve(), target)
    elif mode == "hardlink":
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)  # another filesystem: fall back to a copy
    else:
        shutil.copyfile(src, target)
    return rel


def barcodes_to_records(
    barcodes: Sequence[Barcode], images: Mapping[str, Sequence[str]], cfg: BuildConfig
) -> list[Record]:
    """Records of ``barcodes`` (species -> image paths in ``images``), split by :func:`assign_splits`.

    Only species that enter the dataset are split (with ``require_images``, those with photos): a
    held-out slot given to a species later dropped for want of photos would leave ``heldout`` empty.
    """
    lineages = {b.species: b.taxonomy for b in barcodes if images.get(b.species) or not cfg.require_images}
    splits = assign_splits(lineages, cfg)
    records: list[Record] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for b in barcodes:
        if b.record_id in seen:
            continue  # the same record from two taxon queries: keep it once
        pics = tuple(images.get(b.species, ()))[: cfg.max_images_per_record]
        if cfg.require_images and not pics:
            continue
        seen.add(b.record_id)
        counts[b.species] = counts.get(b.species, 0) + 1
        records.append(
            Record(
                record_id=b.record_id,
                species=b.species,
                individual=f"{b.species.replace(' ', '_')}_{counts[b.species]}",
                split=splits[b.species],
                node_kind="living",
                sequence=b.sequence,
                images=pics,
                taxonomy=b.taxonomy,
                traits={},
            )
        )
    return records


def build_dataset(
    barcodes: Sequence[Barcode],
    entries: Sequence[ImageEntry],
    images_root: str | Path,
    out: str | Path,
    cfg: BuildConfig,
    info: Mapping[str, object] | None = None,
    *,
    force: bool = False,
) -> Dataset:
    """Write the dataset joining ``barcodes`` with the photos in ``entries`` (paths under ``images_root``).

    Photos are matched to barcodes by species name first, then by the taxon that was searched for.
    Each photo must lie inside ``images_root`` (no absolute, ``..`` or linked-out path in
    ``images.tsv``) and decode; the dataset is written aside and moved to ``out`` when complete
    (:func:`staged_output`).
    """
    out, images_root = Path(out), Path(images_root)
    check_output_dir(out, force=force)
    roots = [images_root.resolve()]
    manifest = images_root.parent / "images.tsv"
    by_name: dict[str, list[str]] = {}
    sources: dict[str, Path] = {}
    for row, e in enumerate(entries, start=2):
        src, why = contained_file(images_root, e.file, roots)
        if why:
            raise InputError(f"{manifest}, row {row}: field file: {why}")
        check_image(src, f"image {e.file} (images.tsv row {row})", error=InputError)
        rel = f"images/{e.file}"
        sources[rel] = src
        for key in dict.fromkeys((e.species, e.taxon)):
            by_name.setdefault(key, []).append(rel)
    images = {b.species: by_name.get(b.species) or by_name.get(b.taxon, []) for b in barcodes}
    records = barcodes_to_records(barcodes, images, cfg)
    if not records:
        raise DataError(
            f"{out}: no records to write — {len(barcodes)} barcodes, {len(entries)} images; "
            "no species has both (set build.require_images=false to keep barcodes without photos)"
        )
    if not any(r.split == "train" for r in records):
        raise DataError(
            f"{out}: the split put no species in train; check build.train_taxa / heldout_fraction"
        )
    meta = {
        "source": "fetch",
        "split_strategy": cfg.strategy,
        "n_species": len({r.species for r in records}),
        **(info or {}),
    }
    used = {rel for r in records for rel in r.images}
    with staged_output(out, "dataset build", force=force) as tmp:
        for rel in used:
            place_image(sources[rel], tmp, rel)
        write_dataset(tmp, records, meta)
    return load_dataset(out)

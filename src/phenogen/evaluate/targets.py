"""What ``phenogen evaluate`` scores: generated images matched to dataset records, and an image cache.

``generated.tsv`` (written by ``phenogen generate``) has the columns ``record_id``, ``k`` and
``image`` (a path relative to the generate directory). Every ``record_id`` must be a record of the
dataset the images are evaluated against; the record's split decides which table it lands in and
its true traits are the target. :class:`ImageBank` loads each image file once (resized to the
probe's input size) and remembers the probe's reading of it, so baselines that draw the same render
many times cost nothing extra.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phenogen.data.dataset import SPLITS, Dataset, Record
from phenogen.errors import DataError, InputError

__all__ = ["Target", "read_generated", "read_painted", "match_targets", "trait_matrix", "ImageBank"]


@dataclass
class Target:
    """One record images were generated for, with those images (absolute paths, ordered by ``k``)."""

    record: Record
    generated: list[Path]
    sequence: str = ""  # the barcode the images were painted from ("" = the record's own)

    @property
    def painted(self) -> str:
        """The barcode behind the images: e.g. a reconstructed ancestor, not the true one."""
        return self.sequence or self.record.sequence


def read_generated(generated_dir: str | Path) -> dict[str, list[Path]]:
    """``generated.tsv`` → record_id → image paths (absolute, ordered by ``k``)."""
    root = Path(generated_dir)
    table = root / "generated.tsv"
    if not table.is_file():
        raise InputError(f"{root}: no generated.tsv; pass a directory written by `phenogen generate`")
    from phenogen.data.dataset import contained_file

    rows: dict[str, list[tuple[int, Path]]] = {}
    inside = [root.resolve()]
    try:
        with open(table, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            missing = {"record_id", "k", "image"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{table}: missing column(s) {', '.join(sorted(missing))}")
            for row_no, row in enumerate(reader, start=2):
                if None in row.values() or None in row:
                    raise DataError(f"{table}, row {row_no}: wrong number of columns")
                path, why = contained_file(root, row["image"], inside)
                if path is None:
                    raise DataError(f"{table}, row {row_no}, field image: {why}")
                try:
                    k = int(row["k"])
                except ValueError:
                    raise DataError(
                        f"{table}, row {row_no}: k = {row['k'][:40]!r} is not an integer"
                    ) from None
                rows.setdefault(row["record_id"], []).append((k, path))
    except UnicodeDecodeError as exc:
        raise DataError(f"{table}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{table}: malformed TSV ({exc})") from None
    if not rows:
        raise DataError(f"{table}: no generated images listed")
    return {rid: [p for _, p in sorted(items)] for rid, items in rows.items()}


def read_painted(generated_dir: str | Path) -> dict[str, str]:
    """record_id → the barcode painted, from ``sequences.fasta`` beside ``generated.tsv`` (empty if absent)."""
    path = Path(generated_dir) / "sequences.fasta"
    if not path.is_file():
        return {}
    from phenogen.dna.seqio import read_fasta

    return {r.id: r.sequence for r in read_fasta(path, policy="mask", allow_gaps=True).records}


def match_targets(
    ds: Dataset,
    generated: dict[str, list[Path]],
    splits: Sequence[str],
    painted: dict[str, str] | None = None,
) -> dict[str, list[Target]]:
    """Split → targets, in dataset order; records of splits not in ``splits`` are left out.

    ``painted`` (record_id → barcode) records which barcode each target's images were made from when
    it is not the record's own (reconstructed ancestors); baselines that read a barcode use it.
    """
    painted = painted or {}
    by_id = {r.record_id: r for r in ds.records()}
    unknown = [rid for rid in generated if rid not in by_id]
    if unknown:
        raise DataError(
            f"generated.tsv names record(s) {', '.join(unknown[:5])} that are not in dataset {ds.root}; "
            "evaluate the images against the dataset they were generated for"
        )
    targets: dict[str, list[Target]] = {}
    for split in (s for s in SPLITS if s in splits):
        chosen = [
            Target(r, generated[r.record_id], painted.get(r.record_id, ""))
            for r in ds.records(split)
            if r.record_id in generated
        ]
        if chosen:
            targets[split] = chosen
    if not targets:
        raise DataError(f"generated.tsv holds no record of the scored splits ({', '.join(splits)})")
    return targets


def trait_matrix(records: Sequence[Record], names: Sequence[str], where: str) -> np.ndarray:
    """(N, P) true traits of ``records`` in the order of ``names``; DataError naming a missing one."""
    for r in records:
        missing = [n for n in names if n not in r.traits]
        if missing:
            raise DataError(
                f"{where}: record {r.record_id} has no value for trait(s) {', '.join(missing[:4])}"
            )
    return np.array([[r.traits[n] for n in names] for r in records], dtype=np.float64).reshape(
        len(records), -1
    )


class ImageBank:
    """Image files loaded once (uint8, resized to ``size``) and the probe's reading of each, cached."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: dict[Path, Any] = {}
        self.readings: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def stack(self, paths: Sequence[Path]):
        """(N, 3, S, S) uint8 tensor of ``paths`` (repeats allowed)."""
        import torch

        from phenogen.evaluate.probe import load_images

        new = [p for p in dict.fromkeys(paths) if p not in self.images]
        if new:
            for p, img in zip(new, load_images(new, self.size), strict=True):
                self.images[p] = img
        if not paths:
            return torch.zeros(0, 3, self.size, self.size, dtype=torch.uint8)
        return torch.stack([self.images[p] for p in paths])

    def read(self, probe, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        """The probe's predictions (N, P) and features (N, F) for ``paths``, each file computed once."""
        from phenogen.evaluate.probe import predict

        new = [p for p in dict.fromkeys(paths) if p not in self.readings]
        if new:
            pred, feats = predict(probe, self.stack(new), return_features=True)
            for i, p in enumerate(new):
                self.readings[p] = (pred[i], feats[i])
        if not paths:
            return np.zeros((0, len(probe.spec.trait_names))), np.zeros((0, probe.spec.features))
        return np.stack([self.readings[p][0] for p in paths]), np.stack([self.readings[p][1] for p in paths])

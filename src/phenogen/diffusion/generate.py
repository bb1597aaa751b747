"""Paint portraits for barcodes with a trained pipeline and write them as files.

``generate_images`` is what ``phenogen generate`` and the demo call::

    OUT/images/<record_id>_<k>.png   image k of each record (ids made file-name safe)
    OUT/generated.tsv                record_id, k, image (path relative to OUT)
    OUT/grid.png                     one row per record (labelled), one column per image
    OUT/captions.tsv                 (with ``captions``) the captions painted instead of barcodes

Image ``k`` of the ``i``-th record is drawn from its own seeded generator, so it does not depend on
the batch size or on the other records in the file.

>>> # pipe = load_pipeline("run/image/pipeline")
>>> # rows = generate_images(pipe, [("sp_025_i1", "ACGT...")], "run/generated", images_per_sequence=2)
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from phenogen.errors import InputError

__all__ = ["generate_images", "image_seed", "read_captions", "safe_name", "write_captions"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_seed(seed: int, index: int, k: int) -> int:
    """The seed of image ``k`` of the ``index``-th record."""
    return (seed * 1_000_003 + index * 10_007 + k) % (2**63 - 1)


def safe_name(record_id: str) -> str:
    """A file-name-safe version of a record id (runs of other characters become ``_``)."""
    return _UNSAFE.sub("_", record_id).strip("._") or "record"


def read_captions(path: Path, names: list[str]) -> dict[str, list[float]]:
    """A captions TSV (``record_id`` + one column per caption value, any order) → record_id -> values
    in the order of ``names`` (the model's :attr:`~phenogen.diffusion.conditioning.DNAConditioner.caption_names`)."""
    if not path.is_file():
        raise InputError(f"--captions {path} does not exist")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        header = reader.fieldnames or []
        missing = [c for c in ("record_id", *names) if c not in header]
        if missing:
            raise InputError(f"--captions {path}: missing column(s) {', '.join(missing)}")
        out: dict[str, list[float]] = {}
        for line, row in enumerate(reader, start=2):
            rid = row["record_id"]
            if rid in out:
                raise InputError(f"--captions {path}: record {rid} appears twice (line {line})")
            try:
                out[rid] = [float(row[n]) for n in names]
            except (TypeError, ValueError):
                raise InputError(f"--captions {path}, line {line}: a caption value is not a number") from None
    if not out:
        raise InputError(f"--captions {path} holds no caption rows")
    return out


def write_captions(path: Path, names: Sequence[str], captions: Mapping[str, Sequence[float]]) -> Path:
    """Write ``record_id -> caption values`` as the TSV :func:`read_captions` reads (``generate --captions``)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\t".join(["record_id", *names]) + "\n")
        fh.writelines("\t".join([rid, *(f"{v:.6g}" for v in row)]) + "\n" for rid, row in captions.items())
    return path


def generate_images(
    pipeline,
    records: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    images_per_sequence: int = 1,
    steps: int = 50,
    guidance_scale: float = 8.0,
    scheduler: str | None = "ddim",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    captions: Mapping[str, Sequence[float]] | None = None,
) -> list[dict[str, str]]:
    """Generate ``images_per_sequence`` images per ``(record_id, sequence)`` and write them to ``out_dir``.

    Parameters
    ----------
    pipeline : DNAToImagePipeline
    records : list of (record_id, sequence)
    scheduler : str or None
        Swap the pipeline's scheduler (:func:`~phenogen.diffusion.pipeline.make_scheduler`); ``None`` keeps it.
    captions : record_id -> caption values, optional
        A ``caption``-head model only: these records are painted from the given caption instead of
        their barcode (the others from the caption their barcode writes — the same embedding as
        painting the barcode); ``OUT/captions.tsv`` lists the given ones. Seeds do not change.

    Returns
    -------
    list of dict
        The rows of ``generated.tsv``: ``record_id``, ``k``, ``image``.
    """
    from PIL import Image, ImageDraw

    from phenogen.diffusion.pipeline import make_scheduler

    if not records:
        raise InputError("no records to generate images for")
    ids = [r[0] for r in records]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate record ids {', '.join(dupes[:5])}: each record needs a unique id")
    if scheduler is not None:
        pipeline.scheduler = make_scheduler(scheduler, pipeline.scheduler.config)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for rid in ids:
        name = safe_name(rid)
        while name in names.values():
            name += "_"
        names[rid] = name
    values = None
    (out / "captions.tsv").unlink(missing_ok=True)  # a rerun into the same directory: no stale captions
    if captions:
        unknown = sorted(set(captions) - set(ids))
        if unknown:
            raise InputError(
                f"captions for record(s) {', '.join(unknown[:5])} that are not among the records"
            )
        cond = pipeline.conditioner
        values = cond.caption_matrix([seq for _, seq in records])  # (N, caption_n)
        for i, rid in enumerate(ids):
            if rid in captions:
                row = np.asarray(captions[rid], dtype=np.float64)
                if row.shape != (values.shape[1],):
                    raise InputError(
                        f"record {rid}: a caption of {row.size} values, the model's has {values.shape[1]}"
                    )
                values[i] = row
        given = {rid: values[i] for i, rid in enumerate(ids) if rid in captions}
        write_captions(out / "captions.tsv", cond.caption_names, given)
    rows: list[dict[str, str]] = []
    all_images = []
    bar = tqdm(total=len(records), desc="generate", disable=not progress, leave=False)
    for a in range(0, len(records), batch_size):
        chunk = records[a : a + batch_size]
        gens = [
            torch.Generator().manual_seed(image_seed(seed, a + i, k))
            for i in range(len(chunk))
            for k in range(images_per_sequence)
        ]
        given = (
            {"sequences": [seq for _, seq in chunk]}
            if values is None
            else {"captions": values[a : a + batch_size]}
        )
        images = pipeline(
            **given,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=gens,
            num_images_per_sequence=images_per_sequence,
        ).images
        for j, image in enumerate(images):
            rid = chunk[j // images_per_sequence][0]
            k = j % images_per_sequence
            rel = f"images/{names[rid]}_{k}.png"
            image.save(out / rel)
            rows.append({"record_id": rid, "k": str(k), "image": rel})
            all_images.append(image)
        bar.update(len(chunk))
    bar.close()
    with open(out / "generated.tsv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["record_id", "k", "image"], delimiter="\t", lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    with open(out / "sequences.fasta", "w", encoding="utf-8") as fh:  # the barcodes actually painted
        fh.writelines(f">{rid}\n{seq}\n" for rid, seq in records)
    # grid: a label column, then one column per image
    w, h = all_images[0].size
    label_w = 8 + 6 * min(24, max(len(r) for r in ids))
    sheet = Image.new("RGB", (label_w + images_per_sequence * w, len(records) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, rid in enumerate(ids):
        draw.text((4, i * h + h // 2 - 5), rid[:24], fill="black")
        for k in range(images_per_sequence):
            sheet.paste(all_images[i * images_per_sequence + k], (label_w + k * w, i * h))
    sheet.save(out / "grid.png")
    return rows

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
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from phenogen.errors import InputError, SequenceError
from phenogen.fsio import atomic_write_text

__all__ = [
    "generate_images",
    "image_seed",
    "read_captions",
    "safe_name",
    "write_captions",
    "min_sequence_length",
    "check_records",
    "check_lm_positions",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_seed(seed: int, index: int, k: int) -> int:
    """The seed of image ``k`` of the ``index``-th record."""
    return (seed * 1_000_003 + index * 10_007 + k) % (2**63 - 1)


def safe_name(record_id: str) -> str:
    """A file-name-safe version of a record id (runs of other characters become ``_``)."""
    return _UNSAFE.sub("_", record_id).strip("._") or "record"


def min_sequence_length(conditioner_config: Mapping) -> int:
    """The shortest barcode a pipeline paints, from its conditioner's saved ``config.json``.

    What the encoder needs to read more than noise: ``kmer``, two k-mer lengths per profile segment
    (``2 × kmer_k × kmer_segments``: each segment then holds more than ``kmer_k`` words; the demo's
    4-mers in 4 segments → 32 bp); ``onehot``, two windows; ``gpt2``, eight words of the DNA LM
    (``8 × lm_k``); ``relatives``, four Mash k-mer lengths. COI barcodes are ~650 bp: only fragments
    and mistakes are refused.
    """

    def num(key: str, default: int) -> int:
        value = conditioner_config.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default

    encoder = conditioner_config.get("encoder", "kmer")
    return {
        "kmer": 2 * num("kmer_k", 4) * num("kmer_segments", 4),
        "onehot": 2 * num("onehot_window", 16),
        "gpt2": 8 * num("lm_k", 6),
        "relatives": 4 * num("relatives_k", 8),
    }.get(encoder, 1)


def check_records(records: Sequence[tuple[str, str]], source: str | Path, min_length: int = 1) -> None:
    """Refuse, before any model runs, the records ``generate`` cannot paint, naming file and record:
    gaps (``-``/``.``: aligned input), no A/C/G/T base at all (all N), or fewer than ``min_length`` bases."""
    if not records:
        raise InputError(f"{source}: no records to generate images for")
    for rid, seq in records:
        where = f"{source}: record {rid!r}"
        gap = next((i for i, c in enumerate(seq) if c in "-."), None)
        if gap is not None:
            raise SequenceError(
                f"{where}: gap {seq[gap]!r} at position {gap + 1}; generate paints unaligned barcodes — "
                "remove the gaps (e.g. sed '/^>/!s/[-.]//g')"
            )
        if not any(c in "ACGT" for c in seq):
            raise SequenceError(f"{where}: all {len(seq)} bases are N (no A/C/G/T); drop this record")
        if len(seq) < min_length:
            raise SequenceError(
                f"{where}: {len(seq)} bp, shorter than the {min_length} bp this model's DNA encoder needs; "
                "give the whole barcode (COI barcodes are ~650 bp)"
            )


def check_lm_positions(
    records: Sequence[tuple[str, str]], source: str | Path, conditioner_config: Mapping
) -> None:
    """``gpt2`` encoder: every barcode's ``<bos> k-mers <eos>`` must fit the DNA LM's positions (no windowing);
    refused before the model loads, naming file and record (the encoder itself only knows ``#i``)."""
    if conditioner_config.get("encoder") != "gpt2":
        return
    from phenogen.dna.tokenizer import KmerTokenizer

    lm_config = conditioner_config.get("lm_config") or {}
    positions = lm_config.get("n_positions") if isinstance(lm_config, Mapping) else None
    try:
        tokenizer = KmerTokenizer(
            k=conditioner_config.get("lm_k", 6), stride=conditioner_config.get("lm_stride")
        )
    except ValueError:
        return  # a broken config: load_pipeline names it
    if not isinstance(positions, int):
        return
    for rid, seq in records:
        n = len(tokenizer.encode_dna(seq, record_id=rid))
        if n > positions:
            raise SequenceError(
                f"{source}: record {rid!r}: {len(seq)} bp = {n} tokens with <bos>/<eos>, more than the DNA "
                f"model's {positions} positions (no windowing); trim the barcode"
            )


def read_captions(path: Path, names: list[str]) -> dict[str, list[float]]:
    """A captions TSV (``record_id`` + one column per caption value, any order) → record_id -> values
    in the order of ``names`` (the model's :attr:`~phenogen.diffusion.conditioning.DNAConditioner.caption_names`)."""
    from phenogen.fsio import read_text

    try:
        text = read_text(path, "captions file")
    except InputError as exc:
        raise InputError(f"--captions {exc}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t")
    out: dict[str, list[float]] = {}
    try:
        header = reader.fieldnames or []
        missing = [c for c in ("record_id", *names) if c not in header]
        if missing:
            raise InputError(f"--captions {path}: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            rid = row["record_id"]
            if rid in out:
                raise InputError(f"--captions {path}: record {rid} appears twice (line {line})")
            try:
                out[rid] = [float(row[n]) for n in names]
            except (TypeError, ValueError):
                raise InputError(f"--captions {path}, line {line}: a caption value is not a number") from None
    except csv.Error as exc:
        raise InputError(f"--captions {path}: not a tab-separated table ({exc})") from None
    if not out:
        raise InputError(f"--captions {path} holds no caption rows")
    return out


def write_captions(path: Path, names: Sequence[str], captions: Mapping[str, Sequence[float]]) -> Path:
    """Write ``record_id -> caption values`` as the TSV :func:`read_captions` reads (``generate --captions``)."""
    lines = ["\t".join(["record_id", *names])]
    lines += ["\t".join([rid, *(f"{v:.6g}" for v in row)]) for rid, row in captions.items()]
    return atomic_write_text(path, "\n".join(lines) + "\n")


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
    import torch
    from PIL import Image, ImageDraw
    from tqdm.auto import tqdm

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
    table = io.StringIO(newline="")
    writer = csv.DictWriter(
        table, fieldnames=["record_id", "k", "image"], delimiter="\t", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "generated.tsv", table.getvalue())
    atomic_write_text(
        out / "sequences.fasta", "".join(f">{rid}\n{seq}\n" for rid, seq in records)
    )  # as painted
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

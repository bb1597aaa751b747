"""Paint portraits for barcodes with a trained pipeline and write them as files.

``generate_images`` is what ``phenogen generate`` and the demo call::

    OUT/images/<record_id>_<k>.png   image k of each record (ids made file-name safe)
    OUT/generated.tsv                record_id, k, image (path relative to OUT)
    OUT/grid.png                     one row per record (labelled), one column per image
    OUT/captions.tsv                 (with ``captions``) the captions painted instead of barcodes

Image ``k`` of a record is drawn from its own generator, seeded by ``(seed, record id, k)``
(:func:`image_seed`): it depends neither on the batch size, nor on the record's place in the file, nor
on the other records — so a record painted alone, or an edited copy of a barcode under the same id,
gets the same noise. ``shared_noise=True`` keys the noise by ``(seed, k)`` only: every record gets the
same noise (variants of one barcode under different ids, compared at equal noise).

>>> # pipe = load_pipeline("run/image/pipeline")
>>> # rows = generate_images(pipe, [("sp_025_i1", "ACGT...")], "run/generated", images_per_sequence=2)
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from phenogen.errors import InputError, SequenceError
from phenogen.fsio import atomic_write_json, atomic_write_text

__all__ = [
    "generate_images",
    "write_generated",
    "paint",
    "image_seed",
    "read_captions",
    "safe_name",
    "write_captions",
    "min_sequence_length",
    "check_records",
    "check_lm_positions",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_seed(seed: int, record_id: str | None, k: int) -> int:
    """The seed of image ``k`` of record ``record_id`` (``None``: shared noise, the same for every record).

    A stable hash (BLAKE2b, not Python's salted ``hash``), so it is the same in every process and run.

    >>> image_seed(0, "sp_001", 0) == image_seed(0, "sp_001", 0) != image_seed(0, "sp_002", 0)
    True
    """
    import hashlib

    key = f"{int(seed)}|{int(k)}|" + ("shared" if record_id is None else f"id:{record_id}")
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


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


def paint(
    pipeline,
    records: Sequence[tuple[str, str]],
    *,
    images_per_sequence: int = 1,
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    captions: Mapping[str, Sequence[float]] | None = None,
    shared_noise: bool = False,
    progress: Callable[[int, int], None] | None = None,
    lora_scale: float = 1.0,
    best_of: int | None = None,
) -> tuple[list[tuple[str, int, Image.Image]], np.ndarray | None]:
    """Paint ``images_per_sequence`` images per ``(record_id, sequence)`` in memory.

    The settings left ``None`` are the pipeline's (``pipeline.generation_settings``; see
    :mod:`phenogen.diffusion.settings`). ``best_of`` > 1 (a caption-head pipeline with the prior's reader,
    ``pipeline.reader``): ``images_per_sequence × best_of`` candidates are drawn per record (noise keyed by
    :func:`image_seed` for k = 0 … n·best_of − 1) and the ``images_per_sequence`` the reader finds closest to
    the record's caption are kept, in draw order (:mod:`phenogen.diffusion.reader`). ``captions`` (caption-head models): these records are painted
    from the given caption instead of their barcode. ``progress(done, total)`` is called after every
    denoising step (``total`` = steps × batches). ``lora_scale``: the LoRA's weight (LoRA models only).

    Returns
    -------
    images : list of (record_id, k, PIL image)
        In record order, image ``k`` of each record's noise keyed by :func:`image_seed`.
    caption_values : (N, caption_n) array or None
        Caption-head models: the caption each record was painted from (written by its barcode, or given).
    """
    import torch

    from phenogen.diffusion.pipeline import make_scheduler
    from phenogen.diffusion.settings import THESIS

    if not records:
        raise InputError("no records to generate images for")
    if images_per_sequence < 1 or batch_size < 1:
        raise InputError("images_per_sequence and batch_size must be >= 1")
    ids = [r[0] for r in records]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate record ids {', '.join(dupes[:5])}: each record needs a unique id")
    chosen = getattr(pipeline, "generation_settings", THESIS).override(
        scheduler, steps, guidance_scale, best_of
    )
    pipeline.scheduler = make_scheduler(chosen.scheduler, pipeline.scheduler.config)
    cond = pipeline.conditioner
    reader = getattr(pipeline, "reader", None)
    draws = (
        chosen.best_of if chosen.best_of > 1 and reader is not None and cond.config.head == "caption" else 1
    )
    if chosen.best_of > 1 and draws == 1:
        log.warning("best_of = %d ignored: the pipeline has no reader of its captions (a caption-head "
                    "pipeline fine-tuned from phenogen's bird prior has one); every draw is kept",
                    chosen.best_of)  # fmt: skip
    keep, images_per_sequence = images_per_sequence, images_per_sequence * draws
    values = None
    if captions:
        unknown = sorted(set(captions) - set(ids))
        if unknown:
            raise InputError(
                f"captions for record(s) {', '.join(unknown[:5])} that are not among the records"
            )
    if captions or cond.config.head == "caption":
        values = np.zeros((len(records), int(cond.config.caption_n)))  # (N, caption_n)
        read = [i for i, rid in enumerate(ids) if not (captions and rid in captions)]
        if read:  # what each barcode writes (a record with a given caption needs no barcode)
            values[read] = cond.caption_matrix([records[i][1] for i in read])
        for i, rid in enumerate(ids):
            if captions and rid in captions:
                row = np.asarray(captions[rid], dtype=np.float64)
                if row.shape != (values.shape[1],):
                    raise InputError(
                        f"record {rid}: a caption of {row.size} values, the model's has {values.shape[1]}"
                    )
                values[i] = row
    # best-of: fewer records per call, so a call denoises as many images as without it (CPU throughput
    # per image drops with larger batches: 7.8 vs 9.9 img/s at 384 vs 120 images per call, bench/bench_best_of.py)
    batch_size = max(1, batch_size // draws)
    total = chosen.steps * math.ceil(len(records) / batch_size)
    done = 0

    def on_step(_pipe, _i, _t, _kwargs):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        return {}

    out: list[tuple[str, int, Image.Image]] = []
    for a in range(0, len(records), batch_size):
        chunk = records[a : a + batch_size]
        gens = [
            torch.Generator().manual_seed(image_seed(seed, None if shared_noise else rid, k))
            for rid, _ in chunk
            for k in range(images_per_sequence)
        ]
        given = (
            {"sequences": [seq for _, seq in chunk]}
            if values is None
            else {"captions": values[a : a + batch_size]}
        )
        images = pipeline(
            **given,
            num_inference_steps=chosen.steps,
            guidance_scale=chosen.guidance_scale,
            generator=gens,
            num_images_per_sequence=images_per_sequence,
            callback_on_step_end=on_step,
            lora_scale=lora_scale,
        ).images
        for j, image in enumerate(images):
            out.append((chunk[j // images_per_sequence][0], j % images_per_sequence, image))
    if draws > 1:
        out = _keep_best(reader, out, ids, values, keep)
    return out, values


def _keep_best(reader, painted, ids, values: np.ndarray, keep: int) -> list[tuple[str, int, Image.Image]]:
    """Of each record's candidates (in ``painted``, record-major), the ``keep`` its caption reads closest to."""
    from phenogen.diffusion.reader import best_of

    per = len(painted) // len(ids)
    kept: list[tuple[str, int, Image.Image]] = []
    for i, rid in enumerate(ids):
        cands = [im for _, _, im in painted[i * per : (i + 1) * per]]
        kept += [(rid, j, cands[c]) for j, c in enumerate(best_of(reader, cands, values[i], keep))]
    return kept


def generate_images(
    pipeline,
    records: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    images_per_sequence: int = 1,
    steps: int | None = None,
    guidance_scale: float | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    captions: Mapping[str, Sequence[float]] | None = None,
    shared_noise: bool = False,
    lora_scale: float = 1.0,
    best_of: int | None = None,
) -> list[dict[str, str]]:
    """Generate ``images_per_sequence`` images per ``(record_id, sequence)`` and write them to ``out_dir``.

    Parameters
    ----------
    pipeline : DNAToImagePipeline
    records : list of (record_id, sequence)
    steps, guidance_scale, scheduler
        ``None``: the settings stored with the pipeline (``pipeline.generation_settings``, see
        :mod:`phenogen.diffusion.settings`; the thesis' DDIM 50 / 8 for a pipeline that stores none).
    captions : record_id -> caption values, optional
        A ``caption``-head model only: these records are painted from the given caption instead of
        their barcode (the others from the caption their barcode writes — the same embedding as
        painting the barcode); ``OUT/captions.tsv`` lists the given ones. Seeds do not change.
    shared_noise : bool
        Every record gets the same noise (:func:`image_seed` with no record id).
    lora_scale : float
        A LoRA model: the weight of its LoRA update (0 = the base UNet).
    best_of : int, optional
        Candidates drawn per kept image, the reader's closest to the caption kept (see :func:`paint`);
        ``None``: the pipeline's stored setting.

    Returns
    -------
    list of dict
        The rows of ``generated.tsv``: ``record_id``, ``k``, ``image``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    ids = [r[0] for r in records]
    bar = tqdm(total=1, desc="generate", disable=not progress, leave=False, unit="step")

    def tick(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    painted, values = paint(
        pipeline, records, images_per_sequence=images_per_sequence, steps=steps,
        guidance_scale=guidance_scale, scheduler=scheduler, seed=seed, batch_size=batch_size,
        captions=captions, shared_noise=shared_noise, progress=tick, lora_scale=lora_scale, best_of=best_of,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    bar.close()
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "captions.tsv").unlink(missing_ok=True)  # a rerun into the same directory: no stale captions
    if captions and values is not None:
        given = {rid: values[i] for i, rid in enumerate(ids) if rid in captions}
        write_captions(out / "captions.tsv", pipeline.conditioner.caption_names, given)
    return write_generated(out, records, painted, images_per_sequence, seconds)


def write_generated(
    out_dir: str | Path,
    records: Sequence[tuple[str, str]],
    painted: Sequence[tuple[str, int, Image.Image]],
    images_per_sequence: int,
    seconds: float | None = None,
) -> list[dict[str, str]]:
    """Write painted images as ``generate`` lays them out: ``images/``, ``generated.tsv``,
    ``sequences.fasta`` and ``grid.png`` (any painter: a diffusion pipeline or a
    :mod:`phenogen.generators` family), and ``timing.json`` (images, seconds, images per second) when
    ``seconds`` (the painting's wall-clock time) is given. Returns the rows of ``generated.tsv``."""
    from PIL import ImageDraw

    out = Path(out_dir)
    ids = [r[0] for r in records]
    names: dict[str, str] = {}
    for rid in ids:
        name = safe_name(rid)
        while name in names.values():
            name += "_"
        names[rid] = name
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for rid, k, image in painted:
        rel = f"images/{names[rid]}_{k}.png"
        image.save(out / rel)
        rows.append({"record_id": rid, "k": str(k), "image": rel})
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
    w, h = painted[0][2].size
    label_w = 8 + 6 * min(24, max(len(r) for r in ids))
    sheet = Image.new("RGB", (label_w + images_per_sequence * w, len(records) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, rid in enumerate(ids):
        draw.text((4, i * h + h // 2 - 5), rid[:24], fill="black")
    for j, (_, k, image) in enumerate(painted):
        sheet.paste(image, (label_w + k * w, (j // images_per_sequence) * h))
    sheet.save(out / "grid.png")
    timing = out / "timing.json"
    timing.unlink(missing_ok=True)  # a rerun into the same directory: no stale timing
    if seconds is not None:
        atomic_write_json(timing, {"images": len(painted), "seconds": round(seconds, 3),
                                   "images_per_second": len(painted) / max(seconds, 1e-9)})  # fmt: skip
    return rows

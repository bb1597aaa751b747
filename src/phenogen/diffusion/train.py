"""``train-image``'s loop: one explicit accelerate function, cached latents and condition features, exact resume.

Stages::

    1. data      the training split's (image, barcode) pairs (held-out pairs only for a held-out loss)
    2. VAE       train the small AutoencoderKL (or load a local SD VAE), fit latent shift/scale → OUT/vae
    3. caches    VAE posteriors (mean, std) of every image (both flips with hflip) and the frozen
                 condition features of every unique barcode, computed once → OUT/cache/*.safetensors
                 (``image.cache_layout``: in memory, or sharded on disk and streamed — see below)
    4. loop      sample latents from the cached posteriors, noise them, predict ε (or v), MSE
                 (min-SNR weighted on request); condition dropout inside the conditioner; EMA;
                 sample grids, held-out loss, checkpoints (rotated), time budget
    5. export    EMA weights → OUT/pipeline (DNAToImagePipeline.save_pretrained), losses.json, loss_curve.png

Resume is exact: a checkpoint (``OUT/checkpoints/checkpoint-NNNNNN``) holds the accelerate state
(weights, optimizer, LR schedule, global RNGs), the EMA (safetensors + JSON) and the loop state
(optimizer step, the training generator's state, the loss history). The data order is a pure
function of ``(seed, epoch)``, so the step count alone fixes the position in the data.

Crash safety: a checkpoint is written into ``checkpoint-NNNNNN.tmp``, completed by ``complete.json``
(its files and their sizes, written last), fsynced and renamed into place; only then are checkpoints
beyond ``checkpoints_total_limit`` pruned. ``--resume`` takes the newest *complete* checkpoint: unfinished
saves and checkpoints whose files no longer match ``complete.json`` are skipped with a note on stderr
(an earlier checkpoint gives the same run, only later); one that looks complete but cannot be loaded
is a :class:`~phenogen.errors.CheckpointError` naming it. ``pipeline/``, ``vae/``, the caches and the
JSON files are likewise written aside and renamed. ``PHENOGEN_TEST_KILL_AT`` (:data:`phenogen.diffusion.checkpoints.KILL_ENV`) is the
crash tests' hook.

Several processes (``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N``;
on a machine without CUDA, gloo on the CPU): every process draws the whole global batch's inputs and
noise from the same generators and sends its own contiguous share of the rows through the UNet
(:func:`diffusion_loss`); gradient all-reduce averages the shares, so N processes train the model one
process trains, up to floating-point rounding. The main process alone trains the VAE, writes the caches
(the others then read them), samples, evaluates and writes every file; checkpoints hold each process's
RNG state, and a run resumes with the number of processes that wrote it. (Measured with accelerate 1.16:
``accelerate launch --cpu --num_processes 2`` starts a single process; ``--multi_gpu`` starts two, which
then use gloo on the CPU.)

Cache layouts (``image.cache_layout``; ``auto`` = ``sharded`` above ``image.cache_sharded_above`` images):
``memory`` holds every training image and both caches in process memory, as above. ``sharded``
(:mod:`phenogen.diffusion.latent_cache`) holds neither: the main process encodes the images shard by
shard, reading ``cache_shard_size`` of them from disk at a time, into ``latents-NNNNN.safetensors`` files
(written atomically, resumable, rebuilt when the VAE, resolution, hflip or image list changed) under
``image.cache_dir`` (default ``OUT/cache``), and the features likewise; a step reads only its rows.
Each process streams its own contiguous segment of the epoch's shard order
(:class:`~phenogen.diffusion.latent_cache.StreamOrder`) — every image read once per epoch across the
run — and draws its own noise from a generator reseeded from ``(seed, micro-step, rank)``; its loss is
weighed by its share of the global batch. So ``N`` processes train a model *distributed like* one
process's (not bit for bit), and a run still resumes exactly with the number of processes that wrote it.
A VAE trained here sees at most ``VAE_IMAGES_SHARDED`` images (spread over the set) in that layout, and
its latent scaling is fitted on ``SCALING_ROWS_SHARDED`` cached posteriors; the decoder loss reads its
photos from disk.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch

from phenogen.data.dataset import load_dataset
from phenogen.diffusion.checkpoints import (
    find_checkpoint,
    kill_point,
    load_checkpoint,
    save_checkpoint,
)
from phenogen.diffusion.config import ImageConfig
from phenogen.diffusion.latent_cache import share
from phenogen.diffusion.pairs import Pairs, read_pairs
from phenogen.diffusion.pipeline_readme import write_pipeline_readme
from phenogen.diffusion.reader import READER_DIR
from phenogen.diffusion.settings import THESIS, GenerationSettings, write_settings
from phenogen.errors import CheckpointError, ConfigError, DataError
from phenogen.fsio import atomic_write_bytes, atomic_write_text, complete_dir, replace_dir

__all__ = ["train_image_model", "TrainResult", "check_resumable", "resolve_mixed_precision", "diffusion_loss"]

log = logging.getLogger(__name__)
SAMPLE_ROWS = 4  # training and held-out barcodes shown in each sample grid
SAMPLE_COLS = 4
EVAL_IMAGES = 64
VAE_IMAGES_SHARDED = 8192  # sharded layout: a VAE trained here sees this many images (spread), not all
SCALING_ROWS_SHARDED = 8192  # sharded layout: the latent scaling is fitted on this many cached posteriors
CAPTION_PRIOR_SD = (
    1.2  # the spread of the random birds' traits the shipped prior was trained on (prior.trait_sd)
)
# settings a resumed run must share with the checkpoint it continues
SHAPE_KEYS = ("preset", "resolution", "encoder", "lm_model", "lm_layer", "kmer_k", "kmer_segments", "onehot_window",
              "cond_depth", "pooled_condition", "null_condition", "prediction_type", "beta_schedule", "vae", "seed", "batch_size",
              "grad_accum", "hflip", "init", "latent_norm", "relatives_k", "relatives_tokens", "cond_head", "train_unet",
              "train_caption_encoder", "base", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets",
              "optimizer", "cache_layout", "cache_shard_size")  # fmt: skip


@dataclass
class TrainResult:
    """What a training run did."""

    out_dir: Path
    global_step: int
    total_steps: int
    losses: list[float]
    heldout: list[dict] = field(default_factory=list)
    stopped: str = "done"  # done | budget | interrupted
    seconds: dict[str, float] = field(default_factory=dict)
    images_per_second: float = 0.0

    @property
    def pipeline_dir(self) -> Path:
        return self.out_dir / "pipeline"


def resolve_mixed_precision(setting: str) -> str:
    """``auto`` → bf16 on a CUDA GPU that supports it, fp16 on other GPUs, ``no`` on CPU."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


# ---------------------------------------------------------------------------------- data + caches


def _pairs(ds, split: str, resolution: int, spill: Path | None = None) -> Pairs:
    """The (image, barcode) pairs of ``split``: paths and indices only (images are read by :meth:`Pairs.load`);
    a Parquet dataset's are memory-mapped from ``spill`` (:func:`~phenogen.diffusion.pairs.read_pairs`)."""
    return read_pairs(ds, split, resolution, spill if getattr(ds, "format", "tsv") == "parquet" else None)


def _layout(cfg: ImageConfig, n: int) -> str:
    """``memory`` or ``sharded``: ``image.cache_layout`` with ``auto`` resolved by the image count
    (no cache at all keeps the images in memory)."""
    if not cfg.cache:
        return "memory"
    if cfg.cache_layout == "auto":
        return "sharded" if n > cfg.cache_sharded_above else "memory"
    return cfg.cache_layout


def _spread_index(n: int, k: int) -> torch.Tensor:
    """``min(n, k)`` distinct indices spread evenly over ``range(n)``."""
    return torch.linspace(0, n - 1, min(n, k)).round().long().unique()


def _posterior_encoder(vae, data: Pairs, hflip: bool, device, chunk: int = 64):
    """``encode(start, stop)`` for :func:`~phenogen.diffusion.latent_cache.build_sharded_cache`: the VAE
    posteriors of images ``[start, stop)`` (and of their mirror images), read from disk ``chunk`` at a time."""
    from phenogen.diffusion.vae import encode_latent_dist

    def encode(start: int, stop: int) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {}
        for a in range(start, stop, chunk):
            images = data.load(range(a, min(stop, a + chunk)))
            found = dict(zip(("mean", "std"), encode_latent_dist(vae, images, device=device), strict=True))
            if hflip:
                flipped = encode_latent_dist(vae, images.flip(-1), device=device)
                found |= dict(zip(("mean_flip", "std_flip"), flipped, strict=True))
            for key, t in found.items():
                parts.setdefault(key, []).append(t)
        return {key: torch.cat(ts) for key, ts in parts.items()}

    return encode


def _latent_shards(root: Path, vae, data: Pairs, cfg: ImageConfig, device, main: bool, progress: bool):
    """The sharded latent cache: built (or finished) by the main process, opened by the others once it
    has (they only read; the index is written last)."""
    from phenogen.diffusion.latent_cache import (
        ShardedCache,
        build_sharded_cache,
        digest_strings,
        tensor_digest,
    )

    if not main:
        return ShardedCache(root, "latents")
    # what the rows are a function of: a cache of another VAE, resolution, flip setting or image list is
    # rebuilt (not of the VAE's latent scaling: the cache holds raw posteriors)
    meta = {"kind": "vae posteriors", "vae": tensor_digest(vae.state_dict().items()),
            "resolution": data.resolution, "hflip": cfg.hflip, "images": digest_strings(data.paths)}  # fmt: skip
    encode = _posterior_encoder(vae, data, cfg.hflip, device)
    return build_sharded_cache(root, "latents", len(data), encode, cfg.cache_shard_size, meta, progress)


def _feature_shards(root: Path, conditioner, data: Pairs, cfg: ImageConfig, main: bool, progress: bool):
    """The sharded condition-feature cache (one row a barcode), as :func:`_latent_shards`."""
    from phenogen.diffusion.latent_cache import (
        ShardedCache,
        build_sharded_cache,
        digest,
        digest_strings,
        tensor_digest,
    )

    if not main:
        return ShardedCache(root, "features")
    frozen = list(conditioner.named_buffers())  # what featurize reads besides the config
    if conditioner.lm is not None:
        frozen += [(f"lm.{k}", v) for k, v in conditioner.lm.state_dict().items()]
    meta = {"kind": "condition features", "conditioner": digest(dict(conditioner.config)),
            "frozen": tensor_digest(frozen), "sequences": digest_strings(data.sequences)}  # fmt: skip

    def features(start: int, stop: int) -> dict[str, torch.Tensor]:
        f, m = conditioner.featurize(data.sequences[start:stop])
        return {"features": f, "mask": m}

    return build_sharded_cache(root, "features", len(data.sequences), features, cfg.cache_shard_size, meta,
                               progress)  # fmt: skip


def _read_posteriors(
    cache, idx: torch.Tensor, flip: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` of the images ``idx`` from a sharded cache, the mirror image's where ``flip``
    (only the version used is read)."""
    if flip is None:
        got = cache.rows(idx, ("mean", "std"))
        return got["mean"], got["std"]
    plain, mirrored = (
        cache.rows(idx[~flip], ("mean", "std")),
        cache.rows(idx[flip], ("mean_flip", "std_flip")),
    )
    mean = torch.empty((len(idx), *plain["mean"].shape[1:]), dtype=plain["mean"].dtype)
    std = torch.empty_like(mean)
    mean[~flip], std[~flip] = plain["mean"], plain["std"]
    mean[flip], std[flip] = mirrored["mean_flip"], mirrored["std_flip"]
    return mean, std


def _step_seed(seed: int, micro: int, rank: int) -> int:
    """The training generator's seed at micro-step ``micro`` of process ``rank`` (sharded layout): resume
    needs no generator state, and each process draws its own noise."""
    return ((seed * 1_000_003 + micro) * 7919 + rank + 12345) % 2**63


def _cached(path: Path, build, use_disk: bool) -> dict[str, torch.Tensor]:
    """``build()``'s tensors, kept in (and read back from) ``path`` when ``use_disk``; saved atomically."""
    from safetensors.torch import load_file, save

    if use_disk and path.is_file():
        try:
            return load_file(path)
        except Exception as exc:  # a damaged cache is rebuilt (it is a pure function of the inputs)
            log.warning("rebuilding %s (%s)", path, exc)
    tensors = build()
    if use_disk:
        atomic_write_bytes(path, save({k: v.contiguous() for k, v in tensors.items()}))
    return tensors


# ---------------------------------------------------------------------------------- loss
def diffusion_loss(
    unet,
    conditioner,
    noise_scheduler,
    latents: torch.Tensor,
    features: torch.Tensor,
    mask: torch.Tensor | None,
    generator: torch.Generator,
    snr_gamma: float | None = None,
    drop: torch.Tensor | None = None,
    rows: slice | None = None,
    world: int = 1,
) -> torch.Tensor:
    """Denoising loss of one batch: noise ``latents (B, C, h, w)`` at random timesteps, predict ε or v.

    The conditioner drops conditions at random in training mode (``drop`` forces rows). With ``rows``
    (one of ``world`` processes' share of the global batch) every random draw is still made for the
    whole batch — the same draws as one process makes — and only ``rows`` go through the UNet; the loss
    is scaled so that the mean over the processes (what gradient all-reduce takes) is the global batch's
    mean loss. So a sharded run equals the single-process one up to floating-point rounding.
    """
    from diffusers.training_utils import compute_snr

    from phenogen.diffusion.components import denoise

    b = latents.shape[0]
    device = latents.device
    noise = torch.randn(latents.shape, generator=generator, device=device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator, device=device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    hidden, hmask = conditioner(features, mask, drop=drop, generator=generator)  # (B, T, D)
    if rows is not None:
        noisy, target, t, hidden, hmask = noisy[rows], target[rows], t[rows], hidden[rows], hmask[rows]
    attn_mask = None if bool(hmask.all()) else hmask
    pred = denoise(unet, noisy, t, hidden, attn_mask)
    per_example = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if snr_gamma is not None:
        snr = compute_snr(noise_scheduler, t)
        weight = torch.clamp(snr, max=snr_gamma) / snr
        if noise_scheduler.config.prediction_type == "v_prediction":
            weight = torch.clamp(snr, max=snr_gamma) / (snr + 1)
        per_example = per_example * weight
    if rows is not None:
        return per_example.sum() * (world / b)
    return per_example.mean()


# ---------------------------------------------------------------------------------- processes
def check_resumable(out: Path, cfg: ImageConfig) -> None:
    """Refuse to resume a run whose settings file is unreadable or whose shape-defining settings changed,
    or that has no complete checkpoint (raises CheckpointError; touches nothing)."""
    from phenogen.config import to_jsonable
    from phenogen.fsio import read_json

    saved_path = out / "config.json"
    if saved_path.exists():
        doc = read_json(saved_path, "run settings of the run to resume", error=CheckpointError)
        saved = doc.get("image")
        if not isinstance(saved, dict):
            raise CheckpointError(
                f"{saved_path}: has no 'image' section; it is not the settings file of a train-image run "
                "(resume only a train-image --out, or restore its config.json)"
            )
        now = to_jsonable(cfg)
        diff = [k for k in SHAPE_KEYS if k in saved and saved[k] != now[k]]
        if diff:
            raise CheckpointError(
                f"{out}: cannot resume with changed settings {', '.join(f'{k}: {saved[k]!r:.60} -> {now[k]!r:.60}' for k in diff)}; "
                "use the original settings or a new --out"
            )
    find_checkpoint(out / "checkpoints", announce=False)


def check_not_inside(out: Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse ``--force`` when an input (``{flag: path}``) is ``out`` or inside it: clearing ``out`` would
    delete it (e.g. ``--set prior.init=OUT --out OUT --force``, continuing a prior in place)."""
    from phenogen.errors import InputError

    root = Path(out).resolve()
    for flag, path in inputs.items():
        if path is None or str(path) in ("", "train", "builtin"):
            continue
        where = Path(path).resolve()
        if where == root or root in where.parents:
            raise InputError(f"{flag} {path} lies inside --out {out}, which --force clears; "
                             "write to another --out")  # fmt: skip


def scan_trait_indices(
    traits: str, names: list[str], where: str = "", setting: str = "image.caption_scan_traits"
) -> list[int]:
    """The positions in the caption ``names`` of the comma-separated values ``traits`` names (ConfigError naming
    the unknown ones and the ``setting`` they came from; ``where``: the file the names were read from)."""
    wanted = [t.strip() for t in traits.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in names]
    if unknown:
        raise ConfigError(f"{setting}: {', '.join(unknown)} not among the caption's values "
                          f"({', '.join(names)}){' of ' + where if where else ''}")  # fmt: skip
    return [names.index(t) for t in wanted]


def _species_groups(ds, data: Pairs) -> tuple[list[str], torch.Tensor]:
    """The species of a split's barcodes: their names (sorted) and each barcode's index among them."""
    by_record = {r.record_id: r.species for r in ds.records("train")}
    names = [by_record[rid] for rid in data.record_ids]
    species = sorted(set(names))
    index = {sp: i for i, sp in enumerate(species)}
    return species, torch.tensor([index[sp] for sp in names], dtype=torch.long)


def _spread_members(groups: torch.Tensor, per_group: int) -> torch.Tensor:
    """Up to ``per_group`` items of each group (evenly spread over its items, in order): their indices."""
    order = torch.argsort(groups, stable=True)
    counts = torch.bincount(groups).tolist()
    picks, at = [], 0
    for c in counts:
        if c:
            picks.append(order[at + torch.linspace(0, c - 1, min(c, per_group)).round().long()])
        at += c
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)


def check_inputs(data_dir: str | Path, cfg: ImageConfig) -> None:
    """Check what ``train-image`` reads before anything is written: the dataset loads and its train split
    has images on disk, ``image.init`` is a prior directory, ``image.vae`` is a VAE directory."""
    from phenogen.diffusion.prior import resolve_init

    ds = load_dataset(data_dir)
    records = [r for r in ds.records("train") if r.images]
    if not records:
        raise DataError(
            f"{ds.root}: the train split has no images; the image model needs (image, barcode) pairs"
        )
    missing = [rel for r in records for rel in r.images if not ds.image_path(rel).is_file()]
    if missing:
        raise DataError(
            f"{ds.root}: {len(missing)} image file(s) of the train split are missing, e.g. {missing[0]}"
        )
    prior_dir = resolve_init(cfg.init, cfg.preset)
    if cfg.caption_scan_at > 0 and prior_dir is not None:
        from phenogen.fsio import read_json

        decoder_config = prior_dir / "caption_decoder" / "config.json"
        if decoder_config.is_file():
            names = (
                read_json(decoder_config, "caption decoder settings", error=ConfigError).get("traits") or []
            )
            scan_trait_indices(cfg.caption_scan_traits, list(names), str(decoder_config))
    if cfg.base:
        from phenogen.diffusion.components import check_base_dir

        check_base_dir(cfg.base)
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("image.optimizer = 'adamw8bit' needs bitsandbytes (pip install bitsandbytes, on a "
                              "CUDA machine); or use 'adamw'") from None  # fmt: skip
    if cfg.vae != "train" and not (Path(cfg.vae) / "config.json").is_file():
        raise ConfigError(f"image.vae={cfg.vae!r}: not a VAE directory (no config.json); give a local "
                          "diffusers AutoencoderKL directory or 'train'")  # fmt: skip


# ---------------------------------------------------------------------------------- the run
def train_image_model(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: ImageConfig,
    *,
    resume: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
    generation: GenerationSettings | None = None,
    generation_source: str = "train-image",
) -> TrainResult:
    """Train the DNA-conditioned latent diffusion model on the ``train`` split of a dataset.

    Parameters
    ----------
    data_dir : path
        A dataset directory (:func:`phenogen.data.dataset.load_dataset`).
    out_dir : path
        Run directory (see the module docstring for its layout).
    cfg : ImageConfig
        The ``[image]`` section.
    resume : bool
        Continue from the newest checkpoint in ``OUT/checkpoints`` (exactly).
    stop_after_steps : int, optional
        Stop after this optimizer step without exporting (a test hook simulating an interruption).
    progress : bool
        Show tqdm progress bars.
    generation : GenerationSettings, optional
        Stored with the pipeline (``generation_config.json``; :mod:`phenogen.diffusion.settings`), where
        ``generate`` and the API read how to paint it; default the thesis' DDIM 50 / guidance 8.
    generation_source : str
        Where those settings were chosen (stored beside them).

    Examples
    --------
    >>> # result = train_image_model("clade", "run/image", ImageConfig(preset="cpu", max_minutes=8))
    >>> # result.pipeline_dir
    """
    from accelerate.utils import (
        DataLoaderConfiguration,
        DistributedDataParallelKwargs,
        InitProcessGroupKwargs,
        set_seed,
    )
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from phenogen.accel import GROUP_TIMEOUT_S, new_accelerator, process_kwargs
    from phenogen.diffusion import components
    from phenogen.diffusion.caption_decoder import CaptionDecoder, caption_decoder_loss, latent_window
    from phenogen.diffusion.conditioning import build_conditioner
    from phenogen.diffusion.pipeline import DNAToImagePipeline, make_scheduler
    from phenogen.diffusion.prior import load_prior_unet, resolve_init
    from phenogen.diffusion.vae import (
        encode_latent_dist,
        fit_latent_scaling,
        scale_latents,
        to_model_range,
        train_vae,
    )

    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    budget = cfg.max_minutes * 60.0
    out = Path(out_dir)
    ckpt_root = out / "checkpoints"
    preset = components.get_preset(cfg.preset)
    mp = resolve_mixed_precision(cfg.mixed_precision)
    # split_batches: the LR schedule steps once per optimizer step, not once per process; unused
    # parameters (e.g. the null token without condition dropout) must not stall gradient all-reduce
    accelerator = new_accelerator(
        mp, gradient_accumulation_steps=cfg.grad_accum, project_dir=str(out),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True),
                         InitProcessGroupKwargs(timeout=timedelta(seconds=GROUP_TIMEOUT_S))],
        **process_kwargs(),
    )  # fmt: skip
    device = accelerator.device
    main, world, rank = accelerator.is_main_process, accelerator.num_processes, accelerator.process_index
    if resume:
        check_resumable(out, cfg)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(cfg.seed)

    # 1. data: (image, barcode) pairs of the training split only; held-out pairs for a held-out loss
    t0 = time.perf_counter()
    ds = load_dataset(data_dir)
    prior_dir = resolve_init(cfg.init, cfg.preset)
    base = components.load_base(cfg.base) if cfg.base else None  # a Stable Diffusion directory
    base_unet, base_vae, base_schedule = base if base is not None else (None, None, None)
    external_vae = cfg.vae != "train" or prior_dir is not None or base is not None
    resolution = cfg.resolution or preset.resolution
    if base is not None:  # the Stable Diffusion UNet's own size (SD 1.5: 64 x 8 = 512 px)
        resolution = cfg.resolution or int(base_unet.config.sample_size) * components.vae_scale(base_vae)
    spill = out / f".pairs-{rank}"  # a Parquet dataset's pairs, memory-mapped (removed at the end)
    train = _pairs(ds, "train", resolution, spill)
    if len(train) == 0:
        raise DataError(
            f"{ds.root}: the train split has no images; the image model needs (image, barcode) pairs"
        )
    n = len(train)
    layout = _layout(cfg, n)
    data_state = {"layout": layout, "shard_size": cfg.cache_shard_size if layout == "sharded" else None}
    if layout == "memory":  # every training image in memory (the sharded layout reads them from disk)
        train.images = train.load()
    if world > 1 and (cfg.batch_size < world or 0 < n % cfg.batch_size < world):
        raise ConfigError(f"image.batch_size={cfg.batch_size}: with {n} training images every batch (the last "
                          f"of an epoch too) needs at least one image for each of the {world} processes")  # fmt: skip
    heldout = _pairs(ds, "heldout", resolution, spill.with_name(spill.name + "-heldout"))
    seconds["load"] = time.perf_counter() - t0

    # 2.-3. VAE and caches: the main process trains, fits, caches and saves them; the others then load
    # them from disk (the same numbers, computed once)
    if not main:
        accelerator.wait_for_everyone()  # until the main process has written the VAE and caches
    t0 = time.perf_counter()
    vae_dir = out / "vae"
    if main and resume and not vae_dir.is_dir() and complete_dir(vae_dir) is not None:
        complete_dir(vae_dir).rename(vae_dir)  # a kill fell between the two renames of its save
    if base is not None:
        vae = base_vae
    elif external_vae:
        vae = components.load_vae(prior_dir / "vae" if prior_dir is not None else cfg.vae)
    elif (resume or not main) and (vae_dir / "config.json").is_file():
        vae = components.load_vae(vae_dir)
    else:
        vae = components.build_vae(cfg.preset, resolution)
        steps = preset.vae_steps if cfg.vae_steps is None else cfg.vae_steps
        vae_budget = budget * 0.25 if budget else 0.0
        # the sharded layout trains the VAE on a spread subset of at most VAE_IMAGES_SHARDED images
        vae_images = train.images if layout == "memory" else train.load(_spread_index(n, VAE_IMAGES_SHARDED))
        vae_losses = train_vae(
            vae, vae_images, steps, cfg.vae_batch_size or preset.vae_batch, cfg.vae_lr, cfg.vae_kl_weight, cfg.seed,
            vae_budget, cfg.hflip, preset.vae_crop if cfg.vae_crop is None else cfg.vae_crop, device, progress,
            colour_weight=cfg.vae_colour_weight,
        )  # fmt: skip
        atomic_write_text(out / "vae_losses.json", json.dumps(vae_losses) + "\n")
    vae.to(device).eval().requires_grad_(False)
    scale = components.vae_scale(vae)
    if resolution % scale:
        raise DataError(f"resolution {resolution} is not a multiple of the VAE's factor {scale}")
    seconds["vae"] = time.perf_counter() - t0

    # 3. caches: posteriors of every image (and its mirror image) + frozen features of every barcode
    t0 = time.perf_counter()
    width = int(base_unet.config.cross_attention_dim) if base is not None else preset.cross_attention_dim
    conditioner = build_conditioner(
        cfg.encoder, width, lm_model=cfg.lm_model, lm_layer=cfg.lm_layer, kmer_k=cfg.kmer_k,
        kmer_segments=cfg.kmer_segments, onehot_window=cfg.onehot_window,
        max_length=train.sequences.max_length(), depth=cfg.cond_depth,
        heads=components.condition_heads(width, preset.cond_heads), fixed_length=base is not None,
        null_condition=cfg.null_condition, cond_dropout=cfg.cond_dropout, feature_dropout=cfg.feature_dropout,
        head=cfg.cond_head, seed=cfg.seed,
        caption_encoder=prior_dir / "caption_encoder" if prior_dir is not None else None,
        references=train.sequences if cfg.encoder == "relatives" else (), relatives_k=cfg.relatives_k, relatives_tokens=cfg.relatives_tokens,
        relatives_temperature=cfg.relatives_temperature, relatives_self_drop=cfg.relatives_self_drop,
    )  # fmt: skip
    conditioner.to(device)

    def latent_cache(images: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, std = encode_latent_dist(vae, images, device=device)
        tensors = {"mean": mean, "std": std}
        if cfg.hflip:
            mean_f, std_f = encode_latent_dist(vae, images.flip(-1), device=device)
            tensors |= {"mean_flip": mean_f, "std_flip": std_f}
        return tensors

    def feature_cache(sequences: list[str]) -> dict[str, torch.Tensor]:
        feats, mask = conditioner.featurize(sequences)
        return {"features": feats, "mask": mask}

    disk = cfg.cache
    cache_dir = out / "cache"
    lat = feat = lat_shards = feat_shards = None
    if layout == "sharded":  # on disk, built once (resumably), read lazily; the main process builds them,
        # the others (past the barrier above, so after it has) open them
        shard_root = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir
        lat_shards = _latent_shards(shard_root, vae, train, cfg, device, main, progress)
        feat_shards = _feature_shards(shard_root, conditioner, train, cfg, main, progress)
    elif main and not (resume and (cache_dir / "train_latents.safetensors").is_file()):
        shutil.rmtree(cache_dir, ignore_errors=True)
    if layout == "memory":
        lat = (
            _cached(cache_dir / "train_latents.safetensors", lambda: latent_cache(train.images), disk)
            if cfg.cache
            else None
        )
    if main and not external_vae and not (resume and vae_dir.is_dir()):
        if lat_shards is not None:  # fitted on a spread sample of the cached posteriors
            stats = lat_shards.rows(_spread_index(n, SCALING_ROWS_SHARDED), ("mean", "std"))
        else:
            stats = lat if lat is not None else latent_cache(train.images)
        shift, vscale = fit_latent_scaling(vae, stats["mean"], stats["std"], cfg.latent_norm == "channel")
        log.info("latent shift %.4f scale %.4f", shift, vscale)
        vae.save_pretrained(vae_dir.with_name("vae.tmp"), safe_serialization=True)
        replace_dir(vae_dir.with_name("vae.tmp"), vae_dir)
    if layout == "memory":
        feat = (
            _cached(
                cache_dir / "train_features.safetensors", lambda: feature_cache(list(train.sequences)), disk
            )
            if cfg.cache
            else None
        )
    if main:
        accelerator.wait_for_everyone()
    ev = None
    if len(heldout):
        n_ev = min(EVAL_IMAGES, len(heldout))
        ev_idx = torch.linspace(0, len(heldout) - 1, n_ev).round().long()
        ev = {
            "images": heldout.load(ev_idx),
            "seq": heldout.seq_index[ev_idx],
            "sequences": heldout.sequences,
        }
    seconds["cache"] = time.perf_counter() - t0

    # 4. model, optimizer, schedule, EMA
    set_seed(cfg.seed)
    if base is not None:  # fine-tune Stable Diffusion's UNet, the DNA conditioner in CLIP's place
        unet = base_unet
    elif prior_dir is not None:  # fine-tune the pretrained prior (its cross-attention starts as a no-op)
        unet = load_prior_unet(prior_dir, preset.cross_attention_dim, resolution // scale)
        if cfg.pooled_condition:
            unet = components.add_pooled_condition(unet)
    else:
        unet = components.build_unet(cfg.preset, preset.cross_attention_dim, sample_size=resolution // scale,
                                     latent_channels=vae.config.latent_channels,
                                     pooled=cfg.pooled_condition)  # fmt: skip
    if base is not None:  # the base's own schedule and prediction type (unless v_prediction is asked for)
        noise_scheduler = components.base_noise_scheduler(
            base_schedule, cfg.prediction_type if cfg.prediction_type != "epsilon" else None
        )
    else:
        noise_scheduler = components.build_noise_scheduler(cfg.prediction_type, cfg.beta_schedule)
    lora_config = None
    if cfg.lora_rank:  # the base frozen, LoRA on its attention projections (float32)
        from phenogen.diffusion.lora import add_lora

        lora_config = add_lora(unet, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if device.type == "cuda" and mp in ("fp16", "bf16"):  # the frozen base in half precision
            half = torch.float16 if mp == "fp16" else torch.bfloat16
            for p in unet.parameters():
                if not p.requires_grad:
                    p.data = p.data.to(half)
    else:
        unet.requires_grad_(cfg.train_unet)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if cfg.cond_head == "caption":
        conditioner.caption.requires_grad_(cfg.train_caption_encoder)
    unet_params = [p for p in unet.parameters() if p.requires_grad]
    params = unet_params + conditioner.trainable_parameters()
    unet_lr = cfg.unet_lr
    if unet_lr is None and base is not None:  # Stable Diffusion practice: gentle on the pretrained UNet
        unet_lr = 1e-4 if cfg.lora_rank else 1e-5
    groups = params
    if unet_params and unet_lr is not None and unet_lr != cfg.lr:  # two groups; the schedule scales both
        groups = [{"params": unet_params, "lr": unet_lr}, {"params": conditioner.trainable_parameters()}]
    # fused AdamW on a GPU: one kernel for all parameters (the foreach default launches several per group)
    if cfg.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        optimizer = bnb.optim.AdamW8bit(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.AdamW(
            groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True if device.type == "cuda" else None
        )
    micro_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = cfg.max_steps or math.ceil(micro_per_epoch * cfg.epochs / cfg.grad_accum)
    # linear warmup + cosine decay over plan["steps"], which a time budget may shorten (see the loop)
    plan = {"steps": total_steps}

    def lr_factor(step: int) -> float:
        warmup = min(cfg.lr_warmup_steps, plan["steps"] // 4)
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, plan["steps"] - warmup))))

    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    if cfg.train_unet:
        unet, conditioner, optimizer, lr_scheduler = accelerator.prepare(
            unet, conditioner, optimizer, lr_scheduler
        )
    else:  # a frozen UNet is not wrapped (DDP refuses modules without trainable parameters)
        unet = unet.to(device)
        conditioner, optimizer, lr_scheduler = accelerator.prepare(conditioner, optimizer, lr_scheduler)
    raw_unet, raw_cond = accelerator.unwrap_model(unet), accelerator.unwrap_model(conditioner)
    if lora_config is not None:  # checkpoints hold the LoRA weights, not the frozen base
        from phenogen.diffusion.lora import register_checkpoint_hooks

        register_checkpoint_hooks(accelerator, unet)
    if unet is not raw_unet:  # DDP-wrapped: components.denoise reads unet.config
        unet.config = raw_unet.config
    caption_decoder = None  # the prior's caption decoder: paints with the caption (frozen; decoder loss)
    if (
        cfg.cond_head == "caption"
        and prior_dir is not None
        and (prior_dir / "caption_decoder" / "config.json").is_file()
    ):
        caption_decoder = CaptionDecoder.from_pretrained(
            prior_dir / "caption_decoder", torch_dtype=torch.float32
        )
        caption_decoder.to(device).eval().requires_grad_(False)
        if caption_decoder.config.n_traits != raw_cond.config.caption_n:
            raise CheckpointError(f"{prior_dir}: the caption decoder reads {caption_decoder.config.n_traits} values, "
                                  f"the caption encoder {raw_cond.config.caption_n}")  # fmt: skip
    use_decoder_loss = caption_decoder is not None and cfg.decoder_loss_weight > 0
    # the caption scan (image.caption_scan_at): which values, and what it found
    scan_traits = (
        scan_trait_indices(cfg.caption_scan_traits, raw_cond.caption_names)
        if cfg.caption_scan_at > 0 and use_decoder_loss
        else []
    )
    scan: dict | None = None  # {"step", "seconds", "moves": [...]} once scanned (kept in checkpoints)
    anchor_rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # barcode -> (mask, value) of moved values
    ema_params = [p for p in raw_unet.parameters() if p.requires_grad] + raw_cond.trainable_parameters()
    # on a GPU, foreach: one multi-tensor update instead of a Python loop over every parameter (with fused
    # AdamW, 1.3-1.5x the training images/s on an H100); on the CPU the loop measured 5 % faster (BENCHMARKS.md)
    on_gpu = device.type == "cuda"
    ema = (
        EMAModel(ema_params, decay=cfg.ema_decay, use_ema_warmup=True, foreach=on_gpu)
        if cfg.ema_decay > 0
        else None
    )
    if ema is not None:
        ema.to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 12345)

    global_step, losses, heldout_log = 0, [], []
    if resume:  # every process resumes from the checkpoint the main process chose
        from accelerate.utils import broadcast_object_list

        box = [str(find_checkpoint(ckpt_root)) if main else None]
        if world > 1:
            broadcast_object_list(box, from_process=0)
        ckpt = Path(box[0])
        state = load_checkpoint(accelerator, ckpt, gen, ema)
        global_step, losses, heldout_log = state["global_step"], state["losses"], state["heldout"]
        if state.get("data", data_state) != data_state:  # another order of the data: not this run
            raise CheckpointError(f"{ckpt}: written with the cache layout {state['data']!r:.80}, this run has "
                                  f"{data_state!r}; resume with the original image.cache_layout")  # fmt: skip
        plan["steps"] = state.get("planned_steps", total_steps)
        scan = state.get("caption_anchors")
        log.info("resumed from %s at step %d", ckpt, global_step)
    scan_step = max(1, round(cfg.caption_scan_at * plan["steps"])) if scan_traits else None

    # sampling: DDIM over the training schedule; with a Stable Diffusion base, over the base's own scheduler
    # config (set_alpha_to_one = false ...), so that a stock pipeline's DDIM from it takes the same steps
    sampling_config = noise_scheduler.config
    if base is not None:
        sampling_config = dict(base_schedule) | {"prediction_type": noise_scheduler.config.prediction_type}
    pipe = DNAToImagePipeline(
        vae,
        raw_unet,
        make_scheduler("ddim", sampling_config),
        raw_cond,
        caption_decoder=caption_decoder,
    )
    pipe.set_progress_bar_config(disable=True)
    sample_rows = [train.sequences[i] for i in _spread(len(train.sequences), SAMPLE_ROWS)]
    sample_rows += [heldout.sequences[i] for i in _spread(len(heldout.sequences), SAMPLE_ROWS)]

    def barcode_features(sidx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition features and masks of the training barcodes ``sidx`` (cached, else featurized)."""
        if feat_shards is not None:
            got = feat_shards.rows(sidx)
            return got["features"], got["mask"]
        if feat is not None:
            return feat["features"][sidx], feat["mask"][sidx]
        return raw_cond.featurize(train.sequences.take(sidx))

    def batch_inputs(idx: torch.Tensor):
        """Latents (B, C, h, w) and condition features of the images ``idx``."""
        if cfg.hflip:
            flip = (torch.rand(len(idx), generator=gen, device=device) < 0.5).cpu()
        if lat_shards is not None:
            mean, std = _read_posteriors(lat_shards, idx, flip if cfg.hflip else None)
            mean, std = mean.to(device), std.to(device)
        elif lat is not None:
            mean, std = lat["mean"][idx], lat["std"][idx]
            if cfg.hflip:
                fl = flip[:, None, None, None]
                mean, std = (
                    torch.where(fl, lat["mean_flip"][idx], mean),
                    torch.where(fl, lat["std_flip"][idx], std),
                )
            mean, std = mean.to(device), std.to(device)
        else:
            x = to_model_range(train.images[idx]).to(device)
            if cfg.hflip:
                x = torch.where(flip[:, None, None, None].to(device), x.flip(-1), x)
            dist = vae.encode(x).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
        z = mean + std * torch.randn(mean.shape, generator=gen, device=device)
        f, m = barcode_features(train.seq_index[idx])
        width = int(m.sum(1).max())  # trim padding to the batch's longest barcode
        if not use_decoder_loss:
            return scale_latents(vae, z), f[:, :width].to(device), m[:, :width].to(device), None
        k = min(
            cfg.decoder_loss_batch, len(idx)
        )  # the photos (flipped as their latents) for the decoder loss
        x = to_model_range(train.load(idx[:k]))
        if cfg.hflip:
            x = torch.where(flip[:k, None, None, None], x.flip(-1), x)
        pix = latent_window(mean[:k], x.to(device), cfg.decoder_loss_crop, gen)
        return scale_latents(vae, z), f[:, :width].to(device), m[:, :width].to(device), pix

    def loop_state() -> dict:
        return {
            "global_step": global_step,
            "planned_steps": plan["steps"],
            "losses": losses,
            "heldout": heldout_log,
            "data": data_state,
            "caption_anchors": scan,
        }

    @functools.cache
    def species_groups() -> tuple[list[str], torch.Tensor]:
        """:func:`_species_groups` of the training pairs, read from the dataset once."""
        return _species_groups(ds, train)

    def caption_scan(step: int) -> dict:
        """Scan every training species' written caption (mean over its barcodes) along ``scan_traits``
        through the frozen caption decoder on its photos (:func:`phenogen.diffusion.invert.scan_captions`)."""
        from phenogen.diffusion.invert import scan_captions

        t_scan = time.perf_counter()
        species, seq_group = species_groups()
        img_group = seq_group[train.seq_index[torch.arange(n)]]
        picks = _spread_members(img_group, cfg.caption_scan_images)
        images = train.load(picks)
        latents, _ = encode_latent_dist(vae, images, device=device)
        was_training = raw_cond.training
        raw_cond.eval()
        written = []
        with torch.no_grad():
            for at in range(0, len(train.sequences), 256):
                f, m = barcode_features(torch.arange(at, min(at + 256, len(train.sequences))))
                written.append(raw_cond.caption_values(f.to(device), m.to(device)).float().cpu())
        raw_cond.train(was_training)
        written = torch.cat(written)
        start = torch.zeros(len(species), written.shape[1]).index_add_(0, seq_group, written)
        start /= torch.bincount(seq_group, minlength=len(species)).clamp(min=1)[:, None]
        _, moves = scan_captions(caption_decoder, latents, images, img_group[picks], start, scan_traits,
                                 margin=cfg.caption_scan_margin, crop=cfg.decoder_loss_crop,
                                 progress=progress and main)  # fmt: skip
        names = raw_cond.caption_names
        found = {"step": step, "seconds": round(time.perf_counter() - t_scan, 2), "species": len(species),
                 "moves": [{"species": species[mv.group], "trait": names[mv.trait], "before": mv.before,
                            "after": mv.after, "loss_before": mv.loss_before, "loss_after": mv.loss_after}
                           for mv in moves]}  # fmt: skip
        said = "; ".join(f"{mv['species']} {mv['trait']} {mv['before']:.2f} -> {mv['after']:.2f} (decoder loss "
                         f"{mv['loss_before']:.3f} -> {mv['loss_after']:.3f})" for mv in found["moves"])  # fmt: skip
        if main:
            print(f"[train-image] caption scan at step {step}: {len(moves)} value(s) of {len(species)} species "
                  f"moved{': ' + said if said else ''} ({found['seconds']:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
            atomic_write_text(out / "caption_scan.json", json.dumps(found, indent=1) + "\n")
        return found

    def anchors_of(found: dict | None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """barcode index -> (mask, value) of the values the scan moved, for every barcode of a moved species."""
        if not found or not found["moves"]:
            return {}
        species, seq_group = species_groups()
        names, where = raw_cond.caption_names, {sp: i for i, sp in enumerate(species)}
        per_group: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for mv in found["moves"]:
            if mv["species"] not in where or mv["trait"] not in names:
                raise CheckpointError(f"{out}: the caption scan moved {mv['species']} {mv['trait']}, which this "
                                      "run's training species or caption do not have; resume with the original data")  # fmt: skip
            mask, value = per_group.setdefault(
                where[mv["species"]], (torch.zeros(len(names)), torch.zeros(len(names)))
            )
            mask[names.index(mv["trait"])], value[names.index(mv["trait"])] = 1.0, float(mv["after"])
        rows = {}
        for i, g in enumerate(seq_group.tolist()):
            if g in per_group:
                rows[i] = tuple(t.to(device) for t in per_group[g])
        return rows

    anchor_rows = anchors_of(scan)

    def evaluate_and_sample(step: int) -> None:
        if ema is not None:
            ema.store(ema_params)
            ema.copy_to(ema_params)
        try:
            if ev is not None:
                heldout_log.append({"step": step, "loss": _eval_loss(ev, vae, raw_unet, raw_cond, noise_scheduler,
                                                                       device, cfg.snr_gamma)})  # fmt: skip
            _sample_grid(
                pipe, sample_rows, out / "samples" / f"step-{step:06d}.png", cfg.sample_steps, cfg.seed
            )
        finally:
            if ema is not None:
                ema.restore(ema_params)

    # 5. the loop
    stream = None
    if layout == "sharded":
        from phenogen.diffusion.latent_cache import ROWS_LOG_ENV, StreamOrder, log_rows

        stream = StreamOrder(n, cfg.cache_shard_size, cfg.batch_size, world, rank, cfg.seed)
        rows_log = os.environ.get(ROWS_LOG_ENV)
    t0 = time.perf_counter()
    unet.train()
    conditioner.train()
    stopped = "done"
    micro = global_step * cfg.grad_accum
    acc_loss, acc_n = 0.0, 0
    bar = tqdm(total=plan["steps"], initial=global_step, desc="train-image", disable=not (progress and main),
               dynamic_ncols=True)  # fmt: skip
    images_seen, side_seconds = 0, 0.0
    export_reserve = 30.0  # seconds kept for the final sample grid and saving (re-measured when sampling)
    while global_step < plan["steps"]:
        if stream is None:
            epoch, pos = divmod(micro, micro_per_epoch)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            idx = perm[pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
            # every process draws the whole global batch's inputs and noise (the same draws as one process);
            # each sends its own contiguous share of the rows through the UNet (see diffusion_loss)
            rows, batch_n = (share(len(idx), world, rank) if world > 1 else None), len(idx)
        else:  # sharded: this process's own rows of the global batch, its own noise (latent_cache)
            (idx, batch_n), rows = stream.batch(micro), None
            gen.manual_seed(_step_seed(cfg.seed, micro, rank))
            if rows_log:
                log_rows(rows_log, rank, micro, idx, cfg.cache_shard_size)
        with accelerator.accumulate(unet, conditioner):
            latents, f, m, pix = batch_inputs(idx)
            with accelerator.autocast():
                loss = diffusion_loss(unet, conditioner, noise_scheduler, latents, f, m, gen, cfg.snr_gamma,
                                      rows=rows, world=world)  # fmt: skip
                if pix is not None:  # the written caption must describe the photo: decode it with the caption
                    k = len(pix[0])
                    written = raw_cond.caption_values(f[:k], m[:k])
                    loss = loss + cfg.decoder_loss_weight * caption_decoder_loss(
                        caption_decoder, pix[0], written, pix[1], foreground_weight=10.0
                    )
                if (
                    cfg.caption_prior_weight > 0
                ):  # MAP: the written caption under the prior's N(0, 1.2²) captions
                    values = raw_cond.caption_values(f, m)
                    loss = loss + cfg.caption_prior_weight * (values.float() / CAPTION_PRIOR_SD).pow(2).mean()
                if anchor_rows and cfg.caption_anchor_weight > 0:  # the scan's moves, fading to 0 at the end
                    fade = 1.0 - (global_step - scan["step"]) / max(1, plan["steps"] - scan["step"])
                    hit = [
                        (r, anchor_rows[s])
                        for r, s in enumerate(train.seq_index[idx].tolist())
                        if s in anchor_rows
                    ]
                    if hit and fade > 0:
                        at = torch.tensor([r for r, _ in hit], device=device)
                        mask = torch.stack([a[0] for _, a in hit])
                        target = torch.stack([a[1] for _, a in hit])
                        pulled = raw_cond.caption_values(f[at], m[at]).float()
                        loss = loss + cfg.caption_anchor_weight * fade * (
                            mask * ((pulled - target) / CAPTION_PRIOR_SD).pow(2)
                        ).sum() / len(idx)
                if stream is not None and world > 1:
                    # the local mean weighed by its share of the global batch: the all-reduced gradient
                    # is then the global batch's mean
                    loss = loss * (world * len(idx) / batch_n)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        micro += 1
        images_seen += batch_n
        if world > 1:  # the global batch's loss: the mean of the processes' (scaled) shares
            loss = accelerator.reduce(loss.detach(), reduction="mean")
        acc_loss, acc_n = acc_loss + loss.item(), acc_n + 1
        if not accelerator.sync_gradients:
            continue
        global_step += 1
        if ema is not None:
            ema.step(ema_params)
        losses.append(acc_loss / acc_n)
        acc_loss, acc_n = 0.0, 0
        if scan_step is not None and scan is None and global_step >= scan_step:
            scan = caption_scan(global_step)
            anchor_rows = anchors_of(scan)
            seconds["caption_scan"] = scan["seconds"]
        kill_point("step", global_step)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        ts = time.perf_counter()
        # samples and held-out losses: the main process only (the others go on, and wait at the next all-reduce)
        if main and cfg.sample_every and global_step % cfg.sample_every == 0 and global_step < plan["steps"]:
            evaluate_and_sample(global_step)
            export_reserve = 1.5 * (time.perf_counter() - ts) + 5.0
        elif main and cfg.heldout_every and global_step % cfg.heldout_every == 0 and ev is not None:
            heldout_log.append({"step": global_step, "loss": _eval_loss(ev, vae, raw_unet, raw_cond, noise_scheduler,
                                                                         device, cfg.snr_gamma)})  # fmt: skip
        if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0:
            save_checkpoint(
                accelerator, ckpt_root, global_step, loop_state(), gen, ema, cfg.checkpoints_total_limit
            )
        side_seconds += time.perf_counter() - ts
        if stop_after_steps is not None and global_step >= stop_after_steps:
            stopped = "interrupted"
            break
        over = bool(budget) and time.perf_counter() - t_start > budget - export_reserve
        if budget and world > 1:  # the main process's clock decides for all, so that all stop together
            from accelerate.utils import broadcast

            over = bool(broadcast(torch.tensor([int(over)], device=device), from_process=0).item())
        if over:
            # a safety cap, not a schedule: the step count is fixed so that a slow machine is slower, not
            # worse; a run stopped here is a different (shorter) run, and says so loudly
            msg = (f"train-image: WARNING: the safety cap image.max_minutes = {cfg.max_minutes:g} stopped training "
                   f"at step {global_step} of {plan['steps']}; the model is undertrained and its numbers are not "
                   "those of a full run (raise image.max_minutes, or --resume to finish)")  # fmt: skip
            log.warning(msg)
            if main:
                print(msg, file=sys.stderr, flush=True)
            stopped = "budget"
            break
    bar.close()
    seconds["train"] = time.perf_counter() - t0
    ips = images_seen / max(1e-9, seconds["train"] - side_seconds)
    result = TrainResult(out, global_step, plan["steps"], losses, heldout_log, stopped, seconds, ips)
    if stopped == "interrupted":
        return result

    # 6. export (main process): last checkpoint, EMA pipeline (written aside, then renamed), samples, losses
    t0 = time.perf_counter()
    if not (cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0):
        save_checkpoint(
            accelerator, ckpt_root, global_step, loop_state(), gen, ema, cfg.checkpoints_total_limit
        )
    if main:
        evaluate_and_sample(global_step)
        if ema is not None:
            ema.store(ema_params)
            ema.copy_to(ema_params)
        tmp = out / "pipeline.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if lora_config is None:
            pipe.save_pretrained(tmp, safe_serialization=True)
        else:  # the base UNet as it came, its LoRA beside it (diffusers format)
            _save_lora_pipeline(tmp, pipe, lora_config, cfg.base)
        write_settings(tmp, generation or THESIS, generation_source)
        if (
            cfg.cond_head == "caption"
            and prior_dir is not None
            and (prior_dir / READER_DIR / "probe.json").is_file()
        ):
            shutil.copytree(
                prior_dir / READER_DIR, tmp / READER_DIR
            )  # the prior's reader: best-of-K sampling
        write_pipeline_readme(tmp, lora=lora_config is not None, base=cfg.base)
        if ema is not None:
            ema.restore(ema_params)
        kill_point("export:mid_write", global_step)
        replace_dir(tmp, out / "pipeline")
        if (
            lora_config is not None
        ):  # what a user of their own Stable Diffusion copy needs: LoRA + conditioner
            _export_lora(out / "pipeline", out / "lora")
        seconds["export"] = time.perf_counter() - t0
        seconds["total"] = time.perf_counter() - t_start
        _write_losses(out, result)
    accelerator.wait_for_everyone()
    for pairs in (
        train,
        heldout,
    ):  # the memory-mapped pairs of a Parquet dataset (an interrupted run keeps them)
        if pairs.spill is not None:
            shutil.rmtree(pairs.spill, ignore_errors=True)
    return result


def _save_lora_pipeline(directory: Path, pipe, lora_config, base: str = "") -> None:
    """Save a LoRA run's pipeline: the UNet without its adapter, ``pytorch_lora_weights.safetensors`` beside.

    With a Stable Diffusion base the UNet's files are copied from the base as they are (on a GPU the frozen
    base trained in half precision; the float32 weights on disk are the ones a stock pipeline loads)."""
    from phenogen.diffusion.components import WEIGHT_FILES
    from phenogen.diffusion.lora import save_lora, unet_without_lora
    from phenogen.diffusion.pipeline import DNAToImagePipeline

    clean = DNAToImagePipeline(pipe.vae, unet_without_lora(pipe.unet), pipe.scheduler, pipe.conditioner,
                               caption_decoder=pipe.caption_decoder)  # fmt: skip
    clean.save_pretrained(directory, safe_serialization=True)
    source = Path(base) / "unet" if base else None
    if source is not None and (source / WEIGHT_FILES[0]).is_file():
        for name in ("config.json", WEIGHT_FILES[0]):
            shutil.copyfile(source / name, directory / "unet" / name)
    save_lora(directory, pipe.unet, lora_config)


def _export_lora(pipeline_dir: Path, lora_dir: Path) -> None:
    """``OUT/lora``: the LoRA weights and the DNA conditioner, for a stock pipeline over one's own base."""
    from phenogen.diffusion.lora import LORA_WEIGHTS

    tmp = lora_dir.with_name(lora_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(pipeline_dir / LORA_WEIGHTS, tmp / LORA_WEIGHTS)
    shutil.copytree(pipeline_dir / "conditioner", tmp / "conditioner")
    shutil.copy2(pipeline_dir / "README.md", tmp / "README.md")
    replace_dir(tmp, lora_dir)


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices spread over ``range(n)``."""
    if n == 0:
        return []
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(min(k, n))})


@torch.no_grad()
def _eval_loss(ev: dict, vae, unet, conditioner, noise_scheduler, device, snr_gamma) -> float:
    """Diffusion loss of a fixed held-out subset with fixed noise (comparable across steps)."""
    from phenogen.diffusion.vae import scale_latents, to_model_range

    modes = unet.training, conditioner.training
    unet.eval()
    conditioner.eval()
    gen = torch.Generator(device=device).manual_seed(0)
    dist = vae.encode(to_model_range(ev["images"]).to(device)).latent_dist
    latents = scale_latents(vae, dist.mean)
    feats, mask = conditioner.featurize([ev["sequences"][i] for i in ev["seq"].tolist()])
    keep = torch.zeros(len(feats), dtype=torch.bool, device=device)
    loss = diffusion_loss(unet, conditioner, noise_scheduler, latents, feats.to(device), mask.to(device), gen,
                          snr_gamma, drop=keep)  # fmt: skip
    unet.train(modes[0])
    conditioner.train(modes[1])
    return float(loss)


def _sample_grid(pipe, sequences: list[str], path: Path, steps: int, seed: int) -> None:
    """A PNG grid: one row per barcode (training rows first, then held-out), SAMPLE_COLS images each."""
    from PIL import Image

    if not sequences:
        return
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(len(sequences) * SAMPLE_COLS)]
    images = pipe(sequences, num_inference_steps=steps, guidance_scale=3.0, generator=gens,
                  num_images_per_sequence=SAMPLE_COLS).images  # fmt: skip
    w, h = images[0].size
    sheet = Image.new("RGB", (SAMPLE_COLS * w, len(sequences) * h), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % SAMPLE_COLS) * w, (i // SAMPLE_COLS) * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _write_losses(out: Path, result: TrainResult) -> None:
    payload = {
        "train": result.losses,
        "heldout": result.heldout,
        "global_step": result.global_step,
        "total_steps": result.total_steps,
        "stopped": result.stopped,
        "seconds": result.seconds,
        "train_images_per_second": result.images_per_second,
    }
    atomic_write_text(out / "losses.json", json.dumps(payload, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = range(1, len(result.losses) + 1)
    ax.plot(steps, result.losses, lw=0.5, alpha=0.4, label="train (per step)")
    k = max(1, len(result.losses) // 50)
    if len(result.losses) >= k:
        smooth = torch.tensor(result.losses).unfold(0, k, 1).mean(1).tolist()
        ax.plot(range(k, len(result.losses) + 1), smooth, lw=1.5, label=f"train (mean of {k})")
    if result.heldout:
        ax.plot(
            [h["step"] for h in result.heldout], [h["loss"] for h in result.heldout], "o-", label="held-out"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("diffusion loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(out / "loss_curve.png", buf.getvalue())

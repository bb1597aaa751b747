"""``train-generator``'s loop: any registered family, the same data, DNA features, checkpoints and export.

The ``[generator]`` section (:class:`GeneratorConfig`) picks the family, the DNA encoder, the image size,
a fixed step count and the optimiser's rate; its free ``params`` table goes into the family's config
(``z_dim``, ``beta`` …). :func:`train_generator`:

1. reads the ``train`` split's photos at ``resolution`` (``phenogen.diffusion.train._pairs``, held in
   memory as uint8) and fits the :class:`~phenogen.generators.features.Featurizer` on their barcodes
   (saved once, ``OUT/featurizer/``: a resumed run reads the very same numbers);
2. runs ``steps`` optimizer steps. Step ``s`` is a pure function of ``(seed, s)``: its batch is a slice
   of the permutation of epoch ``s·B // N`` (seeded by the epoch), its mirror flips and every random
   number the family draws come from a CPU generator seeded by ``(seed, s)``, and the global torch
   RNG is re-seeded too (dropout). A checkpoint is therefore the weights, the optimizers, the loss
   history and the RNG states, and a resumed run equals an uninterrupted one bit for bit;
3. exports ``OUT/generator/`` (:func:`~phenogen.generators.base.save_generator`), after the family's
   :meth:`~phenogen.generators.base.GeneratorFamily.after_training` hook (the cVAE fits its concept
   vectors there), and writes ``OUT/losses.json``, ``OUT/samples.png`` (a few training species,
   labelled) and ``OUT/train_metrics.json``: training minutes, sampling images/s and the *diversity*
   ratio — the mean pairwise pixel distance of images painted from one barcode with different noise,
   over the same statistic for real photos of one species (≈ 0: mode collapse; ≈ 1: as varied as
   real photos).

Checkpoints: ``OUT/checkpoints/step-NNNNNN/`` with ``model.safetensors``, ``optimizers.safetensors``
(every optimizer's tensors, flattened as ``NAME.state.PARAM.KEY``), ``rng.safetensors`` and
``state.json`` (the optimizers' non-tensor parts, the losses, the step, the config), written aside
and renamed into place (:func:`~phenogen.fsio.replace_dir`); the newest ``keep_checkpoints`` are kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from phenogen.config import require_finite, to_jsonable
from phenogen.errors import CheckpointError, ConfigError, DataError
from phenogen.fsio import atomic_write_bytes, atomic_write_json, replace_dir

__all__ = [
    "GeneratorConfig",
    "family_config",
    "check_config",
    "train_generator",
    "find_checkpoint",
    "diversity",
    "DEFAULT_RESOLUTION",
]

log = logging.getLogger(__name__)

DEFAULT_RESOLUTION = 64
"""The demo's image side: the ``cpu`` preset's resolution (phenogen.diffusion.components; a test checks)."""

CKPT_PREFIX = "step-"
SAMPLE_SPECIES = 6  # rows of samples.png
SAMPLE_COLS = 4  # images per row (different noise)


@dataclass
class GeneratorConfig:
    """The ``[generator]`` section: family, DNA encoder, image size and training of ``train-generator``."""

    family: str = field(default="cvae", metadata={"help": "generator family: cvae, gan or plugin"})
    encoder: Literal["kmer", "gpt2"] = field(
        default="kmer",
        metadata={"help": "DNA condition: kmer (k-mer profiles, the demo's) or gpt2 (DNA LM hidden states)"},
    )
    lm_model: str = field(default="", metadata={"help": "gpt2: the train-lm directory"})
    lm_layer: int = field(default=-1, metadata={"help": "gpt2: hidden layer (-1 = last)"})
    kmer_k: int = field(default=4, metadata={"help": "kmer: word length"})
    kmer_segments: int = field(default=4, metadata={"help": "kmer: sequence segments (plus the whole)"})
    resolution: int = field(
        default=DEFAULT_RESOLUTION,
        metadata={"help": "image side in pixels, a multiple of 8 from 16 to 512 (the demo: 64)"},
    )
    steps: int = field(default=3000, metadata={"help": "optimizer steps (a fixed count)"})
    batch_size: int = field(default=32, metadata={"help": "images per step"})
    lr: float = field(default=2e-4, metadata={"help": "learning rate of every optimizer"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and noise"})
    hflip: bool = field(default=True, metadata={"help": "mirror half the training photos at random"})
    checkpoint_every: int = field(
        default=500, metadata={"help": "save resumable state every N steps (0 = only at the end)"}
    )
    keep_checkpoints: int = field(default=2, metadata={"help": "resumable checkpoints kept"})
    max_minutes: float = field(
        default=0.0,
        metadata={
            "help": "safety cap on training time: a run that reaches it warns loudly, checkpoints, exports "
            "what it has and stops (resume to finish). 0 = none"
        },
    )
    device: Literal["cpu", "cuda"] = field(default="cpu", metadata={"help": "where the model trains"})
    diversity_barcodes: int = field(
        default=4, metadata={"help": "training barcodes of the diversity measurement"}
    )
    diversity_images: int = field(
        default=4, metadata={"help": "images per barcode of the diversity measurement"}
    )
    params: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the family's hyper-parameters (e.g. {z_dim = 32, beta = 1.0} for cvae)"},
    )

    def __post_init__(self) -> None:
        require_finite(self)
        if not self.family or not isinstance(self.family, str):
            raise ValueError("family must name a generator family (cvae, gan, plugin)")
        if not 16 <= self.resolution <= 512 or self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8 from 16 to 512, got {self.resolution}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        if self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if not 1 <= self.kmer_k <= 8 or self.kmer_segments < 1:
            raise ValueError("kmer_k must be 1..8 and kmer_segments >= 1")
        if self.diversity_barcodes < 1 or self.diversity_images < 2:
            raise ValueError("diversity_barcodes must be >= 1 and diversity_images >= 2")
        if self.encoder == "gpt2" and not self.lm_model:
            raise ValueError("encoder 'gpt2' needs the DNA language model: set generator.lm_model")
        if self.encoder != "gpt2" and self.lm_model:
            raise ValueError(f"lm_model is set but encoder is {self.encoder!r}; set encoder = 'gpt2'")
        bad = sorted(k for k in self.params if k in ("resolution", "cond_dim"))
        if bad:
            raise ValueError(f"params.{bad[0]} is set by the framework; use generator.resolution")


# ------------------------------------------------------------------------------------ config checks
def _cond_dim(cfg: GeneratorConfig) -> int:
    if cfg.encoder == "kmer":
        return (cfg.kmer_segments + 1) * 4**cfg.kmer_k
    from phenogen.lm.model import load_lm

    return int(load_lm(cfg.lm_model).model.config.n_embd)


def family_config(cfg: GeneratorConfig, cond_dim: int) -> dict[str, Any]:
    """The config dict the family is built from: ``resolution``, ``cond_dim`` and ``params``."""
    return {**to_jsonable(cfg.params), "resolution": cfg.resolution, "cond_dim": int(cond_dim)}


def check_config(cfg: GeneratorConfig) -> dict[str, Any]:
    """Build the family once (weights thrown away) so that an unknown family or parameter is a
    :class:`ConfigError` before anything is written; returns the family's completed config."""
    from phenogen.errors import PhenogenError
    from phenogen.generators.base import build_family

    if cfg.encoder == "gpt2":
        from phenogen.lm.model import check_model_dir

        try:
            check_model_dir(cfg.lm_model)
        except PhenogenError as exc:
            raise type(exc)(f"generator.lm_model={cfg.lm_model!r}: {exc}") from None
    try:
        family = build_family(cfg.family, family_config(cfg, _cond_dim(cfg)))
    except ConfigError as exc:
        raise ConfigError(f"[generator] {exc}") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(
            f"[generator] family {cfg.family!r}: bad params ({' '.join(str(exc).split())[:200]})"
        ) from None
    return dict(family.config)


# ------------------------------------------------------------------------------------ determinism
def _mix(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (BLAKE2b, the same in every process)."""
    key = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def _batch_indices(seed: int, step: int, batch: int, n: int, cache: dict[int, torch.Tensor]) -> torch.Tensor:
    """The image indices of step ``step``: items ``step·B … step·B + B - 1`` of the epoch permutations."""
    out = []
    for i in range(step * batch, (step + 1) * batch):
        epoch = i // n
        if epoch not in cache:
            if len(cache) > 2:  # a batch spans at most two epochs: keep few permutations
                cache.clear()
            gen = torch.Generator().manual_seed(_mix(seed, "epoch", epoch))
            cache[epoch] = torch.randperm(n, generator=gen)
        out.append(cache[epoch][i % n])
    return torch.stack(out)


# ------------------------------------------------------------------------------------ checkpoints
def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state dict as (tensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}.state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": to_jsonable(sd["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(name: str, tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    prefix = f"{name}.state."
    for key, value in tensors.items():
        if key.startswith(prefix):
            pid, _, sub = key[len(prefix) :].partition(".")
            state.setdefault(int(pid), {})[sub] = value
    for pid, values in rest.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


def _rng_bytes(state: torch.Tensor) -> torch.Tensor:
    return state.detach().cpu().clone().to(torch.uint8)


def save_checkpoint(
    out: Path, step: int, family, optimizers: dict, losses: list, cfg_json: dict, keep: int
) -> Path:
    """Write ``OUT/checkpoints/step-NNNNNN`` atomically and prune beyond the newest ``keep``."""
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in family.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_rest: dict[str, dict] = {}
    for name, opt in optimizers.items():
        t, rest = _flatten_optimizer(name, opt)
        opt_tensors |= t
        opt_rest[name] = rest
    save_file(opt_tensors, str(tmp / "optimizers.safetensors"))
    save_file({"torch_cpu": _rng_bytes(torch.get_rng_state())}, str(tmp / "rng.safetensors"))
    state = {"step": step, "losses": losses, "optimizers": opt_rest, "config": cfg_json}
    atomic_write_json(tmp / "state.json", state, indent=None)
    atomic_write_json(tmp / "complete.json", {"step": step})
    replace_dir(tmp, final)
    done = sorted(p for p in root.iterdir() if _step_of(p) is not None and (p / "complete.json").is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _step_of(path: Path) -> int | None:
    name = path.name.removesuffix(".old")
    digits = name.removeprefix(CKPT_PREFIX)
    return int(digits) if name.startswith(CKPT_PREFIX) and digits.isdigit() else None


def find_checkpoint(out: str | Path) -> Path | None:
    """The newest complete checkpoint of ``OUT`` (``complete.json`` written last), or None."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return None
    found = [p for p in root.iterdir() if _step_of(p) is not None and (p / "complete.json").is_file()]
    return max(found, key=lambda p: _step_of(p), default=None)


def _load_checkpoint(ckpt: Path, family, optimizers: dict) -> tuple[int, list]:
    from safetensors.torch import load_file

    from phenogen.fsio import read_json

    try:
        state = read_json(ckpt / "state.json", "checkpoint state", error=CheckpointError)
        family.load_state_dict(load_file(str(ckpt / "model.safetensors")), strict=True)
        opt_tensors = load_file(str(ckpt / "optimizers.safetensors"))
        for name, opt in optimizers.items():
            opt.load_state_dict(_unflatten_optimizer(name, opt_tensors, state["optimizers"][name]))
        torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch_cpu"])
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: cannot resume from it ({' '.join(str(exc).split())[:200]})") from None
    return int(state["step"]), list(state["losses"])


def _resumable_config(cfg_json: dict) -> dict:
    """What must match for a resume (safety knobs and bookkeeping may change)."""
    free = ("max_minutes", "checkpoint_every", "keep_checkpoints", "diversity_barcodes", "diversity_images")
    return {k: v for k, v in cfg_json.items() if k not in free}


def check_resumable(out: Path, cfg: GeneratorConfig) -> Path:
    """The checkpoint ``--resume`` continues from; :class:`CheckpointError` when none, or another config."""
    from phenogen.fsio import read_json

    ckpt = find_checkpoint(out)
    if ckpt is None:
        raise CheckpointError(f"--out {out}: no complete checkpoint to resume (checkpoints/step-N)")
    saved = read_json(ckpt / "state.json", "checkpoint state", error=CheckpointError).get("config", {})
    now = to_jsonable(cfg)
    diff = sorted(
        k for k in set(_resumable_config(saved)) | set(_resumable_config(now)) if saved.get(k) != now.get(k)
    )
    if diff:
        raise CheckpointError(
            f"--out {out}: the checkpoint was trained with other [generator] settings ({', '.join(diff)}); "
            "resume with the same configuration or start a new --out"
        )
    return ckpt


# ------------------------------------------------------------------------------------ measurements
def _pairwise_distance(images: torch.Tensor) -> float:
    """Mean absolute pixel difference (on [0, 1]) over all pairs of ``images`` (N, 3, R, R) in [-1, 1]."""
    x = (images.float().reshape(len(images), -1) + 1) / 2
    n = len(x)
    if n < 2:
        return float("nan")
    d = torch.cdist(x, x, p=1) / x.shape[1]  # (N, N)
    return float(d.sum() / (n * (n - 1)))


def diversity(generated: list[torch.Tensor], real: list[torch.Tensor]) -> dict[str, Any]:
    """The mode-collapse measure: mean pairwise distance of images of one barcode (``generated``: one
    tensor per barcode) over that of real photos of one species (``real``: one tensor per species)."""
    gen = [_pairwise_distance(g) for g in generated if len(g) > 1]
    rea = [_pairwise_distance(r) for r in real if len(r) > 1]
    g = float(np.mean(gen)) if gen else None
    r = float(np.mean(rea)) if rea else None
    return {
        "diversity": (g / r) if g is not None and r else None,
        "generated_pairwise_l1": g,
        "real_pairwise_l1": r,
        "n_barcodes": len(gen),
        "n_real_species": len(rea),
        "note": "mean pairwise pixel L1 of images of one barcode under different noise / the same for real "
        "photos of one species; ~0 = mode collapse" + ("" if rea else "; no species has 2+ photos: no ratio"),
    }


def _labelled_grid(rows: list[tuple[str, list]], path: Path) -> None:
    from PIL import Image, ImageDraw

    w, h = rows[0][1][0].size
    label_w = 8 + 6 * min(24, max(len(label) for label, _ in rows))
    cols = max(len(ims) for _, ims in rows)
    sheet = Image.new("RGB", (label_w + cols * w, len(rows) * h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, ims) in enumerate(rows):
        draw.text((4, i * h + h // 2 - 5), label[:24], fill="black")
        for j, im in enumerate(ims):
            sheet.paste(im, (label_w + j * w, i * h))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------ the loop
@dataclass
class TrainResult:
    """What :func:`train_generator` did."""

    step: int
    steps: int
    stopped: str  # "done", "time cap" or "stop_after_steps"
    minutes: float
    generator_dir: Path | None
    losses: list[dict[str, float]]
    metrics: dict[str, Any]


def _spread(n: int, k: int) -> list[int]:
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, k))}) if n else []


def train_generator(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: GeneratorConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_steps: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``cfg.family`` on the ``train`` split of ``data_dir`` into ``out_dir`` (prepared by the caller).

    ``stop_after_steps`` (tests): stop after that many steps in all, checkpointed, without exporting —
    as a killed run would leave it at a checkpoint; ``resume=True`` then continues it.
    """
    from tqdm.auto import tqdm

    from phenogen.data.dataset import load_dataset
    from phenogen.diffusion.train import _pairs
    from phenogen.diffusion.vae import to_model_range
    from phenogen.generators.base import Generator, build_family, save_generator
    from phenogen.generators.features import Featurizer

    t_start = time.monotonic()
    out = Path(out_dir)
    ds = load_dataset(data_dir)
    pairs = _pairs(ds, "train", cfg.resolution)
    n = len(pairs)
    if n == 0:
        raise DataError(
            f"{data_dir}: the train split has no photos; train-generator needs (photo, barcode) pairs"
        )
    images_u8 = pairs.load()  # (N, 3, R, R) uint8
    seq_index = pairs.seq_index[torch.arange(n)]  # (N,)
    sequences = list(pairs.sequences)
    record_ids = list(pairs.record_ids)
    # 1. the DNA condition: fitted once, saved, reread on resume
    feat_dir = out / "featurizer"
    if resume and (feat_dir / "featurizer.json").is_file():
        featurizer = Featurizer.load(feat_dir)
    else:
        featurizer = Featurizer.fit(
            sequences, cfg.encoder, lm_model=cfg.lm_model, lm_layer=cfg.lm_layer,
            kmer_k=cfg.kmer_k, kmer_segments=cfg.kmer_segments,
        )  # fmt: skip
        featurizer.save(feat_dir)
    cond_seq = featurizer(sequences)  # (S, D)
    # 2. model and optimizers
    device = torch.device(cfg.device)
    torch.manual_seed(_mix(cfg.seed, "init"))
    family = build_family(cfg.family, family_config(cfg, featurizer.dim)).to(device)
    optimizers = family.make_optimizers(cfg.lr)
    cfg_json = to_jsonable(cfg)
    step, losses = 0, []
    if resume:
        ckpt = find_checkpoint(out)
        if ckpt is not None:
            step, losses = _load_checkpoint(ckpt, family, optimizers)
            print(f"train-generator: resuming from {ckpt.name} (step {step}/{cfg.steps})", file=sys.stderr)
    atomic_write_json(out / "family_config.json", family.config)
    end = cfg.steps if stop_after_steps is None else min(cfg.steps, stop_after_steps)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.family}", disable=not progress, unit="step")
    perms: dict[int, torch.Tensor] = {}
    stopped = "done"
    t_loop = time.monotonic()
    family.train()
    while step < end:
        idx = _batch_indices(cfg.seed, step, cfg.batch_size, n, perms)
        gen = torch.Generator().manual_seed(_mix(cfg.seed, "step", step))
        torch.manual_seed(
            _mix(cfg.seed, "global", step)
        )  # dropout and any global draw: a function of the step
        x = to_model_range(images_u8[idx])  # (B, 3, R, R) in [-1, 1]
        if cfg.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        c = cond_seq[seq_index[idx]]  # (B, D)
        got = family.train_step(x.to(device), c.to(device), optimizers, gen)
        got = {k: float(v) for k, v in got.items()}
        if not all(math.isfinite(v) for v in got.values()):
            raise DataError(
                f"train-generator: a non-finite loss at step {step + 1} ({got}); lower generator.lr or check the "
                "family's params"
            )
        losses.append(got)
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in list(got.items())[:4]}, refresh=False)
        if on_step is not None:
            on_step(step, got)
        over = cfg.max_minutes > 0 and (time.monotonic() - t_loop) / 60 > cfg.max_minutes
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == end or over:
            save_checkpoint(out, step, family, optimizers, losses, cfg_json, cfg.keep_checkpoints)
        if over and step < end:
            stopped = "time cap"
            msg = (
                f"WARNING: train-generator reached generator.max_minutes={cfg.max_minutes:g} after {step}/{cfg.steps} "
                f"steps; the model is UNDER-TRAINED. Exporting what it has; `--resume` finishes the run."
            )
            log.warning(msg)
            print(msg, file=sys.stderr)
            break
    bar.close()
    train_minutes = (time.monotonic() - t_loop) / 60
    if stop_after_steps is not None and step < cfg.steps and stopped == "done":
        return TrainResult(step, cfg.steps, "stop_after_steps", train_minutes, None, losses, {})
    # 3. after training: the family's hook (concept vectors), export, losses, samples, measurements
    family.eval()
    recs = {r.record_id: r for r in ds.records("train") if r.images}
    traits = _trait_tensors(ds, [record_ids[int(i)] for i in seq_index], recs)
    notes = family.after_training(images_u8, cond_seq[seq_index], traits) or {}
    gen_dir = save_generator(family.cpu(), featurizer, out / "generator")
    painter = Generator(family, featurizer, path=gen_dir)
    atomic_write_json(out / "losses.json", {"steps": step, "total_steps": cfg.steps, "stopped": stopped,
                                            "losses": losses}, indent=None)  # fmt: skip
    metrics = _measure(painter, ds, pairs, images_u8, seq_index, record_ids, sequences, recs, cfg, out)
    metrics |= {
        "family": cfg.family,
        "steps": step,
        "total_steps": cfg.steps,
        "stopped": stopped,
        "training_minutes": train_minutes,
        "total_minutes": (time.monotonic() - t_start) / 60,
        "train_images_per_second": step * cfg.batch_size / max(1e-9, train_minutes * 60),
        "family_notes": to_jsonable(notes),
    }
    atomic_write_json(out / "train_metrics.json", metrics)
    return TrainResult(step, cfg.steps, stopped, train_minutes, gen_dir, losses, metrics)


def _trait_tensors(ds, image_record_ids: list[str], recs: dict) -> dict[str, torch.Tensor]:
    """Per training image, each declared trait's value (NaN where the record has none)."""
    out = {}
    for name in ds.trait_names:
        vals = [
            recs[rid].traits.get(name, float("nan")) if rid in recs else float("nan")
            for rid in image_record_ids
        ]
        t = torch.tensor(vals, dtype=torch.float64)
        if torch.isfinite(t).any():
            out[name] = t
    return out


def _measure(
    painter, ds, pairs, images_u8, seq_index, record_ids, sequences, recs, cfg, out
) -> dict[str, Any]:
    """samples.png, sampling speed and the diversity ratio."""
    from phenogen.diffusion.vae import to_model_range

    # one barcode per species, species spread over the training set
    first: dict[str, int] = {}
    for s, rid in enumerate(record_ids):
        sp = recs[rid].species if rid in recs else rid
        first.setdefault(sp, s)
    species = list(first)
    chosen = [species[i] for i in _spread(len(species), max(SAMPLE_SPECIES, cfg.diversity_barcodes))]
    records = [(record_ids[first[sp]], sequences[first[sp]]) for sp in chosen]
    k = max(SAMPLE_COLS, cfg.diversity_images)
    t0 = time.monotonic()
    painted = painter.paint(records, images_per_sequence=k, seed=cfg.seed + 1)
    seconds = time.monotonic() - t0
    by_rid: dict[str, list] = {}
    for rid, _, im in painted:
        by_rid.setdefault(rid, []).append(im)
    rows = [(sp, by_rid[record_ids[first[sp]]][:SAMPLE_COLS]) for sp in chosen[:SAMPLE_SPECIES]]
    _labelled_grid(rows, out / "samples.png")
    # diversity: generated images of a few barcodes vs real photos of species (same pixel scale)
    div_ids = [record_ids[first[chosen[i]]] for i in _spread(len(chosen), cfg.diversity_barcodes)]
    generated = [
        torch.stack(
            [torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in by_rid[rid][: cfg.diversity_images]]
        )
        for rid in div_ids
    ]
    generated = [to_model_range(g) for g in generated]
    img_species = [recs[record_ids[int(s)]].species if record_ids[int(s)] in recs else "" for s in seq_index]
    real_by_sp: dict[str, list[int]] = {}
    for i, sp in enumerate(img_species):
        real_by_sp.setdefault(sp, []).append(i)
    real = [to_model_range(images_u8[torch.tensor(ix)]) for ix in real_by_sp.values() if len(ix) > 1]
    return {
        "sampling_images_per_second": len(painted) / max(1e-9, seconds),
        "diversity": diversity(generated, real),
        "samples": {"file": "samples.png", "species": [sp for sp, _ in rows]},
    }


def config_summary(cfg: GeneratorConfig) -> str:
    """One line describing the run (printed by the command)."""
    return json.dumps({k: v for k, v in to_jsonable(cfg).items() if k in ("family", "encoder", "resolution", "steps",
                                                                            "batch_size", "lr", "params")})  # fmt: skip

"""One explicit training loop for the GPT-2 DNA model, on accelerate, with exact resume.

Output directory::

    OUT/.phenogen                    marker: a phenogen output (``--force`` replaces only such a directory)
    OUT/config.json                  resolved [lm] section + data source (checked again on --resume)
    OUT/state/                       latest resumable state (replaced atomically, see below):
        model.safetensors            weights
        optimizer.pt                 AdamW state (tensors only; loads with weights_only=True)
        scheduler.json, scaler.json  LR schedule position, fp16 loss-scaler state
        rng.safetensors              torch CPU (and CUDA) RNG state of every process — dropout continues
        trainer_state.json           epoch, optimizer step within the epoch, global step, seconds, history
    OUT/checkpoints/epoch-XXX/       inference model after each epoch (see phenogen.lm.model)
    OUT/model/                       the final model (or the last state when a budget stopped the run)
    OUT/losses.json, loss_curve.png  per-step train loss, per-epoch train/held-out loss and bits/base

Exact resume: the data order of epoch ``e`` is a permutation drawn from its own generator seeded
with ``(seed, e)``, the position inside an epoch is the optimizer-step counter, and the RNG,
optimizer, scheduler and scaler states are restored — so a run stopped after any optimizer step
(``max_minutes``, a crash or kill at any point, or the ``stop_after_steps`` test hook) and resumed
ends with bit-identical weights to an uninterrupted run on the same machine and process count.

Crash safety: every directory (``state``, ``checkpoints/epoch-XXX``, ``model``) is written aside
as ``NAME.tmp`` and moved in place with :func:`phenogen.fsio.replace_dir`, which keeps the previous
complete copy as ``NAME.old`` until the new one is in place; files (``config.json``,
``losses.json``, ``loss_curve.png``) are replaced atomically. ``--resume`` continues from the newest
complete state (:func:`phenogen.fsio.complete_dir`: ``state``, else ``state.old``; never a
half-written ``state.tmp``). A state that exists but is unreadable (truncated weights, bad JSON) is
one :class:`CheckpointError` — it is not silently skipped for an older one; the message says when
``state.old`` holds an older complete state and how to resume from it.

Several processes (``torchrun --nproc_per_node N -m phenogen.cli train-lm …`` or ``accelerate
launch --num_processes N -m phenogen.cli train-lm …``; gloo on CPU): ``lm.batch_size`` stays the
micro-batch of the whole run, each process takes its share ``micro_batch[rank::N]`` of every
micro-batch, and the loss of a share is normalised by the target tokens of the whole optimizer
step, so the averaged gradient — and the model — equals the one-process run up to floating-point
rounding (with dropout, each process draws its own dropout masks). Only the main process creates,
clears or writes anything in ``OUT``; the others wait for it (:func:`phenogen.accel.on_main`).

Gradient accumulation is written out (``accelerator.no_sync`` on all but the last micro-batch of
an optimizer step) instead of ``accelerator.accumulate``: the loss is normalised by the number of
target tokens in the whole optimizer step, and a step never straddles a save.

Test hook: ``PHENOGEN_TEST_KILL_AT=POINT[@N]`` makes the process SIGKILL itself the N-th time (default
1st) it reaches ``POINT``: ``step`` (after an optimizer step, before any save of it),
``state:mid_write`` (only the weights written to ``state.tmp``), ``state:before_replace``
(``state.tmp`` complete), ``state:after_old_rename`` (``state`` moved to ``state.old``, ``state.tmp``
not yet in place — the first step of ``replace_dir`` done here, then the kill),
``checkpoint:before_replace``, ``model:before_replace``, and ``…:after_old_rename`` for these two
(every save counts; the kill happens only if that save has an older copy to move). Used by
``tests/test_lm_crash.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import operator
import os
import pickle
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from phenogen.config import to_jsonable
from phenogen.dna.tokenizer import KmerTokenizer, check_sequence
from phenogen.errors import CheckpointError, ConfigError
from phenogen.fsio import (
    atomic_write_text,
    check_output_dir,
    complete_dir,
    prepare_output_dir,
    read_json,
    read_text,
    replace_dir,
)
from phenogen.lm.config import LMConfig
from phenogen.lm.data import SequenceSplits, collate, length_stats, load_sequences, tokenize_sequences
from phenogen.lm.likelihood import heldout_likelihood, token_nll
from phenogen.lm.model import build_model, from_gpt2_dir, save_lm

__all__ = ["TrainResult", "train_lm", "RESUME_INVARIANT_FIELDS", "KILL_ENV"]

log = logging.getLogger(__name__)

# Fields that may change between a run and its resumption; every other [lm] field must match.
RESUME_INVARIANT_FIELDS = ("max_minutes", "state_every_steps", "keep_checkpoints")

KILL_ENV = "PHENOGEN_TEST_KILL_AT"
"""Environment variable of the kill test hook (module docstring)."""

STATE_FILES = ("model.safetensors", "optimizer.pt", "scheduler.json", "rng.safetensors", "trainer_state.json")
# Everything a broken file can raise while torch / safetensors read it.
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError, EOFError, pickle.UnpicklingError,
                AttributeError, IndexError, ArithmeticError, MemoryError)  # fmt: skip
# torch.load of a damaged optimizer.pt raises these too (AttributeError: a flipped byte in its pickle);
# _load_state catches every Exception of a library reading a state file, these are only the known ones


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    global_step: int
    finished: bool
    stop_reason: str
    history: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- test hook
_kill_hits: dict[str, int] = {}


def _kill_due(point: str) -> bool:
    """True when ``PHENOGEN_TEST_KILL_AT`` asks for a kill at this (counted) visit of ``point``."""
    spec = os.environ.get(KILL_ENV)
    if not spec or spec.partition("@")[0] != point:
        return False
    _kill_hits[point] = _kill_hits.get(point, 0) + 1
    return _kill_hits[point] == int(spec.partition("@")[2] or 1)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_point(point: str) -> None:
    if _kill_due(point):
        _die()


# ---------------------------------------------------------------------------------- helpers
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def _resolve_precision(requested: str) -> str:
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if requested == "fp16" and not cuda:
        raise ConfigError("lm.mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on CPU")
    return requested


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _check_resume_config(out: Path, cfg: LMConfig, data_source: str) -> None:
    saved_path = out / "config.json"
    if not saved_path.is_file():
        raise CheckpointError(f"{out}: no config.json next to state/; cannot check the run being resumed")
    saved = read_json(saved_path, "config.json of the run being resumed", error=CheckpointError)
    if not isinstance(saved.get("lm"), dict) or "data" not in saved:
        raise CheckpointError(
            f"{saved_path}: has no 'lm' object or no 'data' entry; not the config.json of a train-lm run"
        )
    now = to_jsonable(cfg)
    diffs = [
        f"{key}: {saved['lm'].get(key)!r:.60} -> {value!r:.60}"
        for key, value in now.items()
        if key not in RESUME_INVARIANT_FIELDS and saved["lm"].get(key) != value
    ]
    if diffs:
        raise ConfigError(
            f"{out}: --resume with a different [lm] config ({'; '.join(diffs)}); start a new --out"
        )
    if saved.get("data") != data_source:
        raise ConfigError(
            f"{out}: --resume with different data ({saved.get('data')!r:.200} -> {data_source!r:.200})"
        )


def _save_dir(final: Path, write: Callable[[Path], None], what: str) -> None:
    """Write a directory aside (``final.tmp``), then move it over ``final`` keeping the old copy until then."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a save a kill interrupted
    tmp.mkdir(parents=True)
    write(tmp)
    _kill_point(f"{what}:before_replace")
    if _kill_due(f"{what}:after_old_rename") and final.exists():  # counts every save
        final.rename(final.with_name(final.name + ".old"))  # replace_dir's first rename, then the kill
        _die()
    replace_dir(tmp, final)


def _write_json_text(path: Path, obj: Any, indent: int | None = 1) -> None:
    """Atomic JSON (``NaN`` allowed: an empty held-out split gives a NaN held-out loss)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


# ---------------------------------------------------------------------------------- state I/O
def _rng_state() -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def _save_state(path: Path, accelerator, model, optimizer, scheduler, trainer_state: dict[str, Any]) -> None:
    """Save the resumable state (every process calls it: the RNG states are gathered to the main one)."""
    from safetensors.torch import save_file, save_model

    from phenogen.accel import on_main

    per_rank = [_rng_state()]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        per_rank = gather_object(per_rank)

    def write(tmp: Path) -> None:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
        _kill_point("state:mid_write")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        _write_json_text(tmp / "scheduler.json", scheduler.state_dict(), indent=None)
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None:
            _write_json_text(tmp / "scaler.json", to_jsonable(scaler.state_dict()), indent=None)
        rng = {
            (k if r == 0 else f"rank{r}.{k}"): v
            for r, states in enumerate(per_rank)
            for k, v in states.items()
        }
        save_file(rng, str(tmp / "rng.safetensors"))
        _write_json_text(tmp / "trainer_state.json", trainer_state)

    on_main(accelerator, _save_dir, path, write, "state")


def _older_state_hint(path: Path) -> str:
    """`` ; OUT/state.old holds …`` when an older complete state sits beside a broken ``state``."""
    old = path.with_name(path.name + ".old")
    if path.name != "state" or not all((old / f).is_file() for f in STATE_FILES):
        return ""
    try:
        step = json.loads((old / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"; {old} holds an older complete state (global step {step}): remove {path} to resume from it"


_MAX_COUNT = 2**53  # steps and epochs beyond this are damage, not a run


def _real(value: Any) -> bool:
    """A float (NaN and infinity included: an empty held-out split gives NaN) or an int within 2**53."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _MAX_COUNT
    return isinstance(value, float)


def _number(value: Any) -> bool:
    """A finite int or float (an integer beyond 2**53 is damage too: float() of it may overflow)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= _MAX_COUNT
    return isinstance(value, float) and math.isfinite(value)


# history entries: the loop, losses.json and loss_curve.png read these keys as numbers
_HISTORY_KEYS = {
    "steps": ("step", "epoch", "loss", "lr"),
    "epochs": ("epoch", "train_loss", "heldout_loss", "heldout_bits_per_base"),
}


def _check_trainer_state(ts: Any, where: Path) -> dict[str, Any]:
    ok = (
        isinstance(ts, dict)
        and all(
            isinstance(ts.get(k), int) and not isinstance(ts[k], bool) and 0 <= ts[k] <= _MAX_COUNT
            for k in ("epoch", "step_in_epoch", "global_step")
        )
        and _number(ts.get("elapsed_s"))
        and ts["elapsed_s"] >= 0
        and isinstance(ts.get("history"), dict)
        and all(isinstance(ts["history"].get(k), list) for k in ("steps", "epochs"))
    )
    if not ok:
        raise CheckpointError(
            f"{where}: not a training state (needs epoch, step_in_epoch, global_step: integers >= 0, "
            "elapsed_s: a number >= 0, history: steps and epochs lists)"
        )
    world = ts.get("world_size", 1)
    if isinstance(world, bool) or not isinstance(world, int) or not 1 <= world <= 1_000_000:
        raise CheckpointError(f"{where}: world_size must be a positive integer, got {world!r:.60}")
    for part, keys in _HISTORY_KEYS.items():
        for i, entry in enumerate(ts["history"][part]):
            # positions must be finite; a loss may be NaN (an empty held-out split gives one)
            bad = [
                k for k in keys
                if not isinstance(entry, dict)
                or not (_number(entry.get(k)) if k in ("step", "epoch") else _real(entry.get(k)))
            ]  # fmt: skip
            if bad:
                raise CheckpointError(
                    f"{where}: history.{part}[{i}] needs numbers {', '.join(keys)} (bad: {', '.join(bad)})"
                )
    return ts


def check_optimizer_state(optimizer, file: Path) -> None:
    """Every per-parameter buffer of a loaded optimizer state has its parameter's shape (else the first
    optimizer step would fail with a traceback); raises :class:`CheckpointError` naming ``file``."""
    for g, group in enumerate(optimizer.param_groups):
        for i, param in enumerate(group["params"]):
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    raise CheckpointError(
                        f"{file}: optimizer state {key!r:.40} of group {g} parameter {i} is not a tensor"
                    )
                if value.dim() and value.shape != param.shape:
                    raise CheckpointError(
                        f"{file}: optimizer state {key!r:.40} of group {g} parameter {i} has shape "
                        f"{tuple(value.shape)}, the parameter {tuple(param.shape)}; the state is damaged"
                    )
                if not value.is_floating_point() and key != "step":
                    raise CheckpointError(
                        f"{file}: optimizer state {key!r:.40} of group {g} parameter {i} is not floating point"
                    )


def check_resume_position(ts: dict[str, Any], steps_per_epoch: int, epochs: int, where: Path) -> None:
    """Refuse a training state whose position does not fit this run (raises :class:`CheckpointError`).

    ``step_in_epoch`` may equal ``steps_per_epoch`` (a state saved at the last step of an epoch, before
    its evaluation); ``global_step`` must be ``epoch * steps_per_epoch + step_in_epoch``. A state beyond
    the epoch would otherwise make the loop spin forever.
    """
    epoch, step, global_step = ts["epoch"], ts["step_in_epoch"], ts["global_step"]
    file = where / "trainer_state.json"
    if step > steps_per_epoch:
        raise CheckpointError(
            f"{file}: step_in_epoch {step} is beyond the {steps_per_epoch} optimizer steps of an epoch of "
            "this run; the state does not belong to this data and config"
        )
    if global_step != epoch * steps_per_epoch + step:
        raise CheckpointError(
            f"{file}: global_step {global_step} does not match epoch {epoch} and step_in_epoch {step} "
            f"({steps_per_epoch} steps per epoch); the state is damaged or from another run"
        )
    if epoch > epochs or (epoch == epochs and step):
        log.info("%s: the saved state is at epoch %d of %d; nothing left to train", where, epoch, epochs)


def _load_state(path: Path, accelerator, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore the state in ``path``; any missing or unreadable file is one :class:`CheckpointError`."""
    from safetensors.torch import load_file, load_model

    hint = _older_state_hint(path)
    missing = [f for f in STATE_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: training state is missing {', '.join(missing)}; cannot resume{hint}")
    ts_path = path / "trainer_state.json"
    rank = accelerator.process_index
    current = "model.safetensors"
    try:
        try:
            ts = json.loads(read_text(ts_path, "training state", error=CheckpointError))
        except ValueError as exc:
            raise CheckpointError(f"{ts_path}: training state is not valid JSON ({exc})") from None
        ts = _check_trainer_state(ts, ts_path)
        device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)  # not "cpu:0"
        load_model(accelerator.unwrap_model(model), str(path / current), device=device)
        current = "optimizer.pt"
        optimizer.load_state_dict(torch.load(path / current, weights_only=True, map_location=device))
        check_optimizer_state(optimizer, path / current)
        current = "scheduler.json"
        scheduler.load_state_dict(read_json(path / current, "scheduler state", error=CheckpointError))
        scaler = getattr(accelerator, "scaler", None)
        current = "scaler.json"
        if scaler is not None and (path / current).is_file():
            scaler.load_state_dict(read_json(path / current, "loss-scaler state", error=CheckpointError))
        current = "rng.safetensors"
        rng = load_file(str(path / current))
        prefix = "" if rank == 0 else f"rank{rank}."
        mine = {
            k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix) and (rank or "." not in k)
        }
        if "cpu" in mine:
            torch.set_rng_state(mine["cpu"])
        else:  # resumed with more processes than the run had: a fresh, distinct dropout stream
            log.warning("%s: no RNG state for process %d; its dropout stream starts afresh", path, rank)
            torch.manual_seed(ts["global_step"] * 1_000_003 + rank)
        cuda_states = [
            mine[k] for k in sorted((k for k in mine if k.startswith("cuda")), key=lambda k: int(k[4:]))
        ]
        if torch.cuda.is_available() and cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{hint}") from None
    except Exception as exc:  # noqa: BLE001 - torch.load and safetensors raise many types (_LOAD_ERRORS)
        detail = (str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:300]
        if isinstance(exc, pickle.UnpicklingError):  # torch's text advises weights_only=False: never here
            detail = "not a weights-only torch file (damaged, or not written by phenogen)"
        raise CheckpointError(f"{path / current}: cannot be loaded ({detail}); cannot resume{hint}") from None
    saved_world = ts.get("world_size", 1)
    if saved_world != accelerator.num_processes and accelerator.is_main_process:
        log.warning("%s: saved by %s process(es), resumed with %d: same data order, but dropout streams "
                    "differ, so not bit-identical to an uninterrupted run", path, saved_world,
                    accelerator.num_processes)  # fmt: skip
    return ts


# ---------------------------------------------------------------------------------- the loop
def train_lm(
    data: str | Path | SequenceSplits,
    out_dir: str | Path,
    cfg: LMConfig | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) a GPT-2 DNA language model.

    Parameters
    ----------
    data : dataset directory, FASTA file, or already loaded :class:`SequenceSplits`.
    out_dir : output directory (layout in the module docstring).
    cfg : the ``[lm]`` section.
    resume : continue from the newest complete ``OUT/state``; the ``[lm]`` config and data must match.
    force : replace an earlier phenogen output in ``out_dir`` (only one carrying phenogen's marker; it is
        cleared after every input checked out).
    stop_after_steps : test hook — stop (saving state) once the global optimizer step reaches this.
    progress : show a tqdm bar (main process only).

    Examples
    --------
    >>> result = train_lm("barcodes.fasta", "runs/lm", LMConfig(epochs=2))  # doctest: +SKIP
    >>> result.finished, (result.out_dir / "model" / "model.safetensors").is_file()  # doctest: +SKIP
    (True, True)
    """
    from accelerate.utils import DataLoaderConfiguration
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from phenogen.accel import new_accelerator, on_main, shard_indices

    cfg = cfg or LMConfig()
    out = Path(out_dir)
    # 1. inputs: data, output directory, resume config — checked by every process, nothing written yet
    splits = (
        data if isinstance(data, SequenceSplits) else load_sequences(data, cfg.heldout_fraction, cfg.seed)
    )
    data_source = splits.source
    state_dir = out / "state"
    if resume:
        if force:
            raise ConfigError("--resume and --force contradict each other; pick one")
        if complete_dir(state_dir) is None:
            half = " (only an interrupted save, state.tmp)" if (out / "state.tmp").is_dir() else ""
            raise CheckpointError(
                f"{out}: nothing to resume (no state/ directory{half}); drop --resume to start"
            )
        _check_resume_config(out, cfg, data_source)
    elif not force and any((out / n).exists() for n in ("state", "state.old", "model", "model.old")):
        raise ConfigError(
            f"{out} already holds a training run; pass --resume to continue it, --force to replace it, "
            "or choose a new --out"
        )
    check_output_dir(out, force=force, resume=resume)
    train_pairs = [(rid, check_sequence(s, rid)) for rid, s in splits.train]
    held_pairs = [(rid, check_sequence(s, rid)) for rid, s in splits.heldout]

    # 2. tokenizer + model
    tokenizer = KmerTokenizer(k=cfg.k, stride=cfg.stride)
    if cfg.init_from:
        lm = from_gpt2_dir(cfg.init_from, tokenizer, cfg.n_positions, cfg.dropout)
    else:
        lm = build_model(tokenizer, cfg.preset, cfg.n_positions, cfg.dropout, seed=cfg.seed)
    train_ids = tokenize_sequences(tokenizer, train_pairs, lm.n_positions, source="train split")
    held_ids = tokenize_sequences(tokenizer, held_pairs, lm.n_positions, source="heldout split")
    lm.meta.update(length_stats(train_ids, train_pairs), data=data_source)
    lm.meta["split"] = {
        "heldout_fraction": cfg.heldout_fraction,
        "seed": cfg.seed,
    }  # re-derives a FASTA split

    # 3. accelerator, optimizer, schedule. split_batches: batch_size is the whole run's micro-batch, so the
    # prepared scheduler steps once per optimizer step (not once per process).
    precision = _resolve_precision(cfg.mixed_precision)
    accelerator = new_accelerator(
        precision,
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )
    world, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if cfg.batch_size < world:
        raise ConfigError(
            f"lm.batch_size={cfg.batch_size} is smaller than the {world} processes; lm.batch_size is the "
            f"micro-batch of all processes together (each takes batch_size/{world}): raise it"
        )
    micro_per_epoch = math.ceil(len(train_ids) / cfg.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    optimizer = torch.optim.AdamW(
        _param_groups(lm.model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
        fused=True if accelerator.device.type == "cuda" else None,  # one kernel for all parameters
    )
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, round(cfg.warmup_fraction * total_steps), total_steps
    )
    model, optimizer, scheduler = accelerator.prepare(lm.model, optimizer, scheduler)
    model.train()

    # 4. fresh start or resume; only the main process touches OUT, after every input checked out
    history: dict[str, Any] = {"steps": [], "epochs": []}
    epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    accelerator.wait_for_everyone()  # every process has checked OUT before the main one writes in it
    if resume:
        on_main(accelerator, prepare_output_dir, out, "train-lm", resume=True)  # marks a pre-marker run
        state_dir_now = complete_dir(state_dir)
        state = _load_state(state_dir_now, accelerator, model, optimizer, scheduler)
        check_resume_position(state, steps_per_epoch, cfg.epochs, state_dir_now)
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        global_step, elapsed, history = state["global_step"], state["elapsed_s"], state["history"]
        if is_main:
            log.info("resuming %s from %s at epoch %d, step %d (global %d)", out, state_dir_now.name,
                     epoch + 1, step_in_epoch, global_step)  # fmt: skip
    else:

        def start() -> None:
            prepare_output_dir(out, "train-lm", force=force)
            payload = {
                "lm": to_jsonable(cfg),
                "data": to_jsonable(data_source),
                "data_summary": to_jsonable(splits.summary()),
                "precision": precision,
            }
            atomic_write_text(out / "config.json", json.dumps(payload, indent=2) + "\n")

        on_main(accelerator, start)
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # dropout stream, one per process

    def trainer_state() -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "elapsed_s": elapsed,
            "history": history,
            "world_size": world,
        }

    def save_model_dir(target: Path, complete: bool, what: str) -> None:
        def write(tmp: Path) -> None:
            lm.model = accelerator.unwrap_model(model)
            save_lm(lm, tmp, epoch=epoch, global_step=global_step, complete=complete, precision=precision)

        on_main(accelerator, _save_dir, target, write, what)

    def save_state() -> None:
        _save_state(state_dir, accelerator, model, optimizer, scheduler, trainer_state())

    # 5. the loop
    stop_reason = "finished"
    bar = tqdm(
        total=total_steps,
        initial=global_step,
        disable=not (progress and is_main),
        desc="train-lm",
        unit="step",
    )
    t_start = time.perf_counter() - elapsed
    stopped = False
    while epoch < cfg.epochs and not stopped:
        order = _epoch_order(len(train_ids), cfg.seed, epoch)
        micro = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        steps = [micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]
        t_epoch, tokens_epoch = time.perf_counter(), 0
        while step_in_epoch < len(steps):
            group = steps[step_in_epoch]
            # targets of the whole optimizer step, over all processes (the same number everywhere)
            n_targets = sum(len(train_ids[i]) - 1 for mb in group for i in mb)
            step_loss = 0.0
            for j, mb in enumerate(group):
                mine = shard_indices(mb, rank, world)
                # a process whose share is empty (a short last micro-batch) still joins the gradient
                # all-reduce, with a zero-weight forward of one sequence
                weight = float(world) if mine else 0.0
                ids, mask = collate([train_ids[i] for i in (mine or mb[:1])], tokenizer.pad_token_id)
                sync = j == len(group) - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                with ctx:
                    ids, mask = ids.to(accelerator.device), mask.to(accelerator.device)
                    loss = token_nll(model, ids, mask).sum() / n_targets
                    accelerator.backward(loss if world == 1 else loss * weight)  # DDP averages gradients
                step_loss += float(loss.detach()) if mine else 0.0
            if world > 1:
                step_loss = float(
                    accelerator.reduce(
                        torch.tensor(step_loss, dtype=torch.float64, device=accelerator.device), "sum"
                    )
                )
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_in_epoch += 1
            global_step += 1
            _kill_point("step")
            tokens_epoch += sum(len(train_ids[i]) for mb in group for i in mb)
            elapsed = time.perf_counter() - t_start
            history["steps"].append(
                {"step": global_step, "epoch": epoch + step_in_epoch / len(steps), "loss": step_loss,
                 "lr": scheduler.get_last_lr()[0]}
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.3f}")
            if stop_after_steps is not None and global_step >= stop_after_steps:
                stop_reason, stopped = f"stop_after_steps={stop_after_steps}", True
            elif cfg.max_minutes:  # the main process's clock decides for all
                stopped = on_main(accelerator, operator.ge, elapsed, cfg.max_minutes * 60)
                stop_reason = f"max_minutes={cfg.max_minutes}" if stopped else stop_reason
            if stopped:
                break
            if cfg.state_every_steps and global_step % cfg.state_every_steps == 0:
                save_state()
        if step_in_epoch == len(steps):  # epoch complete: evaluate, checkpoint
            seconds = time.perf_counter() - t_epoch
            epoch_steps = [s["loss"] for s in history["steps"] if epoch < s["epoch"] <= epoch + 1]
            held = on_main(
                accelerator,
                heldout_likelihood,
                accelerator.unwrap_model(model),
                held_ids,
                [s for _, s in held_pairs],
                tokenizer.pad_token_id,
            )
            epoch += 1
            step_in_epoch = 0
            history["epochs"].append(
                {
                    "epoch": epoch,
                    "global_step": global_step,
                    "train_loss": sum(epoch_steps) / max(len(epoch_steps), 1),
                    "heldout_loss": held.nats_per_token,
                    "heldout_bits_per_base": held.bits_per_base,
                    "heldout_bits_per_base_with_eos": held.bits_per_base_with_eos,
                    "lr": scheduler.get_last_lr()[0],
                    "seconds": seconds,
                    "tokens_per_s": tokens_epoch / max(seconds, 1e-9),
                    "elapsed_s": elapsed,
                }
            )
            if is_main:
                log.info("epoch %d: train %.4f held-out %.4f nats/token (%.4f bits/base)", epoch,
                         history["epochs"][-1]["train_loss"], held.nats_per_token, held.bits_per_base)  # fmt: skip
            if cfg.keep_checkpoints:
                target = out / "checkpoints" / f"epoch-{epoch:03d}"
                save_model_dir(target, complete=epoch == cfg.epochs, what="checkpoint")
            save_state()
            on_main(accelerator, _write_losses, out, history)
    bar.close()
    if stopped:
        save_state()
    finished = epoch >= cfg.epochs and not (stopped and step_in_epoch)
    save_model_dir(out / "model", complete=finished, what="model")
    on_main(accelerator, _write_losses, out, history)
    return TrainResult(
        out, epoch, global_step, finished, stop_reason if not finished else "finished", history
    )


def _write_losses(out: Path, history: dict[str, Any]) -> None:
    """``losses.json`` and ``loss_curve.png``, each replaced atomically."""
    _write_json_text(out / "losses.json", history)
    from phenogen.lm.plots import plot_losses

    tmp = out / ".loss_curve.tmp.png"  # matplotlib picks the format from the suffix
    plot_losses(history, tmp)
    os.replace(tmp, out / "loss_curve.png")

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
import time
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
)
from phenogen.lm.config import LMConfig
from phenogen.lm.data import SequenceSplits, collate, length_stats, load_sequences, tokenize_sequences
from phenogen.lm.likelihood import heldout_likelihood, token_nll
from phenogen.lm.model import build_model, from_gpt2_dir, save_lm
from phenogen.lm.state import (
    KILL_ENV,
    check_resume_position,
    kill_point,
    read_state,
    save_dir,
    write_json_text,
    write_state,
)

__all__ = ["TrainResult", "train_lm", "RESUME_INVARIANT_FIELDS", "KILL_ENV"]

log = logging.getLogger(__name__)

# Fields that may change between a run and its resumption; every other [lm] field must match.
RESUME_INVARIANT_FIELDS = ("max_minutes", "state_every_steps", "keep_checkpoints")


@dataclass
class TrainResult:
    out_dir: Path
    epochs_done: int
    global_step: int
    finished: bool
    stop_reason: str
    history: dict[str, Any] = field(default_factory=dict)


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
        state = read_state(state_dir_now, accelerator, model, optimizer, scheduler)
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

        on_main(accelerator, save_dir, target, write, what)

    def save_state() -> None:
        write_state(state_dir, accelerator, model, optimizer, scheduler, trainer_state())

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
            kill_point("step")
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
    write_json_text(out / "losses.json", history)
    from phenogen.lm.plots import plot_losses

    tmp = out / ".loss_curve.tmp.png"  # matplotlib picks the format from the suffix
    plot_losses(history, tmp)
    os.replace(tmp, out / "loss_curve.png")

"""One explicit training loop for the GPT-2 DNA model, on accelerate, with exact resume.

Output directory::

    OUT/config.json                  resolved [lm] section + data source (checked again on --resume)
    OUT/state/                       latest resumable state (replaced atomically):
        model.safetensors            weights
        optimizer.pt                 AdamW state (tensors only; loads with weights_only=True)
        scheduler.json, scaler.json  LR schedule position, fp16 loss-scaler state
        rng.safetensors              torch CPU (and CUDA) RNG state — dropout continues identically
        trainer_state.json           epoch, optimizer step within the epoch, global step, seconds, history
    OUT/checkpoints/epoch-XXX/       inference model after each epoch (see phenogen.lm.model)
    OUT/model/                       the final model (or the last state when a budget stopped the run)
    OUT/losses.json, loss_curve.png  per-step train loss, per-epoch train/held-out loss and bits/base

Exact resume: the data order of epoch ``e`` is a permutation drawn from its own generator seeded
with ``(seed, e)``, the position inside an epoch is the optimizer-step counter, and the RNG,
optimizer, scheduler and scaler states are restored — so a run stopped after any optimizer step
(``max_minutes``, a crash after a saved state, or the ``stop_after_steps`` test hook) and resumed
ends with bit-identical weights to an uninterrupted run on the same machine.

Gradient accumulation is written out (``accelerator.no_sync`` on all but the last micro-batch of
an optimizer step) instead of ``accelerator.accumulate``: the loss is normalised by the number of
target tokens in the whole optimizer step, and a step never straddles a save.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from phenogen.config import save_resolved, to_jsonable
from phenogen.dna.tokenizer import KmerTokenizer, check_sequence
from phenogen.errors import CheckpointError, ConfigError
from phenogen.lm.config import LMConfig
from phenogen.lm.data import SequenceSplits, collate, length_stats, load_sequences, tokenize_sequences
from phenogen.lm.likelihood import heldout_likelihood, token_nll
from phenogen.lm.model import build_model, from_gpt2_dir, save_lm

__all__ = ["TrainResult", "train_lm", "RESUME_INVARIANT_FIELDS"]

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
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    now = to_jsonable(cfg)
    diffs = [
        f"{key}: {saved['lm'].get(key)!r} -> {value!r}"
        for key, value in now.items()
        if key not in RESUME_INVARIANT_FIELDS and saved["lm"].get(key) != value
    ]
    if diffs:
        raise ConfigError(
            f"{out}: --resume with a different [lm] config ({'; '.join(diffs)}); start a new --out"
        )
    if saved.get("data") != data_source:
        raise ConfigError(f"{out}: --resume with different data ({saved.get('data')!r} -> {data_source!r})")


# ---------------------------------------------------------------------------------- state I/O
def _save_state(path: Path, accelerator, model, optimizer, scheduler, trainer_state: dict[str, Any]) -> None:
    from safetensors.torch import save_file, save_model

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "scheduler.json").write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None:
        (tmp / "scaler.json").write_text(json.dumps(to_jsonable(scaler.state_dict())), encoding="utf-8")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(rng, str(tmp / "rng.safetensors"))
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1), encoding="utf-8")
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(path: Path, accelerator, model, optimizer, scheduler) -> dict[str, Any]:
    from safetensors.torch import load_file, load_model

    needed = ("model.safetensors", "optimizer.pt", "scheduler.json", "rng.safetensors", "trainer_state.json")
    missing = [f for f in needed if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path}: training state is missing {', '.join(missing)}; cannot resume")
    load_model(
        accelerator.unwrap_model(model), str(path / "model.safetensors"), device=str(accelerator.device)
    )
    optimizer.load_state_dict(
        torch.load(path / "optimizer.pt", weights_only=True, map_location=accelerator.device)
    )
    scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None and (path / "scaler.json").is_file():
        scaler.load_state_dict(json.loads((path / "scaler.json").read_text(encoding="utf-8")))
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available():
        cuda_states = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- the loop
def train_lm(
    data: str | Path | SequenceSplits,
    out_dir: str | Path,
    cfg: LMConfig | None = None,
    *,
    resume: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) a GPT-2 DNA language model.

    Parameters
    ----------
    data : dataset directory, FASTA file, or already loaded :class:`SequenceSplits`.
    out_dir : output directory (layout in the module docstring).
    cfg : the ``[lm]`` section.
    resume : continue from ``OUT/state``; the ``[lm]`` config and data must match the first run.
    stop_after_steps : test hook — stop (saving state) once the global optimizer step reaches this.
    progress : show a tqdm bar.

    Examples
    --------
    >>> result = train_lm("barcodes.fasta", "runs/lm", LMConfig(epochs=2))  # doctest: +SKIP
    >>> result.finished, (result.out_dir / "model" / "model.safetensors").is_file()  # doctest: +SKIP
    (True, True)
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from phenogen.accel import new_accelerator

    cfg = cfg or LMConfig()
    out = Path(out_dir)
    state_dir = out / "state"
    # 1. data
    splits = (
        data if isinstance(data, SequenceSplits) else load_sequences(data, cfg.heldout_fraction, cfg.seed)
    )
    data_source = splits.source
    if resume:
        if not state_dir.is_dir():
            raise CheckpointError(f"{out}: nothing to resume (no state/ directory); drop --resume to start")
        _check_resume_config(out, cfg, data_source)
    elif state_dir.exists() or (out / "model").exists():
        raise ConfigError(
            f"{out} already holds a training run; pass --resume to continue it or choose a new --out"
        )
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

    # 3. accelerator, optimizer, schedule
    precision = _resolve_precision(cfg.mixed_precision)
    accelerator = new_accelerator(precision, cpu=not torch.cuda.is_available())
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

    # 4. fresh start or resume
    history: dict[str, Any] = {"steps": [], "epochs": []}
    epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
    if resume:
        state = _load_state(state_dir, accelerator, model, optimizer, scheduler)
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        global_step, elapsed, history = state["global_step"], state["elapsed_s"], state["history"]
        log.info("resuming %s at epoch %d, step %d (global %d)", out, epoch + 1, step_in_epoch, global_step)
    else:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved({"lm": cfg}, out, data=data_source, data_summary=splits.summary(), precision=precision)
        torch.manual_seed(cfg.seed)  # dropout stream

    def trainer_state() -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": global_step,
            "elapsed_s": elapsed,
            "history": history,
        }

    def save_model_dir(target: Path, complete: bool) -> None:
        lm.model = accelerator.unwrap_model(model)
        save_lm(lm, target, epoch=epoch, global_step=global_step, complete=complete, precision=precision)

    # 5. the loop
    stop_reason = "finished"
    bar = tqdm(total=total_steps, initial=global_step, disable=not progress, desc="train-lm", unit="step")
    t_start = time.perf_counter() - elapsed
    stopped = False
    while epoch < cfg.epochs and not stopped:
        order = _epoch_order(len(train_ids), cfg.seed, epoch)
        micro = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        steps = [micro[i : i + cfg.grad_accum] for i in range(0, len(micro), cfg.grad_accum)]
        t_epoch, tokens_epoch = time.perf_counter(), 0
        while step_in_epoch < len(steps):
            group = steps[step_in_epoch]
            batches = [collate([train_ids[i] for i in mb], tokenizer.pad_token_id) for mb in group]
            n_targets = sum(int(m[:, 1:].sum()) for _, m in batches)
            step_loss = 0.0
            for j, (ids, mask) in enumerate(batches):
                sync = j == len(batches) - 1
                ctx = contextlib.nullcontext() if sync else accelerator.no_sync(model)
                with ctx:
                    ids, mask = ids.to(accelerator.device), mask.to(accelerator.device)
                    loss = token_nll(model, ids, mask).sum() / n_targets
                    accelerator.backward(loss)
                step_loss += float(loss.detach())
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_in_epoch += 1
            global_step += 1
            tokens_epoch += sum(int(m.sum()) for _, m in batches)
            elapsed = time.perf_counter() - t_start
            history["steps"].append(
                {"step": global_step, "epoch": epoch + step_in_epoch / len(steps), "loss": step_loss,
                 "lr": scheduler.get_last_lr()[0]}
            )  # fmt: skip
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{step_loss:.3f}")
            if stop_after_steps is not None and global_step >= stop_after_steps:
                stop_reason, stopped = f"stop_after_steps={stop_after_steps}", True
            elif cfg.max_minutes and elapsed >= cfg.max_minutes * 60:
                stop_reason, stopped = f"max_minutes={cfg.max_minutes}", True
            if stopped:
                break
            if cfg.state_every_steps and global_step % cfg.state_every_steps == 0:
                _save_state(state_dir, accelerator, model, optimizer, scheduler, trainer_state())
        if step_in_epoch == len(steps):  # epoch complete: evaluate, checkpoint
            seconds = time.perf_counter() - t_epoch
            epoch_steps = [s["loss"] for s in history["steps"] if epoch < s["epoch"] <= epoch + 1]
            held = heldout_likelihood(model, held_ids, [s for _, s in held_pairs], tokenizer.pad_token_id)
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
            log.info("epoch %d: train %.4f held-out %.4f nats/token (%.4f bits/base)", epoch,
                     history["epochs"][-1]["train_loss"], held.nats_per_token, held.bits_per_base)  # fmt: skip
            if cfg.keep_checkpoints:
                save_model_dir(out / "checkpoints" / f"epoch-{epoch:03d}", complete=epoch == cfg.epochs)
            _save_state(state_dir, accelerator, model, optimizer, scheduler, trainer_state())
            _write_losses(out, history)
    bar.close()
    if stopped:
        _save_state(state_dir, accelerator, model, optimizer, scheduler, trainer_state())
    finished = epoch >= cfg.epochs and not (stopped and step_in_epoch)
    save_model_dir(out / "model", complete=finished)
    _write_losses(out, history)
    return TrainResult(
        out, epoch, global_step, finished, stop_reason if not finished else "finished", history
    )


def _write_losses(out: Path, history: dict[str, Any]) -> None:
    (out / "losses.json").write_text(json.dumps(history, indent=1) + "\n", encoding="utf-8")
    from phenogen.lm.plots import plot_losses

    plot_losses(history, out / "loss_curve.png")

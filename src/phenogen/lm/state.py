"""``train-lm``'s resumable state: atomic saves of the weights, optimizer, schedule, RNGs and loop position.

``OUT/state/`` (and each ``checkpoints/epoch-XXX``, ``model/``) is written aside as ``NAME.tmp`` and
moved in with :func:`phenogen.fsio.replace_dir`, which keeps the previous complete copy as
``NAME.old`` until the new one is in place. :func:`read_state` checks every file (a damaged state is
one :class:`~phenogen.errors.CheckpointError`, never silently skipped for an older one) and restores
it exactly. :data:`KILL_ENV` is the crash tests' hook (the points are listed in ``phenogen.lm.train``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from phenogen.config import to_jsonable
from phenogen.errors import CheckpointError
from phenogen.fsio import (
    atomic_write_text,
    read_json,
    read_text,
    replace_dir,
)

log = logging.getLogger(__name__)

KILL_ENV = "PHENOGEN_TEST_KILL_AT"
"""Environment variable of the kill test hook (module docstring)."""

STATE_FILES = ("model.safetensors", "optimizer.pt", "scheduler.json", "rng.safetensors", "trainer_state.json")
# Everything a broken file can raise while torch / safetensors read it.
_LOAD_ERRORS = (OSError, RuntimeError, ValueError, TypeError, KeyError, EOFError, pickle.UnpicklingError,
                AttributeError, IndexError, ArithmeticError, MemoryError)  # fmt: skip
# torch.load of a damaged optimizer.pt raises these too (AttributeError: a flipped byte in its pickle);
# read_state catches every Exception of a library reading a state file, these are only the known ones


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


def kill_point(point: str) -> None:
    if _kill_due(point):
        _die()


def save_dir(final: Path, write: Callable[[Path], None], what: str) -> None:
    """Write a directory aside (``final.tmp``), then move it over ``final`` keeping the old copy until then."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a save a kill interrupted
    tmp.mkdir(parents=True)
    write(tmp)
    kill_point(f"{what}:before_replace")
    if _kill_due(f"{what}:after_old_rename") and final.exists():  # counts every save
        final.rename(final.with_name(final.name + ".old"))  # replace_dir's first rename, then the kill
        _die()
    replace_dir(tmp, final)


def write_json_text(path: Path, obj: Any, indent: int | None = 1) -> None:
    """Atomic JSON (``NaN`` allowed: an empty held-out split gives a NaN held-out loss)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


# ---------------------------------------------------------------------------------- state I/O
def rng_state() -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def write_state(path: Path, accelerator, model, optimizer, scheduler, trainer_state: dict[str, Any]) -> None:
    """Save the resumable state (every process calls it: the RNG states are gathered to the main one)."""
    from safetensors.torch import save_file, save_model

    from phenogen.accel import on_main

    per_rank = [rng_state()]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        per_rank = gather_object(per_rank)

    def write(tmp: Path) -> None:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))
        kill_point("state:mid_write")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        write_json_text(tmp / "scheduler.json", scheduler.state_dict(), indent=None)
        scaler = getattr(accelerator, "scaler", None)
        if scaler is not None:
            write_json_text(tmp / "scaler.json", to_jsonable(scaler.state_dict()), indent=None)
        rng = {
            (k if r == 0 else f"rank{r}.{k}"): v
            for r, states in enumerate(per_rank)
            for k, v in states.items()
        }
        save_file(rng, str(tmp / "rng.safetensors"))
        write_json_text(tmp / "trainer_state.json", trainer_state)

    on_main(accelerator, save_dir, path, write, "state")


def older_state_hint(path: Path) -> str:
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


def check_trainer_state(ts: Any, where: Path) -> dict[str, Any]:
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


def read_state(path: Path, accelerator, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore the state in ``path``; any missing or unreadable file is one :class:`CheckpointError`."""
    from safetensors.torch import load_file, load_model

    hint = older_state_hint(path)
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
        ts = check_trainer_state(ts, ts_path)
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

"""``train-image``'s checkpoints: atomic saves, completeness, the newest complete one, exact-resume loading.

A checkpoint ``OUT/checkpoints/checkpoint-NNNNNN`` holds the accelerate state (weights, optimizer, LR
schedule, global RNGs), the EMA (safetensors + JSON) and the loop state (optimizer step, the training
generator's state, the loss history, each process's RNG). It is written into ``checkpoint-NNNNNN.tmp``,
completed by ``complete.json`` (its files and their sizes, written last), fsynced and renamed into
place; only then are checkpoints beyond the limit pruned. :func:`find_checkpoint` returns the newest
complete one (unfinished saves and checkpoints whose files no longer match ``complete.json`` are skipped
with a note); :func:`load_checkpoint` restores it or raises :class:`~phenogen.errors.CheckpointError`.
:data:`KILL_ENV` is the crash tests' hook.
"""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from pathlib import Path

import torch

from phenogen.errors import CheckpointError
from phenogen.fsio import replace_dir

__all__ = [
    "KILL_ENV",
    "kill_point",
    "checkpoint_step",
    "checkpoint_problem",
    "list_checkpoints",
    "find_checkpoint",
    "save_checkpoint",
    "prune_checkpoints",
    "check_loop_state",
    "load_checkpoint",
]

# ---------------------------------------------------------------------------------- test hook
KILL_ENV = "PHENOGEN_TEST_KILL_AT"
"""Test hook (crash tests only): ``POINT[@STEP]`` makes the process ``os._exit(137)`` — as a SIGKILL would
— when it reaches ``POINT`` (at optimizer step ``STEP``, or the first time). Points: ``step`` (after an
optimizer step, outside any save), ``checkpoint:mid_write`` (accelerate's files written, the loop state
and ``complete.json`` not yet), ``checkpoint:before_rename`` (complete, still ``*.tmp``),
``checkpoint:before_prune`` (renamed, older ones not yet pruned), ``export:mid_write`` (the final
``pipeline.tmp`` half written). Unset in normal use: then it costs one dictionary look-up."""


def kill_point(point: str, step: int) -> None:
    import os

    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    name, _, at = spec.partition("@")
    if name == point and (not at or at == str(step)):
        sys.stderr.flush()
        os._exit(137)


# ---------------------------------------------------------------------------------- checkpoints
CKPT_PREFIX = "checkpoint-"
COMPLETE = "complete.json"  # written last into a checkpoint: names and sizes of its files


def checkpoint_step(path: Path) -> int | None:
    """The step of ``checkpoint-NNNNNN`` (or its ``.old`` copy, see fsio.replace_dir); None for other names."""
    name = path.name.removesuffix(".old")
    digits = name.removeprefix(CKPT_PREFIX)
    return int(digits) if name.startswith(CKPT_PREFIX) and digits.isdigit() else None


def checkpoint_problem(ckpt: Path) -> str | None:
    """None when ``ckpt`` is a complete checkpoint, else why not (cheap: names and sizes, no loading).

    A checkpoint is complete when its ``complete.json`` (written last, before the rename) lists files
    that are all present with their recorded sizes. Checkpoints of earlier phenogen versions have no
    ``complete.json``; they wrote ``loop_state.json`` last, so one that parses marks them complete.
    """
    from phenogen.errors import PhenogenError
    from phenogen.fsio import read_json

    try:
        if not (ckpt / COMPLETE).is_file():
            read_json(ckpt / "loop_state.json", "loop state")
            return None if (ckpt / "loop_state.safetensors").is_file() else "loop_state.safetensors missing"
        files = read_json(ckpt / COMPLETE, "checkpoint manifest").get("files")
        if not isinstance(files, dict) or not files:
            return f"{COMPLETE} lists no files"
        for name, size in files.items():
            if not name or "/" in name or "\\" in name or name in (".", "..") or not name.isprintable():
                return f"{COMPLETE} lists {name!r:.80}, not a file name of the checkpoint"
            if isinstance(size, bool) or not isinstance(size, int):
                return f"{COMPLETE} gives {size!r:.40} as the size of {name!r:.80}"
            f = ckpt / name
            if not f.is_file():
                return f"{name[:80]} missing"
            if f.stat().st_size != size:
                return f"{name[:80]} is {f.stat().st_size} bytes, {size} were written"
    except (PhenogenError, OSError) as exc:
        return str(exc)
    return None


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Every checkpoint directory under ``root`` by step (complete or not), ``*.tmp`` saves excluded.

    ``checkpoint-N.old`` stands for ``checkpoint-N`` when a kill fell between the two renames of
    :func:`phenogen.fsio.replace_dir`.
    """
    found: dict[int, Path] = {}
    for d in sorted(root.glob(f"{CKPT_PREFIX}*")) if root.is_dir() else []:
        step = checkpoint_step(d)
        if step is None or not d.is_dir():
            continue
        if d.name.endswith(".old") and d.with_name(d.name.removesuffix(".old")).is_dir():
            continue  # the previous copy of a re-saved checkpoint, left by a kill before its removal
        found[step] = d
    return sorted(found.items())


def find_checkpoint(root: Path, announce: bool = True) -> Path:
    """The newest complete checkpoint under ``root``; raises CheckpointError when there is none.

    Decision for a damaged newest checkpoint: resume from the newest complete one before it, with a note
    on stderr naming what was skipped (training from an earlier checkpoint gives the same run, only
    later). Unfinished saves (``*.tmp``, from a kill during a save) are skipped the same way.
    """
    from phenogen.errors import CheckpointError

    skipped = [f"{d.name} (an unfinished save)" for d in sorted(root.glob(f"{CKPT_PREFIX}*.tmp"))]
    for _, ckpt in reversed(list_checkpoints(root)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if skipped and announce:
                print(f"train-image: note: resuming from {ckpt.name}; skipped {'; '.join(skipped)}",
                      file=sys.stderr, flush=True)  # fmt: skip
            return ckpt
        skipped.append(f"{ckpt.name} ({problem})")
    found = f"; found only {'; '.join(skipped)}" if skipped else ""
    raise CheckpointError(f"{root}: --resume given but there is no complete checkpoint{found}")


def save_checkpoint(
    accelerator, root: Path, step: int, state: dict, gen: torch.Generator, ema, limit: int
) -> Path:
    """Save a resumable checkpoint atomically, then keep only the newest ``limit`` complete ones.

    Every process writes its part (accelerate: the main process the weights, optimizer and schedule,
    each process its RNG states) into ``checkpoint-N.tmp``; the main process adds the EMA and loop state
    and ``complete.json`` (written last), fsyncs, renames it to ``checkpoint-N`` and only then prunes.
    A kill at any point leaves every earlier complete checkpoint in place.
    """
    from safetensors.torch import save_file

    from phenogen.fsio import atomic_write_json

    main = accelerator.is_main_process
    final = root / f"{CKPT_PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if main:
        kill_point("checkpoint:mid_write", step)
        tensors = {"generator_state": gen.get_state()}
        if ema is not None:
            tensors |= {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(ema.shadow_params)}
        save_file(tensors, tmp / "loop_state.safetensors")
        ema_meta = None
        if ema is not None:
            ema_meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
        state = {**state, "ema": ema_meta, "num_processes": accelerator.num_processes}
        (tmp / "loop_state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
        files = {f.name: f.stat().st_size for f in sorted(tmp.iterdir()) if f.is_file()}
        atomic_write_json(tmp / COMPLETE, {"step": step, "files": files})
        kill_point("checkpoint:before_rename", step)
        replace_dir(tmp, final)  # fsyncs every file, renames, fsyncs the directory
        kill_point("checkpoint:before_prune", step)
        prune_checkpoints(root, limit)
    accelerator.wait_for_everyone()
    return final


def prune_checkpoints(root: Path, limit: int) -> None:
    """Keep the newest ``limit`` complete checkpoints; delete every checkpoint directory older than them."""
    ckpts = list_checkpoints(root)
    complete = [step for step, d in ckpts if checkpoint_problem(d) is None]
    if len(complete) <= limit:
        return
    oldest_kept = complete[-limit]
    for step, d in ckpts:
        if step < oldest_kept:
            shutil.rmtree(d, ignore_errors=True)
    for d in root.glob(f"{CKPT_PREFIX}*.tmp"):  # unfinished saves of steps before the kept ones
        step = checkpoint_step(d.with_name(d.name.removesuffix(".tmp")))
        if step is not None and step < oldest_kept:
            shutil.rmtree(d, ignore_errors=True)


_MAX_STEP = 2**53


def check_loop_state(state: dict, file: Path) -> dict:
    """The loop state of a checkpoint has the types the loop needs (else a traceback mid-run)."""

    def count(value, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= _MAX_STEP

    def real(value) -> bool:  # NaN allowed: a diverged loss is still a loss
        return isinstance(value, float) or (count(abs(value), 0) if isinstance(value, int) else False)

    bad = None
    if not count(state.get("global_step"), 0):
        bad = "global_step (an integer >= 0)"
    elif "planned_steps" in state and not count(state["planned_steps"], 1):
        bad = "planned_steps (an integer >= 1)"
    elif not isinstance(state.get("losses"), list) or not all(real(v) for v in state["losses"]):
        bad = "losses (a list of numbers)"
    elif len(state["losses"]) > state["global_step"]:
        bad = "losses (more entries than global_step)"
    elif not isinstance(state.get("heldout"), list) or not all(
        isinstance(h, dict) and count(h.get("step"), 0) and real(h.get("loss")) for h in state["heldout"]
    ):
        bad = "heldout (a list of {step, loss})"
    elif "num_processes" in state and not count(state["num_processes"], 1):
        bad = "num_processes (an integer >= 1)"
    elif state.get("ema") is not None and not isinstance(state["ema"], dict):
        bad = "ema (an object or null)"
    elif state.get("caption_anchors") is not None and not (
        isinstance(state["caption_anchors"], dict)
        and count(state["caption_anchors"].get("step"), 1)
        and isinstance(state["caption_anchors"].get("moves"), list)
        and all(
            isinstance(mv, dict)
            and isinstance(mv.get("species"), str)
            and isinstance(mv.get("trait"), str)
            and real(mv.get("after"))
            for mv in state["caption_anchors"]["moves"]
        )
    ):
        bad = "caption_anchors (null or {step, moves: [{species, trait, after}]})"
    if bad:
        raise CheckpointError(
            f"{file}: damaged loop state: needs {bad}; move the checkpoint aside to resume from an earlier one"
        )
    return state


def load_checkpoint(accelerator, ckpt_dir: Path, gen: torch.Generator, ema) -> dict:
    """Restore a checkpoint of :func:`save_checkpoint`; anything unreadable is one CheckpointError."""
    from safetensors.torch import load_file

    from phenogen.fsio import read_json
    from phenogen.lm.state import check_optimizer_state

    state = check_loop_state(read_json(ckpt_dir / "loop_state.json", "loop state", error=CheckpointError),
                              ckpt_dir / "loop_state.json")  # fmt: skip
    saved_world = state.get("num_processes", 1)
    if saved_world != accelerator.num_processes:
        raise CheckpointError(
            f"{ckpt_dir}: written by a run of {saved_world!r:.40} process(es), this one has "
            f"{accelerator.num_processes}; resume with the same number of processes"
        )
    try:
        accelerator.load_state(str(ckpt_dir))
        for opt in accelerator._optimizers:
            check_optimizer_state(opt, ckpt_dir / "optimizer.bin")
        tensors = load_file(ckpt_dir / "loop_state.safetensors")
        gen.set_state(tensors["generator_state"])
        if ema is not None:
            shadow = [tensors[f"ema.{i}"].to(p.device) for i, p in enumerate(ema.shadow_params)]
            ema.load_state_dict({**(state["ema"] or {}), "shadow_params": shadow})
        for key in ("global_step", "losses", "heldout"):
            state[key]  # noqa: B018 - a KeyError here is a damaged loop state
    except CheckpointError:
        raise
    except Exception as exc:  # torch.load, safetensors and pickle raise many types for a damaged file
        detail = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        if isinstance(exc, pickle.UnpicklingError):  # torch's text advises weights_only=False: never here
            detail = "a file is not a weights-only torch file"
        raise CheckpointError(
            f"{ckpt_dir}: cannot resume from this checkpoint ({detail}); "
            "it looked complete but a file is damaged: move it aside to resume from an earlier checkpoint"
        ) from exc
    return state

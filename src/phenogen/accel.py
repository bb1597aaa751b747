"""One place that makes :class:`accelerate.Accelerator` objects for phenogen's training loops.

accelerate keeps its mixed-precision setting in a process-wide singleton (``AcceleratorState``):
a second ``Accelerator`` in the same process that asks for another precision raises
``AcceleratorState has already been initialized and cannot be changed``. phenogen runs several
trainings in one process (``phenogen demo`` trains the DNA model and then the image model; a
notebook or a sweep trains many), each with its own ``mixed_precision`` setting, so before making
an accelerator with a different precision the single-run part of that state is dropped. The
process-level part (``PartialState``: the device, the distributed group under ``accelerate
launch``) is kept, so multi-GPU runs are unaffected.

Multi-process helpers (``torchrun`` / ``accelerate launch``; one process: plain behaviour):
:func:`shard_indices` (a process's share of a batch), :func:`on_main` (work only the main process
does — writing files — with its outcome, or its failure, passed to every process),
:func:`is_main_process` and :func:`end_distributed` (tear the process group down before exit).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "new_accelerator",
    "process_kwargs",
    "GROUP_TIMEOUT_S",
    "shard_indices",
    "on_main",
    "is_main_process",
    "end_distributed",
]


def new_accelerator(mixed_precision: str, **kwargs: Any):
    """An ``Accelerator(mixed_precision=…, **kwargs)`` even if an earlier one in this process used
    another precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, **kwargs)


# ------------------------------------------------------------------------ multi-process helpers
GROUP_TIMEOUT_S = 12 * 3600
"""How long a process waits at a barrier or all-reduce: the others wait while the main process trains
the VAE, samples and saves (torch's default, 30 min, is shorter than a long VAE stage). A process that
dies does not leave the others waiting: torchrun then stops them."""


def process_kwargs() -> dict:
    """Accelerator/PartialState keywords for this launch: ``cpu=True`` under ``torchrun`` without a GPU.

    accelerate only sets up a CPU process group (gloo) when asked for the CPU; ``accelerate launch --cpu``
    asks through the environment, plain ``torchrun`` does not, so several processes on a machine without
    CUDA would each train alone (and race on ``--out``). The process group's timeout: GROUP_TIMEOUT_S.
    """
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        return {"cpu": True}
    return {}


def shard_indices(indices: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s share of ``indices`` (``indices[rank::world]``): shares differ in length by at most
    one, their union is ``indices``, and with ``world == 1`` it is ``indices`` itself."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in 0..{world - 1}")
    return list(indices[rank::world])


def on_main(accelerator, fn, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` on the main process only; every process returns its result.

    The other processes wait (the broadcast of the outcome is the barrier) and learn whether it
    failed: a failure on the main process is raised on every process — the same
    :class:`~phenogen.errors.PhenogenError` subclass with the same message, else a ``RuntimeError``
    naming it — so that no process is left waiting forever at the next barrier. One process: a
    plain call.
    """
    if accelerator.num_processes == 1:
        return fn(*args, **kwargs)
    from accelerate.utils import broadcast_object_list

    outcome: list[Any] = [None, None]
    failure: BaseException | None = None
    if accelerator.is_main_process:
        try:
            outcome[1] = fn(*args, **kwargs)
        except Exception as exc:  # re-raised below, after the others heard of it
            failure = exc
            outcome[0] = (type(exc).__name__, str(exc))
    broadcast_object_list(outcome)
    if failure is not None:
        raise failure
    if outcome[0] is not None:
        from phenogen import errors

        name, message = outcome[0]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, errors.PhenogenError):
            raise cls(message)
        raise RuntimeError(f"the main process failed: {name}: {message}")
    return outcome[1]


def is_main_process() -> bool:
    """True on the main process of a ``torchrun``/``accelerate launch`` run (and in a plain run)."""
    from accelerate.state import PartialState

    return PartialState().is_main_process


def end_distributed(barrier: bool = True) -> None:
    """Wait for every process (``barrier``), then destroy the process group (no-op in a plain run).

    A command that ran under ``torchrun`` calls this before it exits: a gloo group left to the
    interpreter's shutdown can abort the process (``terminate called without an active exception``,
    exit code -6) after all its work is done. After an error pass ``barrier=False``: a process that
    failed alone must not wait for the others.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()

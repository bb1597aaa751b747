"""One place that makes :class:`accelerate.Accelerator` objects for phenogen's training loops.

accelerate keeps its mixed-precision setting in a process-wide singleton (``AcceleratorState``):
a second ``Accelerator`` in the same process that asks for another precision raises
``AcceleratorState has already been initialized and cannot be changed``. phenogen runs several
trainings in one process (``phenogen demo`` trains the DNA model and then the image model; a
notebook or a sweep trains many), each with its own ``mixed_precision`` setting, so before making
an accelerator with a different precision the single-run part of that state is dropped. The
process-level part (``PartialState``: the device, the distributed group under ``accelerate
launch``) is kept, so multi-GPU runs are unaffected.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new_accelerator"]


def new_accelerator(mixed_precision: str, **kwargs: Any):
    """An ``Accelerator(mixed_precision=…, **kwargs)`` even if an earlier one in this process used
    another precision."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, **kwargs)

"""Generation settings that travel with a trained pipeline: ``PIPELINE/generation_config.json``.

A pipeline is tuned with one sampler, step count and guidance scale (the demo: UniPC, 15 steps,
guidance 3 — measured in BENCHMARKS.md); painting it with other settings (the thesis' DDIM 50 / 8
over-saturates this model) gives other, usually worse, portraits. ``train-image`` therefore writes
the ``[generate]`` settings of its configuration next to ``model_index.json`` (as transformers keeps
``generation_config.json`` beside a language model), and ``generate``, ``ancestors``, ``evaluate
--model``, :mod:`phenogen.api` and the app use them for every setting not given explicitly.
A pipeline without the file (saved before it existed) is painted with the thesis' settings.

>>> s = GenerationSettings("unipc", 15, 3.0)
>>> s.override(steps=25).steps, s.override(steps=None).steps
(25, 15)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from phenogen.errors import CheckpointError

__all__ = ["GenerationSettings", "THESIS", "FILE", "read_settings", "write_settings", "resolve_settings"]

FILE = "generation_config.json"


@dataclass(frozen=True)
class GenerationSettings:
    """How a pipeline paints: ``scheduler`` (a :data:`~phenogen.diffusion.config.SCHEDULERS` name),
    denoising ``steps``, classifier-free ``guidance_scale`` and ``best_of``: candidates painted per kept
    portrait, the one the prior's reader finds closest to its caption kept (:mod:`phenogen.diffusion.reader`;
    1 = every draw kept, as a pipeline without a reader paints)."""

    scheduler: str
    steps: int
    guidance_scale: float
    best_of: int = 1

    def __post_init__(self) -> None:
        from phenogen.diffusion.config import SCHEDULERS

        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        g = self.guidance_scale
        if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0, got {g!r}")
        if isinstance(self.best_of, bool) or not isinstance(self.best_of, int) or self.best_of < 1:
            raise ValueError(f"best_of must be an integer >= 1, got {self.best_of!r}")

    def override(
        self,
        scheduler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        best_of: int | None = None,
    ) -> GenerationSettings:
        """These settings with every value that is not ``None`` replaced."""
        given = {"scheduler": scheduler, "steps": steps, "guidance_scale": guidance_scale, "best_of": best_of}
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


THESIS = GenerationSettings("ddim", 50, 8.0)
"""The thesis' settings: DDIM, 50 steps, guidance 8 — used for a pipeline that stores none."""


def read_settings(pipeline_dir: str | Path) -> tuple[GenerationSettings, str]:
    """The settings stored with a pipeline and where they came from; :data:`THESIS` when it stores none.

    A broken file is a :class:`CheckpointError` naming it (never silently the thesis' settings).
    """
    from phenogen.fsio import read_json

    path = Path(pipeline_dir) / FILE
    if not path.is_file():
        return THESIS, "the thesis' settings (the pipeline stores none)"
    data = read_json(path, "generation settings", expect=dict, error=CheckpointError)
    try:
        settings = GenerationSettings(
            scheduler=data["scheduler"], steps=data["steps"], guidance_scale=data["guidance_scale"],
            best_of=data.get("best_of", 1),
        )  # fmt: skip
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: no {exc.args[0]!r}; it needs scheduler, steps, guidance_scale"
        ) from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    source = data.get("source")
    return settings, f"stored with the pipeline ({source})" if isinstance(
        source, str
    ) else "stored with the pipeline"


def write_settings(pipeline_dir: str | Path, settings: GenerationSettings, source: str) -> Path:
    """Store ``settings`` with a pipeline (atomically); ``source`` says where they were chosen."""
    from phenogen.fsio import atomic_write_json

    return atomic_write_json(Path(pipeline_dir) / FILE, {**settings.to_dict(), "source": source})


def resolve_settings(
    pipeline_dir: str | Path,
    scheduler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    best_of: int | None = None,
) -> GenerationSettings:
    """The pipeline's stored settings with the explicitly given ones (not ``None``) in their place."""
    stored, _ = read_settings(pipeline_dir)
    return stored.override(scheduler, steps, guidance_scale, best_of)

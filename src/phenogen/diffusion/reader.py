"""The prior's reader: reads a portrait back into the caption it was painted from, to keep the candidates that
show what they were told (best-of-K sampling).

A diffusion sample paints its caption with some slack: one draw of the noise shows the red crest it was
asked for, another hides it behind the pose. :func:`rerank` paints ``K`` candidates per kept portrait and
keeps those whose read is closest to the caption (:func:`caption_distance`), as DALL·E kept the samples
CLIP ranked best. The reader is a :class:`~phenogen.evaluate.probe.TraitProbe` trained only on renders of
random birds from the caption prior (:func:`~phenogen.evaluate.probe.prior_renders`: the image prior's own
kind of data; no clade, tree or barcode), so choosing with it uses nothing a clade's yardstick knows.

Saved as ``probe.safetensors`` + ``probe.json`` (the probe's format, never a pickle) in a prior's
``reader/`` folder.

>>> import numpy as np
>>> from phenogen.evaluate.probe import ProbeSpec, TraitProbe
>>> reader = TraitProbe(ProbeSpec(["a"], ["b"], mean=[0.0], std=[1.2], image_size=32))
>>> from PIL import Image
>>> caption_distance(reader, [Image.new("RGB", (32, 32))] * 2, np.array([0.0, 1.0])).shape
(2,)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from phenogen.evaluate.probe import (
    ProbeSpec,
    TraitProbe,
    load_probe,
    predict,
    prior_renders,
    save_probe,
    train_probe,
)

__all__ = [
    "READER_DIR",
    "train_reader",
    "save_reader",
    "load_reader",
    "build_reader",
    "caption_distance",
    "best_of",
]

log = logging.getLogger(__name__)

READER_DIR = "reader"


def train_reader(
    names: Sequence[str],
    *,
    n: int = 6000,
    epochs: int = 20,
    seed: int = 11,
    size: int = 64,
    image_size: int = 32,
    sd: float = 1.2,
    progress: Callable[[str], None] | None = None,
) -> TraitProbe:
    """A reader of the caption ``names`` (the simulator's traits) trained on ``n`` renders of random birds.

    Continuous traits are drawn ~ N(0, ``sd``²), binary ones a fair coin, as the prior's captions were.
    """
    from phenogen.sim.traitspec import DISCRETE, TRAIT_NAMES

    unknown = [t for t in names if t not in TRAIT_NAMES]
    if unknown:
        raise ValueError(f"a reader is drawn from the simulator's traits; unknown: {', '.join(unknown)}")
    cont = [t for t in names if t not in DISCRETE]
    disc = [t for t in names if t in DISCRETE]
    if list(names) != [*cont, *disc]:
        raise ValueError("caption names must list the continuous traits before the binary ones")
    rng = np.random.default_rng([seed, 7])
    if progress:
        progress(f"reader: rendering {n} random birds")
    images, traits = prior_renders(cont, disc, n, size, rng, sd=sd, out_size=image_size)
    spec = ProbeSpec(cont, disc, mean=[0.0] * len(cont), std=[sd] * len(cont), image_size=image_size)
    reader, _ = train_probe(images, traits, spec, epochs=epochs, seed=seed, progress=progress)
    return reader


def save_reader(reader: TraitProbe, out_dir: str | Path, history: dict | None = None) -> Path:
    """Write the reader as ``probe.safetensors`` + ``probe.json`` into ``out_dir`` (written aside, then renamed)."""
    import shutil

    from phenogen.fsio import replace_dir

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    return replace_dir(save_probe(reader, tmp, history), out)


def build_reader(
    prior_dir: str | Path,
    names: Sequence[str],
    *,
    n: int = 6000,
    epochs: int = 20,
    seed: int = 11,
    size: int = 64,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train a reader of ``names`` and save it as ``PRIOR/reader``; returns what it was built with."""
    import time

    t0 = time.perf_counter()
    reader = train_reader(names, n=n, epochs=epochs, seed=seed, size=size, progress=progress)
    record = {"renders": n, "epochs": epochs, "seed": seed, "render_size": size,
              "image_size": reader.spec.image_size, "seconds": round(time.perf_counter() - t0, 1),
              "note": "renders of random birds from the caption prior only (no clade)"}  # fmt: skip
    save_reader(reader, Path(prior_dir) / READER_DIR, record)
    return record


def load_reader(model_dir: str | Path) -> TraitProbe:
    return load_probe(model_dir)


def _as_batch(images: Sequence) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def caption_distance(reader: TraitProbe, images: Sequence, caption: np.ndarray) -> np.ndarray:
    """Mean squared distance between each image's read and ``caption`` (continuous traits in units of the
    prior's sd, binary ones as probabilities against the caption's value): (len(images),)."""
    spec = reader.spec
    read = predict(reader, _as_batch(images))  # (N, C + D), continuous z-scored
    want = spec.standardize(np.asarray(caption, dtype=np.float64)[None, : len(spec.trait_names)])
    return ((read - want) ** 2).mean(axis=1)


def best_of(reader: TraitProbe, candidates: Sequence, caption: np.ndarray, keep: int) -> list[int]:
    """Indices (ascending) of the ``keep`` candidates read closest to ``caption``."""
    d = caption_distance(reader, candidates, caption)
    return sorted(int(i) for i in np.argsort(d, kind="stable")[:keep])

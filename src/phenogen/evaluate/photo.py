"""The photo model: a small CNN that names the species (and genus, family, order) of a photo.

It is the yardstick of the photo scores of ``phenogen evaluate`` (:mod:`~phenogen.evaluate.photo_scores`),
the one that needs no traits: trained on the *training* photos only, one softmax head per level —
the training species, and each rank of the manifest's ``taxonomy`` lineage that splits the training
species into at least two taxa. Its penultimate layer (:meth:`PhotoModel.features`, ``photo_features``
wide) is the input of the DNA–image retrieval model's image tower and the feature space of FID/KID on
photos; its rank heads give the taxonomic agreement.

Why a model trained here instead of Inception (FID's usual features) or CLIP/BioCLIP: no pretrained
weights are available offline and torchvision is not a dependency; and a network that has seen no
insect or bird cannot tell two congeners apart anyway. The price: its numbers compare rows of one run
(same model), not runs of different datasets, nor published FIDs.

The backbone is the trait probe's :class:`~phenogen.evaluate.probe.SmallCNN` (four stride-2 conv
stages, a linear map of the final grid); training adds the probe's flip-and-shift augmentation and
label smoothing. Saved as ``photo.safetensors`` + ``photo.json`` (:class:`PhotoSpec`, history).

>>> import torch
>>> spec = PhotoSpec(heads={"species": ["a", "b", "c"], "genus": ["g", "h"]}, image_size=32, width=8)
>>> model = PhotoModel(spec)
>>> {k: tuple(v.shape) for k, v in model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).items()}
{'species': (2, 3), 'genus': (2, 2)}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from phenogen.errors import InputError
from phenogen.evaluate.probe import SmallCNN, augment

__all__ = [
    "PhotoSpec",
    "PhotoModel",
    "train_photo_model",
    "predict_photos",
    "save_photo_model",
    "load_photo_model",
]

WEIGHTS_NAME = "photo.safetensors"
SPEC_NAME = "photo.json"


@dataclass
class PhotoSpec:
    """The classes of every head (``species`` first, then ranks nearest first) and the network's size."""

    heads: dict[str, list[str]] = field(default_factory=dict)
    image_size: int = 32
    width: int = 32
    features: int = 64

    def __post_init__(self) -> None:
        if "species" not in self.heads or len(self.heads["species"]) < 2:
            raise ValueError("a photo model needs a species head with at least two training species")
        for name, classes in self.heads.items():
            if len(classes) < 2 or len(set(classes)) != len(classes):
                raise ValueError(f"head {name!r} needs two or more distinct classes, got {classes[:5]}")


class PhotoModel(nn.Module):
    """Images (B, 3, H, W) → {head: logits (B, n_classes)}; :meth:`features` (B, F) for retrieval and FID."""

    def __init__(self, spec: PhotoSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_features = spec.features
        self.backbone = SmallCNN(spec.features, spec.width, spec.image_size)
        self.heads = nn.ModuleDict({name: nn.Linear(spec.features, len(c)) for name, c in spec.heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.backbone(x))  # (B, F)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {name: head(f) for name, head in self.heads.items()}  # {head: (B, n)}


def train_photo_model(
    images: torch.Tensor,
    labels: Mapping[str, np.ndarray],
    spec: PhotoSpec,
    *,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 3e-3,
    label_smoothing: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> tuple[PhotoModel, dict]:
    """Fit on (N, 3, H, W) uint8 ``images``; ``labels[head]`` (N,) class indices, -1 where unknown.

    Loss: the sum over heads of label-smoothed cross-entropy (unknown labels ignored). Returns the model
    (eval mode, on CPU) and a history (loss per epoch, training accuracy per head, seconds).
    """
    n = images.shape[0]
    if n < 2:
        raise InputError("the photo model needs at least 2 training photos")
    for name in spec.heads:
        if len(labels[name]) != n:
            raise InputError(f"head {name}: {len(labels[name])} labels for {n} photos")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = PhotoModel(spec).to(device)
    y = {name: torch.as_tensor(np.asarray(labels[name]), dtype=torch.long) for name in spec.heads}
    steps = epochs * -(-n // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    history: dict = {"loss": []}
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            out = model(augment(images[idx], gen).to(device) / 255.0)
            loss = sum(
                F.cross_entropy(
                    out[h], y[h][idx].to(device), ignore_index=-1, label_smoothing=label_smoothing
                )
                for h in spec.heads
                if bool((y[h][idx] >= 0).any())
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        history["loss"].append(total / n)
        if progress is not None and (epoch + 1) % max(1, epochs // 3) == 0:
            progress(f"photo model epoch {epoch + 1}/{epochs}: loss {total / n:.3f}")
    history["seconds"] = time.perf_counter() - start
    model = model.cpu().eval()
    _, probs = predict_photos(model, images)
    history["train_accuracy"] = {
        h: float(np.mean(probs[h].argmax(1)[y[h].numpy() >= 0] == y[h].numpy()[y[h].numpy() >= 0]))
        for h in spec.heads
    }
    return model, history


@torch.no_grad()
def predict_photos(
    model: PhotoModel, images: torch.Tensor, batch_size: int = 256
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, 3, H, W) images → features (N, F) float64 and {head: class probabilities (N, n)}."""
    model.eval()
    feats: list[np.ndarray] = []
    probs: dict[str, list[np.ndarray]] = {h: [] for h in model.spec.heads}
    for i in range(0, images.shape[0], batch_size):
        f = model.features(images[i : i + batch_size])  # (B, F)
        feats.append(f.double().numpy())
        for h, head in model.heads.items():
            probs[h].append(torch.softmax(head(f), -1).double().numpy())
    if not feats:
        return np.zeros((0, model.spec.features)), {
            h: np.zeros((0, len(c))) for h, c in model.spec.heads.items()
        }
    return np.concatenate(feats), {h: np.concatenate(p) for h, p in probs.items()}


def save_photo_model(model: PhotoModel, out_dir: str | Path, history: dict | None = None) -> Path:
    """Write ``photo.safetensors`` + ``photo.json`` into ``out_dir``; returns the directory."""
    from phenogen.evaluate.probe import save_spec_model

    return save_spec_model(model, out_dir, history, WEIGHTS_NAME, SPEC_NAME)


def load_photo_model(model_dir: str | Path) -> PhotoModel:
    """Load a model saved by :func:`save_photo_model` (CheckpointError naming what is missing)."""
    from phenogen.evaluate.probe import load_spec_model

    return load_spec_model(PhotoModel, PhotoSpec, model_dir, "photo/", WEIGHTS_NAME, SPEC_NAME)

"""DNA → image retrieval: the "success rate" of G2PDiffusion, measured with a small CLIP-style model.

Two towers map into one unit-norm embedding space: a DNA tower (standardised k-mer profile → MLP)
and an image tower (an MLP on *frozen* image features: those of the trait probe,
:meth:`~phenogen.evaluate.probe.TraitProbe.features`, i.e. a small CNN whose convolutional part was
trained on renders of training species and of prior-drawn birds, for the trait table; those of the
photo model, :meth:`~phenogen.evaluate.photo.PhotoModel.features`, a small CNN trained to name the
training species and their taxa, for the photo scores of :mod:`~phenogen.evaluate.photo_scores`). Only the two MLP heads are trained,
on *training* pairs only: each training image is classified among all training species by the
cosine between its embedding and each species' DNA embedding (InfoNCE, fixed temperature).
Why frozen probe features instead of a CNN trained end to end: measured on the default clade, a
CNN fitted on ~40 species memorises them (train top-1 100 %) and ranks held-out species near
chance, while the probe's features generalise to unseen birds; training the heads takes seconds.

Scoring: for each image (generated, or a baseline's), the candidate species are ranked by cosine
to the image; the rank of the species the image was made for gives top-1 / top-5 / top-100 success.
**Candidates** = every species of the ``train`` split plus every species of the scored splits
(held-out living, extinct, ancestors — all of their records, generated for or not), so the chance
level ``k / n_candidates`` is the same for every row of a run. A species' DNA embedding is computed
from the mean k-mer profile of all of its records in the dataset.

>>> profile = kmer_profile("ACGTACGT", k=2)
>>> profile.shape, round(float(profile.sum()), 6)
((16,), 1.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from phenogen.errors import InputError

__all__ = [
    "kmer_profile",
    "species_profiles",
    "RetrievalModel",
    "train_retrieval",
    "embed_images",
    "embed_dna",
    "rank_species",
    "rank_by_traits",
    "trait_distances",
    "success_rates",
]


def kmer_profile(seq: str, k: int = 4) -> np.ndarray:
    """Frequencies of the 4^k k-mers of ``seq`` (k-mers holding N or gaps are skipped); sums to 1."""
    lut = np.full(256, 4, dtype=np.int64)
    for i, c in enumerate("ACGT"):
        lut[ord(c)] = i
    codes = lut[np.frombuffer(seq.upper().encode("ascii"), dtype=np.uint8)]
    out = np.zeros(4**k)
    if len(codes) >= k:
        windows = np.lib.stride_tricks.sliding_window_view(codes, k)  # (L-k+1, k)
        windows = windows[(windows < 4).all(1)]
        np.add.at(out, (windows * (4 ** np.arange(k - 1, -1, -1))).sum(1), 1.0)
    total = out.sum()
    return out / total if total else out


class RetrievalModel(nn.Module):
    """DNA profiles (S, 4^k) and probe features (B, F) → unit embeddings (·, dim)."""

    def __init__(self, k: int = 5, n_features: int = 64, dim: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.k = k
        n_in = 4**k
        self.register_buffer("profile_mean", torch.zeros(n_in))
        self.register_buffer("profile_std", torch.ones(n_in))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.dna = nn.Sequential(nn.Linear(n_in, 256), nn.SiLU(), nn.Dropout(dropout), nn.Linear(256, dim))
        self.image = nn.Sequential(nn.Linear(n_features, 128), nn.SiLU(), nn.Linear(128, dim))

    def embed_dna(self, profiles: torch.Tensor) -> torch.Tensor:
        z = (profiles - self.profile_mean) / self.profile_std  # (S, 4^k)
        return F.normalize(self.dna(z), dim=-1)  # (S, dim)

    def embed_images(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.feature_mean) / self.feature_std  # (B, F)
        return F.normalize(self.image(z), dim=-1)  # (B, dim)


def train_retrieval(
    features: np.ndarray,
    labels: np.ndarray,
    species_profiles: np.ndarray,
    *,
    k: int = 5,
    dim: int = 64,
    epochs: int = 300,
    lr: float = 3e-3,
    weight_decay: float = 0.1,
    dropout: float = 0.3,
    temperature: float = 0.1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> tuple[RetrievalModel, dict]:
    """Fit both heads, full batch, on training images' probe features (N, F), their species index (N,)
    and the training species' k-mer profiles (S, 4^k)."""
    if features.shape[0] != len(labels):
        raise InputError(f"{features.shape[0]} images but {len(labels)} labels")
    if species_profiles.shape[0] < 2:
        raise InputError("retrieval needs at least two training species")
    torch.manual_seed(seed)
    x = torch.as_tensor(features, dtype=torch.float32)
    prof = torch.as_tensor(species_profiles, dtype=torch.float32)
    model = RetrievalModel(k=k, n_features=x.shape[1], dim=dim, dropout=dropout)
    model.profile_mean.copy_(prof.mean(0))
    model.profile_std.copy_(prof.std(0).clamp_min(1e-4))
    model.feature_mean.copy_(x.mean(0))
    model.feature_std.copy_(x.std(0).clamp_min(1e-4))
    y = torch.as_tensor(labels, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history: dict = {"loss": []}
    start = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        logits = model.embed_images(x) @ model.embed_dna(prof).T / temperature  # (N, S)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history["loss"].append(float(loss.detach()))
        if progress is not None and (epoch + 1) % max(1, epochs // 3) == 0:
            progress(f"retrieval epoch {epoch + 1}/{epochs}: loss {history['loss'][-1]:.3f}")
    history["seconds"] = time.perf_counter() - start
    return model.eval(), history


@torch.no_grad()
def embed_images(model: RetrievalModel, features: np.ndarray) -> torch.Tensor:
    """Probe features (N, F) → unit embeddings (N, dim)."""
    model.eval()
    return model.embed_images(torch.as_tensor(features, dtype=torch.float32))


@torch.no_grad()
def embed_dna(model: RetrievalModel, profiles: np.ndarray) -> torch.Tensor:
    """k-mer profiles (S, 4^k) → unit embeddings (S, dim)."""
    model.eval()
    return model.embed_dna(torch.as_tensor(profiles, dtype=torch.float32))


def rank_species(image_emb: torch.Tensor, dna_emb: torch.Tensor, true_index: Sequence[int]) -> np.ndarray:
    """1-based rank of each image's true candidate among all candidates by cosine (ties count against it).

    ``image_emb`` (N, dim) and ``dna_emb`` (S, dim) are unit vectors; ``true_index`` (N,) indexes ``dna_emb``.
    """
    if image_emb.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    sims = image_emb @ dna_emb.T  # (N, S)
    own = sims.gather(1, torch.as_tensor(list(true_index), dtype=torch.long)[:, None])  # (N, 1)
    return (sims >= own).sum(1).numpy()  # itself + every candidate scoring at least as high


def rank_by_traits(readings: np.ndarray, candidates: np.ndarray, true_index: Sequence[int]) -> np.ndarray:
    """1-based rank of each reading's true candidate by Euclidean distance in trait space (ties count
    against it): "is this picture nearer its own species' true traits than any other candidate's?".

    ``readings`` (N, P) are trait vectors (the probe's reading of an image, or a baseline's vector),
    ``candidates`` (S, P) every candidate species' true traits, both z-scored the same way; ``true_index``
    (N,) indexes ``candidates``. The identification a person with the clade's trait table could make.

    >>> rank_by_traits(np.array([[0.0, 0.1], [0.9, 1.0]]), np.array([[0.0, 0.0], [1.0, 1.0]]), [0, 0]).tolist()
    [1, 2]
    """
    if len(readings) == 0:
        return np.zeros(0, dtype=np.int64)
    dist = trait_distances(readings, candidates)  # (N, S)
    own = dist[np.arange(len(dist)), np.asarray(true_index, dtype=np.int64)]  # (N,)
    return (dist <= own[:, None]).sum(1)


def trait_distances(readings: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (N, S) between trait readings (N, P) and candidates' traits (S, P)."""
    return ((readings[:, None, :] - candidates[None, :, :]) ** 2).sum(-1)


def success_rates(ranks: np.ndarray, n_candidates: int) -> dict[str, float | int | None]:
    """top-1 / top-5 / top-100 success (share of images whose true species ranks there), their chance
    levels ``min(k, n) / n``, and the mean rank.

    >>> success_rates(np.array([1, 3, 120]), 200)["top5"], success_rates(np.array([1]), 200)["chance_top100"]
    (0.6666666666666666, 0.5)
    """
    chance = {f"chance_top{k}": min(k, n_candidates) / n_candidates for k in (1, 5, 100)}
    if len(ranks) == 0:
        return {"top1": None, "top5": None, "top100": None, "mean_rank": None, **chance}
    return {
        "top1": float(np.mean(ranks <= 1)),
        "top5": float(np.mean(ranks <= 5)),
        "top100": float(np.mean(ranks <= 100)),
        "mean_rank": float(np.mean(ranks)),
        **chance,
    }


def species_profiles(sequences: Mapping[str, Sequence[str]], k: int) -> tuple[list[str], np.ndarray]:
    """Species → their barcodes ⇒ (species names, (S, 4^k) mean k-mer profiles)."""
    names = list(sequences)
    return names, np.stack([np.mean([kmer_profile(s, k) for s in sequences[n]], axis=0) for n in names])

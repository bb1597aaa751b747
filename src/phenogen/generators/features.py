"""The DNA condition of the non-diffusion generator families: one standardised vector per barcode.

The features are the diffusion model's own (:mod:`phenogen.diffusion.conditioning`), pooled to one vector,
so that the families are compared on the same reading of the DNA:

- ``kmer`` (default): the k-mer profile tokens of :func:`~phenogen.diffusion.conditioning.kmer_profile_tokens`
  (``kmer_k = 4``, ``kmer_segments = 4``, as in the demo), flattened: ``(segments + 1) × 4**k`` values
  (1,280 for the demo's);
- ``gpt2``: the hidden states of a trained phenogen DNA language model (``lm_model``, a ``train-lm`` OUT),
  read by the diffusion conditioner's frozen encoder
  (:meth:`~phenogen.diffusion.conditioning.DNAConditioner.featurize`) and mean-pooled over the real tokens.

The raw features are standardised with the mean and standard deviation of the *training* barcodes
(features constant on them keep a scale of 1) and clipped to ``±CLIP`` standard deviations, so that a
k-mer unseen in training cannot blow a held-out barcode's condition up. A :class:`Featurizer` saves itself
as ``featurizer.json`` (encoder settings, the LM's config) + ``featurizer.safetensors`` (mean, std, and the
LM's weights for ``gpt2``) and reloads to the same numbers.

>>> f = Featurizer.fit(["ACGTACGTTTGACCA" * 4, "TTGACCAACGTACGT" * 4])
>>> tuple(f(["ACGTACGTTTGACCA" * 4]).shape)
(1, 1280)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phenogen.errors import CheckpointError, ConfigError

__all__ = ["Featurizer", "FEATURE_ENCODERS", "CLIP"]

FEATURE_ENCODERS = ("kmer", "gpt2")
"""The DNA encoders a generator family can be conditioned on."""

CLIP = 8.0
"""Standardised features are clipped to ``±CLIP`` (training barcodes rarely reach 4)."""

JSON_NAME = "featurizer.json"
TENSORS_NAME = "featurizer.safetensors"
_GPT2_HEAD = {"cross_attention_dim": 8, "heads": 1, "depth": 0}  # the conditioner's (unused) head: tiny


class Featurizer:
    """Barcodes → standardised condition vectors ``(N, dim)`` float32.

    Build one with :meth:`fit` (on the training barcodes) or :meth:`load`; call it on sequences.

    Attributes
    ----------
    config : dict
        ``encoder`` and its settings (``kmer_k``, ``kmer_segments``; or ``lm_config``, ``lm_k``,
        ``lm_stride``, ``lm_layer``), ``dim``; the keys :func:`~phenogen.diffusion.generate.min_sequence_length`
        reads.
    mean, std : Tensor (dim,)
        The training barcodes' statistics.
    """

    def __init__(self, config: dict[str, Any], mean: torch.Tensor, std: torch.Tensor, conditioner=None):
        self.config = dict(config)
        self.mean = mean.float()
        self.std = std.float()
        self._conditioner = conditioner  # gpt2: the DNAConditioner holding the frozen LM

    @property
    def encoder(self) -> str:
        return str(self.config["encoder"])

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(
        cls,
        sequences: Sequence[str],
        encoder: str = "kmer",
        *,
        lm_model: str | Path = "",
        lm_layer: int = -1,
        kmer_k: int = 4,
        kmer_segments: int = 4,
    ) -> Featurizer:
        """A featurizer standardised on ``sequences`` (the training barcodes)."""
        if encoder not in FEATURE_ENCODERS:
            raise ConfigError(
                f"generator.encoder = {encoder!r}: must be one of {', '.join(FEATURE_ENCODERS)}"
            )
        if not sequences:
            raise ConfigError("the featurizer needs at least one training barcode")
        conditioner = None
        if encoder == "kmer":
            config: dict[str, Any] = {"encoder": "kmer", "kmer_k": kmer_k, "kmer_segments": kmer_segments}
            config["dim"] = (kmer_segments + 1) * 4**kmer_k
        else:
            from phenogen.diffusion.conditioning import build_conditioner

            conditioner = build_conditioner("gpt2", lm_model=str(lm_model), lm_layer=lm_layer, **_GPT2_HEAD)
            c = conditioner.config
            config = {
                "encoder": "gpt2", "lm_config": dict(c.lm_config), "lm_k": c.lm_k, "lm_stride": c.lm_stride,
                "lm_layer": c.lm_layer, "dim": int(conditioner.feature_dim),
            }  # fmt: skip
        probe = cls(config, torch.zeros(config["dim"]), torch.ones(config["dim"]), conditioner)
        raw = probe.raw(list(dict.fromkeys(sequences))).double()  # (N, dim), each barcode once
        mean = raw.mean(0)
        std = raw.std(0, correction=0) if len(raw) > 1 else torch.ones_like(mean)
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        return cls(config, mean.float(), std.float(), conditioner)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def raw(self, sequences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, dim) unstandardised features."""
        if self.encoder == "kmer":
            from phenogen.diffusion.conditioning import kmer_profile_tokens

            k, s = int(self.config["kmer_k"]), int(self.config["kmer_segments"])
            rows = [kmer_profile_tokens(seq, k, s).reshape(-1) for seq in sequences]
            return torch.from_numpy(np.stack(rows)) if rows else torch.zeros(0, self.dim)
        parts = []
        for a in range(0, len(sequences), batch_size):
            hidden, mask = self._conditioner.featurize(list(sequences[a : a + batch_size]), batch_size)
            m = mask.float().unsqueeze(-1)  # (B, L, 1)
            parts.append((hidden * m).sum(1) / m.sum(1).clamp_min(1.0))  # (B, H) mean over real tokens
        return torch.cat(parts) if parts else torch.zeros(0, self.dim)

    def __call__(self, sequences: Sequence[str]) -> torch.Tensor:
        """(N, dim) standardised, clipped float32 condition vectors."""
        z = (self.raw(sequences) - self.mean) / self.std
        return z.clamp(-CLIP, CLIP).float()

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> None:
        """Write ``featurizer.json`` + ``featurizer.safetensors`` into ``directory`` (atomically each)."""
        from safetensors.torch import save

        from phenogen.fsio import atomic_write_bytes, atomic_write_json

        directory = Path(directory)
        tensors = {"mean": self.mean.contiguous(), "std": self.std.contiguous()}
        if self._conditioner is not None:
            for key, value in self._conditioner.lm.state_dict().items():
                tensors[f"lm.{key}"] = value.detach().cpu().contiguous()
        atomic_write_bytes(directory / TENSORS_NAME, save(tensors))
        atomic_write_json(directory / JSON_NAME, self.config)

    @classmethod
    def load(cls, directory: str | Path) -> Featurizer:
        """The featurizer saved in ``directory``; :class:`CheckpointError` when missing or inconsistent."""
        from safetensors.torch import load_file

        from phenogen.fsio import read_json

        directory = Path(directory)
        config = read_json(directory / JSON_NAME, "featurizer config", error=CheckpointError)
        if config.get("encoder") not in FEATURE_ENCODERS or not isinstance(config.get("dim"), int):
            raise CheckpointError(f"{directory / JSON_NAME}: no known encoder / dim")
        path = directory / TENSORS_NAME
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the generator export is incomplete")
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise CheckpointError(f"{path}: cannot be read ({exc})") from None
        mean, std = tensors.get("mean"), tensors.get("std")
        if mean is None or std is None or mean.shape != (config["dim"],) or std.shape != (config["dim"],):
            raise CheckpointError(f"{path}: mean/std missing or not of length {config['dim']}")
        conditioner = None
        if config["encoder"] == "gpt2":
            from phenogen.diffusion.conditioning import DNAConditioner

            conditioner = DNAConditioner(
                encoder="gpt2", lm_config=config["lm_config"], lm_k=config["lm_k"],
                lm_stride=config["lm_stride"], lm_layer=config["lm_layer"], **_GPT2_HEAD,
            )  # fmt: skip
            lm = {k[3:]: v for k, v in tensors.items() if k.startswith("lm.")}
            missing, unexpected = conditioner.lm.load_state_dict(lm, strict=False)
            missing = [m for m in missing if not m.endswith((".attn.bias", ".masked_bias"))]
            if missing or unexpected:
                raise CheckpointError(
                    f"{path}: the LM weights do not fit its config ({(missing or unexpected)[:3]})"
                )
            conditioner.eval()
        return cls(config, mean, std, conditioner)

"""Configuration sections of the DNA language model: ``[lm]`` (model + training), ``[sample]``, ``[dna_eval]``.

Every field carries its help text; ``__post_init__`` rejects impossible values with one concise line.

>>> LMConfig(preset="tiny", epochs=3).epochs
3
>>> SampleConfig(schedule="rise_fall").temperature_at(50, 100)
1.2
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from phenogen.config import require_finite

__all__ = ["LMConfig", "SampleConfig", "DnaEvalConfig", "PRESETS"]

PRESETS = ("tiny", "small")


@dataclass
class LMConfig:
    """Model shape and training hyperparameters of ``phenogen train-lm``."""

    preset: Literal["tiny", "small"] = field(
        default="tiny", metadata={"help": "model size: tiny (4x128, CPU) or small (GPT-2 small 12x768, GPU)"}
    )
    init_from: str = field(
        default="",
        metadata={
            "help": "local directory of a pretrained GPT-2 to start from (embeddings resized); '' = random init"
        },
    )
    k: int = field(default=6, metadata={"help": "k-mer length of the tokenizer"})
    stride: int | None = field(default=None, metadata={"help": "k-mer step; unset = k (non-overlapping)"})
    n_positions: int | None = field(
        default=None, metadata={"help": "context length in tokens; unset = preset"}
    )
    dropout: float | None = field(
        default=None, metadata={"help": "dropout of residual/embedding/attention; unset = preset"}
    )
    epochs: int = field(default=40, metadata={"help": "passes over the training split"})
    batch_size: int = field(default=32, metadata={"help": "sequences per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (matrices only)"})
    warmup_fraction: float = field(
        default=0.05, metadata={"help": "share of optimizer steps spent in linear warmup"}
    )
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm; 0 = no clipping"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation, data order and dropout"})
    max_minutes: float = field(
        default=0.0,
        metadata={"help": "wall-clock budget; stops after the current step and checkpoints. 0 = none"},
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "autocast dtype; auto = bf16 on a CUDA GPU that has it, else no"}
    )
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "share held out (seeded) when --data is a plain FASTA file"}
    )
    state_every_steps: int = field(
        default=0,
        metadata={"help": "also save resumable state every N optimizer steps (0 = at epoch ends only)"},
    )
    keep_checkpoints: bool = field(
        default=True, metadata={"help": "write checkpoints/epoch-XXX after every epoch"}
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 1 <= self.k <= 8:
            raise ValueError(f"k must be in 1..8, got {self.k}")
        if self.stride is not None and not 1 <= self.stride <= self.k:
            raise ValueError(f"stride must be in 1..k={self.k}, got {self.stride}")
        if self.n_positions is not None and self.n_positions < 8:
            raise ValueError(f"n_positions must be >= 8, got {self.n_positions}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.max_minutes < 0 or self.grad_clip < 0 or self.weight_decay < 0 or self.state_every_steps < 0:
            raise ValueError("max_minutes, grad_clip, weight_decay and state_every_steps must be >= 0")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")


@dataclass
class SampleConfig:
    """How ``phenogen sample-dna`` draws barcodes: top-p/top-k and a temperature schedule over position."""

    n: int = field(default=100, metadata={"help": "number of sequences to sample"})
    top_p: float = field(
        default=0.6, metadata={"help": "nucleus sampling mass (1.0 = off); the thesis used 0.6"}
    )
    top_k: int = field(default=0, metadata={"help": "keep only the k most likely tokens (0 = off)"})
    schedule: Literal["constant", "rise_fall"] = field(
        default="constant",
        metadata={"help": "temperature over the position: constant, or the thesis' linear rise then fall"},
    )
    temperature: float = field(default=1.0, metadata={"help": "temperature of the constant schedule"})
    t_start: float = field(default=0.8, metadata={"help": "rise_fall: temperature at the first token"})
    t_peak: float = field(default=1.2, metadata={"help": "rise_fall: temperature between the breakpoints"})
    t_end: float = field(default=0.8, metadata={"help": "rise_fall: temperature at max_tokens"})
    rise_end: float = field(
        default=0.4, metadata={"help": "rise_fall: fraction of max_tokens where the rise ends"}
    )
    fall_start: float = field(
        default=0.6, metadata={"help": "rise_fall: fraction of max_tokens where the fall starts"}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "tokens after <bos> before stopping; unset = longest training sequence + 5%, capped by the model"
        },
    )
    batch_size: int = field(default=64, metadata={"help": "sequences decoded together"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling generator"})
    mode: Literal["kv", "naive"] = field(
        default="kv",
        metadata={"help": "kv: batched with a KV cache; naive: re-feed the whole sequence each step"},
    )

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if self.n < 1 or self.batch_size < 1:
            raise ValueError(f"n and batch_size must be >= 1, got n={self.n}, batch_size={self.batch_size}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        temps = (self.temperature, self.t_start, self.t_peak, self.t_end)
        if min(temps) <= 0:
            raise ValueError(f"temperatures must be > 0, got {temps}")
        if not 0.0 <= self.rise_end <= self.fall_start <= 1.0:
            raise ValueError(f"need 0 <= rise_end <= fall_start <= 1, got {self.rise_end}, {self.fall_start}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def temperature_at(self, step: int | float, max_tokens: int) -> float:
        """Temperature for generated token number ``step`` (0-based) out of ``max_tokens``.

        ``rise_fall`` is piecewise linear in ``f = step / max_tokens``: ``t_start`` → ``t_peak`` on
        ``[0, rise_end]``, flat ``t_peak`` on ``[rise_end, fall_start]``, ``t_peak`` → ``t_end`` on
        ``[fall_start, 1]`` (clamped beyond 1).
        """
        if self.schedule == "constant":
            return self.temperature
        f = min(max(step / max(max_tokens, 1), 0.0), 1.0)
        if f < self.rise_end:
            return self.t_start + (self.t_peak - self.t_start) * f / self.rise_end
        if f <= self.fall_start:
            return self.t_peak
        return self.t_peak + (self.t_end - self.t_peak) * (f - self.fall_start) / (1.0 - self.fall_start)

    def temperatures(self, max_tokens: int) -> list[float]:
        """The whole schedule, one temperature per generated token."""
        return [self.temperature_at(i, max_tokens) for i in range(max_tokens)]


@dataclass
class DnaEvalConfig:
    """What ``phenogen evaluate-dna`` measures and how checkpoints are selected."""

    markov_order: int = field(default=5, metadata={"help": "order of the Markov-chain baseline"})
    markov_alpha: float = field(default=0.5, metadata={"help": "add-alpha smoothing of the Markov baseline"})
    markov_orders: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        metadata={"help": "orders also reported, so the baseline is not a strawman"},
    )
    n_samples: int = field(default=500, metadata={"help": "sequences sampled when --samples is not given"})
    select_n: int = field(default=100, metadata={"help": "samples per epoch for checkpoint selection"})
    select_every: int = field(
        default=1, metadata={"help": "consider every Nth saved epoch (the last is always in)"}
    )
    candidates: int = field(
        default=16, metadata={"help": "nearest-identity: k-mer prefilter keeps this many to align"}
    )
    natural_max: int = field(
        default=400, metadata={"help": "training sequences used for the natural identity range"}
    )
    min_novelty: float = field(default=0.99, metadata={"help": "selection: minimum share of novel samples"})
    min_stop_free: float = field(
        default=0.95, metadata={"help": "selection: minimum share free of internal stops"}
    )
    range_quantiles: tuple[float, float] = field(
        default=(0.05, 0.95),
        metadata={"help": "quantiles of the natural identity distribution that define its range"},
    )
    seed: int = field(default=0, metadata={"help": "seed for subsampling"})

    def __post_init__(self) -> None:
        require_finite(self)  # nan passes every `x <= 0` test; 1e400 parses as inf
        if not 0 <= self.markov_order <= 12 or any(not 0 <= o <= 12 for o in self.markov_orders):
            raise ValueError("Markov orders must be in 0..12")
        if self.markov_alpha <= 0:
            raise ValueError(f"markov_alpha must be > 0, got {self.markov_alpha}")
        for name in ("n_samples", "select_n", "select_every", "candidates", "natural_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        lo, hi = self.range_quantiles
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"range_quantiles must satisfy 0 <= lo < hi <= 1, got {self.range_quantiles}")
        if not 0.0 <= self.min_novelty <= 1.0 or not 0.0 <= self.min_stop_free <= 1.0:
            raise ValueError("min_novelty and min_stop_free must be in [0, 1]")

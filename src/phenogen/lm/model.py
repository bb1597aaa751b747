"""The GPT-2 DNA language model: presets, optional GPT-2 initialisation, saving and loading.

A model directory (what ``train-lm`` writes to ``OUT/model`` and ``OUT/checkpoints/epoch-XXX``) holds::

    config.json             transformers GPT2Config (special token ids set explicitly)
    model.safetensors       weights
    generation_config.json  written by transformers
    tokenizer_config.json   KmerTokenizer settings (k, stride, special tokens)
    kmer_vocab.json         the fixed vocabulary, checked on load
    phenogen_lm.json        phenogen facts: preset, training-length statistics, epoch, losses

>>> from phenogen.dna.tokenizer import KmerTokenizer
>>> lm = build_model(KmerTokenizer(k=3), preset="tiny", seed=0)
>>> lm.model.config.n_layer, lm.model.config.bos_token_id, lm.model.config.eos_token_id
(4, 1, 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from phenogen.dna.tokenizer import KmerTokenizer
from phenogen.errors import CheckpointError

__all__ = [
    "PRESET_SHAPES",
    "DnaLM",
    "build_model",
    "from_gpt2_dir",
    "save_lm",
    "load_lm",
    "resolve_model_dir",
]

# (n_layer, n_embd, n_head, n_positions, dropout)
PRESET_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 256, "dropout": 0.1},
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "dropout": 0.1},
}
META_FILE = "phenogen_lm.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "kmer_vocab.json")


@dataclass
class DnaLM:
    """A GPT-2 language model with its k-mer tokenizer and phenogen metadata."""

    model: GPT2LMHeadModel
    tokenizer: KmerTokenizer
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        return int(self.model.config.n_positions)

    @property
    def max_content_tokens(self) -> int:
        """Tokens a sequence may have between ``<bos>`` and ``<eos>``."""
        return self.n_positions - 2

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _set_special_ids(config: GPT2Config, tokenizer: KmerTokenizer) -> None:
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.vocab_size = len(tokenizer)


def build_model(
    tokenizer: KmerTokenizer,
    preset: str = "tiny",
    n_positions: int | None = None,
    dropout: float | None = None,
    seed: int = 0,
) -> DnaLM:
    """A randomly initialised GPT-2 of a preset shape, with the tokenizer's vocabulary.

    Parameters
    ----------
    tokenizer : KmerTokenizer
        Fixes the vocabulary size and the special token ids.
    preset : {"tiny", "small"}
        Shape from :data:`PRESET_SHAPES`.
    n_positions, dropout : optional
        Override the preset's context length / dropout.
    seed : int
        Seed of the weight initialisation (the global RNG is left untouched).
    """
    if preset not in PRESET_SHAPES:
        raise ValueError(f"unknown preset {preset!r}; presets are {', '.join(PRESET_SHAPES)}")
    shape = PRESET_SHAPES[preset]
    p = shape["dropout"] if dropout is None else dropout
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions or shape["n_positions"],
        n_embd=shape["n_embd"],
        n_layer=shape["n_layer"],
        n_head=shape["n_head"],
        resid_pdrop=p,
        embd_pdrop=p,
        attn_pdrop=p,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _set_special_ids(config, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return DnaLM(model, tokenizer, {"preset": preset, "k": tokenizer.k, "stride": tokenizer.stride})


def from_gpt2_dir(
    path: str | Path,
    tokenizer: KmerTokenizer,
    n_positions: int | None = None,
    dropout: float | None = None,
) -> DnaLM:
    """Start from a local pretrained GPT-2 (as the thesis did), embeddings resized to the DNA vocabulary.

    Only a local directory is accepted (``config.json`` + weights); nothing is downloaded. The
    English token embeddings are discarded: the resized matrix keeps the first rows and
    initialises the rest, which is what ``resize_token_embeddings`` does.
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: not a GPT-2 directory (no config.json); give a local pretrained GPT-2 dir"
        )
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")) and not list(
        path.glob("model-*.safetensors")
    ):
        raise CheckpointError(f"{path}: no model.safetensors / pytorch_model.bin weights found")
    try:
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load as GPT-2 ({exc})") from exc
    model.resize_token_embeddings(len(tokenizer))
    if n_positions is not None and n_positions > model.config.n_positions:
        raise CheckpointError(
            f"{path}: pretrained context is {model.config.n_positions} positions; cannot grow it to {n_positions}"
        )
    if dropout is not None:
        model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = dropout
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
    _set_special_ids(model.config, tokenizer)
    return DnaLM(model, tokenizer, {"preset": "gpt2-init", "init_from": str(path), "k": tokenizer.k})


def save_lm(lm: DnaLM, out_dir: str | Path, **extra_meta: Any) -> Path:
    """Write model (safetensors + config), tokenizer and ``phenogen_lm.json`` to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    meta = {**lm.meta, **extra_meta}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a ``train-lm`` output directory (then its ``model/``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model directory does not exist")
    if not (path / "model.safetensors").is_file() and (path / "model" / "model.safetensors").is_file():
        return path / "model"
    return path


def load_lm(path: str | Path, device: str | torch.device | None = None) -> DnaLM:
    """Load a model directory written by :func:`save_lm` (or a ``train-lm`` output directory).

    Raises
    ------
    CheckpointError
        When the directory or any of its files is missing or does not match (vocabulary size).
    """
    path = resolve_model_dir(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory; give the model directory written by train-lm")
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(
            f"{path}: model directory is missing {', '.join(missing)}; "
            "point --model at OUT/model or OUT/checkpoints/epoch-XXX of a finished train-lm run"
        )
    try:
        tokenizer = KmerTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot load the tokenizer ({exc})") from exc
    try:
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot load the model weights ({exc})") from exc
    if model.config.vocab_size != len(tokenizer):
        raise CheckpointError(
            f"{path}: model vocabulary {model.config.vocab_size} != tokenizer vocabulary {len(tokenizer)}"
        )
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    model.eval()
    if device is not None:
        model.to(device)
    return DnaLM(model, tokenizer, meta)

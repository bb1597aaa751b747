"""The GPT-2 DNA language model: presets, optional GPT-2 initialisation, saving and loading.

A model directory (what ``train-lm`` writes to ``OUT/model`` and ``OUT/checkpoints/epoch-XXX``) holds::

    config.json             transformers GPT2Config (special token ids set explicitly)
    model.safetensors       weights
    generation_config.json  written by transformers
    tokenizer_config.json   tokenizer settings: special tokens, phenogen's k and stride,
                            tokenizer_class PreTrainedTokenizerFast (KmerTokenizer when stride < k)
    tokenizer.json          the same tokenization for transformers' fast tokenizer (stride == k only)
    kmer_vocab.json         the fixed vocabulary, checked on load
    phenogen_lm.json        phenogen facts: preset, training-length statistics, epoch, losses

Such a directory (``stride == k``) also opens with plain transformers, no phenogen and no
``trust_remote_code``: ``AutoTokenizer.from_pretrained(d)`` (a ``PreTrainedTokenizerFast`` with the
ids of :meth:`~phenogen.dna.tokenizer.KmerTokenizer.encode_dna`), ``AutoModelForCausalLM.from_pretrained(d)``
(the GPT-2) and ``pipeline("text-generation", model=d)``; see :mod:`phenogen.dna.tokenizer` for where
the fast tokenizer differs. Directories written before ``tokenizer.json`` existed (``tokenizer_class``
``KmerTokenizer``) still load with :func:`load_lm`.

>>> from phenogen.dna.tokenizer import FAST_TOKENIZER_FILE, KmerTokenizer
>>> lm = build_model(KmerTokenizer(k=3), preset="tiny", seed=0)
>>> lm.model.config.n_layer, lm.model.config.bos_token_id, lm.model.config.eos_token_id
(4, 1, 2)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from transformers import GPT2Config, GPT2LMHeadModel

from phenogen.dna.tokenizer import FAST_TOKENIZER_FILE, KmerTokenizer
from phenogen.errors import CheckpointError, one_line

__all__ = [
    "PRESET_SHAPES",
    "DnaLM",
    "build_model",
    "from_gpt2_dir",
    "save_lm",
    "load_lm",
    "resolve_model_dir",
    "check_model_dir",
    "check_safetensors",
    "LOAD_ERRORS",
]

# (n_layer, n_embd, n_head, n_positions, dropout)
PRESET_SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 256, "dropout": 0.1},
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024, "dropout": 0.1},
}
META_FILE = "phenogen_lm.json"
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError, IndexError, ArithmeticError,
    MemoryError, SafetensorError, StrictDataclassError,
)  # fmt: skip
"""What ``from_pretrained`` raises on a damaged or mismatched directory (SafetensorError: a bad weights
file; StrictDataclassError: a config field of the wrong type, e.g. ``"summary_use_proj": null``)."""
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", "kmer_vocab.json")
"""``tokenizer.json`` is optional: overlapping-window tokenizers and older directories have none."""


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
    _model_json(path, "config.json")
    for weights in [path / "model.safetensors", *sorted(path.glob("model-*.safetensors"))]:
        if weights.exists():
            check_safetensors(weights, "GPT-2 weights file")
    try:
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"{path}: cannot load as GPT-2 ({one_line(exc, limit=300)})") from None
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
    """Write model (safetensors + config), tokenizer and ``phenogen_lm.json`` to ``out_dir``.

    The tokenizer files include ``tokenizer.json`` (for ``stride == k``), so that plain transformers
    opens the directory (see the module docstring).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm.model.save_pretrained(out, safe_serialization=True)
    lm.tokenizer.save_pretrained(out)
    meta = {**lm.meta, **extra_meta}
    from phenogen.fsio import atomic_write_text

    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    return out


def check_safetensors(path: str | Path, what: str = "weights file") -> Path:
    """Raise :class:`CheckpointError` unless ``path`` is a whole safetensors file (header and data sizes).

    Reads the header only (a few kilobytes): an empty, truncated or overwritten file — what a kill
    during a save or a failed copy leaves — is named before any library tries to map it.
    """
    import struct

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = fh.read(n) if 0 < n <= min(size - 8, 100 * 1024 * 1024) else b""
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    redo = "the file is damaged (an interrupted save or copy?); save or copy the model again"
    if size == 0:
        raise CheckpointError(f"{path}: {what} is empty; {redo}")
    if len(header) != n or n <= 0:
        raise CheckpointError(
            f"{path}: {what} is not a safetensors file or is truncated ({size} bytes); {redo}"
        )
    try:
        meta = json.loads(header.decode("utf-8"))
        end = max((int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"), default=0)
    except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise CheckpointError(f"{path}: {what} has an unreadable safetensors header; {redo}") from None
    if 8 + n + end != size:
        raise CheckpointError(
            f"{path}: {what} is {size} bytes but its header describes {8 + n + end}: truncated or padded; {redo}"
        )
    return path


MAX_CONFIG_INT = 1 << 20
"""Largest integer a model config may hold (channels, positions, vocabulary, timesteps)."""
MAX_CONFIG_COUNT = 256
"""Largest layer, block or head count: a damaged ``n_layer: 2147483648`` would build modules for hours."""
MAX_CONFIG_LIST = 64
_COUNT_KEY = re.compile(r"layers|depth|n_layer|n_head|num_.*blocks|heads", re.IGNORECASE)


def check_config_numbers(config: dict[str, Any], file: Path, long_lists: tuple[str, ...] = ()) -> None:
    """Refuse config values no model has, before a library builds modules from them.

    Integers beyond :data:`MAX_CONFIG_INT` (layer/block/head counts beyond :data:`MAX_CONFIG_COUNT`),
    non-finite floats (``1e400`` parses as infinity) and lists longer than :data:`MAX_CONFIG_LIST`
    (except the keys in ``long_lists``) are a :class:`CheckpointError` naming ``file`` and the field.
    """

    def walk(value: Any, where: str, count: bool, long: bool) -> None:
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, int):
            limit = MAX_CONFIG_COUNT if count else MAX_CONFIG_INT
            if not -MAX_CONFIG_INT <= value <= limit:
                raise CheckpointError(
                    f"{file}: {where} = {value!r:.40} is out of range (at most {limit}); the config is damaged"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise CheckpointError(
                    f"{file}: {where} = {value!r} is not a finite number; the config is damaged"
                )
        elif isinstance(value, list):
            if len(value) > MAX_CONFIG_LIST and not long:
                raise CheckpointError(f"{file}: {where} has {len(value)} entries; the config is damaged")
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]", count, long)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}", count or bool(_COUNT_KEY.search(str(k))), long)

    for key, value in config.items():
        if not str(key).startswith("_"):
            walk(value, str(key), bool(_COUNT_KEY.search(str(key))), key in long_lists)


def _model_json(path: Path, name: str, required: bool = True) -> dict[str, Any]:
    from phenogen.fsio import read_json

    if not required and not (path / name).exists():
        return {}
    return read_json(path / name, f"model file {name}", expect=dict, error=CheckpointError)


def check_model_dir(path: str | Path) -> Path:
    """Check a model directory without loading it (files present, JSON files objects, weights whole).

    Returns the resolved directory (a ``train-lm`` output's ``model/``); raises :class:`CheckpointError`.
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
    for name in ("config.json", "tokenizer_config.json", "kmer_vocab.json"):
        _model_json(path, name)
    config = _model_json(path, "config.json")
    check_config_numbers(config, path / "config.json")
    for key in SHAPE_KEYS:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(
                f"{path / 'config.json'}: {key} must be a positive integer, got {value!r:.40}"
                + (" (missing)" if key not in config else "")
            )
    for name in (META_FILE, "generation_config.json", "special_tokens_map.json", FAST_TOKENIZER_FILE):
        _model_json(path, name, required=False)
    check_safetensors(path / "model.safetensors", "model weights file")
    _check_weight_shapes(path, config)
    return path


SHAPE_KEYS = ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")


def _check_weight_shapes(path: Path, config: dict[str, Any]) -> None:
    """The weights file's header against config.json: embedding shapes and layer count must agree.

    Checked before transformers builds the model, so that a damaged config (``n_layer`` of 200, keys
    deleted so that GPT-2's 124M-parameter defaults apply) is refused in milliseconds, naming the field.
    """
    import struct

    weights = path / "model.safetensors"
    with open(weights, "rb") as fh:
        header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]).decode("utf-8"))
    expected = {
        "transformer.wte.weight": [config["vocab_size"], config["n_embd"]],
        "transformer.wpe.weight": [config["n_positions"], config["n_embd"]],
    }
    for name, shape in expected.items():
        entry = header.get(name)
        if not isinstance(entry, dict) or entry.get("shape") != shape:
            found = entry.get("shape") if isinstance(entry, dict) else "no such tensor"
            raise CheckpointError(
                f"{weights}: tensor {name} is {found!r:.60}, config.json (vocab_size, n_positions, n_embd) "
                f"says {shape}; the config and the weights do not belong together"
            )
    layers = {
        int(k.split(".")[2]) for k in header if k.startswith("transformer.h.") and k.split(".")[2].isdigit()
    }
    if layers != set(range(config["n_layer"])):
        raise CheckpointError(
            f"{weights}: holds {len(layers)} transformer layers, config.json n_layer says {config['n_layer']}; "
            "the config and the weights do not belong together"
        )
    if config["n_embd"] % config["n_head"]:
        raise CheckpointError(
            f"{path / 'config.json'}: n_embd {config['n_embd']} is not a multiple of n_head {config['n_head']}"
        )


def resolve_model_dir(path: str | Path) -> Path:
    """Accept a model directory or a ``train-lm`` output directory (then its ``model/``)."""
    from phenogen.fsio import complete_dir

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: model directory does not exist")
    if not (path / "model.safetensors").is_file():
        # a train-lm output: its model/, or model.old when a kill fell between the two renames of a save
        final = complete_dir(path / "model")
        if final is not None and (final / "model.safetensors").is_file():
            return final
    return path


def load_lm(path: str | Path, device: str | torch.device | None = None) -> DnaLM:
    """Load a model directory written by :func:`save_lm` (or a ``train-lm`` output directory).

    Every file is checked first (:func:`check_model_dir`).

    Raises
    ------
    CheckpointError
        When the directory or any of its files is missing, damaged or does not match (vocabulary size).
    """
    path = check_model_dir(path)
    tokenizer = KmerTokenizer.from_pretrained(path)  # a damaged tokenizer is a CheckpointError
    try:
        model, info = GPT2LMHeadModel.from_pretrained(path, local_files_only=True, output_loading_info=True)
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"{path}: cannot load the model weights ({one_line(exc, limit=300)})") from None
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = [k for k in info.get("missing_keys", ()) if k not in tied]
    unexpected = list(info.get("unexpected_keys", ())) + [str(m) for m in info.get("mismatched_keys", ())]
    if missing or unexpected:
        what = (
            f"lacks {', '.join(sorted(missing)[:3])}"
            if missing
            else f"has unexpected {', '.join(sorted(unexpected)[:3])}"
        )
        raise CheckpointError(
            f"{path / 'model.safetensors'}: {what[:300]} (would load with random weights); "
            "the weights file is damaged or from another model"
        )
    if model.config.vocab_size != len(tokenizer):
        raise CheckpointError(
            f"{path}: model vocabulary {model.config.vocab_size} != tokenizer vocabulary {len(tokenizer)}"
        )
    for name in ("bos", "eos", "pad"):
        saved, expected = getattr(model.config, f"{name}_token_id"), getattr(tokenizer, f"{name}_token_id")
        if saved != expected:
            raise CheckpointError(
                f"{path / 'config.json'}: {name}_token_id is {saved!r:.40}, the tokenizer's is {expected}; "
                "the config does not belong to this model"
            )
    meta = _model_json(path, META_FILE, required=False)
    model.eval()
    if device is not None:
        model.to(device)
    return DnaLM(model, tokenizer, meta)

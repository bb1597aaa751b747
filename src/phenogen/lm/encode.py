"""Encode barcodes as hidden states of the DNA language model — the image model's condition.

Each sequence is tokenized as ``<bos> k-mers <eos>`` and run through the model; the hidden states
of one layer are returned, right-padded to the longest sequence of the call:

* ``hidden``: float32 tensor (B, L, H) on the CPU, zeros at padding;
* ``attention_mask``: int64 tensor (B, L), 1 for real tokens (``<bos>`` and ``<eos>`` included), 0 for padding.

``layer=-1`` (default) is the last layer after GPT-2's final LayerNorm (what the thesis used);
``layer=0`` the token + position embeddings; ``layer=i`` the output of block ``i``.

No windowing: a sequence whose tokens exceed the model's ``n_positions`` raises
:class:`~phenogen.errors.SequenceError` naming it; so do empty and all-N sequences. The encoding
of the empty barcode (``<bos> <eos>``, an unconditional branch) is :meth:`DnaEncoder.null_embedding`.

Encodings are cached per sequence under ``sha256(model fingerprint, layer, sequence)``: in memory
(LRU, ``memory_items``) and, when ``cache_dir`` is given, as one safetensors file per sequence. The
fingerprint hashes the model config and every weight, so a retrained model never reads stale entries.

>>> from phenogen.dna.tokenizer import KmerTokenizer
>>> from phenogen.lm.model import build_model
>>> lm = build_model(KmerTokenizer(k=3), "tiny", n_positions=32)
>>> hidden, mask = encode(lm, ["ACGTACGTAC", "ACGT"])
>>> tuple(hidden.shape), mask.sum(dim=1).tolist()
((2, 6, 128), [6, 4])
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

from phenogen.dna.tokenizer import check_sequence
from phenogen.errors import InputError, SequenceError
from phenogen.lm.data import collate
from phenogen.lm.model import DnaLM, load_lm, resolve_model_dir

__all__ = ["DnaEncoder", "encode"]


def _fingerprint(lm: DnaLM) -> str:
    h = hashlib.sha256(json.dumps(lm.model.config.to_dict(), sort_keys=True, default=str).encode())
    h.update(f"k={lm.tokenizer.k},stride={lm.tokenizer.stride}".encode())
    for name, tensor in sorted(lm.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


class DnaEncoder:
    """Reusable, caching encoder around one model (load once, call many times).

    Parameters
    ----------
    model : DnaLM or model directory (or a ``train-lm`` output directory).
    layer : hidden layer to return (-1 = last).
    batch_size : sequences per forward pass.
    cache_dir : optional directory for an on-disk cache (created if missing).
    device : where the model runs (default: CUDA when available, else CPU).
    memory_items : how many encodings the in-memory LRU keeps.
    """

    def __init__(
        self,
        model: DnaLM | str | Path,
        layer: int = -1,
        batch_size: int = 32,
        cache_dir: str | Path | None = None,
        device: str | torch.device | None = None,
        memory_items: int = 4096,
    ):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.lm = model if isinstance(model, DnaLM) else load_lm(model, device=device)
        if isinstance(model, DnaLM) and model.device != torch.device(device):
            self.lm.model.to(device)
        self.lm.model.eval()
        n_layer = self.lm.model.config.n_layer
        if not -(n_layer + 1) <= layer <= n_layer:
            raise InputError(
                f"layer {layer} out of range: this model has layers 0..{n_layer} (or -1 for the last)"
            )
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.layer = layer % (n_layer + 1)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.memory_items = memory_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.fingerprint = _fingerprint(self.lm)
        self.hits = self.misses = 0

    @property
    def hidden_size(self) -> int:
        return int(self.lm.model.config.n_embd)

    @property
    def max_tokens(self) -> int:
        return self.lm.n_positions

    def _key(self, seq: str) -> str:
        return hashlib.sha256(f"{self.fingerprint}|{self.layer}|{seq}".encode()).hexdigest()

    def _get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.cache_dir is not None:
            path = self.cache_dir / f"{key}.safetensors"
            if path.is_file():
                from safetensors import SafetensorError
                from safetensors.torch import load_file

                try:
                    value = load_file(str(path))["hidden"]
                except (SafetensorError, OSError, KeyError):  # a damaged cache entry is recomputed
                    path.unlink(missing_ok=True)
                    return None
                self._put(key, value, write=False)
                return value
        return None

    def _put(self, key: str, value: torch.Tensor, write: bool = True) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_items:
            self._memory.popitem(last=False)
        if write and self.cache_dir is not None:
            from safetensors.torch import save

            from phenogen.fsio import atomic_write_bytes

            atomic_write_bytes(self.cache_dir / f"{key}.safetensors", save({"hidden": value.contiguous()}))

    def _tokenize(self, sequences: Sequence[str]) -> list[tuple[str, list[int]]]:
        out = []
        for i, raw in enumerate(sequences):
            seq = check_sequence(raw, record_id=f"#{i}")
            ids = self.lm.tokenizer.encode_dna(seq, record_id=f"#{i}")
            if len(ids) > self.max_tokens:
                raise SequenceError(
                    f"record #{i}: {len(seq)} bp = {len(ids)} tokens with <bos>/<eos>, more than the model's "
                    f"{self.max_tokens} positions (no windowing); trim the barcode or use a model with more positions"
                )
            out.append((seq, ids))
        return out

    def null_embedding(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoding of the empty barcode, ``<bos> <eos>``: (1, 2, H) and mask (1, 2).

        The thesis' unconditional branch for classifier-free guidance; ``encode([""])`` itself
        raises, so an empty record can never pass for this by accident.
        """
        key = f"null|{self.fingerprint}|{self.layer}"
        hidden = self._memory.get(key)
        if hidden is None:
            tok = self.lm.tokenizer
            hidden = self._run([[tok.bos_token_id, tok.eos_token_id]])[0]
            self._memory[key] = hidden
        return hidden.unsqueeze(0), torch.ones((1, hidden.shape[0]), dtype=torch.long)

    @torch.no_grad()
    def _run(self, batch: list[list[int]]) -> list[torch.Tensor]:
        ids, mask = collate(batch, self.lm.tokenizer.pad_token_id)  # (B, L)
        device = self.lm.device
        out = self.lm.model(
            input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True
        ).hidden_states[self.layer]  # (B, L, H)
        out = out.float().cpu()
        return [out[i, : len(b)].clone() for i, b in enumerate(batch)]

    def __call__(self, sequences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode ``sequences``: ``(hidden (B, L, H), attention_mask (B, L))``."""
        if isinstance(sequences, str):
            raise InputError("encode() takes a list of sequences, not one string")
        if len(sequences) == 0:
            raise InputError("encode() got no sequences")
        items = self._tokenize(sequences)
        keys = [self._key(seq) for seq, _ in items]
        found: dict[str, torch.Tensor] = {}
        todo: dict[str, list[int]] = {}
        for key, (_, ids) in zip(keys, items, strict=True):
            if key in found or key in todo:
                continue
            hit = self._get(key)
            if hit is None:
                todo[key] = ids
            else:
                found[key] = hit
        self.hits += len(found)
        self.misses += len(todo)
        pending = sorted(todo.items(), key=lambda kv: len(kv[1]))  # similar lengths batch together
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            for (key, _), hidden in zip(chunk, self._run([ids for _, ids in chunk]), strict=True):
                self._put(key, hidden)
                found[key] = hidden
        width = max(len(ids) for _, ids in items)
        hidden = torch.zeros((len(items), width, self.hidden_size), dtype=torch.float32)  # (B, L, H)
        mask = torch.zeros((len(items), width), dtype=torch.long)  # (B, L)
        for i, key in enumerate(keys):
            h = found[key]
            hidden[i, : h.shape[0]] = h
            mask[i, : h.shape[0]] = 1
        return hidden, mask


_ENCODERS: dict[tuple, DnaEncoder] = {}


def encode(
    model: DnaLM | str | Path,
    sequences: Sequence[str],
    layer: int = -1,
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states ``(B, L, H)`` and attention mask ``(B, L)`` of ``sequences`` (see module docstring).

    Given a directory, the loaded encoder (and its in-memory cache) is kept for later calls with
    the same arguments; given a :class:`DnaLM`, a fresh encoder is made (use :class:`DnaEncoder`
    directly to keep its cache).
    """
    if isinstance(model, DnaLM):
        return DnaEncoder(model, layer, batch_size, cache_dir, device)(sequences)
    key = (str(resolve_model_dir(model).resolve()), layer, batch_size, str(cache_dir), str(device))
    if key not in _ENCODERS:
        _ENCODERS[key] = DnaEncoder(model, layer, batch_size, cache_dir, device)
    return _ENCODERS[key](sequences)

"""Training data of the DNA language model: read the train/held-out split, tokenize, pad into batches.

``--data`` is a phenogen dataset directory (splits ``train`` and ``heldout``; nothing else is ever
read) or, for convenience, a plain FASTA file. For a FASTA file a seeded share is held out: whole
species when every header names one (so the held-out loss measures new species), else records.

Policies, each counted and logged: alignment gaps ``-`` are removed (the model reads unaligned
barcodes); ambiguity codes are kept and become ``<unk>``/``N`` tokens (see the tokenizer).
Sequences that are empty, all-N, or longer than the model's context raise
:class:`~phenogen.errors.SequenceError` naming the record — there is no silent truncation.

>>> collate([[1, 5, 2], [1, 2]], pad_id=0)[0].tolist()
[[1, 5, 2], [1, 2, 0]]
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from phenogen.dna.tokenizer import KmerTokenizer, check_sequence
from phenogen.errors import DataError, InputError, SequenceError

__all__ = ["SequenceSplits", "load_sequences", "tokenize_sequences", "collate", "length_stats"]

log = logging.getLogger(__name__)


@dataclass
class SequenceSplits:
    """Sequences a model may use: ``train`` (fit) and ``heldout`` (held-out loss), as (id, sequence)."""

    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    source: str
    gaps_removed: int = 0
    species: dict[str, str] | None = None  # record id -> species, when known

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "n_train": len(self.train),
            "n_heldout": len(self.heldout),
            "gaps_removed": self.gaps_removed,
        }


def _ungap(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    removed = sum(s.count("-") for _, s in pairs)
    return [(i, s.replace("-", "")) for i, s in pairs], removed


def load_sequences(path: str | Path, heldout_fraction: float = 0.1, seed: int = 0) -> SequenceSplits:
    """Train and held-out sequences from a dataset directory or a FASTA file.

    Parameters
    ----------
    path : dataset directory (``load_dataset``) or FASTA file (ambiguity policy "mask").
    heldout_fraction, seed : used for a FASTA file only.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: --data does not exist; give a dataset directory or a FASTA file")
    if path.is_dir():
        from phenogen.data.dataset import load_dataset

        ds = load_dataset(path, check_images=False)
        train = [(r.record_id, r.sequence) for r in ds.records("train")]
        heldout = [(r.record_id, r.sequence) for r in ds.records("heldout")]
        species = {r.record_id: r.species for r in ds.records(("train", "heldout"))}
        if not train:
            raise DataError(f"{path}: the dataset has no 'train' records to fit a language model on")
        source = f"dataset {path}"
    else:
        from phenogen.dna.seqio import read_fasta

        res = read_fasta(path, policy="mask", allow_gaps=True)
        recs = res.records
        if len(recs) < 2:
            raise InputError(f"{path}: need at least 2 sequences to hold one out, found {len(recs)}")
        rng = random.Random(seed)
        if all(r.species for r in recs):
            names = sorted({r.species for r in recs})
            rng.shuffle(names)
            n_out = max(1, round(heldout_fraction * len(names)))
            out_species = set(names[:n_out]) if len(names) > 1 else set()
            held = {r.id for r in recs if r.species in out_species}
        else:
            ids = [r.id for r in recs]
            rng.shuffle(ids)
            held = set(ids[: max(1, round(heldout_fraction * len(ids)))])
        if len(held) == len(recs):  # a single species: fall back to records
            ids = [r.id for r in recs]
            rng.shuffle(ids)
            held = set(ids[: max(1, round(heldout_fraction * len(ids)))])
        train = [(r.id, r.sequence) for r in recs if r.id not in held]
        heldout = [(r.id, r.sequence) for r in recs if r.id in held]
        species = {r.id: r.species for r in recs if r.species}
        source = f"fasta {path} ({len(heldout)} of {len(recs)} held out, seed {seed})"
    train, g1 = _ungap(train)
    heldout, g2 = _ungap(heldout)
    if g1 + g2:
        log.info("%s: removed %d alignment gaps (the language model reads unaligned barcodes)", path, g1 + g2)
    return SequenceSplits(train, heldout, source, g1 + g2, species or None)


def tokenize_sequences(
    tokenizer: KmerTokenizer, pairs: list[tuple[str, str]], max_tokens: int, source: str = "<input>"
) -> list[list[int]]:
    """``<bos> k-mers <eos>`` id lists; raise for empty, all-N or too-long sequences.

    ``max_tokens`` counts ``<bos>`` and ``<eos>`` (the model's ``n_positions``).
    """
    out = []
    for rid, seq in pairs:
        seq = check_sequence(seq, record_id=rid)
        ids = tokenizer.encode_dna(seq, record_id=rid)
        if len(ids) > max_tokens:
            raise SequenceError(
                f"{source}: record {rid} is {len(seq)} bp = {len(ids)} tokens with <bos>/<eos>, more than the "
                f"model's {max_tokens} positions; trim it or train with a larger --set lm.n_positions"
            )
        out.append(ids)
    return out


def collate(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: ``input_ids`` (B, L) and ``attention_mask`` (B, L)."""
    width = max(len(b) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        ids[i, : len(b)] = torch.tensor(b, dtype=torch.long)
        mask[i, : len(b)] = 1
    return ids, mask


def length_stats(token_lists: list[list[int]], pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Length facts stored with the model (the sampler derives its default ``max_tokens`` from them)."""
    toks = sorted(len(t) - 2 for t in token_lists)
    bases = sorted(len(s) for _, s in pairs)
    return {
        "max_train_tokens": toks[-1],
        "median_train_tokens": toks[len(toks) // 2],
        "max_train_bases": bases[-1],
        "median_train_bases": bases[len(bases) // 2],
        "min_train_bases": bases[0],
    }

"""Held-out likelihood of the DNA language model, in nats per token and in bits per base.

Bits per base is the honest unit: it does not depend on k, stride or vocabulary, and the order-k
Markov baseline (:mod:`phenogen.dna.markov`) reports the same quantity. For sequence ``s`` of
``|s|`` bases tokenized as ``<bos> t_1 ... t_n <eos>``::

    bits/base = sum_i -log2 p(t_i | <bos> t_<i) / |s|          (the <eos> term is excluded)

summed over sequences before dividing (a per-base average over the whole held-out set). The
``<eos>`` term — the cost of knowing where a barcode stops, which the Markov chain does not model —
is reported separately as ``bits_per_base_with_eos``. Sequences holding ambiguous bases (N) are
excluded from the bits-per-base figures (an ``<unk>`` token stands for many k-mers, so its
probability is not a probability of the bases) and counted in ``n_excluded_ambiguous``; the
token-level loss uses every sequence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from phenogen.lm.data import collate

__all__ = ["Likelihood", "token_nll", "heldout_likelihood"]


@dataclass
class Likelihood:
    nats_per_token: float
    bits_per_base: float
    bits_per_base_with_eos: float
    n_sequences: int
    n_tokens: int
    n_bases: int
    n_excluded_ambiguous: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def token_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-position negative log-likelihood (nats) of ``input_ids[:, 1:]``; 0 at padding. Shape (B, L-1)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]  # (B, L-1)
    nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, L-1)
    return nll * attention_mask[:, 1:].to(nll.dtype)


@torch.no_grad()
def heldout_likelihood(
    model: torch.nn.Module,
    token_lists: list[list[int]],
    sequences: list[str],
    pad_id: int,
    batch_size: int = 64,
) -> Likelihood:
    """Likelihood of tokenized sequences (``<bos> ... <eos>``) under ``model`` (see module docstring)."""
    if not token_lists:
        nan = float("nan")
        return Likelihood(nan, nan, nan, 0, 0, 0, 0)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nats = 0.0
    total_tokens = 0
    base_bits = eos_bits = 0.0
    n_bases = 0
    excluded = 0
    for start in range(0, len(token_lists), batch_size):
        chunk = token_lists[start : start + batch_size]
        ids, mask = collate(chunk, pad_id)
        nll = token_nll(model, ids.to(device), mask.to(device)).cpu().double()  # (B, L-1)
        for j, toks in enumerate(chunk):
            n = len(toks) - 1  # predicted positions: t_1 .. t_n and <eos>
            row = nll[j, :n]
            total_nats += float(row.sum())
            total_tokens += n
            seq = sequences[start + j]
            if "N" in seq:
                excluded += 1
                continue
            base_bits += float(row[:-1].sum()) / math.log(2)
            eos_bits += float(row[-1]) / math.log(2)
            n_bases += len(seq)
    if was_training:
        model.train()
    bpb = base_bits / n_bases if n_bases else float("nan")
    bpb_eos = (base_bits + eos_bits) / n_bases if n_bases else float("nan")
    return Likelihood(
        nats_per_token=total_nats / max(total_tokens, 1),
        bits_per_base=bpb,
        bits_per_base_with_eos=bpb_eos,
        n_sequences=len(token_lists),
        n_tokens=total_tokens,
        n_bases=n_bases,
        n_excluded_ambiguous=excluded,
    )

"""Sample new barcodes from the DNA language model: batched, KV-cached, seeded, with a temperature schedule.

The procedure of the thesis, made fast and reproducible:

1. every row starts from ``<bos>``;
2. the next-token logits are divided by the temperature of the current position (the schedule of
   :class:`~phenogen.lm.config.SampleConfig`: constant, or linear rise then fall);
3. ``<pad>``, ``<bos>``, ``<unk>``, ``<mask>`` and the ambiguous tail token ``N`` are never drawn,
   nor ``<eos>`` as the first token (so samples are non-empty A/C/G/T strings);
4. top-k, then top-p (nucleus: the most likely tokens whose cumulative mass first reaches ``p``;
   the token crossing ``p`` is kept) and the token is drawn by inverse CDF from one uniform number
   per row taken from a seeded ``torch.Generator``;
5. a row stops at ``<eos>`` (later steps feed ``<pad>`` and are discarded); the batch stops when
   every row has ended or after ``max_tokens`` tokens (rows without ``<eos>`` are flagged).

``mode="kv"`` feeds one new token per step against the KV cache; ``mode="naive"`` re-feeds the
whole sequence every step, as the thesis' loop did. Both consume the generator identically, so
they return the same samples for the same seed (up to floating-point ties; exact in float64).
Samples depend on ``seed`` and ``batch_size``.

>>> from phenogen.dna.tokenizer import KmerTokenizer
>>> from phenogen.lm.model import build_model
>>> lm = build_model(KmerTokenizer(k=3), "tiny", n_positions=32)
>>> res = sample(lm, SampleConfig(n=3, max_tokens=10, seed=1))
>>> len(res.sequences), all(set(s) <= set("ACGTN") for s in res.sequences)
(3, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from phenogen.errors import ConfigError
from phenogen.lm.config import SampleConfig
from phenogen.lm.model import DnaLM

__all__ = ["SampleResult", "sample", "resolve_max_tokens", "filter_and_draw"]


@dataclass
class SampleResult:
    sequences: list[str]
    ended: list[bool]  # reached <eos> before max_tokens
    n_tokens: list[int]  # tokens generated per row (without <eos>)
    max_tokens: int
    temperatures: list[float] = field(default_factory=list)

    @property
    def n_truncated(self) -> int:
        return sum(not e for e in self.ended)


def resolve_max_tokens(lm: DnaLM, cfg: SampleConfig) -> int:
    """``cfg.max_tokens``, or the longest training sequence + 5 % (+ ``<eos>``), capped by the context."""
    limit = lm.n_positions - 1  # <bos> takes position 0
    if cfg.max_tokens is not None:
        if cfg.max_tokens > limit:
            raise ConfigError(
                f"sample.max_tokens={cfg.max_tokens} exceeds the model's {lm.n_positions} positions (max {limit})"
            )
        return cfg.max_tokens
    longest = lm.meta.get("max_train_tokens")
    return min(limit, math.ceil(1.05 * longest) + 1) if longest else limit


def filter_and_draw(
    logits: torch.Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    u: torch.Tensor,
    banned: torch.Tensor,
) -> torch.Tensor:
    """One token per row from ``logits`` (B, V) with temperature, bans, top-k, top-p and uniforms ``u`` (B,)."""
    logits = logits.double() / temperature  # (B, V)
    logits[:, banned.to(logits.device)] = -math.inf
    probs = torch.softmax(logits, dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (B, V)
    if top_k > 0:
        sorted_p[:, top_k:] = 0.0
    if top_p < 1.0:
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass of strictly more likely tokens
        sorted_p = torch.where(before < top_p, sorted_p, torch.zeros_like(sorted_p))
    cdf = torch.cumsum(sorted_p, dim=-1)  # (B, V)
    target = (u.to(cdf) * cdf[:, -1]).unsqueeze(1)  # (B, 1)
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[1] - 1)  # (B, 1)
    # searchsorted can land on a zero-mass tail entry only through rounding at the top; step back
    pick = torch.minimum(pick, (sorted_p > 0).sum(dim=1, keepdim=True) - 1)
    return order.gather(1, pick).squeeze(1)  # (B,)


@torch.no_grad()
def _sample_batch(lm: DnaLM, rows: int, cfg: SampleConfig, temps: list[float], gen: torch.Generator):
    model, tok = lm.model, lm.tokenizer
    device = lm.device
    ambiguous = [i for t, i in tok.get_vocab().items() if "N" in t and not t.startswith("<")]
    banned_all = torch.tensor(
        [tok.pad_token_id, tok.bos_token_id, tok.unk_token_id, tok.mask_token_id, *ambiguous]
    )
    banned_first = torch.cat([banned_all, torch.tensor([tok.eos_token_id])])
    eos, pad = tok.eos_token_id, tok.pad_token_id
    seq = torch.full((rows, 1), tok.bos_token_id, dtype=torch.long, device=device)  # (B, 1)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    ones = torch.ones((rows, len(temps) + 1), dtype=torch.long, device=device)  # attention mask source
    out = model(input_ids=seq, attention_mask=ones[:, :1], use_cache=cfg.mode == "kv")
    past = out.past_key_values if cfg.mode == "kv" else None
    logits = out.logits[:, -1]  # (B, V)
    generated = []
    for step, temperature in enumerate(temps):
        u = torch.rand(rows, generator=gen)
        nxt = filter_and_draw(
            logits, temperature, cfg.top_k, cfg.top_p, u, banned_first if step == 0 else banned_all
        )
        nxt = torch.where(finished, torch.full_like(nxt, pad), nxt.to(device))  # (B,)
        generated.append(nxt)
        finished |= nxt == eos
        if bool(finished.all()) or step == len(temps) - 1:
            break
        if cfg.mode == "kv":
            out = model(
                input_ids=nxt[:, None],
                attention_mask=ones[:, : step + 2],
                past_key_values=past,
                use_cache=True,
            )
            past = out.past_key_values
        else:
            seq = torch.cat([seq, nxt[:, None]], dim=1)  # (B, t+1)
            out = model(input_ids=seq, attention_mask=ones[:, : step + 2], use_cache=False)
        logits = out.logits[:, -1]
    return torch.stack(generated, dim=1).cpu()  # (B, T)


def sample(lm: DnaLM, cfg: SampleConfig | None = None) -> SampleResult:
    """Draw ``cfg.n`` barcodes from ``lm`` (see the module docstring for the procedure)."""
    cfg = cfg or SampleConfig()
    # 1. check inputs, resolve length and schedule
    max_tokens = resolve_max_tokens(lm, cfg)
    temps = cfg.temperatures(max_tokens)
    gen = torch.Generator().manual_seed(cfg.seed)
    was_training = lm.model.training
    lm.model.eval()
    eos = lm.tokenizer.eos_token_id
    seqs, ended, lengths = [], [], []
    # 2. decode batch by batch
    for start in range(0, cfg.n, cfg.batch_size):
        rows = min(cfg.batch_size, cfg.n - start)
        tokens = _sample_batch(lm, rows, cfg, temps, gen)  # (B, T)
        for row in tokens.tolist():
            n = row.index(eos) if eos in row else len(row)
            seqs.append(lm.tokenizer.decode_dna(row[:n]))
            ended.append(eos in row)
            lengths.append(n)
    if was_training:
        lm.model.train()
    return SampleResult(seqs, ended, lengths, max_tokens, temps)

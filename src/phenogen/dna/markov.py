"""Order-k Markov chain over A/C/G/T: the baseline a DNA language model has to beat.

``p(x_i | x_{i-k} .. x_{i-1}) = (c(context, x_i) + alpha) / (c(context) + 4 alpha)`` with counts from
the training sequences only. The first bases of a sequence (and bases right after an N) use the
longest available N-free context, i.e. the lower-order chains fitted alongside (orders 0..k).
Ambiguous bases (N and other IUPAC codes) are never predicted and never used as context.

``bits_per_base`` is ``sum -log2 p / number of predicted bases`` over a set of sequences — the
same unit as :func:`phenogen.lm.likelihood.heldout_likelihood`. The chain does not model where a
sequence ends; its samples take their lengths from the training length distribution.

>>> mc = MarkovChain(order=2).fit(["ACGTACGTACGT"] * 5)
>>> round(mc.bits_per_base(["ACGTACGT"]), 3) < 0.6
True
>>> [len(s) for s in mc.sample(2, seed=0)]
[12, 12]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from phenogen.errors import InputError

__all__ = ["MarkovChain", "encode_bases"]

_LUT = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate("ACGT"):
    _LUT[ord(_c)] = _i
    _LUT[ord(_c.lower())] = _i
_LUT[ord("U")] = _LUT[ord("u")] = 3


def encode_bases(seq: str) -> np.ndarray:
    """A/C/G/T → 0..3, anything else (N, IUPAC codes) → -1."""
    return _LUT[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]


class MarkovChain:
    """Order-k Markov chain with add-alpha smoothing and lower-order back-off at sequence starts.

    Parameters
    ----------
    order : int
        Context length k (0 = base composition only).
    alpha : float
        Additive smoothing pseudo-count per (context, base).
    """

    def __init__(self, order: int = 5, alpha: float = 0.5):
        if not 0 <= order <= 12:
            raise ValueError(f"order must be in 0..12, got {order}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.order = order
        self.alpha = alpha
        self.counts: list[np.ndarray] = []  # counts[j]: (4**j, 4) for orders j = 0..k
        self.lengths: np.ndarray = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------ contexts
    def _orders(self, x: np.ndarray) -> np.ndarray:
        """Context length usable at every position: consecutive valid bases just before it, capped at k."""
        valid = (x >= 0).astype(np.int64)
        n = len(x)
        # run[i] = length of the run of valid bases ending at i-1
        last_invalid = np.maximum.accumulate(np.where(valid == 0, np.arange(n), -1))  # last N at or before i
        prev_invalid = np.concatenate([[-1], last_invalid[:-1]])  # last N strictly before i
        run = np.arange(n) - prev_invalid - 1
        return np.minimum(run, self.order)

    # ------------------------------------------------------------------ fit / score
    def fit(self, sequences: Sequence[str]) -> MarkovChain:
        """Count (context, next base) over ``sequences``; returns ``self``."""
        if not sequences:
            raise InputError("cannot fit a Markov chain on zero sequences")
        self.counts = [
            np.zeros((4**j, 4), dtype=np.float32) for j in range(self.order + 1)
        ]  # exact below 2**24
        lengths = []
        for seq in sequences:
            x = encode_bases(seq)
            lengths.append(len(seq))
            valid = x >= 0
            if not valid.any():
                continue
            order = self._orders(x)
            for j in range(self.order + 1):
                # every valid position whose previous j bases are valid contributes to order j
                use = valid & (order >= j)
                if not use.any():
                    continue
                ctx = self._ctx_of_order(x, j)
                np.add.at(self.counts[j], (ctx[use], x[use]), 1.0)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        return self

    def _ctx_of_order(self, x: np.ndarray, j: int) -> np.ndarray:
        n = len(x)
        xv = np.where(x >= 0, x, 0)
        ctx = np.zeros(n, dtype=np.int64)
        for back in range(1, j + 1):
            if back < n:
                ctx[back:] += xv[:-back] * 4 ** (back - 1)
        return ctx

    def _check_fitted(self) -> None:
        if not self.counts:
            raise InputError("the Markov chain is not fitted; call fit(train_sequences) first")

    def log2_probs(self, seq: str) -> np.ndarray:
        """log2 p of every A/C/G/T position of ``seq`` (ambiguous positions are skipped)."""
        self._check_fitted()
        x = encode_bases(seq)
        order = self._orders(x)
        out = np.zeros(len(x))
        for j in range(self.order + 1):
            at = (order == j) & (x >= 0)
            if not at.any():
                continue
            ctx = self._ctx_of_order(x, j)[at]
            c = self.counts[j]
            num = c[ctx, x[at]].astype(np.float64) + self.alpha
            den = c[ctx].sum(axis=1, dtype=np.float64) + 4 * self.alpha
            out[at] = np.log2(num / den)
        return out[x >= 0]

    def bits_per_base(self, sequences: Sequence[str]) -> float:
        """Average code length in bits per predicted base over ``sequences``."""
        total, n = 0.0, 0
        for seq in sequences:
            lp = self.log2_probs(seq)
            total -= float(lp.sum())
            n += len(lp)
        return total / n if n else math.nan

    # ------------------------------------------------------------------ sample
    def sample(self, n: int, seed: int = 0, lengths: Sequence[int] | None = None) -> list[str]:
        """``n`` sequences; lengths drawn from the training lengths unless given."""
        self._check_fitted()
        rng = np.random.default_rng(seed)
        if lengths is None:
            lengths = rng.choice(self.lengths, size=n) if len(self.lengths) else np.full(n, 100)
        probs = [
            (c + self.alpha) / (c.sum(axis=1, keepdims=True) + 4 * self.alpha) for c in self.counts
        ]  # (4**j, 4) each
        cums = [np.cumsum(p, axis=1) for p in probs]
        out = []
        for length in lengths:
            x = np.zeros(int(length), dtype=np.int64)
            u = rng.random(int(length))
            for i in range(int(length)):
                j = min(i, self.order)
                ctx = 0
                for back in range(1, j + 1):
                    ctx += int(x[i - back]) * 4 ** (back - 1)
                x[i] = min(int(np.searchsorted(cums[j][ctx], u[i], side="right")), 3)
            out.append("".join("ACGT"[b] for b in x))
        return out

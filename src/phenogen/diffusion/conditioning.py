"""DNA condition encoders: a barcode becomes a short sequence of tokens for the UNet's cross-attention.

Four encoders, chosen by ``[image] encoder`` and compared by measurement:

``gpt2``
    The thesis: hidden states of the frozen GPT-2 DNA language model (one token per k-mer word),
    projected to the cross-attention width, computed by :func:`phenogen.lm.encode` machinery
    (:class:`~phenogen.lm.encode.DnaEncoder`). The LM's transformer is stored inside the
    conditioner, so a saved pipeline is self-contained.
``kmer``
    k-mer count profiles (frequencies x 4**k, mean 1) of ``kmer_segments`` consecutive segments of the
    barcode plus one of the whole barcode: ``kmer_segments + 1`` tokens of ``4**k`` features.
``onehot``
    The (left-aligned) one-hot barcode cut into windows of ``onehot_window`` bases: one token of
    ``4 * window`` features per window (``N`` = 0.25 each, gaps and padding = 0), trained jointly.
``relatives``
    A barcode described by its relatives: its Mash distance (k-mer Jaccard, alignment-free; ~ the
    share of differing sites) to every *reference* barcode — the training set's, stored in the
    conditioner — turned into weights ``softmax(-d / relatives_temperature)``; the condition is the
    weighted mix of ``relatives_tokens`` learned tokens per reference. A training barcode is mostly
    itself (a per-species embedding, fast to learn); a new barcode is painted from its closest
    relatives, nearer ones weighing more, as the phylogenetic conditional mean weighs relatives. In
    training, with probability ``relatives_self_drop`` a barcode's own reference is left out, so the
    model learns to paint a species from its relatives alone — what it must do for an unseen one.

Every encoder works in two stages, so training can cache the expensive, frozen part:

1. :meth:`DNAConditioner.featurize` — sequences → ``features (B, T, F)`` and ``mask (B, T)``;
   deterministic and frozen (cached once per unique sequence by the training loop).
2. :meth:`DNAConditioner.forward` — features → ``hidden (B, T, D)`` through a trainable head.

Two heads (``head``):

``tokens``
    Input norm, linear projection, learned positions, ``depth`` transformer layers, output norm: one
    condition token per feature token.
``caption``
    The barcode *writes a caption* for a captioned prior (:class:`phenogen.diffusion.prior.CaptionEncoder`,
    that prior's text encoder, loaded with it): the normalised features (flattened; ``gpt2``: mean over
    tokens) go through one linear map to the caption's values, which the prior's caption encoder turns
    into the tokens its UNet was trained to read. A soft prompt in the prior's own description space, as
    adapters that map a new modality into a frozen text encoder's input do: the UNet understands the
    condition from the first step, and the DNA → caption map is linear (with ``feature_dropout``, a
    ridge regression learnt through the diffusion loss), so a barcode between two species gets a
    description between theirs. The values start at zero (the prior's average bird).

Classifier-free guidance needs an unconditional embedding. ``null_condition="learned"`` uses one
learned token (DiT's ``LabelEmbedder``); ``"empty_sequence"`` uses the head's encoding of an empty
barcode (the thesis). Condition dropout lives here, next to the null (DiT ``token_drop``): in training
mode each example's condition is replaced by the null with probability ``cond_dropout``.

>>> cond = DNAConditioner(encoder="kmer", cross_attention_dim=32, kmer_k=2, kmer_segments=3)
>>> feats, mask = cond.featurize(["ACGTACGTAC", "GGGTTTAAAC"])
>>> tuple(feats.shape), tuple(mask.shape)
((2, 4, 16), (2, 4))
>>> hidden, _ = cond.eval()(feats, mask)
>>> tuple(hidden.shape)
(2, 4, 32)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from phenogen.diffusion.prior import CaptionEncoder
from phenogen.errors import CheckpointError, ConfigError

__all__ = ["DNAConditioner", "build_conditioner", "ENCODERS", "HEADS", "NULL_CONDITIONS"]

log = logging.getLogger(__name__)

ENCODERS = ("gpt2", "kmer", "onehot", "relatives")
HEADS = ("tokens", "caption")
NULL_CONDITIONS = ("learned", "empty_sequence")
_BASE_INDEX = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate("ACGT"):
    _BASE_INDEX[ord(_b)] = _i


def _base_codes(seq: str) -> np.ndarray:
    """0..3 for A/C/G/T, -1 for N and anything else (gaps are removed by the callers that need it)."""
    return _BASE_INDEX[np.frombuffer(seq.encode("ascii"), dtype=np.uint8)]


def _kmer_windows(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every k-mer window of base ``codes`` (``len(codes) >= k``) as a base-4 integer, and whether the
    window is free of N / gaps / padding (code -1)."""
    windows = np.lib.stride_tricks.sliding_window_view(codes, k)  # (n_win, k)
    valid = (windows >= 0).all(axis=1)
    index = (np.where(windows < 0, 0, windows).astype(np.int64) * (4 ** np.arange(k - 1, -1, -1))).sum(axis=1)
    return index, valid


def kmer_profile_tokens(seq: str, k: int, segments: int) -> np.ndarray:
    """``(segments + 1, 4**k)`` k-mer frequency profiles (x 4**k): each segment, then the whole sequence.

    Windows holding an ``N`` are skipped; an empty (or all-``N``) segment gives a zero row.
    """
    codes = _base_codes(seq.replace("-", ""))
    out = np.zeros((segments + 1, 4**k), dtype=np.float32)
    n_win = len(codes) - k + 1
    if n_win <= 0:
        return out
    index, valid = _kmer_windows(codes, k)
    bounds = np.linspace(0, n_win, segments + 1).round().astype(int)
    spans = [(bounds[s], bounds[s + 1]) for s in range(segments)] + [(0, n_win)]
    for row, (a, b) in enumerate(spans):
        idx = index[a:b][valid[a:b]]
        if len(idx):
            out[row] = np.bincount(idx, minlength=4**k) * (4**k / len(idx))
    return out


def kmer_set(seq: str, k: int) -> np.ndarray:
    """The sorted distinct k-mers of a barcode as integer codes (windows holding N or a gap skipped)."""
    return _kmer_set_of_codes(_base_codes(seq.replace("-", "")), k)


def _kmer_set_of_codes(codes: np.ndarray, k: int) -> np.ndarray:
    if len(codes) < k:
        return np.zeros(0, dtype=np.int64)
    index, valid = _kmer_windows(codes, k)
    return np.unique(index[valid])


def mash_distance(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mash distance between two k-mer sets: ``-ln(2j / (1 + j)) / k`` for Jaccard ``j`` (1 if disjoint).

    Estimates the share of differing sites without an alignment (Ondov et al. 2016).
    >>> a = kmer_set("ACGTACGTTGCA", 3)
    >>> mash_distance(a, a, 3)
    0.0
    """
    if len(a) == 0 or len(b) == 0:
        return 1.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    j = inter / (len(a) + len(b) - inter)
    return 1.0 if j == 0 else float(min(1.0, -math.log(2 * j / (1 + j)) / k))


def onehot_tokens(seq: str, length: int, window: int) -> np.ndarray:
    """``(length / window, 4 * window)`` one-hot windows; ``N`` = 0.25 each, gap/padding = 0."""
    onehot = np.zeros((length, 4), dtype=np.float32)
    s = seq[:length]
    codes = _base_codes(s)
    known = codes >= 0
    onehot[np.nonzero(known)[0], codes[known]] = 1.0
    is_n = np.frombuffer(s.encode("ascii"), dtype=np.uint8) == ord("N")
    onehot[np.nonzero(is_n)[0]] = 0.25
    return onehot.reshape(length // window, window * 4)


class DNAConditioner(ModelMixin, ConfigMixin):
    """Barcodes → cross-attention tokens, with a null condition and condition dropout.

    Parameters
    ----------
    encoder : {"gpt2", "kmer", "onehot"}
        Which featurizer (see the module docstring).
    cross_attention_dim : int
        Width ``D`` of the output tokens (the UNet's ``cross_attention_dim``).
    kmer_k, kmer_segments : int
        ``kmer``: word length and number of segments.
    onehot_window, onehot_length : int
        ``onehot``: bases per token and the padded/truncated barcode length (multiple of the window).
    lm_config : dict, optional
        ``gpt2``: the ``GPT2Config`` of the frozen DNA LM (its weights live in this module).
    lm_k, lm_stride, lm_layer : int
        ``gpt2``: the LM tokenizer's k-mer length and stride, and the hidden layer used (-1 = last).
    depth, heads : int
        Transformer layers (0 = a residual MLP) and attention heads of the ``tokens`` head.
    head : {"tokens", "caption"}
        The trainable head (see the module docstring).
    caption_n, caption_traits
        ``caption`` head: the caption encoder's number of values and their names.
    fixed_length : bool
        Stable Diffusion's convention (``image.base``): every condition is ``max_tokens`` tokens long and
        fully attended, padding included (padded tokens carry zeros), the way CLIP's 77 tokens are, so a
        stock pipeline given ``prompt_embeds`` and no attention mask paints what phenogen paints.
    null_condition : {"learned", "empty_sequence"}
        The unconditional embedding used for guidance and condition dropout.
    cond_dropout : float
        Probability of replacing a training example's condition by the null.
    feature_dropout : float
        Dropout on the normalised input features in training (``kmer``/``onehot``/``gpt2``): training
        with feature noise acts as a ridge penalty on the input projection (Bishop 1995), so barcodes
        unlike any training one (held-out species, ancestors) map between the species they resemble.
    relatives_n, relatives_length, relatives_k, relatives_tokens, relatives_temperature, relatives_self_drop
        ``relatives``: number and padded length of the stored reference barcodes, the Mash k-mer
        length, learned tokens per reference, the softmax temperature (in distance units) and the
        probability of leaving a training barcode's own reference out.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        encoder: str = "kmer",
        cross_attention_dim: int = 128,
        kmer_k: int = 4,
        kmer_segments: int = 4,
        onehot_window: int = 16,
        onehot_length: int = 672,
        lm_config: dict[str, Any] | None = None,
        lm_k: int = 6,
        lm_stride: int | None = None,
        lm_layer: int = -1,
        depth: int = 1,
        heads: int = 4,
        null_condition: str = "learned",
        cond_dropout: float = 0.1,
        relatives_n: int = 0,
        relatives_length: int = 0,
        relatives_k: int = 8,
        relatives_tokens: int = 4,
        relatives_temperature: float = 0.01,
        relatives_self_drop: float = 0.5,
        feature_dropout: float = 0.0,
        head: str = "tokens",
        caption_n: int = 0,
        caption_traits: Sequence[str] = (),
        fixed_length: bool = False,
    ):
        super().__init__()
        if encoder not in ENCODERS:
            raise ConfigError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        if null_condition not in NULL_CONDITIONS:
            raise ConfigError(
                f"null_condition must be one of {', '.join(NULL_CONDITIONS)}, got {null_condition!r}"
            )
        if not 0.0 <= cond_dropout < 1.0:
            raise ConfigError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        if head not in HEADS:
            raise ConfigError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if head == "caption" and encoder == "relatives":
            raise ConfigError("the caption head reads barcode features: use encoder kmer, onehot or gpt2")
        if head == "caption" and caption_n < 1:
            raise ConfigError("the caption head needs a captioned prior's caption encoder (caption_n >= 1)")
        if not 0.0 <= feature_dropout < 1.0:
            raise ConfigError(f"feature_dropout must be in [0, 1), got {feature_dropout}")
        if cross_attention_dim % heads:
            raise ConfigError(f"cross_attention_dim {cross_attention_dim} is not divisible by heads {heads}")
        self.lm: nn.Module | None = None
        self._encoder = None  # gpt2: the phenogen.lm.encode.DnaEncoder, built on first use
        if encoder == "kmer":
            feature_dim, max_tokens = 4**kmer_k, kmer_segments + 1
        elif encoder == "relatives":
            if relatives_n < 1 or relatives_length < 1:
                raise ConfigError("encoder 'relatives' needs reference barcodes (the training set's)")
            if relatives_temperature <= 0 or not 0 <= relatives_self_drop < 1 or relatives_tokens < 1:
                raise ConfigError("relatives: temperature must be > 0, self_drop in [0, 1), tokens >= 1")
            feature_dim, max_tokens = relatives_n, 1
            self.register_buffer(
                "ref_codes", torch.full((relatives_n, relatives_length), -1, dtype=torch.int8)
            )
            self.table = nn.Parameter(torch.randn(relatives_n, relatives_tokens, cross_attention_dim))
            self._ref_sets: tuple[int, list[np.ndarray]] | None = None
        elif encoder == "onehot":
            if onehot_length % onehot_window:
                raise ConfigError(
                    f"onehot_length {onehot_length} must be a multiple of onehot_window {onehot_window}"
                )
            feature_dim, max_tokens = 4 * onehot_window, onehot_length // onehot_window
        else:
            if lm_config is None:
                raise ConfigError("encoder 'gpt2' needs the DNA language model (set image.lm_model)")
            from transformers import GPT2Config, GPT2Model

            gpt2_config = GPT2Config(**lm_config)
            self.lm = GPT2Model(gpt2_config)
            self.lm.requires_grad_(False)
            self.lm.eval()
            feature_dim, max_tokens = gpt2_config.n_embd, gpt2_config.n_positions
        self.feature_dim, self.max_tokens = feature_dim, max_tokens
        d = cross_attention_dim
        # the features of an empty barcode (``null_condition="empty_sequence"``), padded to max_tokens
        self.register_buffer("null_features", torch.zeros(1, max_tokens, feature_dim))
        self.register_buffer("null_mask", torch.zeros(1, max_tokens, dtype=torch.bool))
        self.null_mask[:, 0] = True
        if encoder != "relatives":  # relatives mixes its learned table instead of projecting features
            self.in_norm = nn.LayerNorm(feature_dim)
            self.feature_drop = nn.Dropout(feature_dropout)
        if head == "caption":
            pooled_dim = feature_dim if encoder == "gpt2" else feature_dim * max_tokens
            self.to_caption = nn.Linear(pooled_dim, caption_n)
            nn.init.zeros_(self.to_caption.weight)  # every barcode starts as the average bird
            nn.init.zeros_(self.to_caption.bias)
            self.caption = CaptionEncoder(caption_n, d, tuple(caption_traits))
            # the captioned prior's null is the all-zero context
            self.null_token = nn.Parameter(torch.zeros(1, 1, d))
            return
        if encoder != "relatives":
            self.in_proj = nn.Linear(feature_dim, d)
        out_tokens = relatives_tokens if encoder == "relatives" else max_tokens
        self.pos_emb = nn.Parameter(torch.randn(out_tokens, d) * 0.02)
        if depth > 0:
            self.blocks = nn.ModuleList(
                nn.TransformerEncoderLayer(
                    d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
                )
                for _ in range(depth)
            )
        else:
            self.blocks = nn.ModuleList(
                [nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))]
            )
        self.out_norm = nn.LayerNorm(d)
        self.null_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)

    # ------------------------------------------------------------------ frozen featurizers
    def train(self, mode: bool = True) -> DNAConditioner:
        super().train(mode)
        if self.lm is not None:
            self.lm.eval()  # the LM is frozen: never dropout
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The head's parameters (everything except the frozen LM and what was frozen with requires_grad)."""
        return [p for name, p in self.named_parameters() if not name.startswith("lm.") and p.requires_grad]

    def dna_encoder(self):
        """The :class:`phenogen.lm.encode.DnaEncoder` over the stored LM (``gpt2``; built once, caching)."""
        if self._encoder is None:
            from transformers import GPT2LMHeadModel

            from phenogen.dna.tokenizer import KmerTokenizer
            from phenogen.lm.encode import DnaEncoder
            from phenogen.lm.model import DnaLM

            with torch.device("meta"):  # a weightless shell around the stored transformer
                head = GPT2LMHeadModel(self.lm.config)
            head.transformer = self.lm
            head.lm_head.weight = self.lm.wte.weight
            lm = DnaLM(head, KmerTokenizer(k=self.config.lm_k, stride=self.config.lm_stride))
            device = self.lm.wte.weight.device
            self._encoder = DnaEncoder(lm, layer=self.config.lm_layer, batch_size=64, device=device)
        return self._encoder

    @torch.no_grad()
    def featurize(self, sequences: Sequence[str], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of cleaned barcodes: ``(features (B, T, F) float32, mask (B, T) bool)`` on CPU.

        ``kmer`` and ``onehot`` always give ``T = max_tokens``; ``gpt2`` gives the longest token
        count of the batch (``<bos> ... <eos>``), shorter sequences padded and masked.
        """
        cfg = self.config
        if cfg.encoder == "kmer":
            feats = np.stack([kmer_profile_tokens(s, cfg.kmer_k, cfg.kmer_segments) for s in sequences])
            f = torch.from_numpy(feats)
            return f, torch.ones(f.shape[:2], dtype=torch.bool)
        if cfg.encoder == "onehot":
            too_long = [i for i, s in enumerate(sequences) if len(s) > cfg.onehot_length]
            if too_long:
                log.warning(
                    "onehot encoder: %d sequence(s) longer than onehot_length=%d are truncated (first: #%d, %d bp)",
                    len(too_long), cfg.onehot_length, too_long[0], len(sequences[too_long[0]]),
                )  # fmt: skip
            feats = np.stack([onehot_tokens(s, cfg.onehot_length, cfg.onehot_window) for s in sequences])
            f = torch.from_numpy(feats)
            return f, torch.ones(f.shape[:2], dtype=torch.bool)
        if cfg.encoder == "relatives":
            refs = self.reference_sets()
            rows = []
            for s in sequences:
                q = kmer_set(s, cfg.relatives_k)
                rows.append([mash_distance(q, r, cfg.relatives_k) for r in refs])
            f = torch.tensor(rows, dtype=torch.float32).reshape(len(sequences), 1, len(refs))
            return f, torch.ones(f.shape[:2], dtype=torch.bool)
        return self._gpt2_features(sequences, batch_size)

    def set_references(self, sequences: Sequence[str]) -> None:
        """``relatives``: store the reference barcodes (as base codes; N, gaps and padding = -1)."""
        if len(sequences) != self.config.relatives_n:
            raise ConfigError(f"expected {self.config.relatives_n} reference barcodes, got {len(sequences)}")
        self.ref_codes.fill_(-1)
        for i, seq in enumerate(sequences):
            codes = _base_codes(seq.replace("-", ""))[: self.config.relatives_length]
            self.ref_codes[i, : len(codes)] = torch.from_numpy(codes.astype(np.int8))
        self._ref_sets = None

    def reference_sets(self) -> list[np.ndarray]:
        """The references' k-mer sets (computed once per stored reference table)."""
        codes = self.ref_codes.cpu().numpy()
        key = hash(codes.tobytes())
        if self._ref_sets is None or self._ref_sets[0] != key:  # new references, or loaded weights
            k = self.config.relatives_k  # padding is -1 like N: windows over it are skipped
            self._ref_sets = (key, [_kmer_set_of_codes(row.astype(np.int64), k) for row in codes])
        return self._ref_sets[1]

    def _relatives_mix(self, dist: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Distances ``(B, n_ref)`` → the weighted mix of the references' learned tokens ``(B, T, D)``."""
        cfg = self.config
        logits = -dist / cfg.relatives_temperature
        if self.training and cfg.relatives_self_drop > 0:  # paint a species from its relatives alone
            own = dist <= 1e-6
            leave = (
                torch.rand(dist.shape[0], generator=generator, device=dist.device) < cfg.relatives_self_drop
            )
            leave = leave[:, None] & own
            leave &= (~leave).any(-1, keepdim=True)  # never leave out every reference
            logits = logits.masked_fill(leave, float("-inf"))
        weights = torch.softmax(logits, dim=-1).to(self.table.dtype)
        return torch.einsum("br,rtd->btd", weights, self.table)

    def _gpt2_features(self, sequences: Sequence[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoder = self.dna_encoder()
        encoder.batch_size = batch_size
        if len(sequences) == 1 and sequences[0] == "":  # the thesis' null: <bos> <eos>
            hidden, mask = encoder.null_embedding()
        else:
            hidden, mask = encoder([s.replace("-", "") for s in sequences])  # (B, L, H), (B, L)
        return hidden.float().cpu(), mask.bool().cpu()

    def refresh_null_features(self) -> None:
        """Store the features of the empty barcode (call after the LM weights are in place)."""
        feats, mask = self.featurize([""])
        t = feats.shape[1]
        self.null_features.zero_()
        self.null_mask.zero_()
        self.null_features[:, :t] = feats.to(self.null_features.device)
        self.null_mask[:, :t] = mask.to(self.null_mask.device)
        if not self.null_mask.any():
            self.null_mask[:, 0] = True

    # ------------------------------------------------------------------ trainable head
    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        drop: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode features; rows where ``drop`` is True get the null condition.

        Parameters
        ----------
        features : (B, T, F) tensor
            From :meth:`featurize`.
        mask : (B, T) bool tensor, optional
            True on real tokens; ``None`` = all real.
        drop : (B,) bool tensor, optional
            Force the null condition on these rows. When ``None`` and the module is training,
            rows are dropped at random with probability ``cond_dropout`` (drawn from ``generator``).

        Returns
        -------
        hidden : (B, T, D) tensor
        mask : (B, T) bool tensor
        """
        b, t, _ = features.shape
        if t > self.max_tokens:
            raise ValueError(f"{t} tokens exceed the conditioner's max_tokens={self.max_tokens}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=features.device)
        mask = mask.bool()
        if drop is None and self.training and self.config.cond_dropout > 0:
            drop = torch.rand(b, generator=generator, device=features.device) < self.config.cond_dropout
        empty = self.config.null_condition == "empty_sequence"
        if drop is not None and empty:
            features = torch.where(
                drop[:, None, None], self.null_features[:, :t].to(features.dtype), features
            )
            mask = torch.where(drop[:, None], self.null_mask[:, :t], mask)
        if self.config.head == "caption":
            x = self.caption(self.caption_values(features, mask))  # (B, n_caption, D)
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        else:
            x, mask = self._tokens_head(features, mask, generator)
            if self.config.fixed_length and x.shape[1] < self.max_tokens:  # padded tokens carry zeros
                x = nn.functional.pad(x, (0, 0, 0, self.max_tokens - x.shape[1]))
        if drop is not None and not empty:
            x = torch.where(drop[:, None, None], self.null_token.to(x.dtype).expand_as(x), x)
            mask = mask | drop[:, None]
        if self.config.fixed_length:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return x, mask

    def _tokens_head(
        self, features: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` head: features ``(B, T, F)`` → tokens ``(B, T', D)`` and their mask."""
        b, t, _ = features.shape
        if self.config.encoder == "relatives":
            x = self._relatives_mix(features[:, 0], generator) + self.pos_emb  # (B, T, D)
            mask = mask[:, :1].expand(b, x.shape[1])
        else:
            x = self.in_proj(self.feature_drop(self.in_norm(features))) + self.pos_emb[:t]  # (B, T, D)
        for block in self.blocks:
            if isinstance(block, nn.TransformerEncoderLayer):
                x = block(x, src_key_padding_mask=~mask)
            else:
                x = x + block(x)
        x = self.out_norm(x)
        return x * mask[..., None].to(x.dtype), mask  # padded tokens carry nothing

    def caption_values(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``caption`` head: the caption ``(B, caption_n)`` a barcode's features write (before encoding)."""
        f = self.feature_drop(self.in_norm(features)) * mask[..., None].to(features.dtype)
        if self.config.encoder == "gpt2":  # variable length: the mean over real tokens
            pooled = f.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(f.dtype)
        else:
            pooled = nn.functional.pad(f, (0, 0, 0, self.max_tokens - f.shape[1])).flatten(1)
        return self.to_caption(pooled)

    @property
    def caption_names(self) -> list[str]:
        """``caption`` head: the names of the caption's values (the prior's traits, else ``v0, v1 …``)."""
        return list(self.config.caption_traits) or [f"v{i}" for i in range(self.config.caption_n)]

    @torch.no_grad()
    def caption_matrix(self, sequences: Sequence[str]) -> np.ndarray:
        """``caption`` head: the captions the barcodes write, ``(N, caption_n)`` float64 (see :meth:`describe`)."""
        if self.config.head != "caption":
            raise ConfigError("captions need the caption head (image.cond_head = 'caption')")
        feats, mask = self.featurize(sequences)
        ref = self.null_token
        values = self.caption_values(feats.to(ref.device, ref.dtype), mask.to(ref.device))
        return values.double().cpu().numpy()

    def describe(self, sequences: Sequence[str]) -> dict[str, np.ndarray]:
        """``caption`` head: the caption each barcode writes, by value name (what the DNA is read as)."""
        values = self.caption_matrix(sequences)
        return {name: values[:, i] for i, name in enumerate(self.caption_names)}

    def encode_captions(
        self, values: torch.Tensor | np.ndarray, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``caption`` head: the conditional embedding of captions given directly, ``(N, caption_n)``.

        What :meth:`encode` does after the DNA → caption map, for captions that come from elsewhere —
        e.g. ancestral captions reconstructed on a tree from the tips' (:func:`phenogen.phylo.portraits.
        tree_captions`). ``encode_captions(caption_matrix(seqs))`` equals ``encode(seqs)``.
        """
        if self.config.head != "caption":
            raise ConfigError("captions need the caption head (image.cond_head = 'caption')")
        ref = self.null_token
        x = torch.as_tensor(values).to(device or ref.device, ref.dtype)
        if x.ndim != 2 or x.shape[1] != self.config.caption_n:
            raise ValueError(f"captions must be (N, {self.config.caption_n}), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("captions hold NaN or infinite values")
        hidden = self.caption(x)  # (N, caption_n, D)
        return hidden, torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)

    def null_condition(
        self, batch: int, tokens: int, device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unconditional embedding for classifier-free guidance: ``(hidden (B, T, D), mask (B, T))``."""
        device = device or self.null_token.device
        if self.config.encoder == "relatives":  # one feature row; the head makes relatives_tokens tokens
            tokens = 1
        elif self.config.head == "caption":  # the head makes caption_n tokens from any feature rows
            tokens = 1 if self.config.encoder == "gpt2" else self.max_tokens
        feats = torch.zeros(batch, tokens, self.feature_dim, device=device, dtype=self.null_token.dtype)
        drop = torch.ones(batch, dtype=torch.bool, device=device)
        return self.forward(feats, torch.ones(batch, tokens, dtype=torch.bool, device=device), drop=drop)

    def encode(
        self, sequences: Sequence[str], device: torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``featurize`` + ``forward`` (no dropout): the conditional embedding of barcodes."""
        feats, mask = self.featurize(sequences)
        device = device or self.null_token.device
        keep = torch.zeros(len(sequences), dtype=torch.bool, device=device)
        return self.forward(feats.to(device, self.null_token.dtype), mask.to(device), drop=keep)


def build_conditioner(
    encoder: str,
    cross_attention_dim: int,
    *,
    lm_model: str = "",
    lm_layer: int = -1,
    kmer_k: int = 4,
    kmer_segments: int = 4,
    onehot_window: int = 16,
    max_length: int = 672,
    depth: int = 1,
    heads: int = 4,
    null_condition: str = "learned",
    cond_dropout: float = 0.1,
    references: Sequence[str] = (),
    relatives_k: int = 8,
    relatives_tokens: int = 4,
    relatives_temperature: float = 0.01,
    relatives_self_drop: float = 0.5,
    feature_dropout: float = 0.0,
    head: str = "tokens",
    caption_encoder: str | Path | None = None,
    seed: int = 0,
    fixed_length: bool = False,
) -> DNAConditioner:
    """A fresh conditioner; for ``gpt2`` the frozen LM is loaded from ``lm_model`` (a train-lm directory).

    ``max_length`` (the longest training barcode) sets the ``onehot`` length, rounded up to the window;
    ``references`` (the training barcodes) are what ``relatives`` compares a barcode with;
    ``caption_encoder`` (a captioned prior's ``caption_encoder/``) is what the ``caption`` head writes for.
    """
    encoder_kwargs: dict[str, Any] = {}
    lm = None
    if encoder == "gpt2":
        if not lm_model:
            raise ConfigError(
                "encoder 'gpt2' needs a DNA language model: set image.lm_model to a train-lm directory"
            )
        from phenogen.lm.model import load_lm

        lm = load_lm(lm_model)
        encoder_kwargs = {
            "lm_config": lm.model.config.to_diff_dict() | {"n_positions": lm.model.config.n_positions},
            "lm_k": lm.tokenizer.k,
            "lm_stride": lm.tokenizer.stride,
            "lm_layer": lm_layer,
        }
        n_layer = lm.model.config.n_layer
        if not -(n_layer + 1) <= lm_layer <= n_layer:
            raise ConfigError(
                f"image.lm_layer={lm_layer} is outside the LM's hidden states (-{n_layer + 1}..{n_layer})"
            )
    length = int(math.ceil(max(max_length, onehot_window) / onehot_window) * onehot_window)
    if encoder == "relatives":
        references = list(dict.fromkeys(references))  # unique, in order
        encoder_kwargs = {
            "relatives_n": len(references),
            "relatives_length": max((len(r.replace("-", "")) for r in references), default=0),
            "relatives_k": relatives_k,
            "relatives_tokens": relatives_tokens,
            "relatives_temperature": relatives_temperature,
            "relatives_self_drop": relatives_self_drop,
        }
    caption = None
    if head == "caption":
        if caption_encoder is None or not (Path(caption_encoder) / "config.json").is_file():
            raise ConfigError(
                "the caption head writes captions for a captioned prior: set image.init to one "
                "(the built-in prior is captioned; `phenogen pretrain-image --set prior.captions=true`)"
            )
        from phenogen.diffusion.components import check_component_dir
        from phenogen.lm.model import LOAD_ERRORS

        check_component_dir(caption_encoder)
        try:
            caption = CaptionEncoder.from_pretrained(caption_encoder, torch_dtype=torch.float32)
        except LOAD_ERRORS as exc:
            detail = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"{caption_encoder}: cannot load the caption encoder ({detail})") from None
        encoder_kwargs |= {
            "caption_n": caption.config.n_traits,
            "caption_traits": tuple(caption.config.traits),
        }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cond = DNAConditioner(
            encoder=encoder,
            cross_attention_dim=cross_attention_dim,
            kmer_k=kmer_k,
            kmer_segments=kmer_segments,
            onehot_window=onehot_window,
            onehot_length=length,
            depth=depth,
            heads=heads,
            null_condition=null_condition,
            cond_dropout=cond_dropout,
            feature_dropout=feature_dropout,
            head=head,
            fixed_length=fixed_length,
            **encoder_kwargs,
        )
    if caption is not None:
        if caption.config.dim != cross_attention_dim:
            raise CheckpointError(
                f"{caption_encoder}: caption tokens are {caption.config.dim} wide, the UNet reads {cross_attention_dim}"
            )
        cond.caption.load_state_dict(caption.state_dict())
    if encoder == "relatives":
        cond.set_references(references)
    if lm is not None:
        missing, unexpected = cond.lm.load_state_dict(lm.model.transformer.state_dict(), strict=False)
        missing = [m for m in missing if not m.endswith(".attn.bias") and not m.endswith(".masked_bias")]
        if missing:
            raise CheckpointError(
                f"{lm_model}: the LM weights do not fit GPT2Model (missing {missing[:3]} ...)"
            )
    cond.refresh_null_features()
    return cond

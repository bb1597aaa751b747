"""K-mer tokenizer for DNA barcodes, a ``transformers.PreTrainedTokenizer`` with a fixed vocabulary.

A barcode is cut into k-mers (``k = 6`` by default, 4,096 words) read left to right with step
``stride`` (``stride = k``: non-overlapping, the default; ``stride < k``: overlapping windows).

Vocabulary (ids in this order, so they never change with the data)::

    0 <pad>   1 <bos>   2 <eos>   3 <unk>   4 <mask>
    5 ...     all 4**k k-mers over ACGT in lexicographic order (AAAAAA, AAAAAC, ...)
    then      the single-base "tail" tokens A, C, G, T, N (only those not already k-mers)

Two documented policies make every sequence tokenizable and decoding length-exact:

* **Trailing remainder.** Bases after the last full window (fewer than ``k``; for 652 bp at k = 6
  that is 4) are emitted as single-base tail tokens, so ``decode(encode(s)) == s`` for every
  A/C/G/T sequence, of any length.
* **Ambiguity codes.** IUPAC codes (N, R, Y, ...) are read as N. A window containing one becomes
  ``<unk>`` and decodes to ``N`` repeated over the bases it contributes; a tail base becomes ``N``.
  Sequence length is therefore always preserved. Anything that is not an IUPAC letter (gaps ``-``,
  digits, spaces, non-ASCII letters, a value that is not a string) raises
  :class:`~phenogen.errors.SequenceError` with its position. Upper-casing is ASCII-only, so that
  ``'ß'`` does not become ``'SS'``.

With overlapping windows each window after the first contributes its last ``stride`` bases when
decoding (a sampled window whose overlap disagrees with its predecessor is taken at its word).

>>> tok = KmerTokenizer(k=3)
>>> ids = tok.encode_dna("ACGTACGT")
>>> [tok.convert_ids_to_tokens(i) for i in ids]
['<bos>', 'ACG', 'TAC', 'G', 'T', '<eos>']
>>> tok.decode_dna(ids)
'ACGTACGT'
>>> tok.decode_dna(tok.encode_dna("ACNTACG"))
'NNNTACG'
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
from collections.abc import Sequence

from transformers import PreTrainedTokenizer

from phenogen.errors import CheckpointError, SequenceError
from phenogen.fsio import read_json

__all__ = ["KmerTokenizer", "SPECIAL_TOKENS", "IUPAC_AMBIGUOUS", "clean_for_tokenizer", "check_sequence"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>")
BASES = "ACGT"
IUPAC_AMBIGUOUS = frozenset("NRYSWKMBDHV")
# ASCII-only upper-casing first (str.upper() turns 'ß' into 'SS'), then U -> T and ambiguity codes -> N.
_TRANSLATE = str.maketrans(
    dict(zip(string.ascii_lowercase, string.ascii_uppercase, strict=True))
    | {c: "N" for c in IUPAC_AMBIGUOUS | {c.lower() for c in IUPAC_AMBIGUOUS}}
    | {"U": "T", "u": "T"}
)
_NOT_BASE = re.compile(r"[^ACGTN]")
VOCAB_FILE = "kmer_vocab.json"


def clean_for_tokenizer(seq: str, record_id: str = "?") -> str:
    """Uppercase, U→T, every IUPAC ambiguity code → N; raise on anything else.

    Raises
    ------
    SequenceError
        For a character that is not an IUPAC nucleotide letter (naming record and 1-based position).
    """
    if not isinstance(seq, str):
        raise SequenceError(f"record {record_id}: expected the sequence as text, got {type(seq).__name__}")
    out = seq.translate(_TRANSLATE)
    bad = _NOT_BASE.search(out)
    if bad is not None:
        raise SequenceError(
            f"record {record_id}: character {seq[bad.start()]!r} at position {bad.start() + 1} "
            "is not a nucleotide; "
            "the DNA tokenizer reads A/C/G/T/U and IUPAC ambiguity codes only (remove gaps and spaces first)"
        )
    return out


def check_sequence(seq: str, record_id: str = "?") -> str:
    """Clean ``seq`` and refuse sequences a language model cannot learn from or encode.

    Returns the cleaned sequence. Raises :class:`SequenceError` for an empty sequence or one with no
    A/C/G/T base at all (e.g. all N).
    """
    out = clean_for_tokenizer(seq, record_id)
    if not out:
        raise SequenceError(f"record {record_id}: empty sequence")
    if not any(c in BASES for c in out):
        raise SequenceError(
            f"record {record_id}: sequence of {len(out)} bases holds no A/C/G/T (all ambiguous); nothing to model"
        )
    return out


class KmerTokenizer(PreTrainedTokenizer):
    """Fixed-vocabulary k-mer tokenizer (see the module docstring for the policies).

    Parameters
    ----------
    k : int
        Word length (1-8). ``k = 6`` gives 4,096 k-mer words.
    stride : int or None
        Step between windows; ``None`` means ``k`` (non-overlapping). Must satisfy ``1 <= stride <= k``.

    Examples
    --------
    >>> tok = KmerTokenizer()
    >>> len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    (4106, 1, 2, 0)
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, k: int = 6, stride: int | None = None, vocab_file: str | None = None, **kwargs):
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 8:
            raise ValueError(f"k must be an integer in 1..8, got {k!r}")
        stride = k if stride is None else stride
        if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= k:
            raise ValueError(f"stride must be an integer in 1..k={k}, got {stride!r}")
        self.k = k
        self.stride = stride
        words = list(SPECIAL_TOKENS) + ["".join(p) for p in itertools.product(BASES, repeat=k)]
        words += [b for b in "ACGTN" if b not in words]
        self.vocab: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.ids_to_tokens: list[str] = words
        if vocab_file is not None and os.path.isfile(vocab_file):
            saved = read_json(vocab_file, "tokenizer vocabulary", error=CheckpointError)
            if saved != self.vocab:
                raise CheckpointError(
                    f"{vocab_file}: tokenizer vocabulary does not match the k={k} vocabulary this code builds"
                )
        kwargs.setdefault("padding_side", "right")
        for name, token in zip(("pad", "bos", "eos", "unk", "mask"), SPECIAL_TOKENS, strict=True):
            if str(kwargs.setdefault(f"{name}_token", token)) != token:
                raise ValueError(
                    f"{name}_token must be {token!r} (the ids are fixed), got {kwargs[name + '_token']!r}"
                )
        kwargs.pop("special_tokens_pattern", None)
        super().__init__(k=k, stride=stride, special_tokens_pattern="bos_eos", **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *init_inputs, **kwargs) -> KmerTokenizer:
        """Load a tokenizer saved by ``save_pretrained`` from a local directory (nothing is downloaded).

        Raises
        ------
        CheckpointError
            When the directory, ``tokenizer_config.json`` or ``kmer_vocab.json`` is missing or damaged
            (not UTF-8, not a JSON object, ``k``/``stride`` out of range, a vocabulary that differs).
        """
        from pathlib import Path

        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            state = "is not a directory" if path.exists() else "does not exist"
            raise CheckpointError(
                f"{path}: tokenizer directory {state}; give a model directory written by train-lm"
            )
        for name in ("tokenizer_config.json", VOCAB_FILE):
            if not (path / name).is_file():
                raise CheckpointError(f"{path / name}: missing (or not a file); save or copy the model again")
        config = read_json(path / "tokenizer_config.json", "tokenizer config", error=CheckpointError)
        for key, allowed in (("k", range(1, 9)), ("stride", range(1, 9))):
            value = config.get(key, 6 if key == "k" else None)
            if value is None and key == "stride":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
                raise CheckpointError(
                    f"{path / 'tokenizer_config.json'}: {key} must be an integer in 1..8, got {value!r:.60}"
                )
        for name in ("special_tokens_map.json", "added_tokens.json"):
            if (path / name).exists():
                read_json(path / name, f"tokenizer file {name}", error=CheckpointError)
        kwargs["local_files_only"] = True
        try:
            return super().from_pretrained(path, *init_inputs, **kwargs)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a damaged file
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise CheckpointError(
                f"{path}: cannot load the k-mer tokenizer ({type(exc).__name__}: {text})"
            ) from None

    # -- transformers hooks ---------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.ids_to_tokens)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.vocab)

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.kmer_tokens(clean_for_tokenizer(text.strip()))

    def _convert_token_to_id(self, token: str) -> int:
        return self.vocab.get(token, self.vocab["<unk>"])

    def _convert_id_to_token(self, index: int) -> str:
        return self._token(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        path = os.path.join(save_directory, (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.vocab, fh)
        return (path,)

    # -- DNA API ----------------------------------------------------------------------------------
    def kmer_tokens(self, seq: str) -> list[str]:
        """Token strings of an already cleaned sequence (no special tokens)."""
        k, s = self.k, self.stride
        tokens = []
        pos = 0
        while pos + k <= len(seq):
            word = seq[pos : pos + k]
            tokens.append(word if word in self.vocab else "<unk>")
            pos += s
        covered = pos - s + k if tokens else 0
        tokens.extend(seq[covered:])  # tail bases, each its own token (N included)
        return tokens

    def encode_dna(self, seq: str, add_special_tokens: bool = True, record_id: str = "?") -> list[int]:
        """Token ids of one sequence, ``<bos> ... <eos>`` by default (fast path, no transformers overhead)."""
        ids = [self.vocab.get(t, 3) for t in self.kmer_tokens(clean_for_tokenizer(seq, record_id))]
        return [self.bos_token_id, *ids, self.eos_token_id] if add_special_tokens else ids

    def decode_dna(self, ids: Sequence[int]) -> str:
        """The DNA string of token ids; ``<pad>``, ``<bos>``, ``<eos>`` and ``<mask>`` are dropped."""
        return self._join([self._token(i, pos) for pos, i in enumerate(ids)])

    def _token(self, index, position: int | None = None) -> str:
        """The token of id ``index``; an id outside the vocabulary is a :class:`SequenceError`."""
        try:
            i = int(index)
        except (TypeError, ValueError, OverflowError):
            i = -1
        if not 0 <= i < len(self.ids_to_tokens):
            where = f" at position {position + 1}" if position is not None else ""
            raise SequenceError(
                f"token id {index!r}{where} is not in the k={self.k} vocabulary (0..{len(self.ids_to_tokens) - 1})"
            )
        return self.ids_to_tokens[i]

    def _join(self, tokens: Sequence[str]) -> str:
        out: list[str] = []
        first = True
        for tok in tokens:
            if tok == "<unk>":
                out.append("N" * (self.k if first else self.stride))
                first = False
            elif tok in SPECIAL_TOKENS:
                continue
            elif len(tok) == self.k:
                out.append(tok if first else tok[self.k - self.stride :])
                first = False
            else:  # a single-base tail token
                out.append(tok)
        return "".join(out)

    def n_bases(self, ids: Sequence[int]) -> int:
        """Number of bases the ids decode to (for bits-per-base accounting)."""
        return len(self.decode_dna(ids))

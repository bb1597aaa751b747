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

**Loading with plain transformers.** ``save_pretrained`` (and so every LM directory ``train-lm``
writes) also writes ``tokenizer.json``, the same tokenization as a ``tokenizers`` pipeline, and names
``PreTrainedTokenizerFast`` in ``tokenizer_config.json``; ``transformers.AutoTokenizer.from_pretrained``
then loads it without ``trust_remote_code`` (phenogen's own keys ``k`` and ``stride`` stay in that file
for :meth:`KmerTokenizer.from_pretrained`; transformers ignores them). The fast tokenizer gives the ids
of :meth:`KmerTokenizer.encode_dna` for every sequence phenogen accepts. Where it differs:

* **Overlapping windows** (``stride < k``) cannot be written as a split pattern: no ``tokenizer.json``
  is written and ``tokenizer_class`` stays ``KmerTokenizer``, so ``AutoTokenizer`` fails with
  transformers' own error. Only ``stride == k`` directories load with plain transformers.
* **Input phenogen refuses** (gaps, digits, inner spaces, other letters) raises
  :class:`~phenogen.errors.SequenceError` here; the fast tokenizer cannot raise and reads each such
  character as one ``<unk>``. Surrounding whitespace is stripped by both.
* **Decoding ``<unk>``.** ``<unk>`` is a special token, so ``decode(ids, skip_special_tokens=True)``
  drops it (as every transformers tokenizer does, phenogen's slow one included): the text is shorter
  by ``k`` bases per ``<unk>``. ``decode(ids)`` renders it as ``N`` repeated ``k`` times, like
  :meth:`KmerTokenizer.decode_dna`, with ``<bos>``/``<eos>`` shown. A/C/G/T barcodes round-trip exactly.
* **Generating.** The ids of a prompt end in ``<eos>``; to continue a barcode, give
  ``"<bos>" + barcode`` with ``add_special_tokens=False``::

      pipe = transformers.pipeline("text-generation", model=lm_dir)
      pipe("<bos>ACGTAC", add_special_tokens=False, return_full_text=False, max_new_tokens=20)
"""

from __future__ import annotations

import itertools
import json
import os
import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizer

from phenogen.errors import CheckpointError, SequenceError
from phenogen.fsio import atomic_write_text, read_json

if TYPE_CHECKING:
    import tokenizers

__all__ = [
    "KmerTokenizer",
    "SPECIAL_TOKENS",
    "FAST_TOKENIZER_FILE",
    "IUPAC_AMBIGUOUS",
    "clean_for_tokenizer",
    "check_sequence",
]

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
FAST_TOKENIZER_FILE = "tokenizer.json"
"""The ``tokenizers`` serialisation ``AutoTokenizer`` loads (written for ``stride == k`` only)."""
FAST_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


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
        fast = None  # absent in directories written before tokenizer.json existed: they load as before
        if (path / FAST_TOKENIZER_FILE).exists():
            fast = read_json(
                path / FAST_TOKENIZER_FILE, f"tokenizer file {FAST_TOKENIZER_FILE}", error=CheckpointError
            )
        kwargs["local_files_only"] = True
        try:
            tokenizer = super().from_pretrained(path, *init_inputs, **kwargs)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a damaged file
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise CheckpointError(
                f"{path}: cannot load the k-mer tokenizer ({type(exc).__name__}: {text})"
            ) from None
        if fast is not None:
            tokenizer._check_fast_file(fast, path / FAST_TOKENIZER_FILE)
        return tokenizer

    def save_pretrained(self, save_directory, *args, **kwargs) -> tuple[str, ...]:
        """Save as transformers does, plus ``tokenizer.json`` so that plain ``AutoTokenizer`` loads the directory.

        For ``stride == k`` the ``tokenizer_config.json`` transformers wrote is rewritten to name
        ``PreTrainedTokenizerFast`` (phenogen's ``k`` and ``stride`` stay in it, for
        :meth:`from_pretrained`). For overlapping windows no ``tokenizer.json`` is written (a stale one
        is removed) and the class stays ``KmerTokenizer``. ``tokenizer.json`` is written before the
        config names it, each atomically.
        """
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_file = next((Path(f) for f in files or () if str(f).endswith("tokenizer_config.json")), None)
        if config_file is None:  # transformers logged why it saved nothing
            return files
        fast_file = config_file.with_name(
            config_file.name.removesuffix("tokenizer_config.json") + FAST_TOKENIZER_FILE
        )
        if self.stride != self.k:
            fast_file.unlink(missing_ok=True)
            return tuple(files)
        config = read_json(config_file, "tokenizer config", error=CheckpointError)
        config["tokenizer_class"] = FAST_TOKENIZER_CLASS
        config["clean_up_tokenization_spaces"] = False
        config.pop("backend", None)  # "custom", the slow backend's tag; each class sets its own
        for key in ("is_local", "local_files_only"):  # facts of the load this tokenizer came from, if any
            config.pop(key, None)
        mode = config_file.stat().st_mode & 0o777  # the atomic writes' temporary files are 0600
        atomic_write_text(fast_file, self.fast_tokenizer().to_str(pretty=True) + "\n")
        atomic_write_text(
            config_file, json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
        for written in (fast_file, config_file):
            written.chmod(mode)
        return (*files, str(fast_file))

    def fast_tokenizer(self) -> tokenizers.Tokenizer:
        """This tokenization as a ``tokenizers.Tokenizer``: what ``tokenizer.json`` holds (``stride == k`` only).

        * normalizer: strip surrounding whitespace; ASCII upper-case, U -> T and IUPAC codes -> N, from
          the table :func:`clean_for_tokenizer` uses;
        * pre-tokenizer: k-mers left to right, then the tail bases one by one; any other character
          is a piece of its own (so one ``<unk>``: the fast tokenizer cannot raise);
        * model: ``WordLevel`` over this vocabulary, the same ids; a k-mer holding N is ``<unk>``;
        * post-processor: ``<bos> $A <eos>`` (pairs ``<bos> $A <eos> $B <eos>``, as the slow tokenizer);
        * decoder: pieces joined without spaces, ``<unk>`` rendered as ``N`` repeated ``k`` times.

        Raises
        ------
        ValueError
            For overlapping windows (``stride < k``), which a split pattern cannot produce.

        Examples
        --------
        >>> fast = KmerTokenizer(k=3).fast_tokenizer()
        >>> fast.encode("acgtU").ids == KmerTokenizer(k=3).encode_dna("acgtU")
        True
        >>> fast.decode(fast.encode("ACGTA").ids, skip_special_tokens=True)
        'ACGTA'
        """
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordLevel

        if self.stride != self.k:
            raise ValueError(
                f"overlapping windows (k={self.k}, stride={self.stride}) have no tokenizers equivalent; "
                "only stride == k can be written as tokenizer.json"
            )
        sources: dict[str, str] = {}  # target base -> the characters clean_for_tokenizer turns into it
        for code, target in sorted(_TRANSLATE.items()):
            if target in BASES + "N" and chr(code) != target:
                sources[target] = sources.get(target, "") + chr(code)
        bos, eos, unk = self.bos_token, self.eos_token, self.unk_token
        fast = Tokenizer(WordLevel(self.get_vocab(), unk_token=unk))
        fast.normalizer = normalizers.Sequence(
            [normalizers.Strip()]
            + [normalizers.Replace(Regex(f"[{chars}]"), target) for target, chars in sorted(sources.items())]
        )
        fast.pre_tokenizer = pre_tokenizers.Split(
            Regex(f"[ACGTN]{{{self.k}}}|[ACGTN]|[^ACGTN]"), behavior="isolated"
        )
        fast.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
        fast.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}",
            pair=f"{bos} $A {eos} $B:1 {eos}:1",
            special_tokens=[(bos, self.bos_token_id), (eos, self.eos_token_id)],
        )
        fast.decoder = decoders.Sequence([decoders.Replace(unk, "N" * self.k), decoders.Fuse()])
        return fast

    def _check_fast_file(self, fast: dict, file: Path) -> None:
        """A ``tokenizer.json`` must belong to this tokenizer (non-overlapping, the same vocabulary)."""
        model = fast.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if self.stride != self.k:
            raise CheckpointError(
                f"{file}: present, but tokenizer_config.json says overlapping windows (k={self.k}, "
                f"stride={self.stride}), which it cannot describe; delete it or save the tokenizer again"
            )
        if vocab != self.vocab:
            raise CheckpointError(
                f"{file}: its vocabulary does not match the k={self.k} vocabulary ({VOCAB_FILE}); "
                "the files do not belong together; save the tokenizer again"
            )

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

"""The k-mer tokenizer: fixed vocabulary, exact round trips, documented remainder and ambiguity policies."""

import json
import random

import pytest
import torch

from phenogen.dna.tokenizer import SPECIAL_TOKENS, KmerTokenizer, check_sequence, clean_for_tokenizer
from phenogen.errors import CheckpointError, SequenceError


def _random_dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def test_vocabulary_layout_is_fixed():
    """Specials take ids 0-4, then the 4**k k-mers in lexicographic order, then tail bases."""
    tok = KmerTokenizer()
    assert len(tok) == 5 + 4**6 + 5
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens(5) == "AAAAAA"
    assert tok.convert_ids_to_tokens(5 + 4**6 - 1) == "TTTTTT"
    assert tok.convert_ids_to_tokens(len(tok) - 1) == "N"


@pytest.mark.parametrize("k,stride", [(6, None), (3, None), (1, None), (4, 1), (6, 3), (5, 2)])
def test_decode_encode_round_trips_every_length(k, stride):
    """decode(encode(s)) == s for A/C/G/T sequences of every length, including remainders < k."""
    tok = KmerTokenizer(k=k, stride=stride)
    rng = random.Random(k * 10 + (stride or 0))
    for n in list(range(1, 3 * k + 2)) + [97, 652]:
        seq = _random_dna(rng, n)
        ids = tok.encode_dna(seq)
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert tok.decode_dna(ids) == seq, (k, stride, n)


def test_trailing_remainder_becomes_single_base_tokens():
    tok = KmerTokenizer(k=3)
    tokens = tok.convert_ids_to_tokens(tok.encode_dna("ACGTACGT", add_special_tokens=False))
    assert tokens == ["ACG", "TAC", "G", "T"]


def test_overlapping_windows_step_by_stride():
    tok = KmerTokenizer(k=4, stride=2)
    assert tok.kmer_tokens("ACGTTGCAA") == ["ACGT", "GTTG", "TGCA", "A"]


def test_ambiguity_codes_become_unk_and_decode_as_n_of_same_length():
    """A window with N (or any IUPAC code) is <unk> and decodes to N over its bases; a tail N stays N."""
    tok = KmerTokenizer(k=3)
    ids = tok.encode_dna("ACRTTTGGN", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids) == ["<unk>", "TTT", "<unk>"]
    assert tok.decode_dna(ids) == "NNNTTTNNN"
    tail = tok.encode_dna("ACGTN", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(tail) == ["ACG", "T", "N"]
    assert tok.decode_dna(tail) == "ACGTN"


def test_lowercase_and_rna_are_accepted():
    tok = KmerTokenizer(k=2)
    assert tok.decode_dna(tok.encode_dna("acgu")) == "ACGT"


@pytest.mark.parametrize("bad,pos", [("ACG-T", 4), ("ACGT ACGT", 5), ("ACXGT", 3), ("AC1", 3)])
def test_non_nucleotide_characters_raise_with_position(bad, pos):
    with pytest.raises(SequenceError, match=f"position {pos}"):
        clean_for_tokenizer(bad, record_id="r7")


@pytest.mark.parametrize("seq,msg", [("", "empty"), ("NNNN", "no A/C/G/T"), ("NRYN", "no A/C/G/T")])
def test_check_sequence_rejects_empty_and_all_ambiguous(seq, msg):
    with pytest.raises(SequenceError, match=msg):
        check_sequence(seq, record_id="x1")


def test_transformers_call_matches_fast_path_and_pads_right():
    tok = KmerTokenizer(k=3)
    seqs = ["ACGTACGTA", "ACG"]
    assert tok(seqs[0])["input_ids"] == tok.encode_dna(seqs[0])
    batch = tok(seqs, padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 5)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["input_ids"][1, -1].item() == tok.pad_token_id
    assert tok.decode(batch["input_ids"][0].tolist(), skip_special_tokens=True) == seqs[0]
    assert isinstance(batch["input_ids"], torch.Tensor)


def test_save_and_load_pretrained_round_trip(tmp_path):
    tok = KmerTokenizer(k=4, stride=2)
    tok.save_pretrained(tmp_path)
    again = KmerTokenizer.from_pretrained(tmp_path)
    assert (again.k, again.stride, len(again)) == (4, 2, len(tok))
    seq = "ACGTTGCAAGT"
    assert again.encode_dna(seq) == tok.encode_dna(seq)


def test_loading_a_vocabulary_of_another_k_fails(tmp_path):
    KmerTokenizer(k=3).save_pretrained(tmp_path)
    vocab = json.loads((tmp_path / "kmer_vocab.json").read_text())
    vocab["AAA"], vocab["AAC"] = vocab["AAC"], vocab["AAA"]
    (tmp_path / "kmer_vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(CheckpointError, match="does not match"):
        KmerTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": 9}, {"k": 3, "stride": 4}, {"k": 3, "stride": 0}])
def test_invalid_k_or_stride(kwargs):
    with pytest.raises(ValueError):
        KmerTokenizer(**kwargs)


# ------------------------------------------------------------------ odd inputs (issue 22)
@pytest.mark.parametrize(
    ("seq", "message"),
    [
        ("", "empty sequence"),
        ("ACßT", "'ß' at position 3"),  # str.upper() would make it 'SS', two ambiguity codes
        ("ACſT", "'ſ' at position 3"),  # str.upper() would make it 'S'
        ("ACİT", "'İ' at position 3"),
        ("AC-GT", "'-' at position 3"),
        ("AC GT", "' ' at position 3"),
        ("ACGT\n", "'\\n' at position 5"),
        ("NNNN", "no A/C/G/T"),
        (None, "expected the sequence as text, got NoneType"),
        (float("nan"), "got float"),  # a missing cell of a table read by pandas
    ],
)
def test_check_sequence_refuses_odd_input_with_a_sequence_error(seq, message):
    with pytest.raises(SequenceError) as info:
        check_sequence(seq, record_id="r1")
    assert message in str(info.value) and "record r1" in str(info.value)


def test_lower_case_iupac_and_u_are_read():
    assert check_sequence("acgurynACGU") == "ACGTNNNACGT"
    assert clean_for_tokenizer("ACGTB") == "ACGTN"


def test_decoding_an_id_outside_the_vocabulary_is_a_sequence_error():
    tok = KmerTokenizer(k=3)
    with pytest.raises(SequenceError, match="token id 9999 at position 2"):
        tok.decode_dna([1, 9999, 2])
    with pytest.raises(SequenceError, match="token id -1"):
        tok.decode_dna([-1])


def test_corrupt_vocabulary_file_is_a_checkpoint_error(tmp_path):
    KmerTokenizer(k=3).save_pretrained(tmp_path)
    (tmp_path / "kmer_vocab.json").write_bytes(b'{"<pad>": 0,\xff')
    with pytest.raises(CheckpointError, match="kmer_vocab.json: tokenizer vocabulary is not UTF-8"):
        KmerTokenizer.from_pretrained(tmp_path)
    (tmp_path / "kmer_vocab.json").write_text('{"<pad>": 0,')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        KmerTokenizer.from_pretrained(tmp_path)


def test_bool_is_not_a_k():
    with pytest.raises(ValueError, match="k must be an integer"):
        KmerTokenizer(k=True)

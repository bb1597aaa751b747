"""An LM directory opens with plain transformers (issue 23): AutoTokenizer, AutoModelForCausalLM, pipeline.

Tiny real models built in-process: a one-layer, 16-dimensional GPT-2 over the k = 6 vocabulary,
saved with :func:`~phenogen.lm.model.save_lm`, then loaded with transformers alone and compared with
phenogen's own loaders.
"""

import json
import random
import shutil

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizer,
    PreTrainedTokenizerFast,
    pipeline,
)

from phenogen.dna.tokenizer import FAST_TOKENIZER_FILE, KmerTokenizer
from phenogen.errors import CheckpointError, SequenceError
from phenogen.lm.data import collate
from phenogen.lm.model import DnaLM, check_model_dir, load_lm, save_lm

torch.set_num_threads(1)

SPECIALS = ("pad", "bos", "eos", "unk", "mask")
LENGTHS = (1, 2, 5, 6, 7, 11, 13, 35, 100, 647, 651, 652, 653, 658)


def tiny_lm(k: int = 6, stride: int | None = None, seed: int = 0) -> DnaLM:
    """A GPT-2 of one layer and 16 dimensions with the k-mer vocabulary (128 positions: a 652 bp barcode)."""
    tok = KmerTokenizer(k=k, stride=stride)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=128,
        n_embd=16,
        n_layer=1,
        n_head=2,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return DnaLM(GPT2LMHeadModel(config).eval(), tok, {"preset": "mini", "k": k, "stride": tok.stride})


def barcodes(seed: int = 0) -> list[str]:
    """Random barcodes of many lengths: A/C/G/T, lower and mixed case, RNA (U), IUPAC ambiguity codes."""
    rng = random.Random(seed)
    out = []
    for n in LENGTHS:
        plain = "".join(rng.choice("ACGT") for _ in range(n))
        out.append(plain)
        out.append(plain.lower())
        out.append("".join(c.lower() if rng.random() < 0.5 else c for c in plain))
        out.append(plain.replace("T", "U"))
        out.append(plain.replace("t", "u").lower())
        out.append("".join(rng.choice("NRYSWKMBDHVnryswkmbdhv") if rng.random() < 0.05 else c for c in plain))
    out.append("ACGTACGTAN")  # N in the tail: a base token, not <unk>
    return out


def acgt_barcodes(seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(n)) for n in LENGTHS for _ in range(3)]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A k = 6 LM directory written by save_lm, and the model it was written from."""
    lm = tiny_lm()
    return save_lm(lm, tmp_path_factory.mktemp("hf") / "model", epoch=1), lm


@pytest.fixture(scope="module")
def fast(lm_dir):
    return AutoTokenizer.from_pretrained(lm_dir[0])


# ----------------------------------------------------------------------------- the tokenizer
def test_auto_tokenizer_is_a_fast_tokenizer_with_phenogen_special_tokens(lm_dir, fast):
    """AutoTokenizer (no trust_remote_code) gives a PreTrainedTokenizerFast with the fixed special ids."""
    ref = KmerTokenizer()
    assert isinstance(fast, PreTrainedTokenizerFast) and fast.is_fast
    for name in SPECIALS:
        assert getattr(fast, f"{name}_token") == getattr(ref, f"{name}_token"), name
        assert getattr(fast, f"{name}_token_id") == getattr(ref, f"{name}_token_id"), name
    assert len(fast) == len(ref) == 4106 and fast.get_vocab() == ref.get_vocab()
    config = json.loads((lm_dir[0] / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (config["k"], config["stride"]) == (6, 6) and "auto_map" not in config


@pytest.mark.parametrize("k", [1, 3, 6])
def test_auto_tokenizer_gives_the_ids_of_encode_dna(tmp_path, k):
    """Same ids as encode_dna for many barcodes: lengths not a multiple of k, lower case, U, ambiguity codes."""
    tok = KmerTokenizer(k=k)
    tok.save_pretrained(tmp_path)
    fast = AutoTokenizer.from_pretrained(tmp_path)
    seqs = barcodes(seed=k)
    for seq in seqs:
        assert fast(seq)["input_ids"] == tok.encode_dna(seq), seq
        assert fast(seq, add_special_tokens=False)["input_ids"] == tok.encode_dna(
            seq, add_special_tokens=False
        )
    assert fast(seqs)["input_ids"] == [tok.encode_dna(s) for s in seqs]  # the batched path too


def test_ambiguous_kmers_are_unk_and_a_652_bp_barcode_has_the_expected_tokens(fast):
    """A k-mer holding an ambiguity code is <unk>; 652 bp at k = 6 is 108 k-mers and 4 tail bases."""
    seq = "ACGTAC" * 108 + "GGTA"
    ids = fast(seq)["input_ids"]
    assert len(ids) == 2 + 108 + 4 and ids[-5:-1] == [fast.convert_tokens_to_ids(b) for b in "GGTA"]
    ambiguous = "ACGRAC" + seq[6:]
    assert fast(ambiguous)["input_ids"][1] == fast.unk_token_id
    assert fast(ambiguous)["input_ids"][2:] == ids[2:]


def test_auto_tokenizer_decodes_acgt_barcodes_back(fast):
    """decode(ids, skip_special_tokens=True) gives an A/C/G/T barcode back exactly, without spaces."""
    for seq in acgt_barcodes():
        ids = fast(seq)["input_ids"]
        assert fast.decode(ids, skip_special_tokens=True) == seq
        assert fast.decode(fast(seq.lower())["input_ids"], skip_special_tokens=True) == seq  # upper-cased
    assert fast.decode(fast("ACGTACGUUN")["input_ids"], skip_special_tokens=True) == "ACGTACGTTN"


def test_unk_decoding_is_the_documented_one(fast):
    """<unk> is dropped under skip_special_tokens=True; without skipping it is N repeated k times."""
    tok = KmerTokenizer()
    seq = "ACGTACNNGTACGTACGT" + "CAT"  # the second k-mer holds N: <unk>
    ids = fast(seq)["input_ids"]
    assert fast.unk_token_id in ids
    assert tok.decode_dna(ids) == "ACGTACNNNNNNGTACGTCAT"
    assert fast.decode(ids) == "<bos>" + tok.decode_dna(ids) + "<eos>"
    assert fast.decode(ids, skip_special_tokens=True) == "ACGTAC" + "GTACGT" + "CAT"


def test_input_phenogen_refuses_is_unk_in_the_fast_tokenizer(fast):
    """A gap, digit or space raises SequenceError in phenogen; the fast tokenizer, which cannot raise, reads <unk>."""
    tok = KmerTokenizer()
    for seq in ("ACGTAC-GTACGT", "ACGTAC1GTACGT", "ACGTAC GTACGT"):
        with pytest.raises(SequenceError, match="position 7"):
            tok.encode_dna(seq)
        ids = fast(seq)["input_ids"]
        assert ids == [1, tok.encode_dna("ACGTAC")[1], tok.unk_token_id, tok.encode_dna("GTACGT")[1], 2]
    # surrounding whitespace: encode_dna refuses it, the slow tokenizer's __call__ and the fast one strip it
    assert fast("  ACGTACG\n")["input_ids"] == tok("  ACGTACG\n")["input_ids"] == tok.encode_dna("ACGTACG")


def test_padding_is_right_with_the_pad_id(fast):
    """Batches pad on the right with <pad> (id 0), as phenogen's collate does."""
    tok = KmerTokenizer()
    seqs = ["ACGTACGTACGTACG", "ACG"]
    batch = fast(seqs, padding=True, return_tensors="pt")
    ids, mask = collate([tok.encode_dna(s) for s in seqs], tok.pad_token_id)
    assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"], mask)
    assert batch["input_ids"][1, -1].item() == 0 and mask[1].tolist() == [1] * 5 + [0] * 2


# ----------------------------------------------------------------------------- the model
def test_auto_model_gives_the_logits_of_load_lm(lm_dir):
    """AutoModelForCausalLM loads the GPT-2; its logits equal phenogen's loaded model's on the same ids."""
    path, original = lm_dir
    auto = AutoModelForCausalLM.from_pretrained(path).eval()
    ours = load_lm(path)
    assert type(auto) is GPT2LMHeadModel and auto.config.vocab_size == len(ours.tokenizer)
    rng = random.Random(3)
    seqs = ["".join(rng.choice("ACGT") for _ in range(n)) for n in (652, 40, 7)]
    batch = AutoTokenizer.from_pretrained(path)(seqs, padding=True, return_tensors="pt")
    with torch.no_grad():
        got = auto(**batch).logits
        want = ours.model(**batch).logits
        first = original.model(**batch).logits
    assert got.shape == (3, 2 + 108 + 4, len(ours.tokenizer))
    assert torch.equal(got, want) and torch.equal(got, first)
    assert got[0, 1:].std(dim=0).max() > 0  # not a constant output


def test_text_generation_pipeline_continues_a_barcode(lm_dir):
    """pipeline("text-generation") continues a barcode with the tokens phenogen's model would pick."""
    path, _ = lm_dir
    pipe = pipeline("text-generation", model=str(path), tokenizer=str(path), device="cpu")
    prompt = "ACGTACGGTACCA"
    specials = list(range(5))
    out = pipe(
        "<bos>" + prompt,
        add_special_tokens=False,
        return_full_text=False,
        max_new_tokens=8,
        do_sample=False,
        suppress_tokens=specials,
    )
    text = out[0]["generated_text"]
    # the same greedy continuation, computed with phenogen's model and tokenizer, without a cache
    ours = load_lm(path)
    ids = ours.tokenizer.encode_dna(prompt)[:-1]  # <bos> + prompt, no <eos>
    new = []
    with torch.no_grad():
        for _ in range(8):
            logits = ours.model(torch.tensor([ids + new])).logits[0, -1]
            logits[specials] = -float("inf")
            new.append(int(logits.argmax()))
    assert text == ours.tokenizer.decode_dna(new)
    assert 8 <= len(text) <= 48 and set(text) <= set("ACGTN")
    full = pipe("<bos>" + prompt, add_special_tokens=False, max_new_tokens=8, do_sample=False,
                suppress_tokens=specials)  # fmt: skip
    assert full[0]["generated_text"] == "<bos>" + prompt + text
    # the tokenizer found from the model directory alone, and a plain prompt (which ends in <eos>)
    plain = pipeline("text-generation", model=str(path), device="cpu")
    assert isinstance(plain(prompt, max_new_tokens=3, do_sample=False)[0]["generated_text"], str)


# ----------------------------------------------------------------------------- phenogen's loaders
def test_new_directory_loads_with_phenogen_and_resaves_the_same(lm_dir, tmp_path):
    """load_lm reads the new directory (tokenizer.json checked); re-saving writes the same tokenizer files."""
    path, _ = lm_dir
    assert (path / FAST_TOKENIZER_FILE).is_file() and check_model_dir(path) == path
    back = load_lm(path)
    assert isinstance(back.tokenizer, KmerTokenizer) and (back.tokenizer.k, back.tokenizer.stride) == (6, 6)
    back.tokenizer.save_pretrained(tmp_path)
    for name in ("tokenizer_config.json", FAST_TOKENIZER_FILE, "kmer_vocab.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((path / name).read_text()), name


def test_old_format_directory_still_loads(lm_dir, tmp_path):
    """A directory written before tokenizer.json (tokenizer_class KmerTokenizer) loads with load_lm."""
    path, original = lm_dir
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / FAST_TOKENIZER_FILE).unlink()
    (old / "tokenizer_config.json").unlink()
    PreTrainedTokenizer.save_pretrained(original.tokenizer, old)  # what save_lm wrote before this change
    config = json.loads((old / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "KmerTokenizer" and not (old / FAST_TOKENIZER_FILE).exists()
    back = load_lm(old)
    seq = "ACGTTGCAAGTRCA"
    assert back.tokenizer.encode_dna(seq) == original.tokenizer.encode_dna(seq)
    for (name, a), b in zip(
        original.model.state_dict().items(), back.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    # saving it again upgrades it: plain transformers then opens it
    back.tokenizer.save_pretrained(old)
    assert AutoTokenizer.from_pretrained(old)(seq)["input_ids"] == back.tokenizer.encode_dna(seq)


def test_overlapping_windows_write_no_tokenizer_json(tmp_path):
    """stride < k has no tokenizers equivalent: no tokenizer.json (a stale one removed), class KmerTokenizer."""
    out = tmp_path / "m"
    KmerTokenizer(k=4).save_pretrained(out)  # a stale tokenizer.json of a non-overlapping save
    assert (out / FAST_TOKENIZER_FILE).is_file()
    lm = tiny_lm(k=4, stride=2)
    save_lm(lm, out)
    assert not (out / FAST_TOKENIZER_FILE).exists()
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "KmerTokenizer"
    back = load_lm(out)
    assert (back.tokenizer.k, back.tokenizer.stride) == (4, 2)
    with pytest.raises(ValueError, match="overlapping"):
        back.tokenizer.fast_tokenizer()
    with pytest.raises((ValueError, OSError)):  # transformers' own error: nothing it can load
        AutoTokenizer.from_pretrained(out)
    KmerTokenizer(k=4).save_pretrained(tmp_path / "k4")
    shutil.copy(tmp_path / "k4" / FAST_TOKENIZER_FILE, out / FAST_TOKENIZER_FILE)  # contradicts the config
    with pytest.raises(CheckpointError, match="tokenizer.json: present, but .* overlapping"):
        load_lm(out)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"model": {"vocab": ', r"tokenizer.json: .*tokenizer.json is not valid JSON"),
        (b"[]", r"tokenizer.json: .*tokenizer.json must hold an object"),
        (b"\xff\xfe", r"tokenizer.json: .*tokenizer.json is not UTF-8"),
        (None, "tokenizer.json: its vocabulary does not match the k=6 vocabulary"),
    ],
)
def test_damaged_tokenizer_json_is_a_checkpoint_error(lm_dir, tmp_path, content, message):
    """A damaged or foreign tokenizer.json is one CheckpointError naming the file, from both loaders."""
    path, _ = lm_dir
    broken = tmp_path / "m"
    shutil.copytree(path, broken)
    if content is None:  # a whole tokenizer.json, of another k
        KmerTokenizer(k=3).save_pretrained(tmp_path / "k3")
        content = (tmp_path / "k3" / FAST_TOKENIZER_FILE).read_bytes()
    (broken / FAST_TOKENIZER_FILE).write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_lm(broken)
    with pytest.raises(CheckpointError, match=message):
        KmerTokenizer.from_pretrained(broken)

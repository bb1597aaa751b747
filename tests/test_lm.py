"""The GPT-2 DNA language model with tiny real components: training + exact resume, sampling, encode, errors."""

import json
import math
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from phenogen.dna.tokenizer import KmerTokenizer
from phenogen.errors import CheckpointError, ConfigError, InputError, SequenceError
from phenogen.lm.config import DnaEvalConfig, LMConfig, SampleConfig
from phenogen.lm.data import SequenceSplits, collate, tokenize_sequences
from phenogen.lm.encode import DnaEncoder, encode
from phenogen.lm.likelihood import heldout_likelihood, token_nll
from phenogen.lm.model import PRESET_SHAPES, build_model, from_gpt2_dir, load_lm, save_lm
from phenogen.lm.sample import filter_and_draw, sample
from phenogen.lm.train import train_lm

torch.set_num_threads(1)  # 2 shared cores: one thread is faster than two fighting


def _toy_splits(seed=0, n_species=8, per_species=3):
    rng = random.Random(seed)
    root = "".join(rng.choice("ACGT") for _ in range(60))

    def mutate(s, rate):
        return "".join(c if rng.random() > rate else rng.choice("ACGT") for c in s)

    train, held, species = [], [], {}
    for sp in range(n_species):
        base = mutate(root, 0.1)
        for i in range(per_species):
            rid = f"s{sp}_{i}"
            seq = mutate(base, 0.02)[: rng.randint(50, 60)]
            (held if sp >= n_species - 2 else train).append((rid, seq))
            species[rid] = f"species_{sp}"
    return SequenceSplits(train, held, "toy", species=species)


TOY_CFG = dict(k=3, n_positions=48, epochs=2, batch_size=4, grad_accum=2, lr=3e-3, seed=0)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One trained toy run shared by the sampling / encoding / evaluation tests."""
    out = tmp_path_factory.mktemp("lm") / "run"
    result = train_lm(_toy_splits(), out, LMConfig(**TOY_CFG), progress=False)
    return out, result


# ----------------------------------------------------------------------------- model
def test_presets_set_special_ids_and_shapes():
    tok = KmerTokenizer(k=3)
    lm = build_model(tok, "tiny", seed=0)
    cfg = lm.model.config
    assert (cfg.n_layer, cfg.n_embd, cfg.n_positions) == (4, 128, 256)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.vocab_size) == (1, 2, 0, len(tok))
    assert PRESET_SHAPES["small"]["n_layer"] == 12 and PRESET_SHAPES["small"]["n_embd"] == 768
    again = build_model(tok, "tiny", seed=0)
    assert torch.equal(lm.model.transformer.wte.weight, again.model.transformer.wte.weight)


def test_save_and_load_round_trip(tmp_path):
    lm = build_model(KmerTokenizer(k=3), "tiny", n_positions=32, seed=1)
    save_lm(lm, tmp_path / "m", epoch=7)
    back = load_lm(tmp_path / "m")
    assert back.meta["epoch"] == 7 and back.tokenizer.k == 3
    for (name, a), b in zip(lm.model.state_dict().items(), back.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    "missing", ["model.safetensors", "kmer_vocab.json", "tokenizer_config.json", "config.json"]
)
def test_model_dir_missing_a_file_is_a_clear_error(tmp_path, missing):
    save_lm(build_model(KmerTokenizer(k=2), "tiny", n_positions=16), tmp_path / "m")
    (tmp_path / "m" / missing).unlink()
    with pytest.raises(CheckpointError, match=missing):
        load_lm(tmp_path / "m")


def test_missing_model_dir(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_lm(tmp_path / "nope")


def test_init_from_local_gpt2_resizes_embeddings(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2)
    ).save_pretrained(tmp_path / "gpt2")
    tok = KmerTokenizer(k=3)
    lm = from_gpt2_dir(tmp_path / "gpt2", tok)
    assert lm.model.get_input_embeddings().weight.shape == (len(tok), 32)
    assert lm.model.config.eos_token_id == tok.eos_token_id
    with pytest.raises(CheckpointError, match="config.json"):
        from_gpt2_dir(tmp_path / "empty", tok)


# ----------------------------------------------------------------------------- training
def test_training_writes_artifacts_and_learns(toy_run):
    out, result = toy_run
    assert result.finished and result.epochs_done == 2
    for rel in (
        "config.json",
        "losses.json",
        "loss_curve.png",
        "model/model.safetensors",
        "state/optimizer.pt",
    ):
        assert (out / rel).is_file(), rel
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-001", "epoch-002"]
    history = json.loads((out / "losses.json").read_text())
    assert len(history["epochs"]) == 2
    assert history["steps"][-1]["loss"] < history["steps"][0]["loss"] - 0.5
    assert math.isfinite(history["epochs"][-1]["heldout_bits_per_base"])
    meta = json.loads((out / "model" / "phenogen_lm.json").read_text())
    tok = KmerTokenizer(k=3)
    longest = max(len(tok.encode_dna(seq)) - 2 for _, seq in _toy_splits().train)
    assert meta["complete"] is True and meta["max_train_tokens"] == longest


def test_killed_and_resumed_run_equals_uninterrupted_run(toy_run, tmp_path):
    """Stop mid-epoch (inside gradient accumulation bookkeeping), resume: bit-identical final weights."""
    out, full = toy_run
    part = train_lm(_toy_splits(), tmp_path / "b", LMConfig(**TOY_CFG), stop_after_steps=3, progress=False)
    assert not part.finished and part.global_step == 3
    assert json.loads((tmp_path / "b" / "model" / "phenogen_lm.json").read_text())["complete"] is False
    resumed = train_lm(_toy_splits(), tmp_path / "b", LMConfig(**TOY_CFG), resume=True, progress=False)
    assert resumed.finished and resumed.global_step == full.global_step
    a = load_file(str(out / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s["loss"] for s in resumed.history["steps"]] == [s["loss"] for s in full.history["steps"]]


def test_trainings_with_different_precisions_run_in_one_process(tmp_path):
    """accelerate keeps the precision process-wide; phenogen (the demo, a sweep) trains several models in
    one process, each with its own ``mixed_precision``: the second must not fail."""
    cfg = {**TOY_CFG, "epochs": 1}
    first = train_lm(_toy_splits(), tmp_path / "a", LMConfig(**cfg, mixed_precision="no"), progress=False)
    second = train_lm(_toy_splits(), tmp_path / "b", LMConfig(**cfg, mixed_precision="bf16"), progress=False)
    again = train_lm(_toy_splits(), tmp_path / "c", LMConfig(**cfg, mixed_precision="no"), progress=False)
    assert first.finished and second.finished and again.finished
    a, c = (load_file(str(tmp_path / d / "model" / "model.safetensors")) for d in "ac")
    assert all(torch.equal(a[k], c[k]) for k in a)  # back to full precision: the same run exactly


def test_resume_guards(toy_run, tmp_path):
    out, _ = toy_run
    with pytest.raises(ConfigError, match="--resume"):
        train_lm(_toy_splits(), out, LMConfig(**TOY_CFG), progress=False)
    with pytest.raises(ConfigError, match="lr"):
        train_lm(_toy_splits(), out, LMConfig(**{**TOY_CFG, "lr": 1e-4}), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_lm(_toy_splits(), tmp_path / "fresh", LMConfig(**TOY_CFG), resume=True, progress=False)


def test_max_minutes_stops_after_one_step_and_checkpoints(tmp_path):
    cfg = LMConfig(**{**TOY_CFG, "max_minutes": 1e-9})
    result = train_lm(_toy_splits(), tmp_path / "r", cfg, progress=False)
    assert not result.finished and result.global_step == 1 and "max_minutes" in result.stop_reason
    assert (tmp_path / "r" / "state" / "trainer_state.json").is_file()
    assert (tmp_path / "r" / "model" / "model.safetensors").is_file()


def test_bad_training_inputs(tmp_path):
    splits = _toy_splits()
    too_long = SequenceSplits(splits.train + [("long", "ACGT" * 60)], splits.heldout, "toy")
    with pytest.raises(SequenceError, match="long.*positions"):
        train_lm(too_long, tmp_path / "a", LMConfig(**TOY_CFG), progress=False)
    all_n = SequenceSplits(splits.train + [("nn", "N" * 30)], splits.heldout, "toy")
    with pytest.raises(SequenceError, match="nn.*no A/C/G/T"):
        train_lm(all_n, tmp_path / "b", LMConfig(**TOY_CFG), progress=False)
    empty = SequenceSplits(splits.train + [("e", "")], splits.heldout, "toy")
    with pytest.raises(SequenceError, match="empty"):
        train_lm(empty, tmp_path / "c", LMConfig(**TOY_CFG), progress=False)


@pytest.mark.parametrize(
    "kwargs", [{"epochs": 0}, {"stride": 7}, {"lr": 0}, {"dropout": 1.0}, {"warmup_fraction": 1.0}]
)
def test_lm_config_validation(kwargs):
    with pytest.raises(ValueError):
        LMConfig(**kwargs)


# ----------------------------------------------------------------------------- likelihood
def test_bits_per_base_matches_manual_sum():
    tok = KmerTokenizer(k=3)
    lm = build_model(tok, "tiny", n_positions=32, seed=0)
    seqs = ["ACGTACGTAC", "GGGTTTAC", "ACGNNACGT"]
    ids = tokenize_sequences(tok, list(zip("abc", seqs, strict=True)), 32)
    res = heldout_likelihood(lm.model, ids, seqs, tok.pad_token_id)
    x, m = collate(ids[:2], tok.pad_token_id)
    with torch.no_grad():
        nll = token_nll(lm.model.eval(), x, m)
    bits = sum(float(nll[i, : len(ids[i]) - 2].sum()) for i in range(2)) / math.log(2)
    assert res.bits_per_base == pytest.approx(bits / (10 + 8), rel=1e-6)
    assert res.n_excluded_ambiguous == 1 and res.n_bases == 18
    assert res.bits_per_base_with_eos > res.bits_per_base


# ----------------------------------------------------------------------------- sampling
def test_filter_and_draw_top_p_keeps_the_crossing_token():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 1e-9]]))
    banned = torch.tensor([3])
    picks = {
        int(filter_and_draw(logits, 1.0, 0, 0.6, torch.tensor([u]), banned)) for u in (0.0, 0.5, 0.7, 0.999)
    }
    assert picks == {0, 1}
    greedy = {int(filter_and_draw(logits, 1.0, 1, 1.0, torch.tensor([u]), banned)) for u in (0.0, 0.999)}
    assert greedy == {0}
    hot = {int(filter_and_draw(logits, 5.0, 0, 1.0, torch.tensor([u]), banned)) for u in (0.0, 0.6, 0.999)}
    assert hot == {0, 1, 2}


def test_kv_cache_and_naive_loop_give_identical_samples():
    lm = build_model(KmerTokenizer(k=3), "tiny", n_positions=48, seed=3)
    lm.model.double()  # exact agreement: no float ties between the two computation orders
    cfg = SampleConfig(n=5, batch_size=3, max_tokens=30, top_p=0.9, seed=11, schedule="rise_fall")
    kv = sample(lm, cfg)
    naive = sample(lm, SampleConfig(**{**cfg.__dict__, "mode": "naive"}))
    assert kv.sequences == naive.sequences and kv.ended == naive.ended


def test_sampling_is_seeded_and_respects_limits(toy_run):
    out, _ = toy_run
    lm = load_lm(out)
    cfg = SampleConfig(n=6, batch_size=4, seed=5)
    a, b = sample(lm, cfg), sample(lm, cfg)
    assert a.sequences == b.sequences
    assert sample(lm, SampleConfig(n=6, batch_size=4, seed=6)).sequences != a.sequences
    assert a.max_tokens == math.ceil(1.05 * lm.meta["max_train_tokens"]) + 1  # longest + 5 % + <eos>
    assert all(s and set(s) <= set("ACGT") for s in a.sequences)  # never <unk>, never empty
    assert all(n <= a.max_tokens for n in a.n_tokens)
    short = sample(lm, SampleConfig(n=3, max_tokens=4, seed=5))
    assert all(len(s) <= 4 * 3 for s in short.sequences) and short.n_truncated >= 0
    with pytest.raises(ConfigError, match="exceeds"):
        sample(lm, SampleConfig(n=1, max_tokens=500))


def test_temperature_schedule_values():
    const = SampleConfig(temperature=0.7)
    assert const.temperatures(5) == [0.7] * 5
    rf = SampleConfig(
        schedule="rise_fall", t_start=0.5, t_peak=1.5, t_end=1.0, rise_end=0.25, fall_start=0.75
    )
    t = rf.temperatures(100)
    assert t[0] == pytest.approx(0.5)
    assert t[12] == pytest.approx(0.5 + 1.0 * 12 / 25)
    assert t[25] == pytest.approx(1.5) and t[50] == pytest.approx(1.5) and t[75] == pytest.approx(1.5)
    assert t[99] == pytest.approx(1.5 - 0.5 * 24 / 25)
    assert rf.temperature_at(200, 100) == pytest.approx(1.0)  # clamped beyond max_tokens
    with pytest.raises(ValueError):
        SampleConfig(rise_end=0.8, fall_start=0.2)
    with pytest.raises(ValueError):
        SampleConfig(top_p=0.0)


# ----------------------------------------------------------------------------- encode
def test_encode_shapes_mask_padding_and_layers(toy_run):
    out, _ = toy_run
    seqs = ["ACGTACGTACGT", "ACGTA", "ACGTACGTACGT"]
    hidden, mask = encode(out / "model", seqs)
    assert hidden.shape == (3, 6, 128) and hidden.dtype == torch.float32
    assert mask.tolist()[1] == [1, 1, 1, 1, 1, 0]  # <bos> ACG T A <eos>
    assert hidden[1, 5:].abs().sum() == 0
    assert torch.equal(hidden[0], hidden[2])
    emb, _ = encode(out / "model", seqs[:1], layer=0)
    lm = load_lm(out / "model")
    ids = torch.tensor([lm.tokenizer.encode_dna(seqs[0])])
    want = lm.model.transformer.wte(ids) + lm.model.transformer.wpe(torch.arange(ids.shape[1]))
    assert torch.allclose(emb, want, atol=1e-6)
    with pytest.raises(InputError, match="layer"):
        encode(out / "model", seqs, layer=9)


def test_encode_caches_in_memory_and_on_disk(toy_run, tmp_path):
    out, _ = toy_run
    enc = DnaEncoder(out / "model", cache_dir=tmp_path / "cache")
    first, _ = enc(["ACGTACGTA", "GGGCCCAAT"])
    second, _ = enc(["GGGCCCAAT", "ACGTACGTA"])
    assert enc.misses == 2 and enc.hits == 2
    assert torch.equal(first[0], second[1])
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 2
    fresh = DnaEncoder(out / "model", cache_dir=tmp_path / "cache")
    third, _ = fresh(["ACGTACGTA"])
    assert fresh.hits == 1 and fresh.misses == 0 and torch.equal(third[0], first[0])
    other = DnaEncoder(load_lm(out / "checkpoints" / "epoch-001"), cache_dir=tmp_path / "cache")
    assert other.fingerprint != fresh.fingerprint


@pytest.mark.parametrize(
    "seqs,err,msg",
    [
        ([""], SequenceError, "empty"),
        (["NNNNNN"], SequenceError, "no A/C/G/T"),
        (["ACGT" * 60], SequenceError, "positions"),
        ([], InputError, "no sequences"),
        ("ACGT", InputError, "not one string"),
    ],
)
def test_encode_bad_inputs(toy_run, seqs, err, msg):
    out, _ = toy_run
    with pytest.raises(err, match=msg):
        encode(out / "model", seqs)


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_with_checkpoint_selection(toy_run, tmp_path):
    from phenogen.dna.seqio import write_fasta
    from phenogen.lm.evaluate import evaluate_lm

    out, _ = toy_run
    splits = _toy_splits()
    fasta = tmp_path / "toy.fasta"
    pairs = splits.train + splits.heldout
    write_fasta(fasta, pairs)
    # evaluate on a dataset directory with the same split
    from phenogen.data.dataset import Record, write_dataset

    held = {rid for rid, _ in splits.heldout}
    recs = [
        Record(rid, splits.species[rid], rid, "heldout" if rid in held else "train", "living", seq)
        for rid, seq in pairs
    ]
    write_dataset(tmp_path / "ds", recs, {"source": "toy"})
    ev = DnaEvalConfig(n_samples=8, select_n=6, natural_max=10, candidates=4, markov_orders=[1, 2])
    report = evaluate_lm(out, tmp_path / "ds", tmp_path / "eval", SampleConfig(), ev, select_checkpoints=True)
    sel = json.loads((tmp_path / "eval" / "selection.json").read_text())
    assert sel["selected_epoch"] in (1, 2) and len(sel["epochs"]) == 2
    assert report["model"].endswith(f"epoch-{sel['selected_epoch']:03d}")
    assert set(report["likelihood"]["markov_heldout_bits_per_base"]) == {"1", "2", "5"}
    assert report["samples"]["n_samples"] == 8
    for name in (
        "metrics.json",
        "identity_by_epoch.png",
        "sample_report.png",
        "bits_per_base.png",
        "samples.fasta",
    ):
        assert (tmp_path / "eval" / name).is_file(), name
    shutil.rmtree(tmp_path / "eval")


# ----------------------------------------------------------------------------- commands
def test_train_and_sample_commands_on_a_fasta(tmp_path, capsys):
    from phenogen.cli import main
    from phenogen.dna.seqio import read_fasta, write_fasta

    splits = _toy_splits()
    fasta = tmp_path / "toy.fasta"
    write_fasta(fasta, [(rid, seq) for rid, seq in splits.train + splits.heldout])
    sets = ["lm.k=3", "lm.n_positions=48", "lm.epochs=1", "lm.batch_size=8"]
    code = main(["train-lm", "--data", str(fasta), "--out", str(tmp_path / "run"), "--no-progress"]
                + [a for s in sets for a in ("--set", s)])  # fmt: skip
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lm"]["k"] == 3 and saved["data_summary"]["n_heldout"] >= 1
    code = main(
        ["sample-dna", "--model", str(tmp_path / "run"), "--n", "4", "--out", str(tmp_path / "s.fasta")]
    )
    assert code == 0
    assert len(read_fasta(tmp_path / "s.fasta").records) == 4
    assert json.loads((tmp_path / "s.config.json").read_text())["sample"]["n"] == 4
    code = main(
        ["sample-dna", "--model", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "x.fa")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_null_embedding_is_bos_eos(toy_run):
    out, _ = toy_run
    enc = DnaEncoder(out / "model")
    hidden, mask = enc.null_embedding()
    assert hidden.shape == (1, 2, enc.hidden_size) and mask.tolist() == [[1, 1]]
    lm = enc.lm
    with torch.no_grad():
        want = lm.model(torch.tensor([[1, 2]], device=lm.device), output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(hidden.cpu(), want.cpu(), atol=1e-6)

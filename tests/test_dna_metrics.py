"""Sample statistics: identity definition, fast nearest identity, natural range, stops, novelty."""

import random

import numpy as np
import pytest

from phenogen.dna import metrics as M


def _mutate(rng, seq, rate):
    return "".join(c if rng.random() > rate else rng.choice("ACGT".replace(c, "")) for c in seq)


def test_identity_definition():
    assert M.identity("ACGTACGTAC", "ACGTACGTAC") == 1.0
    assert M.identity("ACGTACGTAC", "ACGTTCGTAC") == pytest.approx(0.9)
    assert M.identity("ACGTACGTAC", "GGGACGTACGTACTT") == pytest.approx(1.0)  # overhangs are free
    assert M.identity("", "ACGT") == 0.0
    assert M.identity("ACGTNCGTAC", "ACGTACGTAC") == pytest.approx(0.9)  # N is a mismatch


def test_identity_counts_an_internal_gap():
    a = "ACGTTGCAACGTGGCATTGCAGTCAGT"
    b = a[:12] + a[15:]  # 3-base deletion
    assert M.identity(a, b) == pytest.approx(24 / 27)


def test_kmer_profiles_are_unit_vectors_and_skip_n_windows():
    prof = M.kmer_profiles(["ACGTACGT", "NNNNNNNN", "ACGTNACGT"], k=3)
    assert prof.shape == (3, 64)
    assert np.linalg.norm(prof[0]) == pytest.approx(1.0)
    assert not prof[1].any()
    assert prof[2].sum() > 0


def test_nearest_identity_prefilter_agrees_with_brute_force():
    rng = random.Random(0)
    roots = ["".join(rng.choice("ACGT") for _ in range(120)) for _ in range(4)]
    refs = [_mutate(rng, roots[i % 4], 0.08) for i in range(24)]
    queries = [_mutate(rng, roots[i % 4], 0.05) for i in range(8)]
    fast = M.nearest_identity(queries, refs, candidates=4)
    brute = np.array([max(M.identity(q, r) for r in refs) for q in queries])
    assert np.allclose(fast.identity, brute)
    assert all(
        M.identity(q, refs[j]) == pytest.approx(v)
        for q, j, v in zip(queries, fast.index, fast.identity, strict=True)
    )


def test_group_exclusion_and_exact_match_shortcut():
    refs = ["ACGTACGTACGTAAAC", "ACGTACGTACGTAAAC", "TTTTGGGGCCCCAAAA"]
    res = M.nearest_identity(["ACGTACGTACGTAAAC"], refs, candidates=3)
    assert res.identity[0] == 1.0 and res.index[0] == 0
    res = M.nearest_identity(["ACGTACGTACGTAAAC"], refs, 3, query_groups=["a"], ref_groups=["a", "a", "b"])
    assert res.index[0] == 2 and res.identity[0] < 0.6


def test_natural_identity_excludes_own_species():
    rng = random.Random(1)
    root = "".join(rng.choice("ACGT") for _ in range(150))
    root_b = _mutate(rng, root, 0.15)
    sp_a = [_mutate(rng, root, 0.01) for _ in range(3)]
    sp_b = [_mutate(rng, root_b, 0.01) for _ in range(3)]
    train, species = sp_a + sp_b, ["a"] * 3 + ["b"] * 3
    natural = M.natural_identity(train, species, max_queries=6)
    within = M.natural_identity(train, None, max_queries=6)
    assert natural.max() < 0.95 < within.min()


def test_novelty_duplicates_and_gc():
    assert M.novelty(["AAA", "CCC", "GGG", "AAA"], ["AAA"]) == 0.5
    assert M.n_duplicates(["AAA", "CCC", "AAA", "AAA"]) == 2
    assert M.gc_content("GGCCAT") == pytest.approx(4 / 6)
    assert M.gc_content("GCNN") == 1.0
    assert np.isnan(M.gc_content("NNN"))


def test_best_frame_and_stop_free_share():
    # TAA / AGA are stops under table 2; put them in frames 0 and 2 only
    seqs = ["TAAGCCGCCGCCGCC", "CCAGAGCCGCCGCCGCC", "TAAGCCTAAGCC"]
    assert M.best_frame(seqs) == 1
    assert M.stop_free_share(seqs, frame=1) == 1.0
    assert M.stop_free_share(["ATGTGAGCCTAA"], frame=0) == 1.0  # TGA is Trp, terminal TAA ignored


def test_summarize_reports_ranges_and_flags():
    rng = random.Random(2)
    root = "".join(rng.choice("ACGT") for _ in range(150))
    train = [_mutate(rng, root, 0.06) for _ in range(12)]
    species = [f"s{i}" for i in range(12)]
    novel = [_mutate(rng, root, 0.06) for _ in range(6)]
    report, arrays = M.summarize(novel, train, species, heldout=novel[:2], candidates=4, natural_max=12)
    assert report["novelty"] == 1.0 and report["n_duplicates"] == 0
    lo, hi = report["natural_range"]
    assert lo <= report["natural_identity"]["median"] <= hi
    assert report["median_in_natural_range"] is True
    copies, _ = M.summarize(train[:6], train, species, candidates=4, natural_max=12)
    assert copies["novelty"] == 0.0 and copies["nearest_identity"]["median"] == 1.0
    assert copies["median_in_natural_range"] is False
    assert set(arrays) >= {"sample_identity", "natural_identity", "heldout_identity", "sample_gc"}

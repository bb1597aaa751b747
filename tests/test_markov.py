"""The order-k Markov baseline: exact smoothed probabilities, back-off, N handling, sampling."""

import math

import numpy as np
import pytest

from phenogen.dna.markov import MarkovChain, encode_bases
from phenogen.errors import InputError


def test_encode_bases_maps_ambiguity_to_minus_one():
    assert encode_bases("ACGTNrU").tolist() == [0, 1, 2, 3, -1, -1, 3]


def test_probabilities_match_hand_computation():
    """Order 1 on 'AAC' with alpha=1: p(A)=(2+1)/(3+4) at the start, p(C|A)=(1+1)/(2+4)."""
    mc = MarkovChain(order=1, alpha=1.0).fit(["AAC"])
    lp = mc.log2_probs("AC")
    assert lp[0] == pytest.approx(math.log2(3 / 7))
    assert lp[1] == pytest.approx(math.log2(2 / 6))


def test_uniform_composition_costs_two_bits_at_order_zero():
    mc = MarkovChain(order=0).fit(["ACGT" * 25])
    assert mc.bits_per_base(["TTGCAAGC"]) == pytest.approx(2.0)


def test_higher_order_learns_a_periodic_sequence():
    train = ["ACGGT" * 40] * 3
    low = MarkovChain(order=0, alpha=0.01).fit(train).bits_per_base(["ACGGT" * 10])
    high = MarkovChain(order=3, alpha=0.01).fit(train).bits_per_base(["ACGGT" * 10])
    assert high < 0.2 < low


def test_ambiguous_bases_are_skipped_and_restart_the_context():
    mc = MarkovChain(order=2, alpha=0.5).fit(["ACGTACGTAC"])
    lp = mc.log2_probs("ACNGT")
    assert len(lp) == 4  # N is not predicted
    # G right after N is scored with the order-0 model, T with order 1 (context G)
    assert lp[2] == pytest.approx(mc.log2_probs("G")[0])
    assert np.all(np.isfinite(lp))


def test_unseen_context_is_finite_thanks_to_smoothing():
    mc = MarkovChain(order=3, alpha=0.5).fit(["AAAAAAAAAA"])
    assert math.isfinite(mc.bits_per_base(["CGTCGTCG"]))


def test_samples_take_training_lengths_and_are_seeded():
    mc = MarkovChain(order=2).fit(["ACGTAC", "ACGTACGTAC"])
    a, b = mc.sample(20, seed=3), mc.sample(20, seed=3)
    assert a == b
    assert {len(s) for s in a} <= {6, 10}
    assert all(set(s) <= set("ACGT") for s in a)
    assert mc.sample(20, seed=4) != a


def test_low_alpha_sampling_follows_a_deterministic_chain():
    mc = MarkovChain(order=2, alpha=1e-6).fit(["ACGACGACGACGACG"] * 4)
    s = mc.sample(1, seed=0, lengths=[30])[0]
    # once two bases are drawn the chain is deterministic: every 3-periodic continuation
    assert all(s[i] == s[i - 3] for i in range(5, 30))


def test_errors():
    with pytest.raises(ValueError):
        MarkovChain(order=-1)
    with pytest.raises(ValueError):
        MarkovChain(alpha=0)
    with pytest.raises(InputError, match="not fitted"):
        MarkovChain(2).bits_per_base(["ACGT"])
    with pytest.raises(InputError):
        MarkovChain(2).fit([])

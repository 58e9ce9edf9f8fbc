"""The embedded (offline) pair set of the matching experiment."""

import numpy as np

from logitkit.experiments.matching import PAIR_KINDS, embedded_pairs
from logitkit.matching import adversarial_mask, similar_labels


def test_embedded_pairs_are_split_deterministic_and_in_range():
    splits = embedded_pairs(seed=3, n_pairs=100)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [60, 20, 20]
    again = embedded_pairs(seed=3, n_pairs=100)
    for name in splits:
        assert splits[name].pairs == again[name].pairs
        np.testing.assert_array_equal(splits[name].scores, again[name].scores)
    low = min(lo for lo, _ in PAIR_KINDS.values())
    high = max(hi for _, hi in PAIR_KINDS.values())
    every = np.concatenate([pairs.scores for pairs in splits.values()])
    assert low <= every.min() and every.max() <= high
    assert 0.2 < similar_labels(every).mean() < 0.6


def test_embedded_pairs_contain_adversarial_pairs_of_both_kinds():
    pairs = embedded_pairs(seed=0)["train"]
    mask = adversarial_mask(pairs)
    similar = pairs.scores >= 3
    assert (mask & similar).any() and (mask & ~similar).any()
    assert all(a.endswith(".") and b.endswith(".") for a, b in pairs.pairs)

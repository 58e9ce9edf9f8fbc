"""The audit experiment's sampled verdict: the bound it reads and the quotes of its claims."""

import pytest

from logitkit.experiments import POSTS
from logitkit.experiments import audit as experiment


@pytest.mark.parametrize("audited", [500, 5000, 49152])
def test_the_sampled_bound_with_no_hit_is_the_rule_of_the_binomial_zero(audited):
    # P(0 hits in n | fraction f) = (1 - f)^n = 0.05  <=>  f = 1 - 0.05^(1/n)
    expected = 1 - 0.05 ** (1 / audited)
    assert experiment._upper_bound(0, audited, whole=False) == pytest.approx(expected, abs=2e-6)


def test_the_sampled_bound_covers_the_count_and_a_whole_vocabulary_is_exact():
    # naive one-sided Clopper-Pearson: the largest f with P(X <= k | n, f) >= 0.05, by bisection
    def naive(k, n):
        from math import comb

        low, high = k / n, 1.0
        for _ in range(60):
            f = (low + high) / 2
            tail = sum(comb(n, i) * f**i * (1 - f) ** (n - i) for i in range(k + 1))
            low, high = (f, high) if tail >= 0.05 else (low, f)
        return low

    for k, n in [(1, 200), (3, 400), (10, 1000)]:
        assert experiment._upper_bound(k, n, whole=False) == pytest.approx(naive(k, n), abs=2e-6)
        assert experiment._upper_bound(k, n, whole=False) > k / n
    assert experiment._upper_bound(3, 400, whole=True) == 0.0075


def test_every_claim_quotes_the_post():
    assert set(experiment.QUOTES) == {"exists", "norms", "bias", "rare"}
    assert all(len(q) > 60 for q in experiment.QUOTES.values())
    assert POSTS["audit"] == "https://kexue.fm/archives/9046"

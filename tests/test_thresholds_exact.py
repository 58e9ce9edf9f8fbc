"""Zero weights, the exact program for any number of classes, and the bound on the metric.

References: ``brute_force_optimum`` (exact fractions, every support; threshold_references.py) and
the seed's Powell recipe (``method="powell"``, tested verbatim in test_thresholds_search.py).
"""

import numpy as np
import pytest

from logitkit.thresholds import apply_class_weights, fit_class_weights, tune_class_weights
from tests.threshold_references import brute_force_optimum, integer_problem, naive_metric

# the minimal case: three rows need class 1 switched off (products [0, 0, 0] -> class 0)
ZERO_CASE = (np.array([[0, 1, 0]] * 3 + [[.2, .7, .1], [.1, .2, .7]], dtype=float),
             np.array([0, 0, 0, 1, 2]))


@pytest.mark.parametrize("method", ["auto", "exact", "coordinate"])
def test_a_zero_weight_is_searched(method):
    probs, labels = ZERO_CASE
    fit = tune_class_weights(probs, labels, method=method)
    assert fit.metric == pytest.approx(0.8)
    assert naive_metric(probs, labels, fit.weights, "accuracy") == pytest.approx(0.8)
    assert fit.weights[1] == 0 and fit.weights.max() == 1
    assert np.mean(apply_class_weights(probs, fit.weights) == labels) == pytest.approx(0.8)
    if method != "coordinate":
        assert fit.proven_optimal and fit.bound == pytest.approx(0.8)


def test_a_zero_weight_is_searched_by_coordinate_ascent_on_many_rows():
    # 4 classes, 600 rows: too many for the program in "auto"; the ascent must switch class 1 off
    rng = np.random.default_rng(0)
    alone = np.tile([0.0, 1.0, 0.0, 0.0], (300, 1))  # labelled 0: right only with w_1 = 0
    rest = rng.dirichlet(np.ones(4), size=300)
    probs = np.vstack([alone, rest])
    labels = np.concatenate([np.zeros(300, dtype=int), rest.argmax(axis=1)])
    fit = tune_class_weights(probs, labels)
    assert fit.method == "coordinate"
    assert fit.weights[1] == 0
    assert fit.metric >= naive_metric(probs, labels, np.ones(4), "accuracy") + 0.3


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("n", [4, pytest.param(5, marks=pytest.mark.slow)])
def test_exact_equals_the_brute_force_optimum_for_more_classes(n, metric):
    for seed in range(12):
        high = 4 if seed % 2 else 1000  # ties and zeros, or generic
        scores, labels = integer_problem(300 + seed, n, n + 3, high)
        best = brute_force_optimum(scores, labels, metric)
        for method in ("exact", "auto"):
            fit = tune_class_weights(scores.astype(float), labels, metric=metric, method=method)
            reached = naive_metric(scores, labels, fit.weights, metric)
            assert reached == pytest.approx(best, abs=1e-12), (seed, method)
            assert fit.metric == pytest.approx(reached, abs=1e-12)
            assert fit.proven_optimal and fit.gap == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_never_below_the_seeds_powell(metric):
    # small random problems, 3 to 8 classes, zeros and ties included: "auto" is exact on them
    rng = np.random.default_rng(11)
    for trial in range(24):
        n = int(rng.integers(3, 9))
        size = int(rng.integers(n + 2, (120 if metric == "accuracy" else 80) // n + 1))
        logits = rng.normal(0, 2.0, size=(size, n))
        labels = rng.integers(0, n, size)
        labels[:2] = [0, 1]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        if trial % 3 == 1:
            probs[rng.random(probs.shape) < 0.3] = 0
        if trial % 3 == 2:
            probs = np.round(probs, 1)
        powell = fit_class_weights(probs, labels, metric=metric, method="powell")
        ours = tune_class_weights(probs, labels, metric=metric)
        if metric == "accuracy":  # the program finishes on all of these (macro-F1: not always)
            assert ours.proven_optimal, trial
        assert naive_metric(probs, labels, ours.weights, metric) >= naive_metric(
            probs, labels, powell, metric) - 1e-12, trial


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_the_bound_is_above_every_weight_vector_and_the_gap_is_reported(metric):
    # 4 classes, 9 rows: the bound must be >= the brute-force optimum whatever the method
    for seed in range(8):
        scores, labels = integer_problem(700 + seed, 4, 9, 1000)
        best = brute_force_optimum(scores, labels, metric)
        probs = scores.astype(float)
        for method in ("auto", "exact", "coordinate", "powell"):
            fit = tune_class_weights(probs, labels, metric=metric, method=method)
            assert fit.bound >= best - 1e-9, (seed, method)
            assert fit.gap == pytest.approx(fit.bound - fit.metric)
            assert fit.gap >= 0
            if fit.proven_optimal:
                assert fit.metric == pytest.approx(best, abs=1e-12)


def test_a_time_limit_keeps_the_best_weights_and_reports_the_bound():
    rng = np.random.default_rng(3)
    n, size = 8, 400
    labels = rng.integers(0, n, size)
    probs = rng.dirichlet(np.ones(n) * 0.5, size=size)
    coordinate = tune_class_weights(probs, labels, method="coordinate")
    cut = tune_class_weights(probs, labels, method="exact", time_limit=0.5)
    assert cut.method == "exact"
    assert cut.metric >= coordinate.metric  # the program starts from nothing: kept the best
    assert cut.bound >= cut.metric
    assert not cut.proven_optimal or cut.gap == pytest.approx(0, abs=1e-9)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_auto_is_exact_for_three_classes_above_a_thousand_rows(metric):
    rng = np.random.default_rng(5)
    size = 1500
    labels = rng.integers(0, 3, size)
    logits = rng.normal(size=(size, 3)) + 1.0 * np.eye(3)[labels] + rng.normal(size=3)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    auto = tune_class_weights(probs, labels, metric=metric)
    exact = tune_class_weights(probs, labels, metric=metric, method="exact")
    assert auto.method == "exact" and auto.proven_optimal
    assert auto.metric == pytest.approx(exact.metric, abs=1e-12)

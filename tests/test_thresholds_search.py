"""fit_threshold and fit_class_weights against naive brute-force references written here."""

import numpy as np
import pytest
from scipy.optimize import minimize

from logitkit.thresholds import apply_class_weights, fit_class_weights, fit_threshold

# ---------------------------------------------------------------- naive references (loops)


def naive_accuracy(labels, preds):
    return sum(int(a == b) for a, b in zip(labels, preds, strict=True)) / len(labels)


def naive_macro_f1(labels, preds, n):
    total = 0.0
    for c in range(n):
        tp = sum(1 for a, b in zip(labels, preds, strict=True) if a == c and b == c)
        predicted = sum(1 for b in preds if b == c)
        actual = sum(1 for a in labels if a == c)
        total += 2 * tp / (predicted + actual) if predicted + actual else 0.0
    return total / n


def naive_binary_f1(labels, preds):
    tp = sum(1 for a, b in zip(labels, preds, strict=True) if a == 1 and b == 1)
    denominator = sum(preds) + sum(labels)
    return 2 * tp / denominator if denominator else 0.0


def naive_predict(probs, weights):
    """argmax_j probs[i, j] * weights[j], ties to the lowest index, with explicit loops."""
    preds = []
    for row in probs:
        best, best_score = 0, row[0] * weights[0]
        for j in range(1, len(row)):
            if row[j] * weights[j] > best_score:
                best, best_score = j, row[j] * weights[j]
        preds.append(best)
    return preds


def naive_metric(probs, labels, weights, metric):
    preds = naive_predict(probs, weights)
    if metric == "accuracy":
        return naive_accuracy(labels, preds)
    return naive_macro_f1(labels, preds, probs.shape[1])


def random_problem(seed, *, n=None, size=None, rounded=False):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6)) if n is None else n
    size = int(rng.integers(n + 5, 40)) if size is None else size
    labels = np.concatenate([np.arange(n), rng.integers(0, n, size - n)])
    probs = rng.dirichlet(np.ones(n), size=size)
    if rounded:  # many tied breakpoints, duplicate rows and zero probabilities
        probs = np.round(probs, 1)
    return probs, labels


# ---------------------------------------------------------------- binary threshold


@pytest.mark.parametrize("metric", ["accuracy", "f1"])
@pytest.mark.parametrize("seed", range(30))
def test_fit_threshold_matches_brute_force(seed, metric):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2, 30))
    scores = np.round(rng.normal(size=size), 1)  # rounding makes ties
    labels = rng.integers(0, 2, size)
    labels[:2] = [0, 1]
    score_fn = naive_accuracy if metric == "accuracy" else naive_binary_f1

    def value(t):
        return score_fn(labels.tolist(), [int(s >= t) for s in scores])

    candidates = sorted(set(scores.tolist())) + [float("inf")]
    best = max(value(c) for c in candidates)
    t = fit_threshold(scores, labels, metric=metric)
    assert value(t) == pytest.approx(best, abs=1e-12)
    assert t not in set(scores.tolist())  # a midpoint, never a score itself


def test_fit_threshold_returns_midpoints_and_extremes():
    assert fit_threshold([0.1, 0.2, 0.3, 0.4], [0, 0, 1, 1]) == pytest.approx(0.25)
    assert fit_threshold([1.0, 2.0, 4.0], [1, 1, 0]) == pytest.approx(0.5)  # all positive
    assert fit_threshold([1.0, 2.0, 4.0], [1, 0, 0]) == pytest.approx(5.0)  # all negative
    assert fit_threshold([1.0, 2.0, 4.0], [0, 1, 1]) == pytest.approx(1.5)
    assert fit_threshold([3.0, 3.0, 5.0], [1, 0, 1]) < 3.0  # tie at 3 must stay together


# ---------------------------------------------------------------- class weights


def interval_candidates(probs, weights, k):
    """One t_k inside each open interval between the breakpoints max_{j!=k} p_ij w_j / p_ik."""
    breaks = set()
    for row in probs:
        if row[k] > 0:
            rival = max(row[j] * weights[j] for j in range(len(row)) if j != k)
            breaks.add(rival / row[k])
    breaks = sorted(breaks)
    points = [(a + b) / 2 for a, b in zip(breaks[:-1], breaks[1:], strict=True)]
    points.append(2 * breaks[-1] + 1.0)
    if breaks[0] > 0:
        points.append(breaks[0] / 2)
    return points


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("seed", range(16))
def test_coordinate_ascent_is_optimal_along_every_coordinate(seed, metric):
    probs, labels = random_problem(seed, rounded=seed % 2 == 1)
    weights = fit_class_weights(probs, labels, metric=metric)
    reached = naive_metric(probs, labels, weights, metric)
    assert reached >= naive_metric(probs, labels, np.ones(probs.shape[1]), metric) - 1e-12
    for k in range(probs.shape[1]):
        for t in interval_candidates(probs, weights, k):
            trial = weights.copy()
            trial[k] = t
            assert naive_metric(probs, labels, trial, metric) <= reached + 1e-12, (k, t)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("seed", range(8))
def test_normalising_the_weights_keeps_exact_ties_and_optimality(seed, metric):
    # rounded probabilities with exact zeros make exactly tied products p_ij w_j; dividing by a
    # weight that is not a power of two used to break such ties and lose optimality
    rng = np.random.default_rng(seed)
    n, size = 5, 40
    labels = np.concatenate([np.arange(n), rng.integers(0, n, size - n)])
    probs = np.round(rng.dirichlet(np.ones(n), size=size), 1)
    probs[np.random.default_rng(seed).random(probs.shape) < 0.3] = 0.0
    weights = fit_class_weights(probs, labels, metric=metric)
    reached = naive_metric(probs, labels, weights, metric)
    for k in range(n):
        for t in interval_candidates(probs, weights, k):
            trial = weights.copy()
            trial[k] = t
            assert naive_metric(probs, labels, trial, metric) <= reached + 1e-12, (k, t)


def test_weights_are_normalised_and_invariant_to_scaling_the_rows():
    probs, labels = random_problem(3, n=4, size=60)
    weights = fit_class_weights(probs, labels)
    assert 1.0 <= weights.max() < 2.0 and np.all(weights > 0)
    assert np.log2(weights / fit_class_weights(probs, labels, max_rounds=100)).std() == 0
    row_scale = 2.0 ** np.random.default_rng(0).integers(-3, 4, size=(probs.shape[0], 1))
    scaled = fit_class_weights(probs * row_scale, labels)  # powers of 2: exact in floats
    np.testing.assert_array_equal(scaled, weights)
    assert np.array_equal(apply_class_weights(probs, weights * 7.5),
                          apply_class_weights(probs, weights))


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_exact_method_beats_powell_on_larger_random_problems(metric):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        n, size = 6, 1500
        labels = rng.choice(n, size=size, p=np.arange(n, 0, -1) / np.arange(n, 0, -1).sum())
        labels[:n] = np.arange(n)
        logits = rng.normal(size=(size, n)) + 1.5 * np.eye(n)[labels] + rng.normal(size=n)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        exact = fit_class_weights(probs, labels, metric=metric)
        powell = fit_class_weights(probs, labels, metric=metric, method="powell")
        assert naive_metric(probs, labels, exact, metric) >= naive_metric(
            probs, labels, powell, metric)


def test_powell_baseline_reproduces_the_original_procedure():
    """The original: scipy Powell on -accuracy(argmax(p * tanh(x))), x starting at 1."""
    probs, labels = random_problem(7, n=4, size=80)

    def loss(x):
        return -naive_accuracy(labels.tolist(), naive_predict(probs, np.tanh(x)))

    expected = np.tanh(minimize(loss, np.ones(4), method="Powell").x)
    np.testing.assert_allclose(fit_class_weights(probs, labels, method="powell"), expected)


def test_apply_class_weights_uses_the_lowest_index_on_ties():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.0, 0.0, 0.0]])
    assert apply_class_weights(probs, np.ones(3)).tolist() == [0, 1, 0]
    assert apply_class_weights(probs, [1.0, 2.0, 2.0]).tolist() == naive_predict(probs, [1, 2, 2])


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([[0.5, np.nan], [0.5, 0.5]], [0, 1], "NaN or infinite"),
        ([[0.5, -0.1], [0.5, 0.5]], [0, 1], "non-negative"),
        ([0.5, 0.5], [0, 1], "2-D"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, 2], r"in \[0, 2\)"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, -1], r"in \[0, 2\)"),
        ([[0.3, 0.3, 0.4], [0.5, 0.2, 0.3]], [0, 2], r"class\(es\) \[1\]"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, 1, 1], "3 entries"),
        ([[0.5, 0.5], [0.5, 0.5]], [0.0, 0.5], "whole numbers"),
        (np.zeros((0, 2)), np.zeros(0, dtype=int), "no rows"),
        ([[1.0], [1.0]], [0, 0], "at least 2"),
    ],
)
def test_fit_class_weights_rejects_bad_input(probs, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_class_weights(np.asarray(probs, dtype=float), labels)


def test_fit_rejects_bad_options():
    probs, labels = random_problem(0, n=3, size=10)
    with pytest.raises(ValueError, match="metric"):
        fit_class_weights(probs, labels, metric="f2")
    with pytest.raises(ValueError, match="method"):
        fit_class_weights(probs, labels, method="adam")
    with pytest.raises(TypeError, match="integer class ids"):
        fit_class_weights(probs, np.array(["a"] * 10))


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, np.inf], [0, 1], "NaN or infinite"),
        ([0.1, 0.2], [0, 2], "0 or 1"),
        ([0.1, 0.2], [1, 1], "both classes"),
        ([[0.1, 0.2]], [0, 1], "1-D"),
        ([], [], "empty"),
    ],
)
def test_fit_threshold_rejects_bad_input(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_threshold(np.asarray(scores, dtype=float), np.asarray(labels, dtype=int))

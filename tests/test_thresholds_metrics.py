"""Metrics beyond accuracy and macro-F1: balanced accuracy, the F1 of one class, cost matrices and
any function, each against a naive reference written here and a brute force over every support."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from logitkit.thresholds import fit_class_weights, tune_class_weights
from tests.threshold_references import brute_force_optimum, integer_problem, naive_predict


def naive_balanced_accuracy(labels, preds):
    recalls = []
    for c in sorted(set(labels)):
        rows = [i for i, y in enumerate(labels) if y == c]
        recalls.append(sum(preds[i] == c for i in rows) / len(rows))
    return sum(recalls) / len(recalls)


def naive_class_f1(c):
    def f1(labels, preds):
        tp = sum(1 for y, p in zip(labels, preds, strict=True) if y == p == c)
        predicted = sum(1 for p in preds if p == c)
        actual = sum(1 for y in labels if y == c)
        return 2 * tp / (predicted + actual) if predicted + actual else 0.0
    return f1


def naive_minus_cost(cost):
    def minus_cost(labels, preds):
        return -sum(cost[y][p] for y, p in zip(labels, preds, strict=True)) / len(labels)
    return minus_cost


COST = np.array([[0.0, 1.0, 4.0, 2.0], [3.0, 0.0, 1.0, 2.0], [1.0, 5.0, 0.0, 1.0],
                 [2.0, 2.0, 2.0, 0.0]])


def cases(n):
    """(metric argument, pos_label, naive reference) for n classes."""
    cost = COST[:n, :n]
    return [("balanced_accuracy", None, naive_balanced_accuracy),
            ("f1", 1, naive_class_f1(1)),
            (cost, None, naive_minus_cost(cost.tolist()))]


@pytest.mark.parametrize("n", [3, 4])
@pytest.mark.parametrize("case", range(3))
def test_exact_equals_the_brute_force_optimum_for_every_built_in_metric(n, case):
    metric, pos_label, reference = cases(n)[case]
    for seed in range(10):
        high = 4 if seed % 2 else 1000
        scores, labels = integer_problem(900 + seed, n, n + 3, high)
        best = brute_force_optimum(scores, labels, reference)
        fit = tune_class_weights(scores.astype(float), labels, metric=metric, method="exact",
                                 pos_label=pos_label)
        preds = naive_predict(scores.astype(float).tolist(), fit.weights.tolist())
        reached = reference(labels.tolist(), preds)
        assert reached == pytest.approx(best, abs=1e-12), seed
        assert fit.metric == pytest.approx(reached, abs=1e-12)
        assert fit.proven_optimal


def test_reported_values_equal_scikit_learn():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=300)
    labels = rng.choice(5, size=300, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    fit = tune_class_weights(probs, labels, metric="balanced_accuracy")
    preds = np.argmax(probs * fit.weights, axis=1)
    assert fit.metric == pytest.approx(balanced_accuracy_score(labels, preds), abs=1e-12)
    assert fit.metric > balanced_accuracy_score(labels, probs.argmax(axis=1))
    fit = tune_class_weights(probs, labels, metric="f1", pos_label=4)
    preds = np.argmax(probs * fit.weights, axis=1)
    assert fit.metric == pytest.approx(f1_score(labels, preds, labels=[4], average="macro"),
                                       abs=1e-12)


def test_a_cost_matrix_on_many_rows_beats_argmax_and_no_single_weight_change_helps():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(4), size=800)
    labels = rng.integers(0, 4, 800)
    minus_cost = naive_minus_cost(COST.tolist())
    weights = fit_class_weights(probs, labels, metric=COST, method="coordinate")
    reached = minus_cost(labels.tolist(), np.argmax(probs * weights, axis=1).tolist())
    assert reached > minus_cost(labels.tolist(), probs.argmax(axis=1).tolist())
    for k in range(4):  # a coordinate-wise optimum: no factor on one weight does better
        for factor in (0.0, 0.5, 0.9, 1.1, 2.0, 10.0):
            trial = weights.copy()
            trial[k] *= factor
            value = minus_cost(labels.tolist(), np.argmax(probs * trial, axis=1).tolist())
            assert value <= reached + 1e-12


def test_a_function_metric_is_maximised_and_reported():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=400)
    labels = rng.choice(4, size=400, p=[0.6, 0.2, 0.1, 0.1])
    calls = []

    def recall_of_rare_classes(y, pred, sample_weight):
        calls.append(1)
        rare = y >= 2
        return float(np.mean(pred[rare] == y[rare]))

    fit = tune_class_weights(probs, labels, metric=recall_of_rare_classes)
    preds = np.argmax(probs * fit.weights, axis=1)
    assert fit.metric == pytest.approx(recall_of_rare_classes(labels, preds, None))
    assert fit.metric > recall_of_rare_classes(labels, probs.argmax(axis=1), None)
    assert fit.bound == np.inf and not fit.proven_optimal and calls
    with pytest.raises(ValueError, match="exact"):
        tune_class_weights(probs, labels, metric=recall_of_rare_classes, method="exact")


def test_bad_metrics_are_refused():
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=20)
    labels = np.arange(20) % 3
    for metric, kwargs, message in [("f2", {}, "metric"), ("f1", {}, "pos_label"),
                                    ("f1", {"pos_label": 3}, "pos_label"),
                                    (np.ones((2, 2)), {}, "cost matrix"),
                                    (np.full((3, 3), np.nan), {}, "cost matrix")]:
        with pytest.raises(ValueError, match=message):
            fit_class_weights(probs, labels, metric=metric, **kwargs)

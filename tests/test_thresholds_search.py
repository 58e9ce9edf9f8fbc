"""fit_threshold and fit_class_weights against naive brute-force references (in the tests:
threshold_references.py)."""

import warnings

import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from logitkit.thresholds import (
    apply_class_weights,
    class_prior,
    fit_class_weights,
    fit_threshold,
    prior_ratio_weights,
)
from tests.threshold_references import (
    brute_force_optimum,
    integer_problem,
    naive_accuracy,
    naive_binary_f1,
    naive_metric,
    naive_predict,
    naive_score,
    random_problem,
)

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


# ---------------------------------------------------------------- global optimum, n <= 3


def test_the_issue_example_reaches_three_of_three():
    probs = [[0.33, 0.44, 0.22], [0.4, 0.2, 0.4], [0.18, 0.55, 0.27]]
    labels = [0, 2, 1]
    for metric in ("accuracy", "macro_f1"):
        for method in ("auto", "exact"):
            weights = fit_class_weights(probs, labels, metric=metric, method=method)
            assert naive_predict(probs, weights.tolist()) == labels
    # a single coordinate ascent from plain argmax is trapped at 2/3 on this example
    trapped = fit_class_weights(probs, labels, method="coordinate", restarts=0)
    assert naive_metric(probs, labels, trapped, "accuracy") == pytest.approx(2 / 3)


def check_exact_equals_brute_force(n, high, metric, seeds):
    for seed in seeds:
        scores, labels = integer_problem(seed, n, n + 3 + seed % 4, high)
        best = brute_force_optimum(scores, labels, metric)
        weights = fit_class_weights(scores.astype(float), labels, metric=metric, method="exact")
        assert np.all(weights >= 0) and weights.max() == 1.0
        assert naive_metric(scores, labels, weights, metric) == pytest.approx(best, abs=1e-12), seed


@pytest.mark.parametrize("high", [4, 1000])  # 4: ties and zeros everywhere; 1000: generic
@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("n", [2, 3])
def test_exact_method_equals_the_brute_force_optimum(n, metric, high):
    # 2 x 2 x 2 x 40 = 320 problems of 5 to 9 rows
    check_exact_equals_brute_force(n, high, metric, range(40))


@pytest.mark.slow
@pytest.mark.parametrize("high", [3, 6, 1000])
@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_exact_method_equals_the_brute_force_optimum_on_many_more(metric, high):
    check_exact_equals_brute_force(3, high, metric, range(100, 250))


def test_exact_method_is_global_on_a_larger_problem_against_a_dense_search():
    # 3 classes, 60 rows: compare with the best of a fine grid of log-weight ratios plus every
    # coordinate-wise optimum found from many random starts
    rng = np.random.default_rng(5)
    probs, labels = random_problem(11, n=3, size=60)
    exact = naive_metric(probs, labels, fit_class_weights(probs, labels, method="exact"),
                         "accuracy")
    grid = np.linspace(-3, 3, 121)
    found = max(naive_metric(probs, labels, [1.0, np.exp(a), np.exp(b)], "accuracy")
                for a in grid[::3] for b in grid[::3])
    for _ in range(20):
        start = np.exp(rng.normal(0, 1, 3))
        found = max(found, naive_metric(probs, labels, start, "accuracy"))
    assert exact >= found


# ---------------------------------------------------------------- coordinate ascent, n > 3


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
    weights = fit_class_weights(probs, labels, metric=metric, method="coordinate")
    reached = naive_metric(probs, labels, weights, metric)
    assert reached >= naive_metric(probs, labels, np.ones(probs.shape[1]), metric) - 1e-12
    for k in range(probs.shape[1]):
        for t in interval_candidates(probs, weights, k):
            trial = weights.copy()
            trial[k] = t
            assert naive_metric(probs, labels, trial, metric) <= reached + 1e-12, (k, t)


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_restarts_escape_coordinate_traps_on_four_classes(metric):
    # 4 classes, 7 rows: against the brute-force optimum. One ascent from argmax is often
    # trapped; the default restarts reach the optimum in most problems and are never worse.
    single, restarted, problems = 0, 0, 30
    for seed in range(problems):
        scores, labels = integer_problem(500 + seed, 4, 7, 1000)
        best = brute_force_optimum(scores, labels, metric)
        probs = scores.astype(float)
        one = naive_metric(probs, labels, fit_class_weights(
            probs, labels, metric=metric, method="coordinate", restarts=0), metric)
        many = naive_metric(probs, labels, fit_class_weights(
            probs, labels, metric=metric, method="coordinate"), metric)
        assert one - 1e-12 <= many <= best + 1e-12
        single += one > best - 1e-12
        restarted += many > best - 1e-12
    assert single < restarted
    assert restarted >= 0.85 * problems


@pytest.mark.slow
@pytest.mark.parametrize(("n", "size", "problems", "metric", "reached"), [
    (4, 7, 60, "accuracy", 59), (5, 6, 40, "accuracy", 39),
    (4, 7, 60, "macro_f1", 59), (5, 6, 40, "macro_f1", 33)])
def test_how_often_restarts_reach_the_optimum(n, size, problems, metric, reached):
    # the counts quoted in the README; the seed's Powell reaches the optimum far less often
    ours = powell = 0
    for seed in range(problems):
        scores, labels = integer_problem(9000 + seed, n, size, 1000)
        best = brute_force_optimum(scores, labels, metric)
        probs = scores.astype(float)
        for method in ("coordinate", "powell"):
            weights = fit_class_weights(probs, labels, metric=metric, method=method)
            hit = naive_metric(probs, labels, weights, metric) > best - 1e-12
            ours, powell = (ours + hit, powell) if method == "coordinate" else (ours, powell + hit)
    assert ours >= reached
    assert powell < problems / 2


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_every_method_beats_or_matches_powell_on_larger_random_problems(metric):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        n, size = 6, 1500
        labels = rng.choice(n, size=size, p=np.arange(n, 0, -1) / np.arange(n, 0, -1).sum())
        labels[:n] = np.arange(n)
        logits = rng.normal(size=(size, n)) + 1.5 * np.eye(n)[labels] + rng.normal(size=n)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        ours = fit_class_weights(probs, labels, metric=metric)
        powell = fit_class_weights(probs, labels, metric=metric, method="powell")
        assert naive_metric(probs, labels, ours, metric) >= naive_metric(
            probs, labels, powell, metric)


# ---------------------------------------------------------------- the returned point


def max_margin_by_lp(L, preds, box):
    """max s: v_a - v_b - s >= L_ib - L_ia for every row predicted a and b != a, |v_a - v_b| <=
    box (scipy's HiGHS LP), as a reference for the centre of the decision cell."""
    n = L.shape[1]
    rows, bounds = [], []
    for i, a in enumerate(preds):
        for b in range(n):
            if b != a and np.isfinite(L[i, b]):
                row = np.zeros(n + 1)
                row[b], row[a], row[n] = 1.0, -1.0, 1.0  # v_b - v_a + s <= L_ia - L_ib
                rows.append(row)
                bounds.append(L[i, a] - L[i, b])
    for a in range(n):
        for b in range(n):
            if a != b:
                row = np.zeros(n + 1)
                row[a], row[b] = 1.0, -1.0
                rows.append(row)
                bounds.append(box)
    cost = np.zeros(n + 1)
    cost[n] = -1.0
    fixed = [(0, 0)] + [(None, None)] * n
    return -linprog(cost, A_ub=np.array(rows), b_ub=bounds, bounds=fixed).fun


@pytest.mark.parametrize("seed", range(6))
def test_weights_are_the_centre_of_their_decision_cell(seed):
    n = 3 + seed % 2
    probs, labels = random_problem(seed, n=n, size=30)
    weights = fit_class_weights(probs, labels, method="exact" if n == 3 else "coordinate")
    L = np.log(probs)
    preds = np.argmax(probs * weights, axis=1)
    scores = L + np.log(weights)
    chosen = scores[np.arange(len(preds)), preds]
    others = np.where(np.eye(n, dtype=bool)[preds], -np.inf, scores)
    margin = np.min(chosen - others.max(axis=1))
    # the box the centre keeps to: 2 n max |C_ab| + 1, C_ab = max over rows predicted a of
    # L_ib - L_ia
    gaps = [max(L[i, b] - L[i, a] for i in range(len(preds)) if preds[i] == a)
            for a in set(preds.tolist()) for b in range(n) if b != a]
    box = min(2 * n * max(abs(g) for g in gaps) + 1, 700)
    assert margin == pytest.approx(max_margin_by_lp(L, preds, box), rel=1e-5)


def test_weights_are_normalised_and_invariant_to_scaling_the_rows():
    probs, labels = random_problem(3, n=4, size=60)
    weights = fit_class_weights(probs, labels)
    assert weights.max() == 1.0 and np.all(weights > 0)
    row_scale = 2.0 ** np.random.default_rng(0).integers(-3, 4, size=(probs.shape[0], 1))
    scaled = fit_class_weights(probs * row_scale, labels)  # powers of 2: exact in floats
    np.testing.assert_allclose(scaled, weights, rtol=1e-12)
    assert np.array_equal(apply_class_weights(probs, weights * 7.5),
                          apply_class_weights(probs, weights))


@pytest.mark.parametrize("method", ["auto", "exact", "coordinate", "powell"])
def test_tiny_probabilities_raise_no_warning(method):
    probs = np.array([[1e-310, 0.5, 0.5], [0.9, 1e-310, 0.1], [1e-310, 1e-300, 1.0],
                      [0.2, 0.3, 1e-310], [5e-324, 1.0, 0.0], [0.0, 0.0, 0.0]] * 3)
    labels = np.array([0, 1, 1, 0, 0, 2] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in ("accuracy", "macro_f1"):
            weights = fit_class_weights(probs, labels, metric=metric, method=method)
            assert np.all(np.isfinite(weights)) and np.all(weights >= 0)
            reached = naive_metric(probs, labels, weights, metric)
            assert reached >= naive_metric(probs, labels, np.ones(3), metric) - 1e-12
            if method in ("auto", "exact"):
                # the exact rationals of these floats: the optimum among weights whose ratios
                # stay below 2^1000 ~ 1e301 is reached (ours go to e^700 ~ 1e304, not beyond)
                within = brute_force_optimum(probs, labels, metric, box=2**1000)
                anywhere = brute_force_optimum(probs, labels, metric)
                assert within - 1e-12 <= reached <= anywhere + 1e-12
        fit_class_weights(probs, labels, shrink="cv", folds=3)


def test_a_weight_that_only_huge_ratios_reach_is_found_in_log_space():
    # class 0 wins the labelled-0 rows only with w_0 / w_1 > 1e300: fine in logs, and the
    # returned weights (max 1, others >= 1e-304) still decide it
    probs = np.array([[1e-301, 0.6, 0.4], [1e-301, 0.7, 0.3], [0.0, 0.4, 0.6], [0.0, 0.6, 0.4]])
    labels = np.array([0, 0, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights = fit_class_weights(probs, labels, method="exact")
    assert naive_predict(probs, weights.tolist()) == labels.tolist()


# ---------------------------------------------------------------- sample weights, absent classes


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
@pytest.mark.parametrize("method", ["exact", "coordinate"])
def test_integer_sample_weights_equal_repeated_rows(metric, method):
    scores, labels = integer_problem(21, 3, 9, 1000)
    counts = np.random.default_rng(2).integers(0, 4, size=9)
    counts[[np.flatnonzero(labels == c)[0] for c in range(3)]] = 1  # keep every class
    probs, repeated_probs = scores.astype(float), np.repeat(scores, counts, axis=0)
    repeated_labels = np.repeat(labels, counts)
    weighted = fit_class_weights(probs, labels, metric=metric, method=method, restarts=4,
                                 sample_weight=counts)
    repeated = fit_class_weights(repeated_probs, repeated_labels, metric=metric, method=method,
                                 restarts=4)
    value = naive_metric(probs, labels, weighted, metric, sample_weight=counts.tolist())
    assert value == pytest.approx(
        naive_metric(repeated_probs, repeated_labels, repeated, metric), abs=1e-12)
    if method == "exact":
        assert value == pytest.approx(
            brute_force_optimum(repeated_probs, repeated_labels, metric), abs=1e-12)


def test_a_class_without_samples_keeps_its_weight():
    probs, labels = random_problem(4, n=5, size=40)
    labels = labels % 3  # classes 3 and 4 have no sample
    weights = fit_class_weights(probs, labels, method="coordinate")
    assert weights[3] == weights[4]
    macro = fit_class_weights(probs, labels, metric="macro_f1")  # mean over present classes
    assert naive_metric(probs, labels, macro, "macro_f1") >= naive_metric(
        probs, labels, np.ones(5), "macro_f1")


# ---------------------------------------------------------------- over-fitting guard


def test_prior_ratio_and_class_prior():
    np.testing.assert_allclose(class_prior([0, 0, 1], 3), [2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5])
    np.testing.assert_allclose(prior_ratio_weights([20, 60, 20], [0.5, 0.25, 0.25]),
                               [1.0, 1 / 6, 0.5])
    with pytest.raises(ValueError, match="positive"):
        prior_ratio_weights([0.5, 0.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="shape"):
        prior_ratio_weights([0.5, 0.5], [0.2, 0.3, 0.5])


def test_full_shrinkage_returns_the_target():
    probs, labels = random_problem(8, n=4, size=50)
    train = [0.4, 0.3, 0.2, 0.1]
    target = prior_ratio_weights(train, class_prior(labels, 4))
    np.testing.assert_allclose(fit_class_weights(probs, labels, train_prior=train, shrink=1.0),
                               target)
    np.testing.assert_array_equal(fit_class_weights(probs, labels, shrink=1.0), np.ones(4))
    tuned = fit_class_weights(probs, labels, train_prior=train)
    half = fit_class_weights(probs, labels, train_prior=train, shrink=0.5)
    np.testing.assert_allclose(np.log(half) - np.log(half).max(),
                               np.log(np.sqrt(tuned * target))
                               - np.log(np.sqrt(tuned * target)).max(), atol=1e-12)


def label_shift_problem(seed, size, shift, *, miscalibrated=False):
    """Calibrated scores for a balanced training prior: p_i ~ Dirichlet, and on training data
    y_i ~ p_i. Deployment: class c is ``shift[c]`` times as frequent, so y_i ~ p_i * shift
    (normalised): the Bayes decision is argmax(p * shift). ``miscalibrated``: the scores handed
    over are p * bias (a per-class bias that only tuning can undo)."""
    rng = np.random.default_rng(seed)
    n = len(shift)
    p = rng.dirichlet(np.full(n, 0.7), size=size)
    posterior = p * shift
    posterior /= posterior.sum(axis=1, keepdims=True)
    labels = (rng.random(size)[:, None] > np.cumsum(posterior, axis=1)).sum(axis=1)
    scores = p * np.array([3.0, 1.0, 0.4, 1.0, 2.0][:n]) if miscalibrated else p
    return scores, labels


def test_cross_validated_shrinkage_stays_near_the_prior_ratio_on_a_calibrated_model():
    # Small validation sets from a shifted, calibrated model: the prior ratio is Bayes-optimal,
    # tuning on 150 samples over-fits; the guard must do about as well as the prior ratio and
    # better than unguarded tuning (means over 8 draws, tested on 20000 samples each).
    shift = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    train_prior = np.full(5, 0.2)
    tuned, guarded, prior = [], [], []
    for seed in range(8):
        probs, labels = label_shift_problem(seed, 150, shift)
        test_probs, test_labels = label_shift_problem(1000 + seed, 20000, shift)
        for bucket, kwargs in ((tuned, {}), (guarded, {"shrink": "cv"}),
                               (prior, {"shrink": 1.0})):
            weights = fit_class_weights(probs, labels, train_prior=train_prior, **kwargs)
            bucket.append(np.mean(apply_class_weights(test_probs, weights) == test_labels))
    assert np.mean(guarded) >= np.mean(tuned)
    assert np.mean(guarded) >= np.mean(prior) - 0.005


def test_cross_validated_shrinkage_keeps_tuning_where_it_pays():
    # A per-class bias and 4000 validation samples: tuning corrects the bias; the guard keeps it.
    shift = np.array([1.0, 1.0, 1.0])
    probs, labels = label_shift_problem(3, 4000, shift, miscalibrated=True)
    test_probs, test_labels = label_shift_problem(4, 20000, shift, miscalibrated=True)
    weights = fit_class_weights(probs, labels, shrink="cv", method="coordinate")
    guarded = np.mean(apply_class_weights(test_probs, weights) == test_labels)
    argmax = np.mean(test_probs.argmax(axis=1) == test_labels)
    assert guarded > argmax + 0.01


def test_tuning_a_calibrated_model_does_not_beat_argmax():
    # No shift and calibrated scores: argmax is the Bayes decision for accuracy; weights tuned
    # on 3000 samples only fit noise (test accuracy no higher than argmax's, up to noise)
    shift = np.ones(4)
    probs, labels = label_shift_problem(6, 3000, shift)
    test_probs, test_labels = label_shift_problem(7, 50000, shift)
    tuned = np.mean(apply_class_weights(test_probs, fit_class_weights(probs, labels))
                    == test_labels)
    argmax = np.mean(test_probs.argmax(axis=1) == test_labels)
    assert tuned <= argmax + 0.002


# ---------------------------------------------------------------- Powell baseline


def test_powell_baseline_is_the_seed_recipe_verbatim():
    """Seed 002: Powell on -metric(argmax(p * (tanh(t) + 1) / 2)) from t = 0, xtol = ftol =
    1e-10, maxiter = 100000; the weights (tanh(t*) + 1) / 2 returned as they are."""
    probs, labels = random_problem(7, n=4, size=80)
    for metric in ("accuracy", "macro_f1"):
        def loss(t, metric=metric):
            preds = naive_predict(probs, ((np.tanh(t) + 1) / 2).tolist())
            return -naive_score(labels.tolist(), preds, 4, metric)

        result = minimize(loss, np.zeros(4), method="Powell",
                          options={"xtol": 1e-10, "ftol": 1e-10, "maxiter": 100000})
        np.testing.assert_array_equal(
            fit_class_weights(probs, labels, metric=metric, method="powell"),
            (np.tanh(result.x) + 1) / 2)


def test_importing_the_search_does_not_import_scipy():
    import subprocess
    import sys

    code = ("import sys; from logitkit.thresholds import apply_class_weights; "
            "print('scipy' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------- input checks


def test_apply_class_weights_uses_the_lowest_index_on_ties():
    probs = np.array([[0.5, 0.5, 0.0], [0.2, 0.4, 0.4], [0.0, 0.0, 0.0]])
    assert apply_class_weights(probs, np.ones(3)).tolist() == [0, 1, 0]
    assert apply_class_weights(probs, [1.0, 2.0, 2.0]).tolist() == naive_predict(probs, [1, 2, 2])
    with pytest.raises(ValueError, match="non-negative"):
        apply_class_weights(-probs, np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        apply_class_weights(probs, [1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        ([[0.5, np.nan], [0.5, 0.5]], [0, 1], "NaN or infinite"),
        ([[0.5, -0.1], [0.5, 0.5]], [0, 1], "non-negative"),
        ([0.5, 0.5], [0, 1], "2-D"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, 2], r"in \[0, 2\)"),
        ([[0.5, 0.5], [0.5, 0.5]], [0, -1], r"in \[0, 2\)"),
        ([[0.3, 0.3, 0.4], [0.5, 0.2, 0.3]], [2, 2], "at least two classes"),
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
    probs, labels = random_problem(0, n=4, size=10)
    for kwargs, message in [({"metric": "f2"}, "metric"), ({"method": "adam"}, "method"),
                            ({"time_limit": 0}, "time_limit"),
                            ({"shrink": 1.5}, r"in \[0, 1\]"), ({"shrink": "yes"}, "'cv'"),
                            ({"shrink": "cv", "folds": 1}, "folds"),
                            ({"sample_weight": np.ones(3)}, "sample_weight"),
                            ({"sample_weight": -np.ones(10)}, "non-negative"),
                            ({"train_prior": [1, 0, 1, 1]}, "positive"),
                            ({"restarts": -1}, "restarts")]:
        with pytest.raises(ValueError, match=message):
            fit_class_weights(probs, labels, **kwargs)
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

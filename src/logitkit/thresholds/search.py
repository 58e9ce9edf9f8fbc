"""Exact decision thresholds and per-class decision weights, fitted on validation data.

Binary: predict 1 iff ``score >= t``; :func:`fit_threshold` finds the best ``t`` exactly.

Multi-class: predict ``argmax_j p_ij w_j`` (ties, all-zero products included: the LOWEST index,
like ``np.argmax``) with weights ``w >= 0``: a weight may be 0 (the class is switched off), as in
the seed's ``(tanh(t) + 1) / 2``. :func:`tune_class_weights` tunes ``w`` for accuracy or macro-F1
and reports the metric reached, an upper bound on the best any weights reach, and so the gap;
:func:`fit_class_weights` returns the weights alone. Weights are scale-invariant; the search runs
on log-weights ``v = log w`` (``-inf`` for 0; see :mod:`._coordinate`). Methods:

* ``"exact"``: the global optimum, proven. n = 2: one sweep of the ratio ``p_i1 / p_i0`` and the
  supports with a zero; n = 3: the cells of the arrangement the rule induces, O(N^2 log N)
  (:mod:`._cells`), and every support with a zero weight (one sweep each); n >= 4: a
  mixed-integer program solved by HiGHS (:mod:`._milp`), seconds for about a hundred rows and
  much longer beyond (``time_limit`` cuts it: the best weights found and the bound it proved).
* ``"coordinate"``: exact coordinate ascent (the best weight of one class at a time, 0
  included, found by a sorted sweep of its breakpoints) from plain argmax, from the prior ratio
  ``pi_val / pi_train`` when ``train_prior`` is given, then ``restarts`` more times from random
  perturbations of the best point so far. A coordinate-wise optimum, best of several starts: NOT
  guaranteed global (maximising accuracy over the weights of many classes is a maximum feasible
  subsystem problem, NP-hard); its bound is only "every row that can be right is right".
* ``"auto"`` (default): ``"exact"`` for n = 2, for n = 3 up to ``EXACT_AUTO_ROWS`` rows, and for
  n >= 4 when rows x classes <= ``AUTO_EXACT_SIZE`` (after coordinate ascent, the program cut at
  ``AUTO_NODE_LIMIT`` nodes); ``"coordinate"`` otherwise.
* ``"powell"``: seed 002's recipe as written (:mod:`._powell`), a baseline.

Every method but Powell returns the CENTRE of the decision cell it found (:func:`._cells.centre`,
on the classes of positive weight): the weights that keep every validation decision with the
largest log-margin, divided by their maximum (so ``max(w) == 1``). Positive weights stay within a
ratio of e^700 (~1e304) of each other (the program's: e^40), so they remain normal floats; a
decision that needs a larger ratio is out of reach.

Over-fitting: the tuned weights fit the validation set; with a few hundred samples they fit its
noise too. ``shrink`` moves them toward the prior ratio (or toward plain argmax), by a fixed amount
or by the amount that does best out of fold (``shrink="cv"``, :mod:`._guard`). A model that is
already calibrated for the deployment distribution cannot gain accuracy from any weights: argmax
of calibrated probabilities is the Bayes decision for accuracy, and under a pure change of class
priors the Bayes decision is the prior-ratio rule ``argmax p * pi_val / pi_train`` (Saerens et al.,
Neural Computation 2002). Tuning pays only where the model is mis-calibrated class by class, or
for metrics such as macro-F1 whose best decisions are not argmax even for calibrated scores.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from logitkit.thresholds._cells import best_cells, centre, centre_on_support
from logitkit.thresholds._coordinate import (
    MIN_GAIN,
    coordinate_ascent,
    log_probs,
    predict_log,
)
from logitkit.thresholds._guard import choose_shrink, shrunk
from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    Metric,
    check_metric,
    check_probs,
    check_probs_labels,
    check_sample_weight,
    check_scores_binary,
    class_metric,
    f1_from_counts,
    metric_weights,
    present_classes,
    resolve_metric,
)

METHODS = ("auto", "exact", "coordinate", "powell")
# "auto" runs the exact O(N^2 log N) search for 3 classes up to this many rows.
EXACT_AUTO_ROWS = 4000
# Restarts of the coordinate ascent by default: min(MAX_RESTARTS, RESTART_ROWS // N). Many on
# small sets (each is cheap, and a trap costs a few samples: a large share of the metric), none
# from RESTART_ROWS rows on (each costs O(n N log N) per round; a trap costs O(1/N)).
RESTART_ROWS = 16_000
MAX_RESTARTS = 16
# Standard deviations of the log-weight perturbations of the restarts, used in turn (local moves
# and long jumps).
RESTART_SCALES = (0.5, 1.0, 2.0, 4.0)
# Cells of the exact search realised and compared (by the decision rule and the margin).
KEEP_CELLS = 32
# "auto" runs the exact program (n >= 4) up to this many rows x classes, cut after this many
# branch-and-bound nodes (deterministic, unlike a time limit). Measured on one core at these
# sizes (12 random problems each): accuracy finished in 0.2-1.3 s with 63-1501 nodes, macro-F1
# in 0.03-0.75 s with 1-201 nodes; macro-F1 at 16 rows x 5 classes already took over a second.
AUTO_EXACT_SIZE = {"linear": 200, "f1": 40}
AUTO_NODE_LIMIT = {"linear": 3000, "f1": 500}
# A metric within this of the proved bound counts as proven optimal (solver tolerances).
BOUND_SLACK = 1e-9


def apply_class_weights(probs: object, weights: object) -> np.ndarray:
    """Predictions ``pred_i = argmax_j probs[i, j] * weights[j]`` (ties: the lowest index).

    Args:
        probs: (N, n) finite non-negative scores (probabilities or not).
        weights: n finite non-negative numbers (a 0 switches its class off).

    Returns:
        (N,) int64 class ids.

    Raises:
        ValueError: a bad shape, a NaN, infinite or negative entry.

    Reference: seed 002 (https://kexue.fm/archives/8860), the rule ``argmax(p * w)``.

    >>> apply_class_weights([[0.6, 0.4], [0.3, 0.7]], [0.5, 1.0]).tolist()
    [1, 1]
    """
    p = check_probs(probs)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (p.shape[1],):
        raise ValueError(f"weights must have shape ({p.shape[1]},) to match probs, got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    return np.argmax(p * w, axis=1)


def class_prior(labels: object, n_classes: int, sample_weight: object = None) -> np.ndarray:
    """Class frequencies ``(count_c + 1/2) / (N + n/2)`` (Jeffreys smoothing: never 0).

    Args:
        labels: N class ids in [0, n_classes).
        n_classes: n.
        sample_weight: N non-negative weights counted instead of 1 (default None).

    Returns:
        (n,) frequencies summing to 1.

    Raises:
        ValueError: bad sample weights.

    Reference: Jeffreys' prior, add-1/2 smoothing (Jeffreys, Proc. R. Soc. A 1946).

    >>> class_prior([0, 0, 1], 3).round(3).tolist()
    [0.556, 0.333, 0.111]
    """
    y = np.asarray(labels, dtype=np.int64)
    sw = check_sample_weight(sample_weight, y.size)
    counts = np.bincount(y, weights=sw, minlength=n_classes).astype(np.float64)
    return (counts + 0.5) / (counts.sum() + n_classes / 2)


def prior_ratio_weights(train_prior: object, target_prior: object) -> np.ndarray:
    """Weights ``target_prior / train_prior`` (normalised so ``max(w) == 1``).

    For a model calibrated on data with class prior ``train_prior``, ``argmax(p * w)`` is the Bayes
    decision for accuracy on data whose prior is ``target_prior`` and whose classes look the same
    (a label shift; Saerens, Latinne and Decaestecker, Neural Computation 2002). Both priors are
    normalised to sum 1.

    Args:
        train_prior: n positive class frequencies (or counts) of the training data.
        target_prior: n positive class frequencies (or counts) where the model is used.

    Returns:
        (n,) weights, ``max(w) == 1``.

    Raises:
        ValueError: shapes that differ, or a non-positive or non-finite entry.

    Reference: Saerens, Latinne and Decaestecker, "Adjusting the Outputs of a Classifier to New
    a Priori Probabilities", Neural Computation 14(1), 2002.

    >>> prior_ratio_weights([0.5, 0.5], [0.8, 0.2]).tolist()
    [1.0, 0.25]
    """
    train = _check_prior(train_prior, "train_prior")
    target = _check_prior(target_prior, "target_prior", size=train.size)
    ratio = target / train
    return ratio / ratio.max()


def _check_prior(prior: object, name: str, size: int | None = None) -> np.ndarray:
    q = np.asarray(prior, dtype=np.float64)
    if q.ndim != 1 or (size is not None and q.size != size):
        wanted = f"({size},)" if size is not None else "1-D"
        raise ValueError(f"{name} must have shape {wanted}, got {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError(f"{name} must be finite and positive (class frequencies or counts)")
    return q / q.sum()


def fit_class_weights(
    probs: object,
    labels: object,
    *,
    metric: str = "accuracy",
    method: str = "auto",
    sample_weight: object = None,
    train_prior: object = None,
    shrink: float | str | None = None,
    folds: int = 5,
    restarts: int | None = None,
    max_rounds: int = 100,
    time_limit: float | None = None,
    pos_label: int | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """Per-class weights ``w`` (n,) maximising ``metric`` of ``argmax(probs * w)`` on the data.

    The weights of :func:`tune_class_weights`: same arguments (Args, Raises and Reference
    there), which also reports the metric they reach, an upper bound on the best any weights
    reach, and the method used.

    Returns:
        (n,) weights ``>= 0``, ``max(w) == 1`` (Powell: as the seed returns them).

    >>> p = [[.33, .44, .22], [.4, .2, .4], [.18, .55, .27]]
    >>> w = fit_class_weights(p, [0, 2, 1])  # exact for 3 classes: all three right
    >>> apply_class_weights(p, w).tolist()
    [0, 2, 1]
    """
    return tune_class_weights(
        probs, labels, metric=metric, method=method, sample_weight=sample_weight,
        train_prior=train_prior, shrink=shrink, folds=folds, restarts=restarts,
        max_rounds=max_rounds, time_limit=time_limit, pos_label=pos_label,
        random_state=random_state).weights


@dataclass
class ClassWeightFit:
    """The result of :func:`tune_class_weights`.

    Attributes:
        weights: the n weights, ``max(weights) == 1`` (Powell: as the seed returns them).
        metric: the metric they reach on the data they were tuned on.
        bound: an upper bound on the metric any weights reach there (see
            :func:`tune_class_weights`); ``gap = bound - metric`` is how far from optimal they
            can be, 0 when ``proven_optimal``.
        proven_optimal: the search proved ``metric`` is the best any weights reach.
        method: the method that ran ("exact", "coordinate", "coordinate+exact" or "powell").
        shrink: the shrinkage applied; ``cv_scores``: out-of-fold metric of each amount tried.

    Reference: :func:`tune_class_weights`, which returns it.

    >>> fit = tune_class_weights([[0.6, 0.4], [0.3, 0.7]], [0, 1])
    >>> fit.metric, fit.gap, fit.proven_optimal
    (1.0, 0.0, True)
    """

    weights: np.ndarray
    metric: float
    bound: float
    proven_optimal: bool
    method: str
    shrink: float = 0.0
    cv_scores: dict[float, float] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """``bound - metric``: the most any other weights could gain on this data."""
        return self.bound - self.metric


def tune_class_weights(
    probs: object,
    labels: object,
    *,
    metric: str = "accuracy",
    method: str = "auto",
    sample_weight: object = None,
    train_prior: object = None,
    shrink: float | str | None = None,
    folds: int = 5,
    restarts: int | None = None,
    max_rounds: int = 100,
    time_limit: float | None = None,
    pos_label: int | None = None,
    random_state: int = 0,
) -> ClassWeightFit:
    """Tune per-class weights ``w >= 0`` so that ``argmax(probs * w)`` maximises ``metric``.

    Decision rule: ``pred_i = argmax_j probs_ij * w_j``, ties (all-zero products included) to
    the lowest index, like ``np.argmax``. Weights may be 0 (a class switched off), as the seed's
    ``(tanh(t) + 1) / 2`` allows. The search space of every method but Powell includes the seed's
    whole weight space, so wherever the search is exact (``proven_optimal``) the result is never
    below the seed's Powell recipe on the data tuned on.

    Args:
        probs: (N, n) finite non-negative scores (need not sum to 1).
        labels: N class ids in [0, n); at least two classes present. A class with no sample keeps
            its starting weight while the others are tuned around it.
        metric: "accuracy" (default), "balanced_accuracy" (mean recall of the classes present),
            "macro_f1" (mean F1 of the classes present), "f1" (F1 of class ``pos_label``), an
            (n, n) cost matrix ``C[true, pred]`` (minimises the mean cost: the metric is minus
            it), or a function ``f(labels, preds, sample_weight) -> float`` to maximise
            (``sample_weight`` None or an array). All but a function are searched exactly as
            described; a function only by coordinate ascent, evaluated at up to 64 weights per
            step, with no bound (``bound = inf``).
        method: "auto" (default), "exact", "coordinate" or "powell" (see the module docstring):
            "exact" is the global optimum for any n (cells for n <= 3; a mixed-integer program,
            HiGHS, for n >= 4: minutes or more beyond a few hundred rows, ``time_limit`` bounds
            it); "auto" is exact for n <= 3 up to ``EXACT_AUTO_ROWS`` rows and for small
            problems with n >= 4, coordinate ascent otherwise.
        sample_weight: N non-negative weights of the samples in the metric (None: all 1).
        train_prior: class frequencies (or counts) the model was trained on; the prior ratio
            ``pi_val / pi_train`` is then a starting point and the shrinkage target.
        shrink: None (default, no guard), a number in [0, 1] or "cv" (see :mod:`._guard`).
        folds: folds of ``shrink="cv"`` (default 5).
        restarts: perturbed restarts of the coordinate ascent (default ``min(16, 16000 // N)``).
        max_rounds: bound on the rounds of each coordinate ascent (default 100).
        time_limit: seconds for the mixed-integer program (default None: "exact" runs until
            proven, "auto" until AUTO_NODE_LIMIT nodes); a run cut short keeps its best weights
            and reports the bound it proved.
        pos_label: the class whose F1 is ``metric="f1"`` (default None: required for it).
        random_state: seeds the restarts and the folds (default 0).

    Returns:
        A :class:`ClassWeightFit`: weights, metric, ``bound`` and ``gap``. The bound is proved:
        the optimum itself when exact; HiGHS's dual bound when the program was cut short; else
        the metric with every row that can be right at all counted right. The program's bound
        covers weight ratios up to e^40 and zeros (the seed's space); weights found beyond that
        can exceed it, and then the bound is raised to their metric.

    Raises:
        ValueError: bad shapes or values, one class only, an unknown metric or method.

    Reference: the seed (post 002) tunes ``argmax(p * w)`` with scipy's Powell method; the exact
    program is described in :mod:`._milp`.

    >>> fit = tune_class_weights([[.6, .4], [.55, .45], [.2, .8]], [0, 1, 1])
    >>> fit.metric, fit.proven_optimal
    (1.0, True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if restarts is not None and restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
    p, y = check_probs_labels(probs, labels)
    n = p.shape[1]
    metric = resolve_metric(metric, n, pos_label)
    if metric.function is not None and method == "exact":
        raise ValueError("method='exact' needs a built-in metric or a cost matrix; a function "
                         "metric is searched by 'auto' or 'coordinate'")
    if metric.f1_class is not None and not np.any(y == metric.f1_class):
        raise ValueError(f"metric 'f1' of class {metric.f1_class}: no label is {metric.f1_class}")
    sw = metric_weights(metric, y, n, check_sample_weight(sample_weight, y.size))
    prior = None if train_prior is None else _check_prior(train_prior, "train_prior", size=n)
    rng = np.random.default_rng(random_state)

    def tune(rows: np.ndarray) -> tuple[Tuned, np.ndarray]:
        sub_w = None if sw is None else sw[rows]
        target = (np.zeros(n) if prior is None
                  else np.log(prior_ratio_weights(prior, class_prior(y[rows], n, sub_w))))
        tuned = _tune(p[rows], y[rows], sub_w, metric, method, target, restarts, max_rounds,
                      time_limit, rng)
        return tuned, target

    def result(weights: np.ndarray, tuned: Tuned, lam: float = 0.0,
               scores: dict[float, float] | None = None) -> ClassWeightFit:
        value = class_metric(y, np.argmax(p * weights, axis=1), n, metric, sw)
        bound = max(tuned.bound, value)
        proven = tuned.proven and lam == 0 and value >= bound - BOUND_SLACK
        return ClassWeightFit(weights, value, bound, proven, tuned.method, lam, scores or {})

    if shrink is None and method == "powell":  # as the seed returns them, not normalised
        from logitkit.thresholds._powell import seed_powell

        bound = reachable_bound(log_probs(p), y, sw, metric)
        return result(seed_powell(p, y, metric, sw), Tuned(np.zeros(n), bound, False, "powell"))
    if shrink is None:
        tuned, _ = tune(np.arange(y.size))
        return result(_to_weights(tuned.v), tuned)
    if isinstance(shrink, str):
        if shrink != "cv":
            raise ValueError(f"shrink must be None, a number in [0, 1] or 'cv', got {shrink!r}")
        if not 2 <= folds <= y.size:
            raise ValueError(f"folds must be in [2, {y.size}] (the number of samples), got {folds}")
        lam, scores = choose_shrink(p, y, sw, metric, lambda rows: _log_weights(tune(rows)),
                                    folds, rng)
    else:
        lam, scores = float(shrink), {}
        if not 0 <= lam <= 1:
            raise ValueError(f"shrink must be in [0, 1], got {shrink}")
    tuned, v_target = tune(np.arange(y.size))
    return result(_to_weights(shrunk(tuned.v, v_target, lam)), tuned, lam, scores)


def _log_weights(tuned_and_target: tuple[Tuned, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    tuned, target = tuned_and_target
    return tuned.v, target


@dataclass
class Tuned:
    """Tuned log-weights (``-inf``: weight 0), the bound proved on the metric, whether the
    search was exact, and the method that ran."""

    v: np.ndarray
    bound: float
    proven: bool
    method: str


def _to_weights(v: np.ndarray) -> np.ndarray:
    """``exp(v - max v)``: the largest weight is exactly 1 (zeros stay zeros)."""
    finite = v[np.isfinite(v)]
    with np.errstate(under="ignore"):
        return np.exp(v - finite.max())


def _default_restarts(rows: int) -> int:
    return min(MAX_RESTARTS, RESTART_ROWS // rows)


def _tune(p: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric, method: str,
          target: np.ndarray, restarts: int | None, max_rounds: int, time_limit: float | None,
          rng: np.random.Generator) -> Tuned:
    n = p.shape[1]
    L = log_probs(p)
    if method == "powell":
        from logitkit.thresholds._powell import seed_powell

        return Tuned(log_probs(seed_powell(p, y, metric, sw)), reachable_bound(L, y, sw, metric),
                     False, "powell")
    tuned = np.flatnonzero(present_classes(y, n, sw))
    free = min(tuned.size, n - 1)  # dimensions of the search (weights are scale-invariant)
    # classes without samples keep their relative weights: centring would move them
    can_centre = n - tuned.size <= 1
    searchable = metric.function is None  # the exact searches need a built-in metric
    if searchable and (free <= 1 or (n == 3 and (method == "exact" or (
            method == "auto" and y.size <= EXACT_AUTO_ROWS)))):
        return _exact_small(L, y, sw, metric, tuned, can_centre)
    starts = [np.zeros(n)] if not np.any(target) else [np.zeros(n), target]
    count = _default_restarts(y.size) if restarts is None else restarts
    v = _multi_start(L, y, sw, metric, starts, tuned, count, max_rounds, rng)
    v = _centred(L, y, sw, metric, [predict_log(L, v)] if can_centre else [], v)
    exact = method == "exact" or (method == "auto" and searchable
                                  and _program_is_small(L, y, metric))
    if not exact:
        return Tuned(v, reachable_bound(L, y, sw, metric), False, "coordinate")
    from logitkit.thresholds._milp import solve_exact

    weights = np.ones(y.size) if sw is None else sw
    nodes = None if method == "exact" else AUTO_NODE_LIMIT["linear" if metric.linear else "f1"]
    solution = solve_exact(L, y, weights, metric, metric.f1_counted(y, n, sw), time_limit, nodes)
    best = _best_of(L, y, sw, metric, [v, *solution.candidates])
    return Tuned(best, solution.bound, solution.finished,
                 "exact" if method == "exact" else "coordinate+exact")


def _program_is_small(L: np.ndarray, y: np.ndarray, metric: Metric) -> bool:
    """Whether "auto" runs the exact program: few enough rows x classes (AUTO_EXACT_SIZE)."""
    return y.size * L.shape[1] <= AUTO_EXACT_SIZE["linear" if metric.linear else "f1"]


def _exact_small(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric,
                 tuned: np.ndarray, can_centre: bool) -> Tuned:
    """The global optimum for n <= 3 (or one free weight): the cells of the positive weights
    (:mod:`._cells`) and every support with a zero weight (one sweep each)."""
    n = L.shape[1]
    options = []
    if n == 3:
        cells = [pred for _, pred in best_cells(L, y, sw, metric, KEEP_CELLS)]
        options = [found[0] for found in (centre(L, pred) for pred in cells) if found is not None]
    for support in _supports(n):
        start = np.where(support, 0.0, -np.inf)
        swept = np.intersect1d(np.flatnonzero(support)[1:], tuned)
        if swept.size:  # one sweep of one weight covers every ratio of the two
            start, _ = coordinate_ascent(L, y, sw, metric, start, swept, 1)
        options.append(start)
    best = _best_of(L, y, sw, metric, options)
    if can_centre:
        best = _centred(L, y, sw, metric, [predict_log(L, best)], best)
    value = class_metric(y, predict_log(L, best), n, metric, sw)
    return Tuned(best, value, True, "exact")


def _supports(n: int) -> list[np.ndarray]:
    """Masks of the classes with positive weight that one sweep settles: every non-empty subset
    of one or two classes (n <= 3; an empty support decides like ``{0}``, and for n = 3 the
    cells cover the full one)."""
    masks = []
    for size in (1, 2):
        for chosen in itertools.combinations(range(n), size):
            mask = np.zeros(n, dtype=bool)
            mask[list(chosen)] = True
            masks.append(mask)
    return masks


def reachable_bound(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None,
                    metric: Metric) -> float:
    """An upper bound on the metric of any weights: every row gets its best reachable class.

    Row i can be predicted k only if ``p_ik > 0`` or k = 0 (all products 0). A linear metric is
    then at most the mean of each row's best utility among those; the mean F1 of some classes at
    most the mean of ``2 a_k / (a_k + A_k)`` (``a_k``: the class's rows that can be right,
    ``A_k``: all its rows, no false positive). A function metric has no bound: ``inf``.
    """
    n = L.shape[1]
    if metric.function is not None:
        return np.inf
    weights = np.ones(y.size) if sw is None else sw
    reachable = np.isfinite(L)
    reachable[:, 0] = True
    if metric.linear:
        best = np.where(reachable, metric.utility[y], -np.inf).max(axis=1)
        return float(best @ weights / weights.sum())
    can = reachable[np.arange(y.size), y]
    actual = np.bincount(y, weights=weights, minlength=n)
    reach = np.bincount(y[can], weights=weights[can], minlength=n)
    counted = metric.f1_counted(y, n, sw)
    return float(np.mean(2 * reach[counted] / (reach[counted] + actual[counted])))


def _best_of(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric,
             options: list[np.ndarray]) -> np.ndarray:
    """The log-weights of ``options`` that score best by the decision rule (first of equals)."""
    n = L.shape[1]
    scores = [class_metric(y, predict_log(L, v), n, metric, sw) for v in options]
    return options[int(np.argmax(scores))]
def _multi_start(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric,
                 starts: list[np.ndarray], tuned: np.ndarray, restarts: int, max_rounds: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Best coordinate-wise optimum from ``starts``, then from ``restarts`` random perturbations
    of the best point so far (normal, in log, standard deviations RESTART_SCALES in turn)."""
    best_v, best_value = starts[0], -np.inf
    mask = np.zeros(L.shape[1])
    mask[tuned] = 1.0
    for index in range(len(starts) + restarts):
        scale = RESTART_SCALES[index % len(RESTART_SCALES)]
        start = (starts[index] if index < len(starts)
                 else best_v + mask * rng.normal(0.0, scale, L.shape[1]))
        v, value = coordinate_ascent(L, y, sw, metric, start, tuned, max_rounds)
        if value > best_value + MIN_GAIN:
            best_v, best_value = v, value
    return best_v


def _centred(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric,
             cells: list[np.ndarray], fallback: np.ndarray) -> np.ndarray:
    """Among the centres of ``cells`` (on the support of ``fallback``: its classes of positive
    weight) and ``fallback`` itself, the log-weights that score best by the decision rule
    ``argmax(p * w)``; among equals, the one with the largest margin."""
    support = np.isfinite(fallback)
    options = [(fallback, 0.0)]
    for pred in cells:
        found = centre_on_support(L, pred, support)
        if found is not None:
            options.append(found)
    n = L.shape[1]
    p = np.exp(L)
    scored = [(class_metric(y, np.argmax(p * _to_weights(v), axis=1), n, metric, sw), margin, i)
              for i, (v, margin) in enumerate(options)]
    return options[max(scored)[2]][0]


def fit_threshold(scores: object, labels: object, *, metric: str = "accuracy") -> float:
    """Threshold ``t`` maximising ``metric`` ("accuracy" or "f1") of ``scores >= t`` vs ``labels``.

    Args:
        scores: N finite real scores.
        labels: N labels in {0, 1}, both present.
        metric: "accuracy" (default) or "f1" (of class 1).

    Returns:
        The threshold ``t``: predict 1 iff ``score >= t``.

    Raises:
        ValueError: bad shapes or values, one class only, an unknown metric.

    Reference: the exact sweep of scikit-learn's ``TunedThresholdClassifierCV`` candidates,
    every distinct score; seed 002 (https://kexue.fm/archives/8860) for thresholds tuned on data.

    >>> round(fit_threshold([0.1, 0.3, 0.6, 0.8], [0, 0, 1, 1]), 6)
    0.45

    Exact in O(N log N): sort once; a cut after the c lowest scores is allowed only between two
    distinct values (tied scores always get the same prediction); accuracy and F1 at every cut come
    from cumulative label counts. Returns the midpoint of the two distinct scores around the best
    cut; for "everything positive" / "everything negative", half the gap to the nearest distinct
    value below the minimum / above the maximum (1 when all scores are equal). Among equally good
    cuts the lowest threshold is returned.
    """
    check_metric(metric, BINARY_METRICS)
    s, y = check_scores_binary(scores, labels)
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    n_total, n_pos = s.size, int(y.sum())
    # cut c = number of lowest-scored samples predicted negative, c in 0..N
    pos_below = np.concatenate(([0], np.cumsum(y_sorted)))
    cuts = np.arange(n_total + 1)
    tp = n_pos - pos_below
    if metric == "accuracy":
        value = (cuts - pos_below) + tp
    else:
        value = f1_from_counts(tp, n_total - cuts, np.full_like(tp, n_pos))
    allowed = np.ones(n_total + 1, dtype=bool)
    allowed[1:-1] = s_sorted[1:] > s_sorted[:-1]
    best = int(np.argmax(np.where(allowed, value, -np.inf)))
    distinct = s_sorted[np.append(True, allowed[1:-1])]  # already sorted: no second sort
    if best == 0:
        gap = distinct[1] - distinct[0] if distinct.size > 1 else 2.0
        return float(distinct[0] - gap / 2)
    if best == n_total:
        gap = distinct[-1] - distinct[-2] if distinct.size > 1 else 2.0
        return float(distinct[-1] + gap / 2)
    low, high = s_sorted[best - 1], s_sorted[best]
    middle = (low + high) / 2
    return float(middle if middle > low else high)  # any t in (low, high] gives this cut



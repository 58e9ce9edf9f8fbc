"""Exact decision thresholds and per-class decision weights, fitted on validation data.

Binary: predict 1 iff ``score >= t``; :func:`fit_threshold` finds the best ``t`` exactly.

Multi-class: predict ``argmax_j p_ij w_j`` (ties: the LOWEST index, like ``np.argmax``) with
positive weights; :func:`fit_class_weights` tunes ``w`` for accuracy or macro-F1. Weights are
scale-invariant; the search runs on log-weights ``v = log w`` (see :mod:`._coordinate`). Methods:

* ``"exact"`` (n <= 3): the global optimum. n = 2 is one sweep of a threshold on the ratio
  ``p_i1 / p_i0``; n = 3 enumerates the cells of the arrangement the rule induces, O(N^2 log N)
  (:mod:`._cells`).
* ``"coordinate"``: exact coordinate ascent (the best weight of one class at a time, found by a
  sorted sweep of its breakpoints) from plain argmax, from the prior ratio ``pi_val / pi_train``
  when ``train_prior`` is given, then ``restarts`` more times from random perturbations of the
  best point so far. A coordinate-wise optimum, best of several starts: NOT guaranteed global
  (maximising accuracy over the weights of many classes is a maximum feasible subsystem problem,
  for which no efficient exact method is known).
* ``"auto"`` (default): ``"exact"`` for n = 2, and for n = 3 up to ``EXACT_AUTO_ROWS`` rows;
  ``"coordinate"`` otherwise.
* ``"powell"``: seed 002's recipe as written (:mod:`._powell`), a baseline.

Every method but Powell returns the CENTRE of the decision cell it found (:func:`._cells.centre`):
the weights that keep every validation decision with the largest log-margin, divided by their
maximum (so ``max(w) == 1``). Weights stay within a ratio of e^700 (~1e304) of each other, so they
remain normal floats; a decision that needs a larger ratio is out of reach.

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

from dataclasses import dataclass, field

import numpy as np

from logitkit.thresholds._cells import best_cells, centre
from logitkit.thresholds._coordinate import (
    MIN_GAIN,
    coordinate_ascent,
    log_probs,
    predict_log,
)
from logitkit.thresholds._guard import choose_shrink, shrunk
from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    CLASS_METRICS,
    check_metric,
    check_probs,
    check_probs_labels,
    check_sample_weight,
    check_scores_binary,
    class_metric,
    f1_from_counts,
    present_classes,
)

METHODS = ("auto", "exact", "coordinate", "powell")
# "auto" runs the exact O(N^2 log N) search for 3 classes up to this many rows.
EXACT_AUTO_ROWS = 1000
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


def apply_class_weights(probs: object, weights: object) -> np.ndarray:
    """Predictions ``argmax_j probs[i, j] * weights[j]`` (ties: lowest index).

    ``probs``: (N, n) finite non-negative scores; ``weights``: n finite non-negative numbers.
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
    (a label shift). Both priors are normalised to sum 1.

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
    random_state: int = 0,
) -> np.ndarray:
    """Per-class weights ``w`` (n,) maximising ``metric`` of ``argmax(probs * w)`` on the data.

    ``probs``: (N, n) finite non-negative scores (need not sum to 1); ``labels``: N ids in
    [0, n), at least two classes present (a class with no sample keeps its starting weight while
    the others are tuned around it). ``metric``: "accuracy" or "macro_f1" (the mean F1 of the
    classes present). ``method``: "auto", "exact" (n <= 3, global optimum), "coordinate" (best of
    several coordinate ascents, not guaranteed global) or "powell" (seed 002's baseline, weights
    returned as it gives them); see the module docstring. ``sample_weight``: N non-negative weights
    of the samples in the metric. ``train_prior``: the class frequencies (or counts) the model was
    trained on: the prior ratio ``pi_val / pi_train`` (``pi_val`` from ``labels``, smoothed by
    :func:`class_prior`) is then a starting point and the shrinkage target. ``shrink``: None (no
    guard), a number in [0, 1] (``log w = shrink * log w_target + (1 - shrink) * log w_tuned``) or
    "cv" (the amount chosen on ``folds`` stratified folds; see :mod:`._guard`). ``restarts``:
    perturbed restarts of the coordinate ascent (default ``min(16, 16000 // N)``);
    ``max_rounds`` bounds each ascent; ``random_state`` seeds restarts and folds.

    >>> p = [[.33, .44, .22], [.4, .2, .4], [.18, .55, .27]]
    >>> w = fit_class_weights(p, [0, 2, 1])  # exact for 3 classes: all three right
    >>> apply_class_weights(p, w).tolist()
    [0, 2, 1]
    """
    return _fit(probs, labels, metric=metric, method=method, sample_weight=sample_weight,
                train_prior=train_prior, shrink=shrink, folds=folds, restarts=restarts,
                max_rounds=max_rounds, random_state=random_state).weights


@dataclass
class WeightFit:
    """Weights and how they were chosen: ``shrink`` applied, out-of-fold metric of each amount."""

    weights: np.ndarray
    shrink: float = 0.0
    cv_scores: dict[float, float] = field(default_factory=dict)


def _fit(probs: object, labels: object, *, metric: str, method: str, sample_weight: object,
         train_prior: object, shrink: float | str | None, folds: int, restarts: int | None,
         max_rounds: int, random_state: int) -> WeightFit:
    check_metric(metric, CLASS_METRICS)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    if restarts is not None and restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    p, y = check_probs_labels(probs, labels)
    sw = check_sample_weight(sample_weight, y.size)
    n = p.shape[1]
    if method == "exact" and n > 3:
        raise ValueError(f"method='exact' finds the global optimum for at most 3 classes, got {n};"
                         " use 'auto' or 'coordinate'")
    prior = None if train_prior is None else _check_prior(train_prior, "train_prior", size=n)
    rng = np.random.default_rng(random_state)

    def tune(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sub_w = None if sw is None else sw[rows]
        target = (np.zeros(n) if prior is None
                  else np.log(prior_ratio_weights(prior, class_prior(y[rows], n, sub_w))))
        v = _tune(p[rows], y[rows], sub_w, metric, method, target, restarts, max_rounds, rng)
        return v, target

    if shrink is None:
        if method == "powell":  # as the seed returns them, not normalised
            from logitkit.thresholds._powell import seed_powell

            return WeightFit(seed_powell(p, y, metric, sw))
        return WeightFit(_to_weights(tune(np.arange(y.size))[0]))
    if isinstance(shrink, str):
        if shrink != "cv":
            raise ValueError(f"shrink must be None, a number in [0, 1] or 'cv', got {shrink!r}")
        if not 2 <= folds <= y.size:
            raise ValueError(f"folds must be in [2, {y.size}] (the number of samples), got {folds}")
        lam, scores = choose_shrink(p, y, sw, metric, tune, folds, rng)
    else:
        lam, scores = float(shrink), {}
        if not 0 <= lam <= 1:
            raise ValueError(f"shrink must be in [0, 1], got {shrink}")
    v_tuned, v_target = tune(np.arange(y.size))
    return WeightFit(_to_weights(shrunk(v_tuned, v_target, lam)), lam, scores)


def _to_weights(v: np.ndarray) -> np.ndarray:
    """``exp(v - max v)``: the largest weight is exactly 1 (zeros stay zeros)."""
    finite = v[np.isfinite(v)]
    with np.errstate(under="ignore"):
        return np.exp(v - finite.max())


def _default_restarts(rows: int) -> int:
    return min(MAX_RESTARTS, RESTART_ROWS // rows)


def _tune(p: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: str, method: str,
          target: np.ndarray, restarts: int | None, max_rounds: int,
          rng: np.random.Generator) -> np.ndarray:
    """Tuned log-weights (``-inf`` for a weight of 0, Powell only)."""
    n = p.shape[1]
    if method == "powell":
        from logitkit.thresholds._powell import seed_powell

        return log_probs(seed_powell(p, y, metric, sw))
    L = log_probs(p)
    tuned = np.flatnonzero(present_classes(y, n, sw))
    free = min(tuned.size, n - 1)  # dimensions of the search (weights are scale-invariant)
    if method == "auto":
        exact = free <= 1 or (n == 3 and y.size <= EXACT_AUTO_ROWS)
        method = "exact" if exact else "coordinate"
    starts = [np.zeros(n)] if not np.any(target) else [np.zeros(n), target]
    if method == "exact" and free <= 1:  # one sweep of one weight covers every ratio
        v, _ = coordinate_ascent(L, y, sw, metric, np.zeros(n), tuned[-1:], 1)
        return _centred(L, p, y, sw, metric, [predict_log(L, v)], v)
    count = _default_restarts(y.size) if restarts is None else restarts
    v = _multi_start(L, y, sw, metric, starts, tuned, count, max_rounds, rng)
    # classes without samples keep their relative weights: centring would move them
    can_centre = n - tuned.size <= 1
    cells = [predict_log(L, v)] if can_centre else []
    if method == "exact":
        cells = [pred for _, pred in best_cells(L, y, sw, metric, KEEP_CELLS)] + cells
    return _centred(L, p, y, sw, metric, cells, v)


def _multi_start(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: str,
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


def _centred(L: np.ndarray, p: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: str,
             cells: list[np.ndarray], fallback: np.ndarray) -> np.ndarray:
    """Among the centres of ``cells`` and ``fallback`` itself, the log-weights that score best by
    the decision rule ``argmax(p * w)``; among equals, the one with the largest margin."""
    options = [(fallback, 0.0)]
    for pred in cells:
        found = centre(L, pred)
        if found is not None:
            options.append(found)
    n = p.shape[1]
    scored = [(class_metric(y, np.argmax(p * _to_weights(v), axis=1), n, metric, sw), margin, i)
              for i, (v, margin) in enumerate(options)]
    return options[max(scored)[2]][0]


def fit_threshold(scores: object, labels: object, *, metric: str = "accuracy") -> float:
    """Threshold ``t`` maximising ``metric`` ("accuracy" or "f1") of ``scores >= t`` vs ``labels``.

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



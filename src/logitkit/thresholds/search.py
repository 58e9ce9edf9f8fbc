"""Exact decision thresholds and per-class decision weights.

Binary: predict 1 iff ``score >= t``; :func:`fit_threshold` finds the best ``t`` exactly.

Multi-class: predict ``argmax_j p_ij w_j`` with ties going to the LOWEST index (like
``np.argmax``); :func:`fit_class_weights` tunes ``w`` for accuracy or macro-F1.

Exact coordinate ascent ("coordinate"): with every weight but ``w_k`` fixed, let
``m_i = max_{j != k} p_ij w_j`` and ``r_i`` its (lowest) argmax. Sample ``i`` with ``p_ik > 0``
predicts ``k`` when ``w_k > b_i = m_i / p_ik`` and ``r_i`` when ``w_k < b_i``; samples with
``p_ik = 0`` do not depend on ``w_k``. So the metric is piecewise constant in ``w_k`` with
breakpoints ``b_i``: sort them once, sweep them in increasing order updating the confusion counts
incrementally (cumulative sums), and set ``w_k`` to the midpoint of the best open interval
(below the smallest breakpoint: half of it; above the largest: twice it). Sweep the classes in turn
until a full round brings no gain (or ``max_rounds``). ``m_i`` and ``r_i`` come from the two best
weighted scores of each row, kept up to date as weights change. Each round costs O(n N log N).
Weights are kept positive (w_k = 0 is not searched). They start at 1 (plain argmax) and a change is
kept only if the metric, recomputed with the real decision rule, rises, so the result is never
worse than argmax on the data it was fitted on. It is a coordinate-wise optimum, not necessarily
the global one. Multiplicative weights are scale-invariant; the result is normalised so that
``max(w) = 1``.

Powell baseline ("powell"): the original recipe, ``scipy.optimize.minimize(method="Powell")`` of
``-metric(argmax(p * tanh(x)))`` over ``x``, starting from ``x = 1`` (all weights equal to
``tanh(1)``, i.e. plain argmax); the weights returned are ``tanh(x*)`` as they are, not
normalised (they may be negative). The original code was not available offline: the
parametrisation t = tanh(x) follows the issue's description; the start x = 1 is our choice (at
x = 0 every weight would be 0 and every sample would go to class 0).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from logitkit.thresholds.metrics import (
    BINARY_METRICS,
    CLASS_METRICS,
    check_metric,
    check_probs_labels,
    check_scores_binary,
    class_metric,
    f1_from_counts,
)

METHODS = ("coordinate", "powell")
# A candidate must beat the current metric by more than this to be taken (float noise guard).
_MIN_GAIN = 1e-12


def apply_class_weights(probs: object, weights: object) -> np.ndarray:
    """Predictions ``argmax_j probs[i, j] * weights[j]`` (ties: lowest index)."""
    p = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (samples, classes), got shape {p.shape}")
    if w.shape != (p.shape[1],):
        raise ValueError(f"weights must have shape ({p.shape[1]},) to match probs, got {w.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(w))):
        raise ValueError("probs and weights must be finite")
    return np.argmax(p * w, axis=1)


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


def fit_class_weights(
    probs: object,
    labels: object,
    *,
    metric: str = "accuracy",
    method: str = "coordinate",
    max_rounds: int = 100,
    maxfev: int | None = None,
) -> np.ndarray:
    """Per-class weights ``w`` (n,) maximising ``metric`` of ``argmax(probs * w)`` on the data.

    ``probs``: (N, n) finite non-negative scores (need not sum to 1); ``labels``: N ids in [0, n),
    every class present. ``metric``: "accuracy" or "macro_f1". ``method``: "coordinate" (exact
    coordinate ascent, at most ``max_rounds`` rounds over the classes) or "powell" (the scipy
    baseline; ``maxfev`` caps its function evaluations, None = scipy's default). See the module
    docstring for both algorithms and the tie rule.
    """
    check_metric(metric, CLASS_METRICS)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    p, y = check_probs_labels(probs, labels)
    if method == "powell":
        return _powell_weights(p, y, metric, maxfev)
    return _coordinate_weights(p, y, metric, max_rounds)


def _powell_weights(p: np.ndarray, y: np.ndarray, metric: str, maxfev: int | None) -> np.ndarray:
    n = p.shape[1]

    def negative_metric(x: np.ndarray) -> float:
        return -class_metric(y, np.argmax(p * np.tanh(x), axis=1), n, metric)

    options = {} if maxfev is None else {"maxfev": int(maxfev)}
    result = minimize(negative_metric, np.ones(n), method="Powell", options=options)
    return np.tanh(result.x)


def _coordinate_weights(p: np.ndarray, y: np.ndarray, metric: str, max_rounds: int) -> np.ndarray:
    n = p.shape[1]
    weights = np.ones(n)
    scores = p * weights
    columns = np.ascontiguousarray(p.T)  # columns[k] = p[:, k], contiguous
    top = _top_two(scores)
    preds = top[0]
    current = class_metric(y, preds, n, metric)
    # every class is swept at least once; then stop once n - 1 sweeps in a row brought no gain
    # (the class changed last is already at its best): a full round without gain, without
    # re-sweeping the class that was just optimised
    stale_sweeps, sweeps = 0, 0
    while sweeps < max_rounds * n and (sweeps < n or stale_sweeps < n - 1):
        k = sweeps % n
        sweeps += 1
        stale_sweeps += 1
        first, first_score, second, second_score = top
        rival = np.where(first == k, second, first)
        rival_score = np.where(first == k, second_score, first_score)
        candidate = _best_weight(columns[k], rival, rival_score, y, preds, k, n, metric)
        if candidate is None or candidate[1] <= current + _MIN_GAIN:
            continue
        column = columns[k] * candidate[0]
        wins = (column > rival_score) | ((column == rival_score) & (k < rival))
        new_preds = np.where(wins, k, rival)
        value = class_metric(y, new_preds, n, metric)
        if value > current:  # checked on the real decision rule, not only on the sweep
            weights[k], scores[:, k], preds, current = candidate[0], column, new_preds, value
            top = _update_top_two(top, scores, k)
            stale_sweeps = 0
    return weights / weights.max()


def _top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: index and value of the largest score and of the largest among the others.

    Ties go to the lowest index, so ``argmax_{j != k}`` is the first unless ``k`` is the first.
    """
    rows = np.arange(scores.shape[0])
    first = np.argmax(scores, axis=1)
    first_score = scores[rows, first]
    scores[rows, first] = -1.0  # scores are >= 0: the first cannot win again
    second = np.argmax(scores, axis=1)
    second_score = scores[rows, second]
    scores[rows, first] = first_score
    return first, first_score, second, second_score


def _update_top_two(
    top: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``_top_two(scores)`` after column ``k`` changed, recomputing only the rows that need it."""
    first, first_score, second, second_score = top
    stale = (first == k) | (second == k)  # k was one of the two: the rest of the row decides
    rows = np.flatnonzero(stale)
    if 2 * rows.size > stale.size:
        return _top_two(scores)
    column = scores[:, k]
    beats_first = (column > first_score) | ((column == first_score) & (k < first))
    beats_second = (column > second_score) | ((column == second_score) & (k < second))
    new_second = np.where(beats_first, first, np.where(beats_second, k, second))
    new_second_score = np.where(beats_first, first_score,
                                np.where(beats_second, column, second_score))
    new_first = np.where(beats_first, k, first)
    new_first_score = np.where(beats_first, column, first_score)
    (new_first[rows], new_first_score[rows], new_second[rows],
     new_second_score[rows]) = _top_two(scores[rows])
    return new_first, new_first_score, new_second, new_second_score


def _best_weight(
    p_k: np.ndarray,
    rival: np.ndarray,
    rival_score: np.ndarray,
    y: np.ndarray,
    preds: np.ndarray,
    k: int,
    n: int,
    metric: str,
) -> tuple[float, float] | None:
    """Best ``w_k`` (midpoint of the best interval between breakpoints) and its metric value."""
    free = p_k > 0  # rows whose prediction depends on w_k
    base = np.where(free, rival, preds)  # w_k below every breakpoint: free rows predict rival
    if metric == "accuracy":
        gain = (y == k).astype(np.int64) - (y == rival)
        rows = np.flatnonzero(free & (gain != 0))  # other rows cannot change the count
    else:
        rows = np.flatnonzero(free)
    if rows.size == 0:
        return None
    breaks = rival_score[rows] / p_k[rows]
    order = np.argsort(breaks)  # ties need no order: only group ends are evaluated
    breaks, rows = breaks[order], rows[order]
    if metric == "accuracy":
        start = float(np.count_nonzero(base == y))
        values = (start + np.cumsum(gain[rows])) / y.size
        start /= y.size
    else:
        start, values = _macro_f1_sweep(y[rows], rival[rows], y, base, k, n)
    # value after the last row of each group of equal breakpoints = value on the interval above
    last = np.flatnonzero(np.append(breaks[1:] > breaks[:-1], True))
    group_values = values[last]
    best = int(np.argmax(group_values))
    if breaks[0] > 0 and start >= group_values[best]:  # (0, smallest breakpoint) is best
        return float(breaks[0] / 2), float(start)
    low = breaks[last[best]]
    if best + 1 < last.size:
        return float((low + breaks[last[best] + 1]) / 2), float(group_values[best])
    return (float(2 * low) if low > 0 else 1.0), float(group_values[best])


def _macro_f1_sweep(
    y_sorted: np.ndarray, r_sorted: np.ndarray, y: np.ndarray, base: np.ndarray, k: int, n: int
) -> tuple[float, np.ndarray]:
    """Macro-F1 before any switch and after each switch ``r_sorted[s] -> k`` (in order).

    Switching row s moves one prediction from class ``r_s`` to ``k``: F1_k changes through the
    cumulative counts of switched rows; F1_{r_s} changes by its value after minus before, using the
    number of rows of class ``r_s`` switched so far (a per-class running count).
    """
    actual = np.bincount(y, minlength=n)
    tp0 = np.bincount(y[base == y], minlength=n)
    pred0 = np.bincount(base, minlength=n)
    f1_0 = f1_from_counts(tp0, pred0, actual)
    start = float(f1_0.sum()) / n
    hit_r = (y_sorted == r_sorted).astype(np.int64)
    # every class has a sample, so every denominator below is >= 1
    f1_k = 2.0 * (tp0[k] + np.cumsum(y_sorted == k)) / (
        pred0[k] + np.arange(1, y_sorted.size + 1) + actual[k])
    # running counts per rival class: rows of the same rival, in sweep order (a stable sort;
    # numpy uses a radix sort for 16-bit keys)
    key_type = np.int16 if n <= np.iinfo(np.int16).max else np.int64
    by_rival = np.argsort(r_sorted.astype(key_type), kind="stable")
    grouped_r = r_sorted[by_rival]
    group_start = np.flatnonzero(np.append(True, grouped_r[1:] != grouped_r[:-1]))
    sizes = np.diff(np.append(group_start, grouped_r.size))
    rank = np.arange(grouped_r.size) - np.repeat(group_start, sizes)
    hits = np.cumsum(hit_r[by_rival])
    hits_before_group = np.repeat(np.append(0, hits[group_start[1:] - 1]), sizes)
    moved = np.empty_like(rank)
    moved[by_rival] = rank + 1  # rows of this rival switched so far, this one included
    lost = np.empty_like(rank)
    lost[by_rival] = hits - hits_before_group  # true positives of this rival lost so far
    tp_after = tp0[r_sorted] - lost
    denominator_after = (pred0 + actual)[r_sorted] - moved
    change = 2.0 * (tp_after / denominator_after - (tp_after + hit_r) / (denominator_after + 1))
    others = f1_0.sum() - f1_0[k] + np.cumsum(change)
    return start, (f1_k + others) / n

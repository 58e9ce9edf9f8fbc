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
weighted scores of each row, kept up to date as weights change (a row is searched again only where
``w_k`` went down and ``k`` was one of its two best). For accuracy only rows labelled ``k`` or
``r_i`` change the count, so only their breakpoints are sorted (values only, no permutation); for
macro-F1 every row with ``p_ik > 0`` moves the counts of ``k`` and ``r_i`` and is swept. Each round
costs O(n N log N).
Weights are kept positive (w_k = 0 is not searched). They start at 1 (plain argmax) and a change is
kept only if the metric, recomputed with the real decision rule, rises, so the result is never
worse than argmax on the data it was fitted on. It is a coordinate-wise optimum, not necessarily
the global one. Multiplicative weights are scale-invariant; the result is divided by the power of
two that brings ``max(w)`` into ``[1, 2)``: a power of two scales every product ``p_ij w_j``
exactly, so exact ties between classes, and with them every decision, stay as they were fitted.

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
    columns = np.ascontiguousarray(p.T)  # columns[k] = p[:, k], contiguous
    own_rows = [np.flatnonzero((y == c) & (columns[c] > 0)) for c in range(n)]  # for accuracy
    top = _top_two(p)  # of p * weights
    current = class_metric(y, top[0], n, metric)
    # every class is swept at least once; then stop once n - 1 sweeps in a row brought no gain
    # (the class changed last is already at its best): a full round without gain, without
    # re-sweeping the class that was just optimised
    stale_sweeps, sweeps = 0, 0
    while sweeps < max_rounds * n and (sweeps < n or stale_sweeps < n - 1):
        k = sweeps % n
        sweeps += 1
        stale_sweeps += 1
        rival, rival_score = _rival(top, k)
        if metric == "accuracy":
            candidate = _best_weight_accuracy(columns[k], rival, rival_score, y, top[0],
                                              own_rows[k])
        else:
            candidate = _best_weight_macro_f1(columns[k], rival, rival_score, y, top[0], k, n)
        if candidate is None or candidate[1] <= current + _MIN_GAIN:
            continue
        column = columns[k] * candidate[0]
        new_top = _update_top_two(top, p, weights, column, k, candidate[0] < weights[k])
        value = class_metric(y, new_top[0], n, metric)
        if value > current:  # checked on the real decision rule, not only on the sweep
            weights[k], top, current = candidate[0], new_top, value
            stale_sweeps = 0
    return weights / 2.0 ** np.floor(np.log2(weights.max()))


def _top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: index and value of the largest score and of the largest among the others.

    Ties go to the lowest index, so ``argmax_{j != k}`` is the first unless ``k`` is the first.
    """
    rows = np.arange(scores.shape[0])
    first = np.argmax(scores, axis=1)
    first_score = scores[rows, first]
    rest = scores.copy()
    rest[rows, first] = -1.0  # scores are >= 0: the first cannot win again
    second = np.argmax(rest, axis=1)
    return first, first_score, second, rest[rows, second]


def _update_top_two(
    top: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    p: np.ndarray,
    weights: np.ndarray,
    column: np.ndarray,
    k: int,
    decreased: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``top = _top_two(p * weights)`` updated for ``w_k`` changing (``column = p[:, k] * w_k``).

    The best other column ``o`` of a row is known (:func:`_rival`); where the new ``k`` beats it,
    the top two are ``(k, o)``. Elsewhere ``o`` leads and the runner-up is ``k`` where ``k`` was in
    the top two or beats the old second, else the old second. That is exact except where ``k`` was
    in the top two, does not beat ``o`` and went down (the third column, not kept, may now pass
    it): there ``o`` still leads, and only the runner-up is searched again. Rows are patched by
    index (sparse).
    """
    first, _, second, second_score = top
    other, other_score = _rival(top, k)
    beats_other = _beats(column, other_score, other, k)
    in_top = (first == k) | (second == k)
    runner_up = np.flatnonzero((in_top | _beats(column, second_score, second, k)) & ~beats_other)
    won = np.flatnonzero(beats_other)
    new_first, new_first_score = other.copy(), other_score.copy()
    new_second, new_second_score = second.copy(), second_score.copy()
    new_first[won], new_first_score[won] = k, column[won]
    new_second[won], new_second_score[won] = other[won], other_score[won]
    new_second[runner_up], new_second_score[runner_up] = k, column[runner_up]
    if decreased:
        rows = np.flatnonzero(in_top & ~beats_other)
        rest = p[rows] * weights
        rest[:, k] = column[rows]
        positions = np.arange(rows.size)
        rest[positions, other[rows]] = -1.0  # scores are >= 0: o cannot be picked again
        new_second[rows] = best_rest = np.argmax(rest, axis=1)
        new_second_score[rows] = rest[positions, best_rest]
    return new_first, new_first_score, new_second, new_second_score


def _rival(
    top: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: index ``r_i`` and value ``m_i`` of the best score among the columns other than k."""
    first, first_score, second, second_score = top
    rival, rival_score = first.copy(), first_score.copy()
    rows = np.flatnonzero(first == k)
    rival[rows], rival_score[rows] = second[rows], second_score[rows]
    return rival, rival_score


def _beats(column: np.ndarray, score: np.ndarray, index: np.ndarray, k: int) -> np.ndarray:
    """Whether column ``k`` wins against column ``index`` in each row (ties: lower index wins)."""
    wins = column > score
    ties = np.flatnonzero(column == score)
    wins[ties] = index[ties] > k
    return wins


def _best_weight_accuracy(
    p_k: np.ndarray,
    rival: np.ndarray,
    rival_score: np.ndarray,
    y: np.ndarray,
    preds: np.ndarray,
    gainers: np.ndarray,
) -> tuple[float, float] | None:
    """Best ``w_k`` for accuracy and its value (see :func:`_pick_interval`).

    Raising ``w_k`` past ``b_i`` switches row ``i`` from ``r_i`` to ``k``: +1 if its label is
    ``k`` (``gainers``: the rows of class ``k`` with ``p_ik > 0``), -1 if its label is ``r_i``, 0
    otherwise, so only those two sets of breakpoints are sorted (values only, no permutation).
    The first best interval starts at a breakpoint with a gain or at the lowest breakpoint (an
    interval entered by losses alone is worse than the one below it): only those are evaluated.
    """
    free = p_k > 0
    # (index arrays: fancy indexing with them is much faster than with boolean masks)
    losers = np.flatnonzero(free & (y == rival))
    up = np.sort(rival_score[gainers] / p_k[gainers])
    down = np.sort(rival_score[losers] / p_k[losers])
    if up.size + down.size == 0:
        return None
    start = down.size + np.count_nonzero(~free & (preds == y))
    group_last = np.flatnonzero(np.append(up[1:] > up[:-1], up.size > 0))
    ends, gained = up[group_last], group_last + 1
    lowest = min(up[0] if up.size else np.inf, down[0] if down.size else np.inf)
    if ends.size == 0 or lowest < ends[0]:
        ends, gained = np.append(lowest, ends), np.append(0, gained)
    values = (start + gained - np.searchsorted(down, ends, side="right")) / y.size
    return _pick_interval(start / y.size, lowest, ends, values, (up, down))


def _best_weight_macro_f1(
    p_k: np.ndarray,
    rival: np.ndarray,
    rival_score: np.ndarray,
    y: np.ndarray,
    preds: np.ndarray,
    k: int,
    n: int,
) -> tuple[float, float] | None:
    """Best ``w_k`` for macro-F1 and its value (see :func:`_pick_interval`)."""
    free = p_k > 0  # rows whose prediction depends on w_k
    rows = np.flatnonzero(free)
    if rows.size == 0:
        return None
    base = rival.copy()  # w_k below every breakpoint: free rows predict their rival
    fixed = np.flatnonzero(~free)
    base[fixed] = preds[fixed]
    breaks = rival_score[rows] / p_k[rows]
    order = np.argsort(breaks)  # ties need no order: only group ends are evaluated
    breaks, rows = breaks[order], rows[order]
    start, values = _macro_f1_sweep(y[rows], rival[rows], y, base, k, n)
    # value after the last row of each group of equal breakpoints = value on the interval above
    last = np.flatnonzero(np.append(breaks[1:] > breaks[:-1], True))
    return _pick_interval(start, breaks[0], breaks[last], values[last], (breaks,))


def _pick_interval(
    start: float,
    lowest: float,
    ends: np.ndarray,
    values: np.ndarray,
    breakpoints: tuple[np.ndarray, ...],
) -> tuple[float, float]:
    """Midpoint of the best interval between breakpoints, and the metric there.

    ``values[g]``: the metric just above breakpoint ``ends[g]`` (ascending); ``start``: below
    ``lowest``, the smallest breakpoint; ``breakpoints``: sorted arrays holding every breakpoint.
    The lowest of equally good intervals wins; below the smallest breakpoint the weight is half
    of it, above the largest twice it.
    """
    best = int(np.argmax(values))
    if lowest > 0 and start >= values[best]:  # (0, smallest breakpoint) is best
        return float(lowest / 2), float(start)
    low = ends[best]
    high = min(_next_above(sorted_values, low) for sorted_values in breakpoints)
    if np.isfinite(high):
        return float((low + high) / 2), float(values[best])
    return (float(2 * low) if low > 0 else 1.0), float(values[best])


def _next_above(sorted_values: np.ndarray, value: float) -> float:
    """Smallest entry of ``sorted_values`` above ``value`` (inf if none)."""
    index = np.searchsorted(sorted_values, value, side="right")
    return float(sorted_values[index]) if index < sorted_values.size else np.inf


def _macro_f1_sweep(
    y_sorted: np.ndarray, r_sorted: np.ndarray, y: np.ndarray, base: np.ndarray, k: int, n: int
) -> tuple[float, np.ndarray]:
    """Macro-F1 before any switch and after each switch ``r_sorted[s] -> k`` (in order).

    Switching row s moves one prediction from class ``r_s`` to ``k``: F1_k changes through the
    cumulative counts of switched rows; F1_{r_s} changes by its value after minus before, using the
    numbers of rows of rival ``r_s`` switched so far and of those labelled ``r_s`` (running counts
    within each rival's group, computed in rival-grouped order and scattered back).
    """
    actual = np.bincount(y, minlength=n)
    tp0 = np.bincount(y[np.flatnonzero(base == y)], minlength=n)
    pred0 = np.bincount(base, minlength=n)
    f1_0 = f1_from_counts(tp0, pred0, actual)
    start = float(f1_0.sum()) / n
    switched = np.arange(1, y_sorted.size + 1)
    # every class has a sample, so every denominator below is >= 1
    f1_k = 2.0 * (tp0[k] + np.cumsum(y_sorted == k)) / (pred0[k] + actual[k] + switched)
    # group the rows by rival, keeping sweep order inside a group (a stable sort; numpy uses a
    # radix sort for 16-bit keys)
    key_type = np.int16 if n <= np.iinfo(np.int16).max else np.int64
    by_rival = np.argsort(r_sorted.astype(key_type), kind="stable")
    grouped_r = r_sorted[by_rival]
    hit = (y_sorted == r_sorted)[by_rival]  # the rival loses a true positive
    group_start = np.flatnonzero(np.append(True, grouped_r[1:] != grouped_r[:-1]))
    sizes = np.diff(np.append(group_start, grouped_r.size))
    moved = switched - np.repeat(group_start, sizes)  # rows of this rival switched so far
    hits = np.cumsum(hit)
    lost = hits - np.repeat(np.append(0, hits[group_start[1:] - 1]), sizes)
    tp_after = tp0[grouped_r] - lost
    denominator_after = (pred0 + actual)[grouped_r] - moved
    change = np.empty(y_sorted.size)
    change[by_rival] = 2.0 * (tp_after / denominator_after
                              - (tp_after + hit) / (denominator_after + 1))
    others = f1_0.sum() - f1_0[k] + np.cumsum(change)
    return start, (f1_k + others) / n

"""Coordinate ascent on log-weights: the best ``v_k`` for one class at a time, found exactly.

Everything here works with ``L = log p`` (``-inf`` where ``p = 0``) and log-weights ``v``: the rule
``argmax_j p_ij w_j`` is ``argmax_j (L_ij + v_j)`` with ``v = log w``, ties to the lowest index.
Logs keep every breakpoint finite: a ratio ``m / p_ik`` with ``p_ik = 1e-310`` overflows, its log
does not.

One coordinate step, class ``k`` (every other ``v_j`` fixed): let ``m_i = max_{j != k} L_ij + v_j``
and ``r_i`` its (lowest) argmax. A row with ``p_ik > 0`` predicts ``k`` when ``v_k > b_i = m_i -
L_ik`` and ``r_i`` when ``v_k < b_i``; the others do not depend on ``v_k``. The metric is piecewise
constant in ``v_k`` with breakpoints ``b_i``: sort them, sweep them in increasing order updating
the (weighted) confusion counts with cumulative sums, and take the middle of the best open
interval (below the lowest breakpoint: ``log 2`` under it; above the highest: ``log 2`` over it).
Breakpoints closer than ``TOLERANCE`` are one breakpoint: an interval narrower than that cannot be
told apart from a tie in floating point. ``m_i`` and ``r_i`` come from the two best scores of each
row, kept up to date as weights change.

This finds the best weight of ONE class exactly; repeating it over the classes until a full round
brings no gain reaches a coordinate-wise optimum, which need not be the global optimum (a change of
two weights together can gain where no single change does). :mod:`._cells` gives the global optimum
for n <= 3; :func:`logitkit.thresholds.fit_class_weights` restarts this ascent from several points
for larger n.
"""

from __future__ import annotations

import numpy as np

from logitkit.thresholds.metrics import Metric, class_metric

# Breakpoints (log-ratios) closer than this are treated as one.
TOLERANCE = 1e-9
# A candidate must beat the current metric by more than this to be taken (float noise guard).
MIN_GAIN = 1e-12
# Below the lowest / above the highest breakpoint, the weight is set this far (in log) from it.
STEP = float(np.log(2.0))
# A function metric is evaluated at this many intervals of a sweep at most.
FUNCTION_CANDIDATES = 64

Top = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def log_probs(p: np.ndarray) -> np.ndarray:
    """``log p`` with ``-inf`` for zeros, without a divide-by-zero warning."""
    with np.errstate(divide="ignore"):
        return np.log(p)


def predict_log(L: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``argmax_j L_ij + v_j`` (ties: lowest index)."""
    return np.argmax(L + v, axis=1)


def coordinate_ascent(
    L: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    metric: Metric,
    start: np.ndarray,
    tuned: np.ndarray,
    max_rounds: int,
) -> tuple[np.ndarray, float]:
    """Coordinate-wise optimum of ``metric`` reached from log-weights ``start``; (v, metric).

    Only the classes in ``tuned`` (indices) are swept. Every tuned class is swept at least once;
    the ascent stops once ``len(tuned) - 1`` sweeps in a row brought no gain (a full round without
    re-sweeping the class just changed), or after ``max_rounds`` rounds.
    """
    n = L.shape[1]
    sw = np.ones(y.size) if sample_weight is None else sample_weight
    v = np.array(start, dtype=np.float64)
    columns = [Column(L, y, k) for k in range(n)]
    top = _top_two(L + v)
    current = class_metric(y, top[0], n, metric, sample_weight)
    actual = np.bincount(y, weights=sw, minlength=n)  # class totals (weighted)
    counted = metric.f1_counted(y, n, sample_weight)
    stale, sweeps = 0, 0
    while sweeps < max_rounds * tuned.size and (sweeps < tuned.size or stale < tuned.size - 1):
        k = int(tuned[sweeps % tuned.size])
        sweeps += 1
        stale += 1
        rival = _rival(top, k)
        candidate = best_weight(columns[k], rival, top[0], y, sw, actual, metric, counted)
        switch_off = _switch_off(columns[k], rival, top[0], y, n, metric, sample_weight)
        if switch_off is not None and switch_off[1] > max(current, (candidate or (0, -1))[1]):
            v[k] = -np.inf  # weight 0 beats every positive weight of class k
            top, current, stale = _top_two(L + v), switch_off[1], 0
            continue
        if candidate is None or candidate[1] <= current + MIN_GAIN:
            continue
        column = columns[k].log_p + candidate[0]
        new_top = _update_top_two(top, L, v, column, k, candidate[0] < v[k])
        value = class_metric(y, new_top[0], n, metric, sample_weight)
        if value > current:  # checked on the decision rule itself, not only on the sweep
            v[k], top, current = candidate[0], new_top, value
            stale = 0
    return v, current


def _switch_off(column: Column, rival: tuple[np.ndarray, np.ndarray], preds: np.ndarray,
                y: np.ndarray, n: int, metric: Metric,
                sample_weight: np.ndarray | None) -> tuple[float, float] | None:
    """``(-inf, metric)`` for weight 0 on class k, where that differs from every positive
    weight: rows whose only non-zero product is k's then predict 0 (``np.argmax`` of zeros)
    instead of k; None where no such row exists (a tiny weight decides alike)."""
    r, m = rival
    if column.k == 0 or not np.any(m[column.free] == -np.inf):
        return None
    switched = preds.copy()  # rows with p_ik = 0 never predict k: they keep their class
    switched[column.free] = np.where(m[column.free] > -np.inf, r[column.free], 0)
    return -np.inf, class_metric(y, switched, n, metric, sample_weight)


class Column:
    """Class k's log-probabilities and the rows that do (``free``: p_ik > 0) or do not depend on
    ``v_k``; ``own``: the free rows labelled k."""

    def __init__(self, L: np.ndarray, y: np.ndarray, k: int):
        self.k = k
        self.log_p = np.ascontiguousarray(L[:, k])
        free = self.log_p > -np.inf
        self.all_free = bool(free.all())
        self.free = np.flatnonzero(free)
        self.fixed = np.flatnonzero(~free)
        self.own = np.flatnonzero(free & (y == k))


def best_weight(
    column: Column,
    rival: tuple[np.ndarray, np.ndarray],
    preds: np.ndarray,
    y: np.ndarray,
    sw: np.ndarray,
    actual: np.ndarray,
    metric: Metric,
    counted: np.ndarray,
) -> tuple[float, float] | None:
    """Best log-weight ``v_k`` (others fixed) and the metric there; None if nothing depends on it.

    ``rival = (r, m)``: per row the best other class and its score ``L + v``; ``preds``: the
    current predictions (used for the rows that do not depend on ``v_k``); ``actual``: the
    (weighted) number of rows of each class; ``counted``: the classes whose F1 is averaged.
    A function metric is evaluated at no more than FUNCTION_CANDIDATES intervals (not exact).
    """
    if column.free.size == 0:
        return None
    r, m = rival
    k, log_p, fixed = column.k, column.log_p, column.fixed
    total = float(sw.sum())
    if metric.is_accuracy:
        # only rows labelled k (gain) or labelled r_i (loss) change the count
        at_rival = y == r
        if not column.all_free:
            at_rival[fixed] = False
        losers = np.flatnonzero(at_rival)
        rows = np.concatenate([column.own, losers])
        if rows.size == 0:
            return None
        gains = np.concatenate([sw[column.own], -sw[losers]])
        breaks = m[rows] - log_p[rows]
        order = np.argsort(breaks)
        start = (sw[losers].sum() + sw[fixed][preds[fixed] == y[fixed]].sum()) / total
        return pick_interval(float(start), breaks[order],
                             start + np.cumsum(gains[order]) / total)
    base = r.copy()  # v_k below every breakpoint: free rows predict their rival
    base[fixed] = preds[fixed]
    if column.all_free:  # (no gathers: every row depends on v_k)
        breaks = m - log_p
        rows = np.argsort(breaks)  # ties need no order: only group ends are evaluated
        breaks = breaks[rows]
    else:
        breaks = m[column.free] - log_p[column.free]
        order = np.argsort(breaks)
        rows, breaks = column.free[order], breaks[order]
    if metric.linear:  # switching row i from r_i to k gains U[y_i, k] - U[y_i, r_i]
        u = metric.utility
        start = float(sw @ u[y, base]) / total
        gains = sw[rows] * (u[y[rows], k] - u[y[rows], r[rows]])
        return pick_interval(start, breaks, start + np.cumsum(gains) / total)
    if metric.function is not None:
        return _function_sweep(metric, y, sw, base, rows, breaks, k)
    start, values = _f1_sweep(y[rows], r[rows], sw[rows], y, sw, base, k, actual, counted)
    return pick_interval(start, breaks, values)


def _function_sweep(metric: Metric, y: np.ndarray, sw: np.ndarray, base: np.ndarray,
                    rows: np.ndarray, breaks: np.ndarray, k: int) -> tuple[float, float]:
    """A function metric at the interval after each of at most FUNCTION_CANDIDATES group ends
    (evenly spaced), and below every breakpoint: ``rows[:s + 1]`` predict k after end s."""
    with np.errstate(invalid="ignore"):
        ends = np.flatnonzero(np.append(np.diff(breaks) > TOLERANCE, True))
    if ends.size > FUNCTION_CANDIDATES:
        ends = ends[np.linspace(0, ends.size - 1, FUNCTION_CANDIDATES).round().astype(int)]
    weights = None if np.all(sw == 1) else sw
    values = np.full(breaks.size, -np.inf)
    for end in ends:
        preds = base.copy()
        preds[rows[:end + 1]] = k
        values[end] = metric.function(y, preds, weights)
    return pick_interval(float(metric.function(y, base, weights)), breaks, values)


def pick_interval(start: float, breaks: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Middle of the best open interval between sorted ``breaks`` and the metric there.

    ``values[s]``: the metric once rows ``0..s`` switched; ``start``: before any switch. Only the
    last row of a group of (near-)equal breakpoints ends an interval. The lowest of equally good
    intervals wins.
    """
    with np.errstate(invalid="ignore"):  # -inf - -inf: one group
        ends = np.flatnonzero(np.append(np.diff(breaks) > TOLERANCE, True))
    best = int(ends[np.argmax(values[ends])])
    if breaks[0] > -np.inf and start >= values[best]:  # below the lowest breakpoint is best
        return float(breaks[0] - STEP), float(start)
    low = breaks[best]
    high = breaks[best + 1] if best + 1 < breaks.size else np.inf
    if low == -np.inf:
        return (float(high - STEP) if high < np.inf else 0.0), float(values[best])
    if high == np.inf:
        return float(low + STEP), float(values[best])
    return float((low + high) / 2), float(values[best])


def _f1_sweep(
    y_sorted: np.ndarray,
    r_sorted: np.ndarray,
    w_sorted: np.ndarray,
    y: np.ndarray,
    sw: np.ndarray,
    base: np.ndarray,
    k: int,
    actual: np.ndarray,
    counted: np.ndarray,
) -> tuple[float, np.ndarray]:
    """Mean F1 of the ``counted`` classes before any switch and after each switch
    ``r_sorted[s] -> k`` (in order).

    Switching row s (weight ``w_s``) moves its prediction from class ``r_s`` to ``k``: F1_k changes
    through cumulative sums over the switched rows; F1_{r_s} changes by its value after minus
    before, from the weight of the rows of rival ``r_s`` switched so far and of those labelled
    ``r_s`` (running sums within each rival's group, computed in rival-grouped order and scattered
    back). Only the ``counted`` classes (each present in the labels) count in the mean.
    """
    n = actual.size
    tp0 = np.bincount(y, weights=sw * (base == y), minlength=n)
    # predicted + actual; an absent class gets 1 more: its F1 is 0 (no true positive) and no
    # denominator below is 0 (a present class has a positive actual weight)
    both0 = np.bincount(base, weights=sw, minlength=n) + actual + (actual <= 0)
    f1_0 = 2 * tp0 / both0 * counted
    count = np.count_nonzero(counted)
    start = float(f1_0.sum()) / count
    f1_k = 2 * (tp0[k] + np.cumsum(w_sorted * (y_sorted == k))) / (both0[k] + np.cumsum(w_sorted))
    f1_k *= counted[k]
    # group the rows by rival, keeping sweep order inside a group (a stable sort; numpy uses a
    # radix sort for 16-bit keys); running sums within a group = running sums over the grouped
    # rows minus their value where the group starts
    key_type = np.int16 if n <= np.iinfo(np.int16).max else np.int64
    by_rival = np.argsort(r_sorted.astype(key_type), kind="stable")
    grouped_r = r_sorted[by_rival]
    grouped_w = w_sorted[by_rival]
    hit = grouped_w * (y_sorted[by_rival] == grouped_r)  # the rival loses a true positive
    moved, lost = np.cumsum(grouped_w), np.cumsum(hit)
    group_start = np.searchsorted(grouped_r, np.arange(n))
    tp_after = (tp0 + np.append(0.0, lost)[group_start])[grouped_r] - lost
    both_after = (both0 + np.append(0.0, moved)[group_start])[grouped_r] - moved
    change = np.empty(y_sorted.size)
    change[by_rival] = 2 * counted[grouped_r] * (
        tp_after / both_after - (tp_after + hit) / (both_after + grouped_w))
    others = f1_0.sum() - f1_0[k] + np.cumsum(change)
    return start, (f1_k + others) / count


def _top_two(scores: np.ndarray) -> Top:
    """Per row: index and value of the largest score and of the largest among the others."""
    rows = np.arange(scores.shape[0])
    first = np.argmax(scores, axis=1)
    second, second_score = _best_excluding(scores.copy(), first)
    return first, scores[rows, first], second, second_score


def _best_excluding(scores: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the (lowest) argmax of ``scores`` other than column ``exclude`` (``scores`` is
    overwritten); where every other score is ``-inf``, the lowest other index."""
    rows = np.arange(scores.shape[0])
    scores[rows, exclude] = -np.inf
    best = np.argmax(scores, axis=1)
    clash = best == exclude  # the whole row is -inf
    best[clash] = np.where(exclude[clash] == 0, 1, 0)
    return best, scores[rows, best]


def _update_top_two(top: Top, L: np.ndarray, v: np.ndarray, column: np.ndarray, k: int,
                    decreased: bool) -> Top:
    """``top = _top_two(L + v)`` updated for ``v_k`` changing (``column = L[:, k] + new v_k``).

    The best other column ``o`` of a row is known (:func:`_rival`); where the new ``k`` beats it,
    the top two are ``(k, o)``. Elsewhere ``o`` leads and the runner-up is ``k`` where ``k`` was in
    the top two or beats the old second, else the old second. That is exact except where ``k`` was
    in the top two, does not beat ``o`` and went down (the third column, not kept, may now pass
    it): there ``o`` still leads, and only the runner-up is searched again.
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
        rest = L[rows] + v
        rest[:, k] = column[rows]
        new_second[rows], new_second_score[rows] = _best_excluding(rest, other[rows])
    return new_first, new_first_score, new_second, new_second_score


def _rival(top: Top, k: int) -> tuple[np.ndarray, np.ndarray]:
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

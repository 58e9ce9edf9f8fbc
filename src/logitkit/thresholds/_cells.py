"""Decision cells of ``argmax_j (L_ij + v_j)``: the centre of one; the global optimum for n = 3.

Log-weights ``v`` (``v = log w``, ``L = log p``) split into open cells on which every decision is
fixed; ``v`` and ``v + c`` (any constant c) decide alike. The walls are the hyperplanes
``v_a - v_b = L_ib - L_ia`` of every row i and pair (a, b). Decisions on a wall, where the lowest
index wins a tie, equal those of a neighbouring open cell (move ``v_a`` up by a tiny
``eps * (n - a)``: strict inequalities stay, ties break as the lowest-index rule says), so the best
metric over all weights is the best over the open cells.

Centre of a cell (:func:`centre`). The cell with decisions ``pred`` is ``{v : v_a - v_b > C_ab}``
with ``C_ab = max over rows predicted a of (L_ib - L_ia)``: difference constraints. The largest
margin ``s`` with ``v_a - v_b >= C_ab + s`` everywhere is minus the maximum mean weight of a cycle
of the graph with edge weights ``C`` (Karp 1978); any ``s`` below it is met by shortest-path
potentials (edge ``a -> b`` of length ``-(C_ab + s)``, Floyd-Warshall). We return the midpoint of
the highest and the lowest such potentials, so every decision holds with a log-margin of about
``s`` (a ratio of ``e^s``), which keeps them in floating point and places the weights as far from
every wall as the cell allows. Each difference is kept within ``BOX`` (weights stay representable
and an unbounded cell gets a finite centre).

Global optimum for n = 3 (:func:`best_cells`). In the plane ``(v_1, v_2)`` (``v_0 = 0``) the walls
lie on three families of lines: ``v_1 = c``, ``v_2 = c`` and ``v_2 - v_1 = c``; family (j, l, k)
holds the lines ``u = v_l - v_j = d_i = L_ij - L_il`` of the rows, and k is the third class.
Every bounded cell has a wall with the cell on its upper side (larger u): at the cell's lowest
point either a horizontal wall has the cell above it, or the two walls rising from that vertex
(vertical and diagonal) hold it to the right of the vertical one. Every unbounded cell is crossed
by a far line ``u = +-U`` of some family, with U beyond every vertex. Just above a line
(``u = d_i + eps``) the third weight ``v_k`` moves alone, so the cells along it are those of ONE
coordinate sweep in ``v_k``: rows whose rival is j switch to k at the fixed key ``L_ij - L_ik``,
rows whose rival is l at ``L_il - L_ik + u`` (a key moving with u, which also breaks its ties with
fixed keys: it lies above them). Sweeping the O(N) lines of the 3 families visits every cell.
Each key list is sorted once; per line, membership masks, cumulative sums and binary searches
(merging the two sorted lists) are vectorised over a block of lines: O(N^2 log N) time in all,
O(N) memory per line. For accuracy, rows labelled with neither class of a key list cannot change
the count and are left out of it. The best cells found are realised by :func:`centre` and checked
by the decision rule itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from logitkit.thresholds._coordinate import TOLERANCE
from logitkit.thresholds.metrics import Metric

# Largest log-ratio between two weights (e^700 ~ 1e304: weights stay normal floats).
BOX = 700.0
# Elements per block of lines (bounds the memory of the vectorised sweep).
BLOCK = 1_000_000


def centre(L: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Log-weights at the centre of the cell deciding ``pred``, and their margin; None if empty.

    See the module docstring. Rows whose scores are all zero are predicted 0 by any weights and
    add no constraint.
    """
    n = L.shape[1]
    gaps = np.full((n, n), -np.inf)
    live = np.any(np.isfinite(L), axis=1)
    for a in range(n):
        rows = np.flatnonzero(live & (pred == a))
        if rows.size == 0:
            continue
        if np.any(L[rows, a] == -np.inf):
            return None  # a row predicted a class it gives probability 0
        gaps[a] = np.max(L[rows] - L[rows, a:a + 1], axis=0)
    finite = np.abs(gaps[np.isfinite(gaps)])
    box = min(2 * n * (finite.max() if finite.size else 0.0) + 1.0, BOX)
    gaps = np.maximum(gaps, -box)
    np.fill_diagonal(gaps, -np.inf)
    margin = -_max_cycle_mean(gaps)
    if not margin > 0:
        return None
    length = -(gaps + margin * (1 - 1e-6))  # v_b <= v_a + length[a, b]
    np.fill_diagonal(length, 0.0)
    for middle in range(n):  # Floyd-Warshall
        np.minimum(length, length[:, middle:middle + 1] + length[middle:middle + 1, :],
                   out=length)
    v = (length.min(axis=0) - length.min(axis=1)) / 2
    v -= v.max()
    if not np.array_equal(np.argmax(L + v, axis=1), pred):
        return None
    return v, float(margin)


def centre_on_support(L: np.ndarray, pred: np.ndarray,
                      support: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Log-weights (``-inf`` off ``support``) at the centre of the cell deciding ``pred``
    (:func:`centre` on the support's columns) and their log-margin
    (``inf`` for a single class), or None if no such weights exist."""
    if not support.any():
        support = np.arange(L.shape[1]) == 0  # all weights 0 decide like w = (1, 0, ..., 0)
    columns = np.flatnonzero(support)
    sub = L[:, columns]
    dead = ~np.isfinite(sub).any(axis=1)  # predicted 0 by the rule, whatever the weights
    if np.any(pred[dead] != 0):
        return None
    position = np.searchsorted(columns, pred)
    inside = (position < columns.size) & (columns[np.minimum(position, columns.size - 1)] == pred)
    if not np.all(inside | dead):
        return None
    v = np.full(L.shape[1], -np.inf)
    margin = np.inf
    if columns.size == 1:  # one positive weight: its rows have no rival
        v[columns] = 0.0
    else:
        found = centre(sub, np.where(dead, 0, position))
        if found is None:
            return None
        v[columns], margin = found
    if not np.array_equal(np.argmax(L + v, axis=1), pred):
        return None
    return v, margin


def _max_cycle_mean(weights: np.ndarray) -> float:
    """Karp's maximum mean weight of a cycle (``-inf`` entries: no edge; -inf if acyclic)."""
    n = weights.shape[0]
    walks = np.zeros((n + 1, n))  # walks[k, v]: heaviest walk of k edges ending at v
    for k in range(1, n + 1):
        walks[k] = np.max(walks[k - 1][:, None] + weights, axis=0)
    with np.errstate(invalid="ignore"):
        ratios = (walks[n] - walks[:n]) / (n - np.arange(n))[:, None]
    ratios = np.where(np.isnan(ratios), -np.inf, ratios)
    means = np.where(walks[n] > -np.inf, ratios.min(axis=0), -np.inf)
    return float(means.max())


@dataclass
class Candidate:
    """A cell found just above the line ``v_l - v_j = u``: the first ``below_j`` rows of the
    j-key order and ``below_l`` of the l-key order (those whose rival it is) switch to k."""

    value: float
    family: int
    u: float
    below_j: int
    below_l: int


class _Family:
    """Sorted keys of one choice (j, l, k) of the swept class k and the line's pair j < l."""

    def __init__(self, L: np.ndarray, y: np.ndarray, j: int, l: int, k: int, metric: Metric):
        self.j, self.l, self.k = j, l, k
        has_j, has_l, has_k = L[:, j] > -np.inf, L[:, l] > -np.inf, L[:, k] > -np.inf
        self.rivalled = has_j | has_l  # rows whose best of (j, l) depends on u
        # rows with neither j nor l: k if p_ik > 0, else all-zero, predicted 0
        self.fixed = np.flatnonzero(~self.rivalled)
        self.fixed_pred = np.where(has_k[self.fixed], k, 0)
        with np.errstate(invalid="ignore"):
            d = np.where(self.rivalled, L[:, j] - L[:, l], np.nan)  # +-inf: one of them is 0
        self.d = _snap(d)
        rows = np.flatnonzero(self.rivalled)
        self.by_d = rows[np.argsort(self.d[rows], kind="stable")]
        self.d_sorted = self.d[self.by_d]
        self.finite_d = np.unique(self.d_sorted[np.isfinite(self.d_sorted)])
        switching = self.rivalled & has_k
        self.all_j, self.all_key_j = _sorted_keys(L, j, k, switching & has_j)
        self.all_l, self.all_key_l = _sorted_keys(L, l, k, switching & has_l)
        if metric.linear:  # only rows whose utility differs between k and the rival count
            u = metric.utility
            swept_j = u[y[self.all_j], k] != u[y[self.all_j], j]
            swept_l = u[y[self.all_l], k] != u[y[self.all_l], l]
        else:
            swept_j = np.ones(self.all_j.size, dtype=bool)
            swept_l = np.ones(self.all_l.size, dtype=bool)
        self.rows_j, self.key_j = self.all_j[swept_j], self.all_key_j[swept_j]
        self.rows_l, self.key_l = self.all_l[swept_l], self.all_key_l[swept_l]
        self.ends_j = _group_ends(self.key_j)
        self.ends_l = _group_ends(self.key_l)

    def rival_is_l(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        """(lines, rows) mask: just above ``v_l - v_j = u``, l beats j in the row."""
        return self.d[rows][None, :] <= u[:, None]

    def predictions(self, candidate: Candidate) -> np.ndarray:
        """Every row's decision in the candidate's cell, rows left out of the sweep included: a
        row switches to k when its key lies below the cut, whose lower end is the highest swept
        key below it (an l-key tied with a j-key lies above it)."""
        pred = np.zeros(self.d.size, dtype=np.int64)
        pred[self.fixed] = self.fixed_pred
        rows = np.flatnonzero(self.rivalled)
        u = np.array([candidate.u])
        pred[rows] = np.where(self.rival_is_l(rows, u)[0], self.l, self.j)
        top_j = self.key_j[candidate.below_j - 1] if candidate.below_j else -np.inf
        top_l = self.key_l[candidate.below_l - 1] + u[0] if candidate.below_l else -np.inf
        if top_j == top_l == -np.inf:
            return pred
        if top_l >= top_j - TOLERANCE:  # the cut lies just above an l-key
            switch_j = self.all_key_j <= top_l + TOLERANCE
            switch_l = self.all_key_l + u[0] <= top_l + TOLERANCE
        else:  # just above a j-key: l-keys tied with it lie above the cut
            switch_j = self.all_key_j <= top_j + TOLERANCE
            switch_l = self.all_key_l + u[0] < top_j - TOLERANCE
        switch_j &= ~self.rival_is_l(self.all_j, u)[0]
        switch_l &= self.rival_is_l(self.all_l, u)[0]
        pred[self.all_j[switch_j]] = self.k
        pred[self.all_l[switch_l]] = self.k
        return pred


def best_cells(L: np.ndarray, y: np.ndarray, sw: np.ndarray | None, metric: Metric,
               keep: int) -> list[tuple[float, np.ndarray]]:
    """The ``keep`` best cells for 3 classes as (metric, decisions), best first (module docstring).

    Several lines cross the same cell, so a cell may appear more than once.
    """
    sw = np.ones(y.size) if sw is None else sw
    present = metric.f1_counted(y, 3, sw)  # the classes whose F1 counts (F1 metrics)
    families = [_Family(L, y, j, l, k, metric) for j, l, k in ((0, 1, 2), (0, 2, 1), (1, 2, 0))]
    # beyond every vertex: a vertex's u in one family is a sum or difference of two others' d
    far = 1.0 + sum(float(np.abs(f.finite_d).max()) if f.finite_d.size else 0.0
                    for f in families)
    candidates: list[Candidate] = []
    for index, family in enumerate(families):
        lines = np.concatenate([[-far], family.finite_d, [far]])
        block = max(1, BLOCK // (family.key_j.size + family.key_l.size + 1))
        for begin in range(0, lines.size, block):
            u = lines[begin:begin + block]
            values, below_j, below_l = _sweep_lines(family, y, sw, metric, present, u)
            candidates += [Candidate(float(values[b]), index, float(u[b]), int(below_j[b]),
                                     int(below_l[b])) for b in range(u.size)]
    candidates.sort(key=lambda c: -c.value)
    return [(c.value, families[c.family].predictions(c)) for c in candidates[:keep]]


def _sweep_lines(family: _Family, y: np.ndarray, sw: np.ndarray, metric: Metric,
                 present: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per line ``u[b]``: the best metric of a cut in v_k just above it, and where the cut is.

    A cut is given by how many rows of the j-key order and of the l-key order lie below it (rows
    that are not members for this line count nothing). Cuts are tried after every group end of
    either order; the other order's count comes from a binary search (merging the two).
    """
    f = family
    j, l, k = f.j, f.l, f.k
    members_j = ~f.rival_is_l(f.rows_j, u)
    members_l = f.rival_is_l(f.rows_l, u)
    # counts below a cut after each group end of one order, in the other order (an l-key equal
    # to a j-key lies above it: it moves up with u)
    after_j = np.searchsorted(f.key_l, f.key_j[f.ends_j][None, :] - u[:, None] - TOLERANCE)
    after_l = np.searchsorted(f.key_j, f.key_l[f.ends_l][None, :] + u[:, None] + TOLERANCE,
                              side="right")
    n_l = np.searchsorted(f.d_sorted, u, side="right")  # rows at rival l: a prefix of d order
    cut_j = np.concatenate([np.zeros((u.size, 1), dtype=np.int64),
                            np.broadcast_to(f.ends_j + 1, (u.size, f.ends_j.size)), after_l],
                           axis=1)
    cut_l = np.concatenate([np.zeros((u.size, 1), dtype=np.int64), after_j,
                            np.broadcast_to(f.ends_l + 1, (u.size, f.ends_l.size))], axis=1)

    def below(rows: np.ndarray, members: np.ndarray, weights: np.ndarray,
              cut: np.ndarray) -> np.ndarray:  # weight of member rows below each cut
        total = np.zeros((u.size, rows.size + 1))
        np.cumsum(members * weights[rows][None, :], axis=1, out=total[:, 1:])
        return np.take_along_axis(total, cut, axis=1)

    def by_rival(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # rows at j and at l
        at_l = np.concatenate([[0.0], np.cumsum(weights[f.by_d])])
        return at_l[-1] - at_l[n_l], at_l[n_l]

    fixed_w = np.bincount(f.fixed_pred, weights=sw[f.fixed], minlength=3)
    fixed_hit = f.fixed_pred == y[f.fixed]
    fixed_tp = np.bincount(f.fixed_pred[fixed_hit], weights=sw[f.fixed][fixed_hit], minlength=3)
    if metric.linear:  # utility U[y, pred]: rows at rival j predict j until they switch to k
        util = metric.utility
        base_j, _ = by_rival(sw * util[y, j])
        _, base_l = by_rival(sw * util[y, l])
        base = sw[f.fixed] @ util[y[f.fixed], f.fixed_pred] + base_j + base_l
        gain_j = sw * (util[y, k] - util[y, j])
        gain_l = sw * (util[y, k] - util[y, l])
        values = (base[:, None] + below(f.rows_j, members_j, gain_j, cut_j)
                  + below(f.rows_l, members_l, gain_l, cut_l)) / sw.sum()
    else:
        actual = np.bincount(y, weights=sw, minlength=3)
        at_j, at_l = by_rival(sw)
        tp_j, _ = by_rival(sw * (y == j))
        _, tp_l = by_rival(sw * (y == l))
        moved_j = below(f.rows_j, members_j, sw, cut_j)
        moved_l = below(f.rows_l, members_l, sw, cut_l)
        is_k = sw * (y == k)
        gained = below(f.rows_j, members_j, is_k, cut_j) + below(f.rows_l, members_l, is_k, cut_l)
        lost_j = below(f.rows_j, members_j, sw * (y == j), cut_j)
        lost_l = below(f.rows_l, members_l, sw * (y == l), cut_l)
        # F1 = 2 TP / (predicted + actual); only present classes count, and for them the
        # denominator is at least their actual weight, > 0
        values = np.zeros(cut_j.shape)
        if present[j]:
            values += 2 * (fixed_tp[j] + tp_j[:, None] - lost_j) / (
                fixed_w[j] + actual[j] + at_j[:, None] - moved_j)
        if present[l]:
            values += 2 * (fixed_tp[l] + tp_l[:, None] - lost_l) / (
                fixed_w[l] + actual[l] + at_l[:, None] - moved_l)
        if present[k]:
            values += 2 * (fixed_tp[k] + gained) / (fixed_w[k] + actual[k] + moved_j + moved_l)
        values /= present.sum()
    best = np.argmax(values, axis=1)
    rows = np.arange(u.size)
    return values[rows, best], cut_j[rows, best], cut_l[rows, best]


def _snap(values: np.ndarray) -> np.ndarray:
    """Values closer than TOLERANCE to the previous distinct one (in sorted order) set equal to it
    (NaN and +-inf are kept)."""
    out = values.copy()
    finite = np.flatnonzero(np.isfinite(values))
    if finite.size == 0:
        return out
    order = finite[np.argsort(values[finite], kind="stable")]
    sorted_values = values[order]
    starts = np.append(True, np.diff(sorted_values) > TOLERANCE)
    out[order] = sorted_values[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    return out


def _sorted_keys(L: np.ndarray, a: int, k: int,
                 rows_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``rows_mask`` sorted by their key ``L_ia - L_ik`` (where v_k beats a), and the
    snapped keys in that order."""
    rows = np.flatnonzero(rows_mask)
    snapped = _snap(L[rows, a] - L[rows, k])
    order = np.argsort(snapped, kind="stable")
    return rows[order], snapped[order]


def _group_ends(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the last element of every run of equal keys."""
    return np.flatnonzero(np.append(sorted_keys[1:] != sorted_keys[:-1], sorted_keys.size > 0))

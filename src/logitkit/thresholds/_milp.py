"""The global optimum of per-class decision weights for any number of classes, as a MILP.

Decision rule: ``pred_i = argmax_j p_ij w_j`` with ``w_j >= 0`` (ties and all-zero products: the
lowest index, like ``np.argmax``). With ``S = {j : w_j > 0}`` (the support) and
``P_i = {j : p_ij > 0}``, row i predicts 0 when ``S`` and ``P_i`` do not meet, else the class of
``S & P_i`` with the largest ``L_ij + v_j`` (``L = log p``, ``v = log w``).

Mixed-integer program (solved by HiGHS through ``scipy.optimize.milp``):

* ``v_j`` in ``[-BOX, 0]`` and a binary ``s_j`` (1: ``w_j = e^{v_j} > 0``; 0: ``w_j = 0``);
* a binary ``x_ik`` for each row and class ``k`` in ``P_i`` (row i predicts k through the
  weights): ``x_ik <= s_k`` and, for every other ``j`` in ``P_i``,
  ``x_ik = s_j = 1  =>  v_k - v_j >= L_ij - L_ik + MARGIN`` (big-M with the tightest M the box
  allows; a pair the box makes impossible is ``x_ik + s_j <= 1``, one it makes certain is dropped);
* a binary ``e_i`` (row i predicts 0 because every class of ``P_i`` has weight 0):
  ``e_i + s_j <= 1`` for ``j`` in ``P_i``;
* accuracy (any sample weights; balanced accuracy is accuracy with weights ``1/count(y)``):
  maximise ``sum_i sw_i (x_{i,y_i} + [y_i = 0] e_i)``; only the label's variables are needed;
  another linear metric (a cost matrix: utility ``U = -C``) needs every ``x_ik`` with
  ``sum_k x_ik + e_i = 1`` per row and maximises ``sum_i sw_i (sum_k U[y_i, k] x_ik + U[y_i, 0]
  e_i)``;
* F1 of class k (macro-F1: the mean over the classes present): ``F1_k = 2 TP_k / (P_k + A_k)``
  is the largest ``f_k`` in [0, 1] with ``sum_i sw_i f_k X_ik + A_k f_k <= 2 TP_k``, where
  ``X_ik`` is "row i predicts k" (``sum_k X_ik = 1`` per row); the products ``f_k X_ik`` are
  exact through ``h_ik >= f_k + X_ik - 1``, ``h_ik >= 0`` (X binary), so the program is exact.

It is the global optimum over every support and every ``v`` in the box whose decisions hold with a
log-margin of ``MARGIN`` (cells narrower than that, ratios within ``1 + 1e-6`` of a tie, are not
searched). ``BOX = 40`` covers the seed's weight space ``(tanh(t) + 1) / 2``: its smallest positive
float is 5.6e-17 = e^-37.4, so every seed weight vector, zeros included, lies in the searched set.
HiGHS's dual bound is an upper bound on the metric (the gap reported to the user); a run cut by
``time_limit`` (or ``node_limit``: branch-and-bound nodes, deterministic) keeps its best solution
and that bound. The decisions HiGHS returns are realised
by :func:`centre_on_support` and scored by the decision rule itself.

Reference: maximising accuracy over such rules is a maximum feasible subsystem problem (Amaldi and
Kann, Theoretical Computer Science 1995); the big-M form is the standard one (Chinneck,
"Feasibility and Infeasibility in Optimization", 2008). The exact product linearisation of a
binary and a bounded continuous variable is Glover's (Management Science 1975).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from logitkit.thresholds._cells import centre_on_support
from logitkit.thresholds.metrics import Metric

# Log-weights lie in [-BOX, 0]: every positive weight ratio up to e^40 (~2.4e17).
BOX = 40.0
# Decisions must hold by this log-margin in the program (open cells only).
MARGIN = 1e-6
# HiGHS's tolerances, tighter than its defaults (1e-6, 1e-7): a binary at 1 - 1e-6 would relax a
# big-M row by up to 2 * 80 * 1e-6, more than MARGIN, and let two opposite decisions both hold.
# scipy passes options it does not know to HiGHS verbatim (with a warning, silenced).
TOLERANCES = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}


@dataclass
class Solution:
    """Log-weights (``-inf``: weight 0) that realise the best decisions found (to be scored by the
    rule itself; none if HiGHS found none in time), the upper bound it proved on the metric, and
    whether the search finished (``bound`` is then the optimum, up to the solver's tolerances)."""

    candidates: list[np.ndarray]
    bound: float
    finished: bool


class _Program:
    """Sparse rows ``lower <= A x <= upper`` and variable bounds, built column by column."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.n_rows = 0
        self.n_vars = 0
        self.var_low: list[np.ndarray] = []
        self.var_high: list[np.ndarray] = []
        self.integer: list[np.ndarray] = []

    def variables(self, count: int, low: float, high: float, integer: bool) -> np.ndarray:
        first = self.n_vars
        self.n_vars += count
        self.var_low.append(np.full(count, low))
        self.var_high.append(np.full(count, high))
        self.integer.append(np.full(count, int(integer)))
        return np.arange(first, first + count)

    def constraints(self, cols: list[np.ndarray], vals: list[np.ndarray | float],
                    lower: np.ndarray | float, upper: np.ndarray | float) -> None:
        """``lower <= sum_t vals[t] * x[cols[t]] <= upper``, one constraint per element."""
        count = np.broadcast_shapes(*(np.shape(c) for c in cols))[0]
        local = np.arange(count)
        self.grouped([np.broadcast_to(c, (count,)) for c in cols],
                     [np.broadcast_to(np.asarray(v, dtype=np.float64), (count,)) for v in vals],
                     [local] * len(cols), count, lower, upper)

    def grouped(self, cols: list[np.ndarray], vals: list[np.ndarray], owner: list[np.ndarray],
                count: int, lower: np.ndarray | float, upper: np.ndarray | float) -> None:
        """``count`` constraints; term t adds ``vals[t] * x[cols[t]]`` to constraint
        ``owner[t]``."""
        for c, v, o in zip(cols, vals, owner, strict=True):
            self.rows.append(self.n_rows + o)
            self.cols.append(c)
            self.vals.append(v)
        self.lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (count,)))
        self.upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (count,)))
        self.n_rows += count

    def solve(self, objective: np.ndarray, time_limit: float | None,
              node_limit: int | None) -> object:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import csr_array

        matrix = csr_array((np.concatenate(self.vals),
                            (np.concatenate(self.rows), np.concatenate(self.cols))),
                           shape=(self.n_rows, self.n_vars))
        options = {"mip_rel_gap": 0.0, **TOLERANCES}
        if time_limit is not None:
            options["time_limit"] = float(time_limit)
        if node_limit is not None:
            options["node_limit"] = int(node_limit)
        with _quiet_stdout(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unrecognized options", RuntimeWarning)
            return milp(objective, integrality=np.concatenate(self.integer),
                        bounds=Bounds(np.concatenate(self.var_low),
                                      np.concatenate(self.var_high)),
                        constraints=LinearConstraint(matrix, np.concatenate(self.lower),
                                                     np.concatenate(self.upper)),
                        options=options)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Standard output closed at the file-descriptor level: HiGHS prints debugging lines there
    from C++ (``disp=False`` does not silence them)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def solve_exact(L: np.ndarray, y: np.ndarray, sw: np.ndarray, metric: Metric,
                counted: np.ndarray, time_limit: float | None = None,
                node_limit: int | None = None) -> Solution:
    """Best log-weights for ``metric`` (linear, or the mean F1 of the ``counted`` classes, a
    mask) and the bound HiGHS proved (module docstring). ``sw``: sample weights (ones: none)."""
    total = float(sw.sum())
    full_L, full_y = L, y
    label_only = metric.is_accuracy  # only the label's decision matters
    merged, L, y, sw = merged_rows(L, y, sw, label_only=label_only)
    N, n = L.shape
    live = np.isfinite(L)  # P_i
    prog = _Program()
    v = prog.variables(n, -BOX, 0.0, integer=False)
    s = prog.variables(n, 0.0, 1.0, integer=True)
    empty = ~live.any(axis=1)  # rows predicted 0 by every weight vector
    if label_only:
        rows = np.flatnonzero(~empty & live[np.arange(N), y])
        pair_rows, pair_classes = rows, y[rows]
        zero_rows = np.flatnonzero(~empty & (y == 0))  # correct also when P_i is switched off
    else:
        pair_rows, pair_classes = np.nonzero(live & ~empty[:, None])
        zero_rows = np.flatnonzero(~empty)
    x = prog.variables(pair_rows.size, 0.0, 1.0, integer=True)
    e = prog.variables(zero_rows.size, 0.0, 1.0, integer=True)
    prog.constraints([x, s[pair_classes]], [1.0, -1.0], -np.inf, 0.0)  # x_ik <= s_k
    _win_constraints(prog, L, live, pair_rows, pair_classes, x, v, s)
    zi, zj = np.nonzero(live[zero_rows])
    prog.constraints([e[zi], s[zj]], [1.0, 1.0], -np.inf, 1.0)  # e_i + s_j <= 1
    if not label_only:  # one decision per non-empty row: its x and its e sum to 1
        row_of = np.full(N, -1)
        row_of[zero_rows] = np.arange(zero_rows.size)
        prog.grouped([x, e], [np.ones(x.size), np.ones(e.size)],
                     [row_of[pair_rows], np.arange(zero_rows.size)], zero_rows.size, 1.0, 1.0)
    if metric.linear:  # minimise minus the utility of the decisions
        u = metric.utility
        constant, scale = float(sw[empty] @ u[y[empty], 0]), 1.0 / total
        objective = np.zeros(prog.n_vars)
        objective[x] = -sw[pair_rows] * u[y[pair_rows], pair_classes]
        objective[e] = -sw[zero_rows] * u[y[zero_rows], 0]
    else:  # minimise minus the sum of the f_k
        classes = np.flatnonzero(counted)
        f = _f1_program(prog, y, sw, pair_rows, pair_classes, x, zero_rows, e, empty, classes)
        constant, scale = 0.0, 1.0 / classes.size
        objective = np.zeros(prog.n_vars)
        objective[f] = -1.0
    result = prog.solve(objective, time_limit, node_limit)
    finished = result.status == 0
    dual = result.mip_dual_bound if result.mip_dual_bound is not None else -np.inf
    bound = (constant - float(dual)) * scale if np.isfinite(dual) else np.inf
    if result.x is None:
        return Solution([], bound, False)
    solution = result.x
    support = solution[s] > 0.5
    log_w = np.where(support, solution[v], -np.inf)
    chosen, emptied = solution[x] > 0.5, solution[e] > 0.5
    pred = np.zeros(N, dtype=np.int64)  # the program's decisions (rows in ``emptied``: 0)
    pred[pair_rows[chosen]] = pair_classes[chosen]
    if label_only:  # the rows it counts as right must be right; the others may fall
        right = np.zeros(N, dtype=bool)
        right[pair_rows[chosen]] = right[zero_rows[emptied]] = True
        rows = np.flatnonzero(right[merged])
        found = centre_on_support(full_L[rows], full_y[rows], support)
    else:
        found = centre_on_support(full_L, pred[merged], support)
    candidates = [] if found is None else [found[0]]
    return Solution([*candidates, log_w], bound, finished)


def merged_rows(L: np.ndarray, y: np.ndarray, sw: np.ndarray,
                label_only: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows that the box decides alone, merged: one row per pattern, its weight the sum.

    A pair of classes (k, j) of row i is decided when ``|L_ik - L_ij| > BOX + MARGIN``: inside
    the box one of them always beats the other, whatever the weights. A row whose relevant pairs
    (the label against each class, ``label_only``; else every pair) are all decided predicts a
    class fixed by the support alone, so rows with the same label and the same pattern (which
    classes beat the label, and the classes of ``P_i`` for the zero rule; else ``P_i`` ordered
    by score) always fare alike. Returns each row's merged row, and L, y, sw of the merged rows.
    """
    live = np.isfinite(L)
    with np.errstate(invalid="ignore"):
        if label_only:
            own = L[np.arange(y.size), y][:, None]
            gap = np.where(live, L - own, np.inf)  # +inf: j absent, decided
            decided = np.all((np.abs(gap) > BOX + MARGIN) | (gap == 0), axis=1)
            # gap == 0 on the label's own column (and exact ties, which big-M would need)
            decided &= np.sum(gap == 0, axis=1) <= 1
            pattern = np.where(live, np.where(gap > 0, 2, 1), 0)  # 2: beats the label always
        else:
            order = np.argsort(-np.where(live, L, -np.inf), axis=1, kind="stable")
            ranked = np.take_along_axis(L, order, axis=1)
            steps = ranked[:, :-1] - ranked[:, 1:]
            decided = np.all(~np.isfinite(ranked[:, 1:]) | (steps > BOX + MARGIN), axis=1)
            pattern = np.where(np.isfinite(ranked), order, -1)
    keys = np.concatenate([y[:, None], pattern], axis=1)
    keys[~decided, 0] = -1 - np.flatnonzero(~decided)  # undecided rows stay alone
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    merged_sw = np.bincount(inverse.ravel(), weights=sw, minlength=first.size)
    return inverse.ravel(), L[first], y[first], merged_sw


def _win_constraints(prog: _Program, L: np.ndarray, live: np.ndarray, pair_rows: np.ndarray,
                     pair_classes: np.ndarray, x: np.ndarray, v: np.ndarray,
                     s: np.ndarray) -> None:
    """``x_ik = s_j = 1 => v_j - v_k <= D - MARGIN`` with ``D = L_ik - L_ij``, every j in P_i."""
    n = L.shape[1]
    for j in range(n):
        has_j = live[pair_rows, j] & (pair_classes != j)
        idx = np.flatnonzero(has_j)
        rows, ks = pair_rows[idx], pair_classes[idx]
        limit = L[rows, ks] - L[rows, j] - MARGIN  # v_j - v_k <= limit
        never = limit < -BOX  # the box cannot make k beat j: x_ik + s_j <= 1
        prog.constraints([x[idx[never]], np.full(int(never.sum()), s[j])], [1.0, 1.0],
                         -np.inf, 1.0)
        bind = ~never & (limit < BOX)  # v_j - v_k <= BOX always: others need nothing
        big_m = BOX - limit[bind]
        b = idx[bind]
        prog.constraints([np.full(b.size, v[j]), v[ks[bind]], x[b], np.full(b.size, s[j])],
                         [1.0, -1.0, big_m, big_m], -np.inf, limit[bind] + 2 * big_m)


def _f1_program(prog: _Program, y: np.ndarray, sw: np.ndarray, pair_rows: np.ndarray,
                pair_classes: np.ndarray, x: np.ndarray, zero_rows: np.ndarray, e: np.ndarray,
                empty: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Adds the exact F1 rows of ``classes``; returns the indices of their ``f_k``."""
    f = prog.variables(classes.size, 0.0, 1.0, integer=False)
    # X_ik as (variable, row) lists: x for k in P_i, plus e for k = 0
    for index, k in enumerate(classes):
        take = pair_classes == k
        members = [(x[take], pair_rows[take])]
        if k == 0:
            members.append((e, zero_rows))
        var = np.concatenate([m[0] for m in members])
        rows = np.concatenate([m[1] for m in members])
        h = prog.variables(var.size, 0.0, 1.0, integer=False)
        prog.constraints([h, np.full(var.size, f[index]), var], [1.0, -1.0, -1.0], -1.0,
                         np.inf)  # h >= f + X - 1
        actual = float(sw[y == k].sum())
        fixed = empty if k == 0 else np.zeros(y.size, dtype=bool)  # rows predicted 0 always
        fixed_p = float(sw[fixed].sum())
        fixed_tp = float(sw[fixed & (y == k)].sum())
        own = y[rows] == k
        terms = [h, np.array([f[index]]), var[own]]
        prog.grouped(terms, [sw[rows], np.array([actual + fixed_p]), -2 * sw[rows][own]],
                     [np.zeros(t.size, dtype=np.int64) for t in terms], 1, -np.inf, 2 * fixed_tp)
    return f
